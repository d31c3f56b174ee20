/*
 * One `rkt enter` session of rkt-agent: start the command of an EXEC
 * request inside the app (its context, see app-context.c),
 * move its stdio, report how it ended.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define APPS_DIR "/opt/stage2"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Exit statuses for failures before the command runs, as docker/podman exec use them. */
#define ST_SETUP 125    /* bad request, no such app, chroot/chdir/setuid failed */
#define ST_NOEXEC 126   /* found but cannot be executed */
#define ST_NOTFOUND 127 /* no such command */

static int valid_app_name(const char *s)
{
	return s && s[0] && s[0] != '.' && strlen(s) < 256 && !strchr(s, '/');
}

static const char *getenv_from(char **env, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=') return env[i] + n + 1;
	return NULL;
}

/* execve, with a PATH search (from the request's environment) for bare names. */
static void exec_command(char **argv, char **env)
{
	const char *path = getenv_from(env, "PATH");
	int saw_eacces = 0;
	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, env);
		return;
	}
	for (const char *p = path ? path : DEFAULT_PATH; ; ) {
		const char *end = strchrnul(p, ':');
		char full[4096];
		snprintf(full, sizeof full, "%.*s/%s", (int)(end - p), end == p ? "." : p, argv[0]);
		execve(full, argv, env);
		if (errno == EACCES) saw_eacces = 1;
		if (!*end) break;
		p = end + 1;
	}
	errno = saw_eacces ? EACCES : ENOENT;
}

struct child_error {
	int step; /* enum child_step */
	int err;
};
static const char *const steps[STEP_COUNT] = {
	[STEP_TERMINAL] = "open terminal", [STEP_CHROOT] = "chroot", [STEP_CHDIR] = "chdir",
	[STEP_SETGROUPS] = "setgroups", [STEP_SETGID] = "setgid", [STEP_SETUID] = "setuid", [STEP_EXEC] = "exec",
	[STEP_NAMESPACES] = "join the app's namespaces", [STEP_CGROUP] = "join the app's cgroup",
	[STEP_CAPS] = "take the app's capability limits",
};

static void child(const struct request *r, const char *root, const char *pts, int fds[3], int errfd)
{
	struct child_error ce = { STEP_TERMINAL, 0 };
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL); /* the agent blocks signals for its signalfd */
	signal(SIGPIPE, SIG_DFL);
	setsid();
	if (r->tty) {
		int t = open(pts, O_RDWR);
		struct winsize ws = { r->rows, r->cols, 0, 0 };
		if (t < 0 || ioctl(t, TIOCSCTTY, 0) < 0) goto fail;
		if (r->rows && r->cols) ioctl(t, TIOCSWINSZ, &ws);
		fds[0] = fds[1] = fds[2] = t;
	}
	for (int i = 0; i < 3; i++)
		if (dup2(fds[i], i) < 0) goto fail;
	if (r->tty && fds[0] > 2) close(fds[0]);
	/* the app's namespaces (setns(mnt) makes the app's root ours), or a chroot */
	if (enter_app_context(r->app, root, &ce.step) < 0) goto fail;
	ce.step = STEP_CHDIR; if (chdir(r->cwd[0] ? r->cwd : "/") < 0) goto fail;
	ce.step = STEP_SETGROUPS; if (setgroups(r->ngroups, r->groups) < 0) goto fail;
	ce.step = STEP_SETGID; if (setgid(r->gid) < 0) goto fail;
	ce.step = STEP_SETUID; if (setuid(r->uid) < 0) goto fail;
	ce.step = STEP_EXEC; exec_command(r->argv, r->env);
fail:
	ce.err = errno;
	if (write(errfd, &ce, sizeof ce) < 0) { /* the parent sees EOF and a dead child */ }
	_exit(ST_SETUP);
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void session_init(struct session *s, struct buf *out)
{
	memset(s, 0, sizeof *s);
	s->out_frames = out;
	s->in = s->out = s->err = -1;
}

