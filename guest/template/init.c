/*
 * rkt-template-init: PID 1 of a kvm template VM (stage1-kvm/template*.ts).
 *
 * It runs from a small initramfs, before the pod's root filesystem exists.
 * It says "ready" on the virtio-serial port rkt.template and waits there
 * for one line. The host takes its snapshot while it waits; every pod
 * restored from that snapshot resumes here, so everything a pod must not
 * share with another is set after the line arrives, from the line:
 *
 *   go SEED TIME_NS MACHINE_ID HOSTNAME\n
 *
 *   SEED        128 hex digits: 64 bytes from the host's getrandom(), credited
 *               to the kernel's input pool and forced into a reseed of its
 *               CRNG, so no two restored guests continue the template's stream
 *   TIME_NS     the host's CLOCK_REALTIME in nanoseconds (the template's clock
 *               stopped when it was saved)
 *   MACHINE_ID  32 hex digits: /etc/machine-id of the pod's root (a bind mount)
 *   HOSTNAME    the pod's hostname (1-63 of [A-Za-z0-9.-])
 *
 * Then it binds the devices the restored VM has and the template had not
 * (the pod's virtio-fs root and NICs sit in virtio-mmio slots that were
 * empty when the template booted), mounts the pod's root over virtio-fs,
 * makes it the root and executes init as the kernel would on a cold boot:
 * the command line's init= (systemd by default), with the arguments and
 * environment the kernel gave this program. Anything wrong before that
 * powers the VM off (the console says why); an init that cannot be
 * executed ends this PID 1, and the kernel panics, as on a cold boot.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "rkt.template"
#define ROOT_TAG "rktroot"
#define NEWROOT "/newroot"
#define DEFAULT_INIT "/usr/lib/systemd/systemd"
#define MACHINE_ID_FILE "/machine-id"
#define SEED_BYTES 64
#define LINE_MAX_BYTES 512

static void die(const char *what) {
  fprintf(stderr, "rkt-template-init: %s: %s\n", what, strerror(errno));
  sync();
  reboot(RB_POWER_OFF);
  _exit(1);
}

static int read_small(const char *path, char *buf, size_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, len - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  while (n > 0 && (buf[n - 1] == '\n')) buf[--n] = 0;
  return 0;
}

static int write_str(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, s, strlen(s));
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* /dev/vportNpM of the port named PORT_NAME. */
static int open_port(void) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) die("no virtio-serial ports");
  struct dirent *e;
  char path[512], name[128];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    if (read_small(path, name, sizeof name) == 0 && strcmp(name, PORT_NAME) == 0) {
      snprintf(path, sizeof path, "/dev/%s", e->d_name);
      closedir(d);
      int fd = open(path, O_RDWR | O_CLOEXEC);
      if (fd < 0) die("open " PORT_NAME);
      return fd;
    }
  }
  closedir(d);
  errno = ENOENT;
  die("no port " PORT_NAME);
  return -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

struct go {
  unsigned char seed[SEED_BYTES];
  long long time_ns;
  char machine_id[33];
  char hostname[64];
};

/* Strict: anything but the grammar above is refused. */
static int parse_go(char *line, struct go *g) {
  char *f[6];
  int n = 0;
  for (char *tok = strtok(line, " "); tok && n < 6; tok = strtok(NULL, " ")) f[n++] = tok;
  if (n != 5 || strcmp(f[0], "go") != 0) return -1;
  if (strlen(f[1]) != 2 * SEED_BYTES) return -1;
  for (int i = 0; i < SEED_BYTES; i++) {
    int hi = hexval(f[1][2 * i]), lo = hexval(f[1][2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    g->seed[i] = (unsigned char)(hi << 4 | lo);
  }
  if (strlen(f[2]) == 0 || strlen(f[2]) > 19) return -1;
  g->time_ns = 0;
  for (char *p = f[2]; *p; p++) {
    if (!isdigit((unsigned char)*p)) return -1;
    g->time_ns = g->time_ns * 10 + (*p - '0');
  }
  if (strlen(f[3]) != 32) return -1;
  for (char *p = f[3]; *p; p++) if (hexval(*p) < 0) return -1;
  strcpy(g->machine_id, f[3]);
  size_t hl = strlen(f[4]);
  if (hl == 0 || hl > 63 || !isalnum((unsigned char)f[4][0])) return -1;
  for (char *p = f[4]; *p; p++) if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-') return -1;
  strcpy(g->hostname, f[4]);
  return 0;
}

static void read_go(int port, struct go *g) {
  char line[LINE_MAX_BYTES];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(port, line + len, sizeof line - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read " PORT_NAME);
    if (n == 0) { usleep(10000); continue; } /* no host end yet */
    len += (size_t)n;
    char *nl = memchr(line, '\n', len);
    if (nl) { *nl = 0; break; }
    if (len == sizeof line - 1) { errno = EMSGSIZE; die("line from the host"); }
  }
  if (parse_go(line, g) != 0) { errno = EINVAL; die("line from the host"); }
}

/* Credit the host's bytes and make the CRNG reseed from them now, not at its next scheduled reseed. */
static void reseed(const unsigned char *seed) {
  struct { struct rand_pool_info info; unsigned char buf[SEED_BYTES]; } e;
  e.info.entropy_count = SEED_BYTES * 8;
  e.info.buf_size = SEED_BYTES;
  memcpy(e.buf, seed, SEED_BYTES);
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/urandom");
  if (ioctl(fd, RNDADDENTROPY, &e) != 0) die("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) != 0) die("RNDRESEEDCRNG");
  explicit_bzero(&e, sizeof e);
  close(fd);
}

/* The pod's devices sit in slots whose probe found nothing when the template booted: probe them again. */
static void bind_new_devices(void) {
  DIR *d = opendir("/sys/bus/platform/devices");
  if (!d) die("/sys/bus/platform/devices");
  struct dirent *e;
  char path[512];
  struct stat st;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, "LNRO0005:", 9) != 0) continue;
    snprintf(path, sizeof path, "/sys/bus/platform/devices/%s/driver", e->d_name);
    if (lstat(path, &st) == 0) continue;
    /* an empty slot refuses (ENODEV): nothing to do */
    (void)write_str("/sys/bus/platform/drivers/virtio-mmio/bind", e->d_name);
  }
  closedir(d);
  /* PCI: hotplugged devices are found by a rescan (no hotplug driver needed) */
  (void)write_str("/sys/bus/pci/rescan", "1");
}

