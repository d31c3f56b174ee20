/*
 * rkt-agent: the guest side of `rkt enter` for the kvm stage1.
 *
 * Why C and not TypeScript: everything else in rkt-ts is TypeScript, but
 * this runs inside the pod VM. A node runtime is ~100 MB that every pod's
 * stage1 rootfs would carry, and it takes seconds to start under tcg. A
 * static C binary is ~800 KB, needs no libraries in the guest and starts in
 * milliseconds.
 *
 * It serves one session at a time over the virtio-serial port named
 * "rkt.agent" (protocol: guest/agent/PROTOCOL.md): the host sends EXEC, the
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
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "rkt.agent"
#define DRAIN_MS 200 /* how long to wait for output after the child exited */
/* How long the port may look hung up before the session is given up. The
 * driver takes "host connected" from a control message handled in a
 * workqueue, but data in the interrupt handler: a host's first bytes can
 * arrive while the port still reports POLLHUP. */
#define HUP_GRACE_MS 1000

static struct {
	int port;              /* the virtio port, -1 if closed */
	char port_path[300];
	int connected;         /* 0 after a hang-up, until SIGIO says something changed */
	long long hup_at;      /* when the port was first seen hung up (ms), 0 if connected */
	struct buf rbuf;       /* bytes from the host, not yet a whole frame */
	struct buf wbuf;       /* frames for the host, not yet written */
	uint32_t wfront_left;  /* bytes of the frame at the front of wbuf still to write (0: at a frame start) */
	int sigfd;
	int power;             /* power button event device, -1 if none */
	struct session s;
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

static int open_port(void)
{
	A.port = open(A.port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (A.port < 0) return -1;
	/* SIGIO tells us when the host connects: until then the port reports
	 * POLLHUP (and read() returns 0) permanently, so poll() cannot wait. */
	if (fcntl(A.port, F_SETOWN, getpid()) < 0 ||
	    fcntl(A.port, F_SETFL, fcntl(A.port, F_GETFL) | O_ASYNC) < 0)
		logmsg("cannot enable SIGIO on %s: %s", A.port_path, strerror(errno));
	A.connected = 1; /* find out with the next poll() */
	return 0;
}


/* End a session whose host went away: kill the command and drop, of what
 * was queued for that host, every frame not yet begun (the rest of a
 * half-written frame still goes out, so the stream stays framed). */
static void end_session(void)
{
	session_abort(&A.s);
	A.wbuf.len = A.wfront_left < A.wbuf.len ? A.wfront_left : A.wbuf.len;
}

/* ... and what that host sent. */
static void drop_session(void)
{
	end_session();
	A.rbuf.len = 0;
}

/* After a protocol violation: a fresh open also discards what the kernel
 * still holds from that host. */
static void reset_port(void)
{
	drop_session();
	A.wbuf.len = A.wfront_left = 0;
	close(A.port);
	if (open_port() < 0) {
		logmsg("cannot reopen %s: %s", A.port_path, strerror(errno));
		exit(1); /* systemd restarts us */
	}
}

static int has_state(void)
{
	return A.s.pid > 0 || A.rbuf.len || A.wbuf.len;
}

static void hung_up(void)
{
	if (!A.hup_at) A.hup_at = now_ms();
	A.connected = 0;
}

void send_frame(uint8_t type, const void *data, uint32_t len)
{
	frame_append(&A.wbuf, type, data, len);
}

void send_frame_u32(uint8_t type, uint32_t v)
{
	frame_append_u32(&A.wbuf, type, v);
}

void send_error(uint32_t status, const char *msg)
{
	frame_append_error(&A.wbuf, status, msg);
}

/* One complete frame from the host. Returns -1 on a protocol violation. */
static int handle_frame(uint8_t type, const uint8_t *p, uint32_t len)
{
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
		if (A.s.pid > 0) end_session();
		session_start(&A.s, p, len);
		return 0;
	case FRAME_STDIN:
		session_stdin(&A.s, p, len);
		return 0;
	case FRAME_STDIN_EOF:
		session_stdin_eof(&A.s);
		return 0;
	case FRAME_RESIZE:
		session_resize(&A.s, get_u16(p), get_u16(p + 2));
		return 0;
	case FRAME_SIGNAL:
		session_signal(&A.s, p[0]);
		return 0;
	}
	return -1; /* not reached: frame_check_from_host() knows the same types */
}

static void read_port(void)
{
	uint8_t tmp[65536];
	ssize_t n = read(A.port, tmp, sizeof tmp);
	size_t off = 0;
	if (n <= 0) {
		/* 0: nothing buffered and the host is not connected */
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) hung_up();
		return;
	}
	buf_append(&A.rbuf, tmp, n);
	while (off < A.rbuf.len) {
		long size = frame_size(A.rbuf.data + off, A.rbuf.len - off);
		if (size < 0) {
			logmsg("protocol error: frame of %u bytes", get_u32(A.rbuf.data + off + 1));
			reset_port();
			return;
		}
		if (size == 0) break;
		if (handle_frame(A.rbuf.data[off], A.rbuf.data + off + FRAME_HDR, size - FRAME_HDR) < 0) {
			reset_port();
			return;
		}
		off += size;
	}
	buf_consume(&A.rbuf, off);
}