static void session_cleanup(struct session *s)
{
	if (s->attached) {
		/* the app's own descriptors stay with app-io.c; ours are duplicates */
		s->attached->holder = NULL;
		appio_hold(s->attached, 0);
		appio_mark(s->attached, 0);
	}
	if (s->in >= 0 && s->in != s->out) close(s->in);
	if (s->out >= 0) close(s->out);
	if (s->err >= 0) close(s->err);
	free(s->inbuf.data);
	session_init(s, s->out_frames);
}

void session_start(struct session *s, const uint8_t *payload, uint32_t len)
{
	struct request r;
	struct child_error ce;
	char root[512], msg[600], *pts = NULL;
	int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 }, perrc[2], fds[3];
	int master = -1;
	struct stat st;
	pid_t pid;
	ssize_t n;

	/* SESSION first, whatever happens next: the host ignores everything
	 * before it (frames of a session whose host went away). Version,
	 * flags and session id stay at the start of EXEC in every version. */
	if (len >= 6) frame_append_u32(s->out_frames, FRAME_SESSION, get_u32(payload + 2));
	if (parse_request(&r, payload, len) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "malformed EXEC request (protocol version mismatch?)");
		goto out;
	}
	if (!valid_app_name(r.app)) {
		frame_append_error(s->out_frames, ST_SETUP, "invalid app name");
		goto out;
	}
	snprintf(root, sizeof root, APPS_DIR "/%s/rootfs", r.app);
	if (stat(root, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(msg, sizeof msg, "no app \"%s\" in this pod (%s missing)", r.app, root);
		frame_append_error(s->out_frames, ST_SETUP, msg);
		goto out;
	}
	if (r.tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 || !(pts = ptsname(master))) {
			snprintf(msg, sizeof msg, "cannot allocate a terminal: %s", strerror(errno));
			frame_append_error(s->out_frames, ST_SETUP, msg);
			if (master >= 0) close(master);
			goto out;
		}
	} else if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "cannot create pipes");
		goto close_pipes;
	}
	if (pipe2(perrc, O_CLOEXEC) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "cannot create pipes");
		goto close_pipes;
	}
	fds[0] = pin[0]; fds[1] = pout[1]; fds[2] = perr[1];
	pid = fork();
	if (pid == 0) child(&r, root, pts, fds, perrc[1]);
	close(perrc[1]);
	if (pid < 0) {
		close(perrc[0]);
		frame_append_error(s->out_frames, ST_SETUP, "cannot fork");
		goto close_pipes;
	}
	/* EOF means execve() succeeded (close-on-exec); otherwise the child says what failed. */
	do n = read(perrc[0], &ce, sizeof ce); while (n < 0 && errno == EINTR);
	close(perrc[0]);
	if (n == sizeof ce) {
		uint32_t st_code = ce.step == STEP_EXEC ? (ce.err == ENOENT || ce.err == ENOTDIR ? ST_NOTFOUND : ST_NOEXEC) : ST_SETUP;
		if (ce.step < 0 || ce.step >= STEP_COUNT) ce.step = STEP_NAMESPACES;
		const char *what = ce.step == STEP_CHROOT ? root : ce.step == STEP_CHDIR ? r.cwd : ce.step == STEP_EXEC ? r.argv[0] : NULL;
		snprintf(msg, sizeof msg, "%s%s%s: %s", steps[ce.step], what ? " " : "", what ? what : "", strerror(ce.err));
		frame_append_error(s->out_frames, st_code, msg);
		waitpid(pid, NULL, 0);
		goto close_pipes;
	}
	s->pid = pid;
	s->tty = r.tty;
	if (r.tty) {
		set_nonblock(master);
		s->in = s->out = master;
		master = -1;
	} else {
		close(pin[0]); close(pout[1]); close(perr[1]);
		s->in = pin[1]; s->out = pout[0]; s->err = perr[0];
		set_nonblock(s->in); set_nonblock(s->out); set_nonblock(s->err);
	}
	goto out;
