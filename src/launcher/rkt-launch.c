/*
 * rkt-launch: the process `bin/rkt` runs. It starts stage0 (node and the
 * CLI bundle) as its child and, for a pod run, takes over from it: stage0
 * prepares the pod, then hands back an exec plan over a private pipe and
 * exits, and this process starts the stage1 run entrypoint and stays as the
 * pod's stage0 for its life (signals forwarded, exit status returned). So a
 * running pod keeps one small C process on the host in place of a Node.js
 * stage0 (rkt's Go stage0 exec()s itself away; Node.js has no execve).
 *
 * Usage: rkt-launch [rkt arguments...]   (through bin/rkt)
 *
 * Phase 1, stage0 runs: node is our child (with the descriptors systemd's
 * socket activation passed us, and LISTEN_PID naming node instead of us), with RKT_LAUNCHER=PID:W:R in its
 * environment: our pid and our descriptors of the plan pipe's write end and
 * the acknowledgement pipe's read end, which node opens through /proc/PID/fd
 * only when it hands over (they are close-on-exec here, so nothing else
 * inherits them). Signals sent to us by a process (kill(2)) are passed on to
 * node; those the terminal sends (^C) reached node's process group already.
 * Stop signals (INT, TERM, HUP) are also remembered: node cannot act on one
 * that comes after it sent its plan, so the first of them goes on to
 * stage1, as stage0 itself did before.
 *
 * The plan, written by src/stage1/hand-over.ts: a 4-byte little-endian length,
 * then NUL-terminated fields:
 *   "rkt-plan-1" CWD DETACHED ISOLATE LOCKFD NHOLD HOLDFD... CAUSEFILE STATUSDIR
 *   CAUSE-INT CAUSE-TERM CAUSE-HUP NARGV ARGV... NENV ENV...
 * We duplicate stage0's LOCKFD (the pod lock) and HOLDFDs (shared locks on
 * the image trees) with pidfd_getfd(2): the same open file descriptions, so
 * the flocks stay held without a gap, then write one byte "1" (taken) or
 * "0" (refused: stage0 then runs stage1 itself); node exits at once, and
 * we reap it while stage1 starts.
 *
 * Phase 2, stage1 runs: the entrypoint is our child, the pod lock its fd 3;
 * with DETACHED in a session of its own, with ISOLATE in a private mount
 * namespace (slave propagation) and killed when we die. INT, TERM and HUP
 * are forwarded to it; any other fatal signal kills us and with us the pod.
 * When it exits we exit with its status (128+N if signal N ended it). If a
 * forwarded stop signal N ended it before any app had a status and stage1
 * wrote no exit cause, CAUSEFILE gets CAUSE-N: the entrypoint was killed
 * before it listened for the request, and `rkt status` should say why.
 *
 * Exit status 254 with one line on stderr when we cannot do our part.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RKT 254
#define PLAN_MAX (4 << 20)
#define MAX_HOLD 64

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
static sigset_t saved_mask;

static void fail(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "rkt: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  exit(EXIT_RKT);
}

/* Leave the way the child did: its status, or its signal raised on ourselves. */
static void exit_like(int status) {
  if (WIFEXITED(status)) exit(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  sigprocmask(SIG_UNBLOCK, &one, NULL);
  raise(sig);
  exit(128 + sig);
}

static int code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

/* In a forked child: die with us, and stop if we are already gone. */
static void die_with_parent(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(EXIT_RKT);
}

static int stop_index(int sig) { return sig == SIGINT ? 0 : sig == SIGTERM ? 1 : sig == SIGHUP ? 2 : -1; }

struct plan {
  char *cwd, *cause_file, *status_dir, *cause[3];
  int detached, isolate, lock_fd, nhold, hold[MAX_HOLD];
  char **argv, **env;
};

/* The next NUL-terminated field of the plan, or NULL past its end. */
static char *field(char **p, char *end) {
  if (*p >= end) return NULL;
  char *f = *p, *z = memchr(f, '\0', (size_t)(end - f));
  if (z == NULL) return NULL;
  *p = z + 1;
  return f;
}

static int number(char **p, char *end, long max, long *out) {
  char *f = field(p, end), *e;
  if (f == NULL || *f == '\0') return -1;
  errno = 0;
  *out = strtol(f, &e, 10);
  return (*e != '\0' || errno != 0 || *out < 0 || *out > max) ? -1 : 0;
}

static char **strings(char **p, char *end) {
  long n;
  if (number(p, end, 1 << 16, &n) != 0) return NULL;
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (v == NULL) return NULL;
  for (long i = 0; i < n; i++)
    if ((v[i] = field(p, end)) == NULL) return NULL;
  return v;
}

static int parse_plan(char *buf, size_t len, struct plan *pl) {
  char *p = buf, *end = buf + len, *magic = field(&p, end);
  long n;
  if (magic == NULL || strcmp(magic, "rkt-plan-1") != 0) return -1;
  if ((pl->cwd = field(&p, end)) == NULL) return -1;
  if (number(&p, end, 1, &n) != 0) return -1;
  pl->detached = (int)n;
  if (number(&p, end, 1, &n) != 0) return -1;
  pl->isolate = (int)n;
  if (number(&p, end, INT_MAX, &n) != 0) return -1;
  pl->lock_fd = (int)n;
  if (number(&p, end, MAX_HOLD, &n) != 0) return -1;
  pl->nhold = (int)n;
  for (int i = 0; i < pl->nhold; i++) {
    if (number(&p, end, INT_MAX, &n) != 0) return -1;
    pl->hold[i] = (int)n;
  }
  if ((pl->cause_file = field(&p, end)) == NULL || (pl->status_dir = field(&p, end)) == NULL) return -1;
  for (int i = 0; i < 3; i++)
    if ((pl->cause[i] = field(&p, end)) == NULL) return -1;
  if ((pl->argv = strings(&p, end)) == NULL || pl->argv[0] == NULL) return -1;
  if ((pl->env = strings(&p, end)) == NULL) return -1;
  return p == end ? 0 : -1;
}

static int read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, (char *)buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* stage0's descriptor as one of ours (close-on-exec), the same open file description. */
static int take_fd(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }

/* Any app status in DIR (names starting with a dot are temporaries). */
static int any_status(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return 0;
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d)) != NULL) found = e->d_name[0] != '.';
  closedir(d);
  return found;
}

