/*
 * rkt-idmap: the two things the kvm stage1 needs from user namespaces that
 * Debian 12's util-linux (2.38) cannot do without newuidmap and
 * /etc/subuid: an id-mapped bind mount (mount(8) learnt X-mount.idmap= in
 * 2.39), and running a program as root of a user namespace with given maps.
 *
 *   rkt-idmap bind [--ro] MAPS SOURCE TARGET
 *       bind SOURCE on TARGET as an id-mapped mount (mount_setattr(2),
 *       MOUNT_ATTR_IDMAP), always nosuid and nodev, read-only with --ro; not
 *       recursive. A file owned on disk by HOST+i appears through the mount
 *       as owned by NS+i, and one created through it by NS+i lands on disk as
 *       HOST+i. Ids outside every range show as the overflow id (65534) and
 *       cannot create files.
 *   rkt-idmap exec MAPS [--listen SOCKET] [--cgroup DIR] -- PROGRAM ARGS...
 *       execute PROGRAM as uid 0, gid 0, no supplementary groups, in a new
 *       user namespace where NS+i is host HOST+i: its root is HOST (an
 *       unprivileged id), its capabilities reach only what that namespace
 *       owns. The pid stays ours. --listen: first create the unix socket
 *       SOCKET (mode 0600, host root's) listening, as PROGRAM's fd 3, so
 *       that PROGRAM needs no access to the socket's directory. --cgroup:
 *       first move into the cgroup (v2) DIR, so that every process PROGRAM
 *       forks starts there.
 *
 *   MAPS: --uid NS:HOST:COUNT ... --gid NS:HOST:COUNT ... (up to 16 of each)
 *
 * Runs as root. Exit status: 0 (bind), PROGRAM's (exec), or 1 with one line
 * on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RANGES 16
#define MAP_SIZE (MAX_RANGES * 36)

static void die(const char *what) {
  fprintf(stderr, "rkt-idmap: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr, "usage: rkt-idmap bind [--ro] MAPS SOURCE TARGET | rkt-idmap exec MAPS -- PROGRAM ARGS...\n"
                  "       MAPS: --uid NS:HOST:COUNT ... --gid NS:HOST:COUNT ...\n");
  exit(1);
}

/* "NS:HOST:COUNT" appended to a uid_map/gid_map text ("NS HOST COUNT\n" lines). */
static void add_range(char *map, int *lines, const char *spec) {
  unsigned long ns, host, count;
  char end;
  if (sscanf(spec, "%lu:%lu:%lu%c", &ns, &host, &count, &end) != 3 || count == 0 || ns > 0xfffffffeUL || host > 0xfffffffeUL ||
      count > 0xffffffffUL - ns || count > 0xffffffffUL - host) {
    fprintf(stderr, "rkt-idmap: bad range \"%s\" (want NS:HOST:COUNT)\n", spec);
    exit(1);
  }
  if (++*lines > MAX_RANGES) usage();
  size_t len = strlen(map);
  snprintf(map + len, MAP_SIZE - len, "%lu %lu %lu\n", ns, host, count);
}

struct maps {
  char uid[MAP_SIZE], gid[MAP_SIZE];
  int uids, gids;
};

/* Parse options from argv[*i]; stops at the first non-option or after "--". */
static int parse(int argc, char **argv, int *i, struct maps *m, int allow_ro, const char **listen, const char **cgroup) {
  int ro = 0;
  for (; *i < argc && strncmp(argv[*i], "--", 2) == 0; (*i)++) {
    if (strcmp(argv[*i], "--") == 0) {
      (*i)++;
      break;
    }
    if (allow_ro && strcmp(argv[*i], "--ro") == 0) ro = 1;
    else if (listen && strcmp(argv[*i], "--listen") == 0 && *i + 1 < argc) *listen = argv[++*i];
    else if (cgroup && strcmp(argv[*i], "--cgroup") == 0 && *i + 1 < argc) *cgroup = argv[++*i];
    else if (strcmp(argv[*i], "--uid") == 0 && *i + 1 < argc) add_range(m->uid, &m->uids, argv[++*i]);
    else if (strcmp(argv[*i], "--gid") == 0 && *i + 1 < argc) add_range(m->gid, &m->gids, argv[++*i]);
    else usage();
  }
  if (m->uids == 0 || m->gids == 0) usage();
  return ro;
}