close_pipes:
	for (int i = 0; i < 2; i++) {
		if (pin[i] >= 0) close(pin[i]);
		if (pout[i] >= 0) close(pout[i]);
		if (perr[i] >= 0) close(perr[i]);
	}
	if (master >= 0) close(master);
out:
	free_request(&r);
}

void session_attach(struct session *s, const uint8_t *payload, uint32_t len)
{
	static const char *const names[3] = { "stdin", "stdout", "stderr" };
	struct attach_request r;
	struct app_io *a;
	char msg[700];
	int fd[3] = { -1, -1, -1 }, tty_fd = -1;

	/* SESSION first, as for EXEC: same place for version, flags and session id */
	if (len >= 6) frame_append_u32(s->out_frames, FRAME_SESSION, get_u32(payload + 2));
	if (parse_attach(&r, payload, len) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "malformed ATTACH request (protocol version mismatch?)");
		goto out;
	}
	if (!valid_app_name(r.app) || !(a = appio_find(r.app))) {
		snprintf(msg, sizeof msg, "app \"%.256s\" has no attachable streams (run it with --stdin, --stdout or --stderr set to tty or stream)", r.app ? r.app : "");
		frame_append_error(s->out_frames, ST_SETUP, msg);
		goto out;
	}
	for (int i = 0; i < 3; i++) {
		if (!(r.flags & (1 << i))) continue;
		if (appio_fd(a, i) < 0 && !(i == 0 && a->mode[0] == IO_STREAM && a->stdin_state == STDIN_WAITING)) {
			snprintf(msg, sizeof msg, "the %s of app \"%s\" is not attachable (its mode is neither tty nor stream)", names[i], a->name);
			frame_append_error(s->out_frames, ST_SETUP, msg);
			goto out;
		}
	}
	if (a->holder) {
		snprintf(msg, sizeof msg, "app \"%s\" is attached to by another session; one at a time", a->name);
		frame_append_error(s->out_frames, ST_SETUP, msg);
		goto out;
	}
	for (int i = 0; i < 3; i++) {
		if (!(r.flags & (1 << i))) continue;
		if (a->mode[i] == IO_TTY) {
			/* one terminal: stdout and stderr come back as one stream, as on any terminal */
			if (tty_fd < 0) tty_fd = fcntl(a->master, F_DUPFD_CLOEXEC, 3);
			if (i < 2) fd[i] = tty_fd;
		} else if (i == 0 && a->stdin_state == STDIN_WAITING) {
			s->stdin_wait = 1; /* the app has not connected its stdin yet: input waits */
		} else {
			fd[i] = fcntl(appio_fd(a, i), F_DUPFD_CLOEXEC, 3);
		}
	}
	for (int i = 0; i < 3; i++) {
		if ((r.flags & (1 << i)) && (a->mode[i] == IO_TTY ? tty_fd : fd[i]) < 0 && !(i == 0 && s->stdin_wait)) {
			frame_append_error(s->out_frames, ST_SETUP, "cannot duplicate the app's descriptors");
			for (int j = 0; j < 3; j++) if (fd[j] >= 0 && fd[j] != tty_fd) close(fd[j]);
			if (tty_fd >= 0) close(tty_fd);
			goto out;
		}
	}
	if (tty_fd >= 0 && fd[0] != tty_fd && fd[1] != tty_fd) fd[1] = tty_fd; /* a tty stderr alone */
	s->in = fd[0];
	s->out = fd[1];
	s->err = fd[2];
	s->tty = a->mode[0] == IO_TTY && fd[0] >= 0;
	if (tty_fd >= 0 && r.rows && r.cols) {
		struct winsize ws = { r.rows, r.cols, 0, 0 };
		ioctl(tty_fd, TIOCSWINSZ, &ws);
	}
	s->attached = a;
	a->holder = s;
	appio_mark(a, 1);
out:
	free(r.app);
}

