/*
 * rkt-agent: the guest side of `rkt enter` for the kvm stage1.
 *
 * Why C and not TypeScript: everything else in rkt-ts is TypeScript, but
 * this runs inside the pod VM. A node runtime is ~100 MB that every pod's
 * stage1 rootfs would carry, and it takes seconds to start under tcg. A
 * static C binary is ~800 KB, needs no libraries in the guest and starts in
 * milliseconds.
 *
 * It serves one session per virtio-serial port, on every port the host
 * offers ("rkt.agent", "rkt.agent.1", ...) at once, so that several
 * `rkt enter` sessions run side by side (protocol: guest/agent/PROTOCOL.md):
 * the host sends EXEC, the
 * agent forks, the child enters the app (its namespaces, or a chroot into
 * /opt/stage2/<app>/rootfs), drops to the requested uid/gid/groups, changes
 * directory and execs argv; STDIN frames feed the child, its stdout/stderr
 * come back as frames, then one EXIT frame.
 *
 * It also copies the apps' output to the ports rkt.stdout and rkt.stderr
 * (a thread, see io.c), and watches the ACPI power button (QMP
 * system_powerdown on microvm) to ask systemd for an orderly power-off,
 * since the guest runs no logind. All in one process because each process
 * systemd spawns costs the pod tens of milliseconds under tcg.
 *
 * Everything is one poll() loop over non-blocking descriptors: a virtio
 * port blocks writers while the host is not connected, so the agent must
 * never block on it.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "rkt.agent"
/* The host may offer further ports "rkt.agent.1" ... "rkt.agent.<MAX_PORTS-1>":
 * one session per port, all served at once by this one process. */
#define MAX_PORTS 16
#define DRAIN_MS 200 /* how long to wait for output after the child exited */
/* How long the port may look hung up before the session is given up. The
 * driver takes "host connected" from a control message handled in a
 * workqueue, but data in the interrupt handler: a host's first bytes can
 * arrive while the port still reports POLLHUP. */
#define HUP_GRACE_MS 1000
/* The same for a session whose host the port has not yet reported as
 * connected: its "connected" message can lag its data by seconds on a
 * loaded host, and giving up then would lose a live session's answer. */
#define LATE_CONNECT_MS 10000
/* A hung-up port is looked at again after this long even without SIGIO:
 * a host's connection has been seen to go unsignalled while other ports
 * were busy. */
#define RECHECK_MS 500

/* One virtio-serial port and the session on it. */
struct chan {
	int port;              /* the virtio port, -1 if closed */
	char port_path[300];
	int connected;         /* 0 after a hang-up, until SIGIO says something changed */
	long long hup_at;      /* when the port was first seen hung up (ms), 0 if connected */
	int seen_up;           /* the port has reported its host connected since the session began */
	long long recheck_at;  /* while hung up: when to look at the port again, should SIGIO be missed (ms) */
	struct buf rbuf;       /* bytes from the host, not yet a whole frame */
	struct buf wbuf;       /* frames for the host, not yet written */
	uint32_t wfront_left;  /* bytes of the frame at the front of wbuf still to write (0: at a frame start) */
	struct session s;
};

static struct {
	struct chan ch[MAX_PORTS];
	int nch;
	int sigfd;
	int power;             /* power button event device, -1 if none */
} A;

