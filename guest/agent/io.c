/*
 * App output: a thread of the agent, and `rkt-agent flush`.
 *
 * Why a forwarder: a virtio-serial port can be open in one process at a time
 * (the driver answers EBUSY to a second open), so apps cannot each open
 * rkt.stdout. Instead PID 1 creates FIFOs (rkt-stdout.socket,
 * rkt-stderr.socket and rkt-report.socket: ListenFIFO=/run/rkt/stdout,
 * /run/rkt/stderr and /run/rkt/report) that any number of app units open
 * (StandardOutput=file:/run/rkt/stdout; the report hooks write the third,
 * and an app's device policy would refuse them the port itself), and
 * the agent, which inherits the FIFOs from systemd, copies them to the ports
 * in a thread: a thread rather than a service of its own, because every
 * process systemd spawns costs tens of milliseconds of CPU under tcg.
 * (Sharing PID 1's descriptor of the port itself with StandardOutput=fd:
 * does not work: systemd passes socket descriptors to ExecStart= only, and
 * the unit's ExecStopPost= then fails to start.)
 *
 * Why a flush: the last app's ExecStopPost powers the VM off immediately,
 * and what the app printed last may still be in a FIFO. The forwarder holds
 * an exclusive flock on /run/rkt/io.lock from before each read() until the
 * bytes are written to the port; port writes block until qemu has taken
 * them. `rkt-agent flush` takes the same lock and checks that the FIFOs are
 * empty: then everything written before has reached the host.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IO_LOCK "/run/rkt/io.lock"
#define FLUSH_TIMEOUT_MS 5000
#define NSTREAMS 3

static const struct {
	const char *fdname; /* FileDescriptorName= of the socket unit */
	const char *fifo;
	const char *port;
} streams[NSTREAMS] = {
	{ "rkt-stdout", "/run/rkt/stdout", "rkt.stdout" },
	{ "rkt-stderr", "/run/rkt/stderr", "rkt.stderr" },
	/* the apps' starts and exits, reported by their units' hooks (rkt-report) */
	{ "rkt-report", "/run/rkt/report", "rkt.report" },
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR) continue;
			return -1;
		}
		p += w;
		n -= w;
	}
	return 0;
}

/* The descriptors systemd passed (sd_listen_fds_with_names, without libsystemd). */
static void inherited_fifos(int fifo[NSTREAMS])
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	char *names = getenv("LISTEN_FDNAMES") ? strdup(getenv("LISTEN_FDNAMES")) : NULL;
	char *save = NULL, *name;
	int n;
	for (int s = 0; s < NSTREAMS; s++) fifo[s] = -1;
	if (!pid || !nfds || atoi(pid) != getpid()) return;
	n = atoi(nfds);
	name = names ? strtok_r(names, ":", &save) : NULL;
	for (int i = 0; i < n; i++, name = name ? strtok_r(NULL, ":", &save) : NULL)
		for (int s = 0; s < NSTREAMS; s++)
			if (name && strcmp(name, streams[s].fdname) == 0) fifo[s] = 3 + i;
	free(names);
}

/* Calls fn(name, "vportNpM", ctx) for every virtio-serial port. */
static void for_each_port(void (*fn)(const char *name, const char *dev, void *ctx), void *ctx)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	if (!d) return;
	while ((e = readdir(d))) {
		char p[300], name[64] = "";
		FILE *f;
		if (e->d_name[0] == '.') continue;
		snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
		if (!(f = fopen(p, "re"))) continue;
		if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
		fclose(f);
		if (name[0]) fn(name, e->d_name, ctx);
	}
	closedir(d);
}

struct port_query {
	const char *name;
	char *path;
	size_t size;
	int found;
};

static void match_port(const char *name, const char *dev, void *ctx)
{
	struct port_query *q = ctx;
	if (strcmp(name, q->name) != 0) return;
	snprintf(q->path, q->size, "/dev/%s", dev);
	q->found = 1;
}

/* The device of the port with that name (what /dev/virtio-ports/<name> points to). */
int find_port(const char *name, char *path, size_t size)
{
	struct port_query q = { name, path, size, 0 };
	for_each_port(match_port, &q);
	return q.found;
}

static void link_port(const char *name, const char *dev, void *ctx)
{
	char link[300], target[300];
	(void)ctx;
	if (strchr(name, '/') || name[0] == '.') return;
	snprintf(link, sizeof link, "/dev/virtio-ports/%s", name);
	snprintf(target, sizeof target, "../%s", dev);
	if (symlink(target, link) < 0 && errno != EEXIST)
		logmsg("cannot create %s: %s", link, strerror(errno));
}