void session_app_stdin(struct session *s, struct app_io *a)
{
	if (!s->stdin_wait) return;
	s->stdin_wait = 0;
	s->in = fcntl(a->in, F_DUPFD_CLOEXEC, 3);
	session_write_stdin(s);
}

void session_write_stdin(struct session *s)
{
	/* input for an app that has not connected its stdin: an end of it ends the app's input now */
	if (s->stdin_wait && s->stdin_eof && !s->inbuf.len && s->attached) {
		appio_close_stdin(s->attached);
		s->stdin_wait = s->stdin_eof = 0;
		return;
	}
	while (s->in >= 0 && s->inbuf.len) {
		ssize_t n = write(s->in, s->inbuf.data, s->inbuf.len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) return;
			s->inbuf.len = 0; /* EPIPE: the child closed its stdin; drop the rest */
			break;
		}
		buf_consume(&s->inbuf, n);
	}
	if (s->stdin_eof && !s->inbuf.len && s->in >= 0) {
		if (s->tty) {
			/* A terminal has no half-close: send the EOF character, as a user would. */
			if (write(s->in, "\x04", 1) < 0) { /* the child is gone */ }
		} else {
			close(s->in);
			s->in = -1;
			if (s->attached) appio_close_stdin(s->attached);
		}
		s->stdin_eof = 0;
	}
}

void session_stdin(struct session *s, const uint8_t *data, uint32_t len)
{
	if (!session_active(s) || (s->in < 0 && !s->stdin_wait)) return;
	buf_append(&s->inbuf, data, len);
	session_write_stdin(s);
}

void session_stdin_eof(struct session *s)
{
	if (!session_active(s) || (s->in < 0 && !s->stdin_wait)) return;
	s->stdin_eof = 1;
	session_write_stdin(s);
}

void session_resize(struct session *s, uint16_t rows, uint16_t cols)
{
	struct winsize ws = { rows, cols, 0, 0 };
	int fd = s->out >= 0 ? s->out : s->in;
	/* an attached app's terminal may be attached for output only */
	if (session_active(s) && (s->tty || (s->attached && s->attached->master >= 0)) && fd >= 0 && isatty(fd)) ioctl(fd, TIOCSWINSZ, &ws);
}

void session_signal(struct session *s, int sig)
{
	if (s->pid > 0 && !s->exited && sig > 0 && sig < 65) kill(-s->pid, sig);
}

void session_read_output(struct session *s, int which)
{
	uint8_t tmp[32768];
	int *fd = which == 1 ? &s->out : &s->err;
	ssize_t n;
	if (*fd < 0) return;
	n = read(*fd, tmp, sizeof tmp);
	if (n > 0) {
		frame_append(s->out_frames, which == 1 ? FRAME_STDOUT : FRAME_STDERR, tmp, n);
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		/* EOF, or EIO: a pty master once every slave is closed */
		if (s->tty) s->in = -1;
		close(*fd);
		*fd = -1;
	}
}

int session_reaped(struct session *s, pid_t pid, int st)
{
	if (s->pid <= 0 || pid != s->pid) return 0;
	s->exited = 1;
	s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return 1;
}

void session_maybe_finish(struct session *s, long long now, int drain_ms)
{
	if (s->pid <= 0 || !s->exited) return;
	if (!s->drain_until) s->drain_until = now + drain_ms;
	/* Output the child wrote before exiting is in the pipes; a background
	 * process still holding them does not keep the session open forever. */
	if ((s->out >= 0 || s->err >= 0) && now < s->drain_until) return;
	for (int i = 0; i < 64 && s->out >= 0; i++) session_read_output(s, 1);
	for (int i = 0; i < 64 && s->err >= 0; i++) session_read_output(s, 2);
	frame_append_u32(s->out_frames, FRAME_EXIT, s->status);
	session_cleanup(s);
}

void session_abort(struct session *s)
{
	if (s->pid > 0 && !s->exited) {
		kill(-s->pid, SIGKILL);
		kill(s->pid, SIGKILL);
	}
	session_cleanup(s); /* session_reap() collects the zombie later */
}