void logmsg(const char *fmt, ...)
{
	static int kmsg = -2;
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof line, "<3>rkt-agent: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	/* /dev/kmsg reaches the serial console (and --debug) without a journald */
	if (kmsg == -2) kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (kmsg < 0 || write(kmsg, line, n) < 0) {
		if (write(2, line + 3, n - 3) < 0) { /* nowhere left to report */ }
	}
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int open_port(struct chan *c)
{
	c->port = open(c->port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (c->port < 0) return -1;
	/* SIGIO tells us when the host connects: until then the port reports
	 * POLLHUP (and read() returns 0) permanently, so poll() cannot wait. */
	if (fcntl(c->port, F_SETOWN, getpid()) < 0 ||
	    fcntl(c->port, F_SETFL, fcntl(c->port, F_GETFL) | O_ASYNC) < 0)
		logmsg("cannot enable SIGIO on %s: %s", c->port_path, strerror(errno));
	c->connected = 1; /* find out with the next poll() */
	return 0;
}


/* End a session whose host went away: kill the command and drop, of what
 * was queued for that host, every frame not yet begun (the rest of a
 * half-written frame still goes out, so the stream stays framed). */
static void end_session(struct chan *c)
{
	session_abort(&c->s);
	c->wbuf.len = c->wfront_left < c->wbuf.len ? c->wfront_left : c->wbuf.len;
}

/* ... and what that host sent. */
static void drop_session(struct chan *c)
{
	end_session(c);
	c->rbuf.len = 0;
}

/* After a protocol violation: a fresh open also discards what the kernel
 * still holds from that host. */
static void reset_port(struct chan *c)
{
	drop_session(c);
	c->wbuf.len = c->wfront_left = 0;
	close(c->port);
	if (open_port(c) < 0) {
		logmsg("cannot reopen %s: %s", c->port_path, strerror(errno));
		exit(1); /* systemd restarts us */
	}
}

static int has_state(const struct chan *c)
{
	return session_active(&c->s) || c->rbuf.len || c->wbuf.len;
}

static long long grace(const struct chan *c)
{
	return c->seen_up ? HUP_GRACE_MS : LATE_CONNECT_MS;
}

static void hung_up(struct chan *c)
{
	long long now = now_ms();
	if (!c->hup_at) c->hup_at = now;
	c->recheck_at = now + RECHECK_MS;
	c->connected = 0;
}

/* One complete frame from the host. Returns -1 on a protocol violation. */
static int handle_frame(struct chan *c, uint8_t type, const uint8_t *p, uint32_t len)
{
	struct session *s = &c->s;
	if (frame_check_from_host(type, len) < 0) {
		logmsg("protocol error: frame of type 0x%02x with %u bytes", type, len);
		return -1;
	}
	switch (type) {
	case FRAME_EXEC:
		/* A host sends EXEC mid-session only if it is a new one and the
		 * previous went away unnoticed (its hang-up and our reconnection
		 * can overlap): end the old session. (Not drop_session(): rbuf,
		 * being parsed, holds the new host's frames.) */
		if (session_active(s)) end_session(c);
		c->seen_up = 0;
		session_start(s, p, len);
		return 0;
	case FRAME_ATTACH:
		/* the same as EXEC: only a new host sends it mid-session */
		if (session_active(s)) end_session(c);
		c->seen_up = 0;
		session_attach(s, p, len);
		return 0;
	case FRAME_APP:
		/* the same again: a new host's first frame */
		if (session_active(s)) end_session(c);
		c->seen_up = 0;
		session_app(s, p, len);
		return 0;
	case FRAME_STDIN:
		session_stdin(s, p, len);
		return 0;
	case FRAME_STDIN_EOF:
		session_stdin_eof(s);
		return 0;
	case FRAME_RESIZE:
		session_resize(s, get_u16(p), get_u16(p + 2));
		return 0;
	case FRAME_SIGNAL:
		session_signal(s, p[0]);
		return 0;
	}
	return -1; /* not reached: frame_check_from_host() knows the same types */
}

static void read_port(struct chan *c)
{
	uint8_t tmp[65536];
	ssize_t n = read(c->port, tmp, sizeof tmp);
	size_t off = 0;
	if (n <= 0) {
		/* 0: nothing buffered and the host is not connected */
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) hung_up(c);
		return;
	}
	buf_append(&c->rbuf, tmp, n);
	while (off < c->rbuf.len) {
		long size = frame_size(c->rbuf.data + off, c->rbuf.len - off);
		if (size < 0) {
			logmsg("protocol error: frame of %u bytes", get_u32(c->rbuf.data + off + 1));
			reset_port(c);
			return;
		}
		if (size == 0) break;
		if (handle_frame(c, c->rbuf.data[off], c->rbuf.data + off + FRAME_HDR, size - FRAME_HDR) < 0) {
			reset_port(c);
			return;
		}
		off += size;
	}
	buf_consume(&c->rbuf, off);
}

static void flush_port(struct chan *c)
{
	while (c->wbuf.len) {
		/* the driver takes at most 32 KiB per write() anyway */
		size_t chunk = c->wbuf.len < 32768 ? c->wbuf.len : 32768;
		ssize_t n = write(c->port, c->wbuf.data, chunk);
		if (n < 0) return; /* EAGAIN (full, or not connected): wait for POLLOUT or SIGIO */
		/* keep track of frame boundaries for drop_session() */
		for (size_t left = n; left; ) {
			size_t take;
			if (!c->wfront_left) c->wfront_left = FRAME_HDR + get_u32(c->wbuf.data + 1);
			take = left < c->wfront_left ? left : c->wfront_left;
			c->wfront_left -= take;
			left -= take;
			buf_consume(&c->wbuf, take);
		}
	}
}

static void open_power_button(void)
{
	DIR *d = opendir("/sys/class/input");
	struct dirent *e;
	A.power = -1;
	if (!d) return;
	while (A.power < 0 && (e = readdir(d))) {
		char p[300], name[64] = "";
		FILE *f;
		if (strncmp(e->d_name, "event", 5) != 0) continue;
		snprintf(p, sizeof p, "/sys/class/input/%s/device/name", e->d_name);
		if (!(f = fopen(p, "re"))) continue;
		if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
		fclose(f);
		if (strcmp(name, "Power Button") != 0) continue;
		snprintf(p, sizeof p, "/dev/input/%s", e->d_name);
		A.power = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	}
	closedir(d);
}

static void read_power_button(void)
{
	struct input_event ev[16];
	ssize_t n = read(A.power, ev, sizeof ev);
	for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof ev[0]; i++) {
		if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1) {
			/* systemd's documented signal for "start poweroff.target":
			 * apps get SIGTERM and record their exit statuses. */
			if (kill(1, SIGRTMIN + 4) < 0) logmsg("cannot signal systemd: %s", strerror(errno));
		}
	}
}