static long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* A line in the kernel log at info level: on the console with --debug only. */
static void note(const char *line) {
  int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!write(fd, line, strlen(line));
  close(fd);
}

/* The last init= of the kernel command line (the kernel itself ignores it when there is an initramfs). */
static void cmdline_init(char *out, size_t len) {
  char buf[4096];
  snprintf(out, len, "%s", DEFAULT_INIT);
  if (read_small("/proc/cmdline", buf, sizeof buf) != 0) return;
  for (char *tok = strtok(buf, " \t"); tok; tok = strtok(NULL, " \t")) {
    if (strncmp(tok, "init=", 5) == 0 && tok[5] == '/') snprintf(out, len, "%s", tok + 5);
  }
}

static void move_to(const char *from, const char *to) {
  if (mount(from, to, NULL, MS_MOVE, NULL) != 0) die(to);
}

int main(int argc, char **argv) {
  if (getpid() != 1) { fprintf(stderr, "rkt-template-init: not PID 1\n"); return 1; }
  mkdir("/proc", 0555); mkdir("/sys", 0555); mkdir("/dev", 0755); mkdir(NEWROOT, 0755);
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("mount /proc");
  if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("mount /sys");
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0) die("mount /dev");

  int port = open_port();
  static const char ready[] = "ready\n";
  if (write(port, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1)) die("write " PORT_NAME);

  /* The snapshot is taken here. */
  struct go g;
  read_go(port, &g);
  long long t0 = now_us();
  reseed(g.seed);
  explicit_bzero(g.seed, sizeof g.seed);
  struct timespec ts = { .tv_sec = g.time_ns / 1000000000LL, .tv_nsec = g.time_ns % 1000000000LL };
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) die("clock_settime");
  if (sethostname(g.hostname, strlen(g.hostname)) != 0) die("sethostname");
  close(port);
  char init[256];
  cmdline_init(init, sizeof init);

  bind_new_devices();
  long long t1 = now_us();
  if (mount(ROOT_TAG, NEWROOT, "virtiofs", 0, NULL) != 0) die("mount the pod's root");
  long long t2 = now_us();
  /* what a cold boot's kernel mounts (DEVTMPFS_MOUNT); systemd mounts /proc and /sys itself */
  move_to("/dev", NEWROOT "/dev");
  /* the pod's machine id, as systemd.machine_id= gives it on a cold boot: the root is read-only */
  int mfd = open(MACHINE_ID_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (mfd < 0 || dprintf(mfd, "%s\n", g.machine_id) != 33 || close(mfd) != 0) die(MACHINE_ID_FILE);
  if (mount(MACHINE_ID_FILE, NEWROOT "/etc/machine-id", NULL, MS_BIND, NULL) != 0) die("bind /etc/machine-id");
  if (mount(NULL, NEWROOT "/etc/machine-id", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) die("remount /etc/machine-id");
  if (umount2("/proc", MNT_DETACH) != 0) die("umount /proc");
  if (umount2("/sys", MNT_DETACH) != 0) die("umount /sys");
  /* the initramfs holds nothing but this program: free it */
  unlink("/init");
  if (chdir(NEWROOT) != 0) die("chdir " NEWROOT);
  move_to(".", "/");
  if (chroot(".") != 0) die("chroot");
  if (chdir("/") != 0) die("chdir /");

  char line[320];
  /* on the console always: the pod's console log then starts with how its guest came up */
  printf("rkt-template-init: restored from a template; the pod's devices found in %lld ms, its root mounted in %lld ms\n", (t1 - t0) / 1000, (t2 - t1) / 1000);
  fflush(stdout);
  /* the line the kernel prints on a cold boot, which the host's boot trace marks (boot-marks.ts) */
  snprintf(line, sizeof line, "<6>Run %s as init process\n", init);
  note(line);
  /* the kernel's arguments for init, after init's own name */
  argv[0] = init;
  (void)argc;
  execv(init, argv);
  fprintf(stderr, "rkt-template-init: requested init %s failed: %s\n", init, strerror(errno));
  return 1;
}
