/*
 * rkt-oci-console: the terminal end of runc's --console-socket protocol.
 *
 *   rkt-oci-console SOCKET PROGRAM [ARGS...]
 *
 * Opens a new pseudo-terminal, sends its master over the unix socket SOCKET
 * (one sendmsg(2) with the master as SCM_RIGHTS and the terminal's name as
 * the data, as runc does, for containerd's shim to receive), then becomes
 * the leader of a new session with the terminal as its controlling
 * terminal and stdin, stdout and stderr, and executes PROGRAM (an absolute
 * path) in place: the pid stays the one the caller recorded. Node has
 * neither SCM_RIGHTS nor a controlling-terminal call, hence this.
 *
 * Exit status 1 with one line on stderr when anything fails before exec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "rkt-oci-console: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void send_master(const char *socket_path, int master, const char *name) {
  struct sockaddr_un addr;
  if (strlen(socket_path) >= sizeof(addr.sun_path)) {
    fprintf(stderr, "rkt-oci-console: console socket path %s is too long\n", socket_path);
    exit(1);
  }
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, socket_path);
  if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) die("cannot connect to the console socket");
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof(control));
  struct iovec iov = {.iov_base = (void *)name, .iov_len = strlen(name)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &master, sizeof(int));
  ssize_t n;
  do n = sendmsg(s, &msg, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) die("cannot send the terminal over the console socket");
  close(s);
}

int main(int argc, char **argv) {
  if (argc < 3 || argv[2][0] != '/') {
    fprintf(stderr, "usage: rkt-oci-console SOCKET /PROGRAM [ARGS...]\n");
    return 1;
  }
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) die("posix_openpt");
  if (grantpt(master) < 0 || unlockpt(master) < 0) die("unlockpt");
  const char *name = ptsname(master);
  if (name == NULL) die("ptsname");
  char slave_name[256];
  snprintf(slave_name, sizeof(slave_name), "%s", name);
  int slave = open(slave_name, O_RDWR | O_NOCTTY);
  if (slave < 0) die("cannot open the terminal");
  send_master(argv[1], master, slave_name);
  close(master);
  if (setsid() < 0) die("setsid");
  if (ioctl(slave, TIOCSCTTY, 0) < 0) die("cannot make the terminal the controlling one");
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) die("dup2");
  if (slave > 2) close(slave);
  execv(argv[2], argv + 2);
  die("cannot execute the program");
  return 1;
}