static void reap(void)
{
	int st;
	pid_t pid;
	/* also reaps children of aborted sessions */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
		for (int i = 0; i < A.nch && !session_reaped(&A.ch[i].s, pid, st); i++) {}
}

/* The agent's ports: rkt.agent, then rkt.agent.1, rkt.agent.2, ... as far
 * as the host offers them. Ports are announced by the host asynchronously
 * during boot: a late first one gets a few seconds, and the others are
 * looked for once it is there (they are announced together). */
static int find_ports(void)
{
	int tries;
	for (tries = 0; !find_port(PORT_NAME, A.ch[0].port_path, sizeof A.ch[0].port_path); tries++) {
		if (tries == 50) return 0;
		usleep(100000);
	}
	A.nch = 1;
	for (int i = 1; i < MAX_PORTS; i++) {
		char name[32];
		snprintf(name, sizeof name, PORT_NAME ".%d", i);
		if (!find_port(name, A.ch[i].port_path, sizeof A.ch[i].port_path)) break;
		A.nch = i + 1;
	}
	return 1;
}

/* sd_notify("READY=1") without libsystemd: the apps' units wait for it
 * (After=rkt-agent.service, Type=notify), so their streams exist before
 * they start. */
static void notify_ready(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;
	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof sa.sun_path) return;
	strcpy(sa.sun_path, path);
	if (path[0] == '@') sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) return;
	if (sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + strlen(path)) < 0)
		logmsg("cannot tell systemd the agent is ready: %s", strerror(errno));
	close(fd);
	unsetenv("NOTIFY_SOCKET");
}

/* Returns 1 when the agent should exit. */
static int read_signals(void)
{
	struct signalfd_siginfo si;
	int quit = 0;
	while (read(A.sigfd, &si, sizeof si) == sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD: reap(); break;
		case SIGIO: /* a host connected, disconnected or sent data: on some port */
			for (int i = 0; i < A.nch; i++) A.ch[i].connected = 1;
			break;
		default: quit = 1; break;           /* SIGTERM/SIGINT from systemd */
		}
	}
	return quit;
}