/* Write TEXT and a newline to FILE through a temporary and a rename, unless FILE exists. */
static void write_cause(const char *file, const char *text) {
  if (access(file, F_OK) == 0) return;
  char tmp[PATH_MAX];
  const char *slash = strrchr(file, '/');
  if (slash == NULL || snprintf(tmp, sizeof tmp, "%.*s/.%s.%d", (int)(slash - file), file, slash + 1, (int)getpid()) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return;
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp, file) != 0) unlink(tmp);
}

/* The phase trace's last stage0 mark, as src/util/phase-trace.ts prints it, when the plan carries the timeline. */
static void mark_stage0_exit(char **env) {
  for (char **e = env; *e != NULL; e++) {
    if (strncmp(*e, "RKT_TRACE_ORIGIN=", 17) != 0) continue;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
    fprintf(stderr, "rkt: debug: phase stage0-exit +%.1f ms\n", now - strtod(*e + 17, NULL));
  }
}

static void exec_stage1(const struct plan *pl, int lock, pid_t parent) {
  sigprocmask(SIG_SETMASK, &saved_mask, NULL);
  if (pl->detached && setsid() < 0) _exit(EXIT_RKT);
  if (pl->isolate) {
    die_with_parent(parent);
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) {
      fprintf(stderr, "rkt: cannot give the stage1 run entrypoint a private mount namespace: %s\n", strerror(errno));
      _exit(EXIT_RKT);
    }
  }
  if (chdir(pl->cwd) != 0) {
    fprintf(stderr, "rkt: cannot enter the pod directory %s: %s\n", pl->cwd, strerror(errno));
    _exit(EXIT_RKT);
  }
  if (dup2(lock, 3) < 0 || fcntl(3, F_SETFD, 0) != 0) _exit(EXIT_RKT);
  execve(pl->argv[0], pl->argv, pl->env);
  fprintf(stderr, "rkt: cannot execute stage1 run entrypoint %s: %s\n", pl->argv[0], strerror(errno));
  _exit(EXIT_RKT);
}

static void run_stage1(const struct plan *pl, int lock, int sfd, int first_stop, pid_t node) {
  pid_t parent = getpid(), child = fork();
  if (child < 0) fail("cannot start the stage1 run entrypoint: %s%s", strerror(errno), "");
  if (child == 0) exec_stage1(pl, lock, parent);
  if (first_stop > 0) kill(child, first_stop);
  int forwarded = first_stop;
  for (;;) {
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != sizeof si) {
      if (errno == EINTR) continue;
      fail("cannot read signals: %s%s", strerror(errno), "");
    }
    int sig = (int)si.ssi_signo;
    if (stop_index(sig) >= 0) {
      kill(child, sig);
      if (forwarded == 0) forwarded = sig;
    } else if (sig != SIGCHLD) {
      /* not a stop request: fatal to us, and so (pdeath signal) to the pod, as to node before */
      signal(sig, SIG_DFL);
      sigprocmask(SIG_SETMASK, &saved_mask, NULL);
      raise(sig);
      kill(child, SIGKILL);
      exit(128 + sig);
    }
    int status;
    if (node > 0 && waitpid(node, &status, WNOHANG) == node) node = 0;
    pid_t w = waitpid(child, &status, WNOHANG);
    if (w != child) continue;
    int code = code_of(status);
    if (forwarded > 0 && code == 128 + forwarded && !any_status(pl->status_dir)) write_cause(pl->cause_file, pl->cause[stop_index(forwarded)]);
    mark_stage0_exit(pl->env);
    exit(code);
  }
}