/* /dev/virtio-ports/<name> links, as udev's rule would make them (there is no udev). */
static void make_port_links(void)
{
	mkdir("/dev/virtio-ports", 0755);
	for_each_port(link_port, NULL);
}

struct io_state {
	int fifo[NSTREAMS];
	int lock;
};

/* The forwarding thread: blocking reads and writes, so the agent's own
 * loop never waits for the host's output side. */
static void *io_thread(void *arg)
{
	struct io_state *io = arg;
	int port[NSTREAMS] = { -1, -1, -1 };
	static uint8_t buf[65536];

	for (int s = 0; s < NSTREAMS; s++) {
		char path[300];
		/* ports are announced while the kernel boots; allow a late one 2 s */
		for (int tries = 0; tries < 40 && !find_port(streams[s].port, path, sizeof path); tries++)
			usleep(50000);
		/* blocking writes: they return once qemu has taken the data */
		if (find_port(streams[s].port, path, sizeof path)) port[s] = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
		if (port[s] < 0) logmsg("virtio-serial port %s missing: app output to it is discarded", streams[s].port);
	}
	for (;;) {
		struct pollfd pf[NSTREAMS];
		for (int s = 0; s < NSTREAMS; s++) pf[s] = (struct pollfd){ io->fifo[s], POLLIN, 0 };
		if (poll(pf, NSTREAMS, -1) < 0) {
			if (errno == EINTR) continue;
			logmsg("io poll: %s", strerror(errno));
			return NULL;
		}
		for (int s = 0; s < NSTREAMS; s++) {
			ssize_t n;
			if (!pf[s].revents) continue;
			flock(io->lock, LOCK_EX);
			n = read(io->fifo[s], buf, sizeof buf);
			if (n > 0 && port[s] >= 0 && write_all(port[s], buf, n) < 0) {
				logmsg("writing to %s: %s; discarding its output from now on", streams[s].port, strerror(errno));
				close(port[s]);
				port[s] = -1;
			}
			flock(io->lock, LOCK_UN);
		}
	}
}

/* Start forwarding app output in a thread of the agent. Returns -1 if the
 * FIFOs are not there (the agent then serves rkt enter only). */
int io_start(void)
{
	static struct io_state io;
	pthread_t t;

	make_port_links();
	inherited_fifos(io.fifo);
	for (int s = 0; s < NSTREAMS; s++) {
		if (io.fifo[s] < 0) io.fifo[s] = open(streams[s].fifo, O_RDWR | O_CLOEXEC); /* started by hand */
		if (io.fifo[s] < 0) {
			logmsg("no %s: %s; app output is not forwarded", streams[s].fifo, strerror(errno));
			return -1;
		}
		fcntl(io.fifo[s], F_SETFD, FD_CLOEXEC); /* inherited ones are not */
		fcntl(io.fifo[s], F_SETFL, fcntl(io.fifo[s], F_GETFL) | O_NONBLOCK);
	}
	io.lock = open(IO_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (io.lock < 0) {
		logmsg("cannot open %s: %s", IO_LOCK, strerror(errno));
		return -1;
	}
	if (pthread_create(&t, NULL, io_thread, &io) != 0) {
		logmsg("cannot start the output thread");
		return -1;
	}
	pthread_detach(t);
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int flush_main(void)
{
	int fifo[NSTREAMS], lock;
	long long deadline = now_ms() + FLUSH_TIMEOUT_MS;
	for (int s = 0; s < NSTREAMS; s++) {
		/* a reader that never reads: only to ask how much is queued */
		fifo[s] = open(streams[s].fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fifo[s] < 0) return 0; /* no FIFOs, nothing to flush */
	}
	lock = open(IO_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0) return 0;
	for (;;) {
		int queued = 0, q;
		flock(lock, LOCK_EX);
		for (int s = 0; s < NSTREAMS; s++)
			if (ioctl(fifo[s], FIONREAD, &q) == 0) queued += q;
		flock(lock, LOCK_UN);
		/* and what attached apps wrote (app-io.c) */
		queued += appio_pending();
		if (!queued) return 0;
		if (now_ms() > deadline) {
			logmsg("app output not forwarded after %d ms (host not reading?); %d bytes lost", FLUSH_TIMEOUT_MS, queued);
			return 1;
		}
		usleep(2000);
	}
}