static void flush_port(void)
{
	while (A.wbuf.len) {
		/* the driver takes at most 32 KiB per write() anyway */
		size_t chunk = A.wbuf.len < 32768 ? A.wbuf.len : 32768;
		ssize_t n = write(A.port, A.wbuf.data, chunk);
		if (n < 0) return; /* EAGAIN (full, or not connected): wait for POLLOUT or SIGIO */
		/* keep track of frame boundaries for drop_session() */
		for (size_t left = n; left; ) {
			size_t take;
			if (!A.wfront_left) A.wfront_left = FRAME_HDR + get_u32(A.wbuf.data + 1);
			take = left < A.wfront_left ? left : A.wfront_left;
			A.wfront_left -= take;
			left -= take;
			buf_consume(&A.wbuf, take);
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

/* Returns 1 when the agent should exit. */
static int read_signals(void)
{
	struct signalfd_siginfo si;
	int quit = 0;
	while (read(A.sigfd, &si, sizeof si) == sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD: session_reap(&A.s); break;
		case SIGIO: A.connected = 1; break; /* host connected, disconnected or sent data */
		default: quit = 1; break;           /* SIGTERM/SIGINT from systemd */
		}
	}
	return quit;
}

int main(int argc, char **argv)
{
	sigset_t mask;
	int tries;

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
	session_init(&A.s);
	/* after blocking the signals: the thread must not take SIGIO/SIGCHLD */
	io_start();

	/* Ports are announced by the host asynchronously during boot: give a
	 * late one a few seconds before giving up. */
	for (tries = 0; !find_port(PORT_NAME, A.port_path, sizeof A.port_path); tries++) {
		if (tries == 50) {
			logmsg("no virtio-serial port named %s: rkt enter is not available", PORT_NAME);
			/* keep forwarding app output until systemd stops us */
			for (;;) {
				struct pollfd pf = { A.sigfd, POLLIN, 0 };
				if (poll(&pf, 1, -1) > 0 && read_signals()) return 0;
			}
		}
		usleep(100000);
	}
	if (open_port() < 0) {
		logmsg("cannot open %s: %s", A.port_path, strerror(errno));
		return 1;
	}
	open_power_button();

	for (;;) {
		struct pollfd pf[6];
		int np = 0, ip = -1, ipwr = -1, iin = -1, iout = -1, ierr = -1;
		/* while hung up: SIGIO wakes us; poll again now and then should one be missed */
		long long now, deadline = A.connected ? -1 : now_ms() + 2000;
		int timeout, rc;

		pf[np++] = (struct pollfd){ A.sigfd, POLLIN, 0 };
		if (A.power >= 0) { ipwr = np; pf[np++] = (struct pollfd){ A.power, POLLIN, 0 }; }
		if (A.connected) {
			/* back-pressure: no new input while the child has not taken
			 * the last STDIN, no child output while the host is behind */
			short ev = (A.s.inbuf.len ? 0 : POLLIN) | (A.wbuf.len ? POLLOUT : 0);
			ip = np; pf[np++] = (struct pollfd){ A.port, ev, 0 };
			if (!A.wbuf.len && A.s.out >= 0) { iout = np; pf[np++] = (struct pollfd){ A.s.out, POLLIN, 0 }; }
			if (!A.wbuf.len && A.s.err >= 0) { ierr = np; pf[np++] = (struct pollfd){ A.s.err, POLLIN, 0 }; }
		}
		if (A.s.inbuf.len && A.s.in >= 0) { iin = np; pf[np++] = (struct pollfd){ A.s.in, POLLOUT, 0 }; }
		if (A.s.exited && A.s.drain_until && (deadline < 0 || A.s.drain_until < deadline)) deadline = A.s.drain_until;
		if (A.hup_at && has_state() && (deadline < 0 || A.hup_at + HUP_GRACE_MS < deadline)) deadline = A.hup_at + HUP_GRACE_MS;
		now = now_ms();
		timeout = deadline < 0 ? -1 : deadline <= now ? 0 : (int)(deadline - now);

		rc = poll(pf, np, timeout);
		if (rc < 0 && errno != EINTR) {
			logmsg("poll: %s", strerror(errno));
			return 1;
		}
		if (pf[0].revents && read_signals()) break;
		if (ip < 0 && rc == 0) A.connected = 1; /* timed out while hung up: look again */
		if (ipwr >= 0 && pf[ipwr].revents) read_power_button();
		if (iin >= 0 && pf[iin].revents) session_write_stdin(&A.s);
		if (iout >= 0 && pf[iout].revents) session_read_output(&A.s, 1);
		if (ierr >= 0 && pf[ierr].revents) session_read_output(&A.s, 2);
		if (ip >= 0) {
			short r = pf[ip].revents;
			/* Data first, even with POLLHUP: see HUP_GRACE_MS. read()
			 * returning 0 is what says the host is gone. */
			if (r & POLLIN) read_port();
			else if (r & POLLHUP) hung_up();
			if (!(r & POLLHUP)) A.hup_at = 0;
		}
		/* Hung up for good: the host went away. Forget its session. */
		if (A.hup_at && has_state() && now_ms() >= A.hup_at + HUP_GRACE_MS) drop_session();
		session_maybe_finish(&A.s, now_ms(), DRAIN_MS);
		if (A.connected && A.wbuf.len) flush_port();
	}
	session_abort(&A.s);
	return 0;
}