int main(int argc, char **argv)
{
	sigset_t mask;

	/* `rkt-agent flush`: the helper of rkt-app-exited (io.c). */
	if (argc == 2 && strcmp(argv[1], "flush") == 0) return flush_main();
	if (argc != 1) {
		logmsg("usage: rkt-agent [flush]");
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	A.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	for (int i = 0; i < MAX_PORTS; i++) {
		A.ch[i].port = -1;
		session_init(&A.ch[i].s, &A.ch[i].wbuf);
	}
	/* after blocking the signals: the thread must not take SIGIO/SIGCHLD */
	io_start();
	/* the apps' own streams, before the apps start */
	appio_setup();
	notify_ready();

	if (!find_ports()) {
		logmsg("no virtio-serial port named %s: rkt enter is not available", PORT_NAME);
		/* keep forwarding app output until systemd stops us */
		for (;;) {
			struct pollfd pf = { A.sigfd, POLLIN, 0 };
			if (poll(&pf, 1, -1) > 0 && read_signals()) return 0;
		}
	}
	for (int i = 0; i < A.nch; i++) {
		if (open_port(&A.ch[i]) < 0) {
			logmsg("cannot open %s: %s", A.ch[i].port_path, strerror(errno));
			return 1;
		}
	}
	open_power_button();

	for (;;) {
		struct pollfd pf[2 + 4 * MAX_PORTS + 64];
		/* per channel: indexes into pf of its port, child stdin, stdout, stderr */
		int idx[MAX_PORTS][4];
		int np = 0, ipwr = -1, nlisten;
		long long now, deadline = -1;
		int timeout, rc;

		pf[np++] = (struct pollfd){ A.sigfd, POLLIN, 0 };
		if (A.power >= 0) { ipwr = np; pf[np++] = (struct pollfd){ A.power, POLLIN, 0 }; }
		nlisten = appio_pollfds(pf + np, 64);
		np += nlisten;
		for (int i = 0; i < A.nch; i++) {
			struct chan *c = &A.ch[i];
			struct session *s = &c->s;
			idx[i][0] = idx[i][1] = idx[i][2] = idx[i][3] = -1;
			if (c->connected) {
				/* back-pressure: no new input while the child has not taken
				 * the last STDIN, no child output while the host is behind */
				short ev = (s->inbuf.len ? 0 : POLLIN) | (c->wbuf.len ? POLLOUT : 0);
				idx[i][0] = np; pf[np++] = (struct pollfd){ c->port, ev, 0 };
				if (!c->wbuf.len && s->out >= 0) { idx[i][2] = np; pf[np++] = (struct pollfd){ s->out, POLLIN, 0 }; }
				if (!c->wbuf.len && s->err >= 0) { idx[i][3] = np; pf[np++] = (struct pollfd){ s->err, POLLIN, 0 }; }
			} else if (deadline < 0 || c->recheck_at < deadline) {
				deadline = c->recheck_at;
			}
			if (s->inbuf.len && s->in >= 0) { idx[i][1] = np; pf[np++] = (struct pollfd){ s->in, POLLOUT, 0 }; }
			if (s->exited && s->drain_until && (deadline < 0 || s->drain_until < deadline)) deadline = s->drain_until;
			if (c->hup_at && has_state(c) && (deadline < 0 || c->hup_at + grace(c) < deadline)) deadline = c->hup_at + grace(c);
		}
		now = now_ms();
		timeout = deadline < 0 ? -1 : deadline <= now ? 0 : (int)(deadline - now);

		rc = poll(pf, np, timeout);
		if (rc < 0 && errno != EINTR) {
			logmsg("poll: %s", strerror(errno));
			return 1;
		}
		if (pf[0].revents && read_signals()) break;
		if (nlisten) appio_accept();
		if (ipwr >= 0 && pf[ipwr].revents) read_power_button();
		for (int i = 0; i < A.nch; i++) {
			struct chan *c = &A.ch[i];
			struct session *s = &c->s;
			int ip = idx[i][0];
			if (ip < 0 && now_ms() >= c->recheck_at) c->connected = 1; /* hung up a while: look again */
			if (idx[i][1] >= 0 && pf[idx[i][1]].revents) session_write_stdin(s);
			/* an attached app's output is read under its lock, which `rkt-agent flush` waits for */
			if ((idx[i][2] >= 0 && pf[idx[i][2]].revents) || (idx[i][3] >= 0 && pf[idx[i][3]].revents)) {
				if (!s->attached || appio_hold(s->attached, 1) == 0) {
					if (idx[i][2] >= 0 && pf[idx[i][2]].revents) session_read_output(s, 1);
					if (idx[i][3] >= 0 && pf[idx[i][3]].revents) session_read_output(s, 2);
				}
			}
			if (ip >= 0) {
				short r = pf[ip].revents;
				/* Data first, even with POLLHUP: see HUP_GRACE_MS. read()
				 * returning 0 is what says the host is gone. */
				if (r & POLLIN) read_port(c);
				else if (r & POLLHUP) hung_up(c);
				if (!(r & POLLHUP)) c->hup_at = 0, c->seen_up = 1;
			}
			/* Hung up for good: the host went away. Forget its session. */
			if (c->hup_at && has_state(c) && now_ms() >= c->hup_at + grace(c)) drop_session(c);
			session_maybe_finish(s, now_ms(), DRAIN_MS);
			if (c->connected && c->wbuf.len) flush_port(c);
			if (s->attached && !c->wbuf.len) appio_hold(s->attached, 0);
		}
	}
	for (int i = 0; i < A.nch; i++) session_abort(&A.ch[i].s);
	return 0;
}