static void write_file(pid_t pid, const char *name, const char *content) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  if (write(fd, content, strlen(content)) != (ssize_t)strlen(content)) die(path);
  close(fd);
}

/* A user namespace with the maps, as a descriptor; a child holds it while we write them. */
static int userns_fd(const struct maps *m) {
  int ready[2], done[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    char c = 0;
    close(ready[0]);
    close(done[1]);
    if (unshare(CLONE_NEWUSER) < 0) _exit(1);
    if (write(ready[1], &c, 1) != 1) _exit(1);
    /* returns when the parent closes its end, or dies */
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  close(ready[1]);
  close(done[0]);
  char c, path[64];
  if (read(ready[0], &c, 1) != 1) {
    errno = ECHILD;
    die("creating a user namespace");
  }
  write_file(pid, "uid_map", m->uid);
  write_file(pid, "gid_map", m->gid);
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  close(done[1]);
  waitpid(pid, NULL, 0);
  return fd;
}

static int bind_cmd(int argc, char **argv) {
  struct maps m = {0};
  int i = 2, ro = parse(argc, argv, &i, &m, 1, NULL, NULL);
  if (argc - i != 2) usage();
  const char *source = argv[i], *target = argv[i + 1];
  int ns = userns_fd(&m);
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
  if (tree < 0) die(source);
  struct mount_attr attr = {
      .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (ro ? MOUNT_ATTR_RDONLY : 0),
      .userns_fd = (unsigned long long)ns,
  };
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) die("mount_setattr");
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) die(target);
  return 0;
}

static void join_cgroup(const char *dir) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) {
    errno = ENAMETOOLONG;
    die(dir);
  }
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  /* "0": the writer itself */
  if (fd < 0 || write(fd, "0", 1) != 1) die(path);
  close(fd);
}

/* A listening unix socket at `path` (which must not exist) on fd 3, kept across exec. */
static void listen_on(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    die(path);
  }
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  mode_t old = umask(0177);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die(path);
  umask(old);
  if (listen(fd, 1) < 0) die("listen");
  if (fd != 3) {
    if (dup2(fd, 3) < 0) die("dup2");
    close(fd);
  }
}

static int exec_in(int argc, char **argv) {
  struct maps m = {0};
  int i = 2;
  const char *sock = NULL, *cgroup = NULL;
  parse(argc, argv, &i, &m, 0, &sock, &cgroup);
  if (i >= argc) usage();
  if (cgroup) join_cgroup(cgroup);
  if (sock) listen_on(sock);
  /* A child in our namespace writes our maps once we have unshared. */
  int go[2];
  if (pipe2(go, O_CLOEXEC) < 0) die("pipe");
  pid_t self = getpid(), pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1) _exit(1);
    write_file(self, "uid_map", m.uid);
    write_file(self, "gid_map", m.gid);
    _exit(0);
  }
  close(go[0]);
  if (unshare(CLONE_NEWUSER) < 0) die("unshare(CLONE_NEWUSER)");
  if (write(go[1], "x", 1) != 1) die("pipe");
  close(go[1]);
  int status;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "rkt-idmap: could not write the user namespace's maps\n");
    return 1;
  }
  if (setgroups(0, NULL) < 0) die("setgroups");
  if (setresgid(0, 0, 0) < 0) die("setresgid");
  if (setresuid(0, 0, 0) < 0) die("setresuid");
  execvp(argv[i], argv + i);
  die(argv[i]);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  if (strcmp(argv[1], "bind") == 0) return bind_cmd(argc, argv);
  if (strcmp(argv[1], "exec") == 0) return exec_in(argc, argv);
  usage();
}
