/*
 * rkt-agent: the apps' own standard streams, for `rkt attach` and
 * `rkt run --interactive` (PROTOCOL.md, "ATTACH").
 *
 * The host writes /rkt/io/<app> for each app whose stdin, stdout or stderr
 * is "tty" or "stream" (rkt's --stdin/--stdout/--stderr): one line
 * "STDIN STDOUT STDERR", each word null, log, stream or tty. Before the apps
 * start (their units come After= this one, which is Type=notify), the agent
 * makes each such app's endpoints in /run/rkt/io/<app>/, which the unit
 * names (units.ts: StandardInput=file:..., TTYPath=...):
 *   tty     a pseudo-terminal; "tty" links to its slave, the agent keeps
 *           the master and one slave (see make_tty)
 *   stdin, stdout, stderr
 *           FIFOs for the streams in "stream" mode; the agent keeps each
 *           open read-write, so that the app's open never blocks and the
 *           app never sees its output's reader go away
 * A host session attaches with ATTACH and is given duplicates of these
 * descriptors (session.c treats them like a command's); what the app
 * writes while nobody is attached stays in the kernel's buffers (the app
 * blocks once they are full), and is read by the next session. One session
 * at a time per app: a second ATTACH is refused.
 *
 * Everything about the app's side is fixed before it starts; the host
 * only reaches these descriptors through the agent, never by a path.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define IO_CONF "/rkt/io"
#define IO_RUN "/run/rkt/io"
#define MAX_APPS 64

static struct app_io apps[MAX_APPS];
static int napps;

static const char *const mode_names[] = { [IO_NULL] = "null", [IO_LOG] = "log", [IO_STREAM] = "stream", [IO_TTY] = "tty" };

static int parse_mode(const char *w)
{
	for (int m = 0; m < (int)(sizeof mode_names / sizeof mode_names[0]); m++)
		if (strcmp(w, mode_names[m]) == 0) return m;
	return -1;
}

static int valid_name(const char *s)
{
	return s[0] && s[0] != '.' && strlen(s) < sizeof apps[0].name && !strchr(s, '/');
}

static int open_fifo(const char *dir, const char *name, mode_t mode)
{
	char p[600];
	int fd;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	/* a restarted agent takes over the FIFOs the app already has open */
	if (mkfifo(p, mode) < 0 && errno != EEXIST) return -1;
	fd = open(p, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	return fd;
}

static int listen_stdin(struct app_io *a, const char *dir);

static int make_tty(struct app_io *a, const char *dir)
{
	char link[600], *pts;
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || !(pts = ptsname(m))) {
		if (m >= 0) close(m);
		return -1;
	}
	snprintf(link, sizeof link, "%s/tty", dir);
	unlink(link);
	if (symlink(pts, link) < 0) {
		close(m);
		return -1;
	}
	/*
	 * The agent holds a slave too: otherwise every last close of the slave
	 * hangs the terminal up (the master reads EIO, and an attached session
	 * stops reading it for good), and systemd opens and closes TTYPath=
	 * before it starts the app (TTYReset=). A session attached before the
	 * app starts (the OCI front's attach, at create) would lose all input.
	 */
	if ((a->slave = open(pts, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		close(m);
		return -1;
	}
	fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
	a->master = m;
	return 0;
}

static int setup_app(struct app_io *a)
{
	char dir[400];
	snprintf(dir, sizeof dir, IO_RUN "/%s", a->name);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) return -1;
	a->master = a->slave = a->in = a->out = a->err = a->listen = -1;
	if ((a->mode[0] == IO_TTY || a->mode[1] == IO_TTY || a->mode[2] == IO_TTY) && make_tty(a, dir) < 0) return -1;
	/* the app may run as any user: the FIFOs are its stdio, like a terminal would be */
	if (a->mode[0] == IO_STREAM && listen_stdin(a, dir) < 0) return -1;
	if (a->mode[1] == IO_STREAM && (a->out = open_fifo(dir, "stdout", 0666)) < 0) return -1;
	if (a->mode[2] == IO_STREAM && (a->err = open_fifo(dir, "stderr", 0666)) < 0) return -1;
	return 0;
}