int main(int argc, char **argv) {
  (void)argc;
  char self[PATH_MAX], bundle[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) fail("cannot find the launcher's own path: %s%s", strerror(errno), "");
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  *slash = '\0';
  /* dist/launcher/rkt-launch -> dist/cli-bundle/rkt.js */
  snprintf(bundle, sizeof bundle, "%s/../cli-bundle/rkt.js", self);

  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++) sigaddset(&set, FORWARDED[i]);
  sigprocmask(SIG_BLOCK, &set, &saved_mask);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  int plan[2], ack[2];
  if (sfd < 0 || pipe2(plan, O_CLOEXEC) != 0 || pipe2(ack, O_CLOEXEC) != 0) fail("cannot set up: %s%s", strerror(errno), "");

  pid_t parent = getpid(), node = fork();
  if (node < 0) fail("cannot start node: %s%s", strerror(errno), "");
  if (node == 0) {
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    die_with_parent(parent);
    /* node opens the pipes through /proc when it hands over: nothing leaks into what it starts */
    char ch[64];
    snprintf(ch, sizeof ch, "%d:%d:%d", (int)parent, plan[1], ack[0]);
    if (setenv("RKT_LAUNCHER", ch, 1) != 0) _exit(EXIT_RKT);
    /* sockets systemd passed us (socket activation) are node's: they name node's pid */
    const char *listen_pid = getenv("LISTEN_PID");
    if (listen_pid != NULL && atol(listen_pid) == (long)parent) {
      char me[24];
      snprintf(me, sizeof me, "%d", (int)getpid());
      if (setenv("LISTEN_PID", me, 1) != 0) _exit(EXIT_RKT);
    }
    char **nargv = calloc((size_t)argc + 2, sizeof *nargv);
    if (nargv == NULL) _exit(EXIT_RKT);
    nargv[0] = "node";
    nargv[1] = bundle;
    for (int i = 1; i < argc; i++) nargv[i + 1] = argv[i];
    execvp("node", nargv);
    fprintf(stderr, "rkt: cannot execute node (Node.js 20 or later must be on PATH): %s\n", strerror(errno));
    _exit(EXIT_RKT);
  }

  int first_stop = 0;
  for (;;) {
    struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = plan[0], .events = POLLIN}};
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail("cannot wait for stage0: %s%s", strerror(errno), "");
    }
    if (pf[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGCHLD) {
        int sig = (int)si.ssi_signo;
        /* the terminal's signals (SI_KERNEL) reached node's process group already */
        if (si.ssi_code != SI_KERNEL) kill(node, sig);
        if (stop_index(sig) >= 0 && first_stop == 0) first_stop = sig;
      }
      int status;
      if (waitpid(node, &status, WNOHANG) == node) exit_like(status);
    }
    if (pf[1].revents & POLLIN) break;
  }

  /* a plan: take the pod from stage0, or refuse and let stage0 run it */
  uint32_t len;
  int ok = read_full(plan[0], &len, sizeof len) == 0 && len > 0 && len <= PLAN_MAX;
  char *buf = ok ? malloc(len) : NULL;
  struct plan pl = {0};
  ok = buf != NULL && read_full(plan[0], buf, len) == 0 && parse_plan(buf, len, &pl) == 0;
  int lock = -1, pidfd = ok ? (int)syscall(SYS_pidfd_open, node, 0) : -1;
  if (pidfd >= 0) lock = take_fd(pidfd, pl.lock_fd);
  for (int i = 0; lock >= 0 && i < pl.nhold; i++)
    if (take_fd(pidfd, pl.hold[i]) < 0) {
      close(lock);
      lock = -1;
    }
  /* held fds stay open in us (close-on-exec) until we exit, as in stage0 before */
  char answer = lock >= 0 ? '1' : '0';
  while (write(ack[1], &answer, 1) < 0 && errno == EINTR) {
  }
  if (lock < 0) {
    /* refused: stage0 runs the pod itself and its status is the pod's */
    int status;
    while (waitpid(node, &status, 0) < 0 && errno == EINTR) {
    }
    exit_like(status);
  }
  /* node's own exit (tearing down V8) overlaps the entrypoint's start; it is reaped there */
  run_stage1(&pl, lock, sfd, first_stop, node);
  return EXIT_RKT;
}