/* One app's streams from its modes line; -1 (errno set) if they cannot be made. */
static int load_app(const char *name, const char *line)
{
	struct app_io *a = NULL;
	char w[3][16];
	for (int i = 0; i < napps && !a; i++)
		if (!apps[i].name[0]) a = &apps[i]; /* the slot of a removed app */
	if (!a && napps < MAX_APPS) a = &apps[napps++];
	if (!a) {
		errno = ENOSPC;
		return -1;
	}
	memset(a, 0, sizeof *a);
	a->mark = a->listen = a->master = a->slave = a->in = a->out = a->err = -1;
	if (sscanf(line, "%15s %15s %15s", w[0], w[1], w[2]) != 3 ||
	    (a->mode[0] = parse_mode(w[0])) < 0 || (a->mode[1] = parse_mode(w[1])) < 0 || (a->mode[2] = parse_mode(w[2])) < 0) {
		errno = EINVAL;
		return -1;
	}
	snprintf(a->name, sizeof a->name, "%s", name);
	if (setup_app(a) < 0) {
		int e = errno;
		appio_remove(name);
		errno = e;
		return -1;
	}
	return 0;
}

void appio_setup(void)
{
	DIR *d = opendir(IO_CONF);
	struct dirent *e;
	if (!d) return;
	mkdir("/run/rkt", 0755);
	mkdir(IO_RUN, 0755);
	while ((e = readdir(d))) {
		char p[400], line[64] = "";
		FILE *f;
		if (!valid_name(e->d_name)) continue;
		snprintf(p, sizeof p, IO_CONF "/%s", e->d_name);
		if (!(f = fopen(p, "re"))) continue;
		if (!fgets(line, sizeof line, f)) line[0] = 0;
		fclose(f);
		if (load_app(e->d_name, line) < 0) logmsg("cannot make the streams of app %s (%s): %s", e->d_name, p, strerror(errno));
	}
	closedir(d);
}

/* An app added to a mutable pod: its streams, before its unit can start (app-ctl.c). */
int appio_add(const char *name, const char *modes)
{
	if (!valid_name(name) || appio_find(name)) {
		errno = EEXIST;
		return -1;
	}
	mkdir("/run/rkt", 0755);
	mkdir(IO_RUN, 0755);
	return load_app(name, modes);
}

/* An app removed from a mutable pod: an attached session ends, its descriptors and files go. */
void appio_remove(const char *name)
{
	static const char *const files[] = { "tty", "stdin", "stdout", "stderr", "attached" };
	struct app_io *a = appio_find(name);
	char p[600];
	if (!a) return;
	if (a->holder) session_abort(a->holder);
	int fds[] = { a->master, a->slave, a->in, a->out, a->err, a->listen, a->mark };
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0) close(fds[i]);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(p, sizeof p, IO_RUN "/%s/%s", a->name, files[i]);
		unlink(p);
	}
	snprintf(p, sizeof p, IO_RUN "/%s", a->name);
	rmdir(p);
	memset(a, 0, sizeof *a);
	a->mark = a->listen = a->master = a->slave = a->in = a->out = a->err = -1;
}

struct app_io *appio_find(const char *name)
{
	for (int i = 0; i < napps; i++)
		if (apps[i].name[0] && strcmp(apps[i].name, name) == 0) return &apps[i];
	return NULL;
}

/* The descriptor of one of the app's streams (0 stdin, 1 stdout, 2 stderr), -1 if not attachable. */
int appio_fd(const struct app_io *a, int which)
{
	if (a->mode[which] == IO_TTY) return a->master;
	if (a->mode[which] == IO_STREAM) return which == 0 ? a->in : which == 1 ? a->out : a->err;
	return -1;
}

/*
 * An app's stdin in stream mode is a unix socket the agent listens on:
 * systemd connects the app's StandardInput=file: to it, and every hook of
 * the unit too (they get the same stdin). The first connection is the
 * app's (its ExecStartPost= hooks run only once it has been executed);
 * later ones end at once. Unlike a FIFO, a socket lets the agent end the
 * app's input (shutdown) whenever the host's input ends, even before the
 * app has started: `echo x | rkt run --interactive` must not lose the
 * input, nor leave a hook blocked in open() on a FIFO without a writer.
 */
static int listen_stdin(struct app_io *a, const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) return -1;
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/stdin", dir) >= sizeof sa.sun_path) {
		close(fd);
		errno = ENAMETOOLONG;
		return -1;
	}
	unlink(sa.sun_path);
	/* the app may run as any user */
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(sa.sun_path, 0666) < 0 || listen(fd, 8) < 0) {
		close(fd);
		return -1;
	}
	a->listen = fd;
	return 0;
}

int appio_pollfds(struct pollfd *pf, int max)
{
	int n = 0;
	for (int i = 0; i < napps && n < max; i++)
		if (apps[i].listen >= 0) pf[n++] = (struct pollfd){ apps[i].listen, POLLIN, 0 };
	return n;
}

void appio_accept(void)
{
	for (int i = 0; i < napps; i++) {
		struct app_io *a = &apps[i];
		int c;
		while (a->listen >= 0 && (c = accept4(a->listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
			if (a->stdin_state != STDIN_WAITING) {
				close(c); /* a hook of the unit: no input for it */
				continue;
			}
			a->in = c;
			a->stdin_state = STDIN_OPEN;
			if (a->holder) session_app_stdin(a->holder, a);
		}
	}
}

/* The host's input ended: so does the app's, now or once it connects. */
void appio_close_stdin(struct app_io *a)
{
	if (a->mode[0] != IO_STREAM) return;
	if (a->in >= 0) {
		shutdown(a->in, SHUT_WR);
		close(a->in);
		a->in = -1;
	}
	a->stdin_state = STDIN_DONE;
}

/*
 * Bytes of the app's output not yet on their way to the host, for
 * `rkt-agent flush`: before the VM powers off, what an attached app wrote
 * last must have gone to the host. The agent holds an exclusive flock on
 * the app's "attached" file from before it reads the app's output until
 * its frames are written to the port; this takes it shared and checks the
 * FIFOs. Apps nobody is attached to do not count (their output waits for
 * a reader that will not come). A terminal's queue cannot be seen from
 * here, only the flock covers it.
 */
int appio_pending(void)
{
	DIR *d = opendir(IO_RUN);
	struct dirent *e;
	int total = 0;
	if (!d) return 0;
	while ((e = readdir(d))) {
		static const char *const outs[] = { "stdout", "stderr" };
		char p[600];
		int q, fd, mark;
		if (e->d_name[0] == '.') continue;
		snprintf(p, sizeof p, IO_RUN "/%s/attached", e->d_name);
		if ((mark = open(p, O_RDONLY | O_CLOEXEC)) < 0) continue;
		if (flock(mark, LOCK_SH | LOCK_NB) < 0) {
			total++; /* the agent is passing output on */
			close(mark);
			continue;
		}
		for (int i = 0; i < 2; i++) {
			snprintf(p, sizeof p, IO_RUN "/%s/%s", e->d_name, outs[i]);
			if ((fd = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0) continue;
			if (ioctl(fd, FIONREAD, &q) == 0) total += q;
			close(fd);
		}
		close(mark); /* and its lock */
	}
	closedir(d);
	return total;
}

/* A session attaches (or lets go): the "attached" file appio_pending() looks for. */
void appio_mark(struct app_io *a, int attached)
{
	char p[600];
	snprintf(p, sizeof p, IO_RUN "/%s/attached", a->name);
	if (a->mark >= 0) close(a->mark);
	a->mark = -1;
	a->held = 0;
	if (attached) a->mark = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	else unlink(p);
}

/* Hold (or release) the app's output lock; -1 if flush holds it now. */
int appio_hold(struct app_io *a, int hold)
{
	if (a->mark < 0 || a->held == hold) return 0;
	if (flock(a->mark, hold ? LOCK_EX | LOCK_NB : LOCK_UN) < 0) return -1;
	a->held = hold;
	return 0;
}
