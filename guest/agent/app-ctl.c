/*
 * rkt-agent: the apps of a mutable pod (rkt app sandbox), managed through
 * APP requests (PROTOCOL.md, "An app session"): the host's app/add,
 * app/start, app/stop and app/rm entrypoints of the kvm stage1 reach the
 * guest only this way.
 *
 * The host has assembled the app's root filesystem on its side and shared
 * it at /opt/stage2/<app>/rootfs before it sends ADD; the request carries
 * the app's unit files (the same generator and isolators as at boot) and
 * its volumes' paths inside that rootfs, never a host path. The agent
 * writes the units into /run/systemd/system (the guest's root is
 * read-only: the boot-time units are in /etc/systemd/system), makes the
 * app's attachable streams (app-io.c), and runs /rkt/bin/rkt-app-ctl for
 * the rest (the volumes' mounts, systemctl): its output comes back as
 * STDOUT/STDERR frames and its status as EXIT, as for a command.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNIT_DIR "/run/systemd/system"
#define APP_CTL "/rkt/bin/rkt-app-ctl"
#define BUSYBOX "/rkt/bin/busybox"
#define ST_SETUP 125

static int write_file(const char *path, const char *text)
{
	size_t n = strlen(text), off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) return -1;
	while (off < n) {
		ssize_t w = write(fd, text + off, n - off);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) { close(fd); return -1; }
		off += w;
	}
	return close(fd);
}

/* The unit files of an ADD; names are checked (unit_name_ok): one directory level at most. */
static int write_units(const struct app_request *r, char *msg, size_t size)
{
	mkdir("/run/systemd", 0755);
	mkdir(UNIT_DIR, 0755);
	for (uint32_t i = 0; i < r->nunits; i++) {
		char path[600], *slash;
		snprintf(path, sizeof path, UNIT_DIR "/%s", r->unit_name[i]);
		if ((slash = strrchr(path, '/')) > path + strlen(UNIT_DIR)) {
			*slash = 0;
			if (mkdir(path, 0755) < 0 && errno != EEXIST) goto fail;
			*slash = '/';
		}
		if (write_file(path, r->unit_text[i]) < 0) goto fail;
		continue;
	fail:
		snprintf(msg, size, "cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* argv of rkt-app-ctl for the request (PROTOCOL.md): OP APP [UNIT...] or [ro|rw PATH...]. */
static char **ctl_argv(const struct app_request *r)
{
	static const char *const ops[] = { [APP_PING] = "ping", [APP_ADD] = "add", [APP_START] = "start", [APP_STOP] = "stop", [APP_RM] = "rm" };
	char **v = calloc(4 + r->nunits + 2 * r->nbinds + 1, sizeof *v);
	size_t n = 0;
	if (!v) return NULL;
	v[n++] = "sh";
	v[n++] = APP_CTL;
	v[n++] = (char *)ops[r->op];
	if (r->op != APP_PING) v[n++] = r->app;
	if (r->op == APP_ADD) {
		for (uint32_t i = 0; i < r->nbinds; i++) {
			v[n++] = r->bind_ro[i] ? "ro" : "rw";
			v[n++] = r->bind_path[i];
		}
	} else {
		for (uint32_t i = 0; i < r->nunits; i++) v[n++] = r->unit_name[i];
	}
	return v;
}

void session_app(struct session *s, const uint8_t *payload, uint32_t len)
{
	struct app_request r;
	char msg[700];
	char **argv = NULL;
	int pout[2] = { -1, -1 }, perr[2] = { -1, -1 };
	pid_t pid;

	/* SESSION first, as for EXEC: same place for version and session id */
	if (len >= 6) frame_append_u32(s->out_frames, FRAME_SESSION, get_u32(payload + 2));
	if (parse_app_request(&r, payload, len) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "malformed or refused APP request (protocol version mismatch?)");
		goto out;
	}
	if (r.op == APP_ADD) {
		if (write_units(&r, msg, sizeof msg) < 0) {
			frame_append_error(s->out_frames, ST_SETUP, msg);
			goto out;
		}
		if (r.io[0] && appio_add(r.app, r.io) < 0) {
			snprintf(msg, sizeof msg, "cannot make the streams of app %s: %s", r.app, strerror(errno));
			frame_append_error(s->out_frames, ST_SETUP, msg);
			goto out;
		}
	} else if (r.op == APP_RM) {
		appio_remove(r.app);
	}
	if (!(argv = ctl_argv(&r)) || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "cannot create pipes");
		goto close_pipes;
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;
		int null = open("/dev/null", O_RDONLY);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		if (null < 0 || dup2(null, 0) < 0 || dup2(pout[1], 1) < 0 || dup2(perr[1], 2) < 0) _exit(ST_SETUP);
		execve(BUSYBOX, argv, (char *[]){ "PATH=/usr/bin:/rkt/bin", "SYSTEMD_LOG_LEVEL=err", NULL });
		_exit(126);
	}
	if (pid < 0) {
		frame_append_error(s->out_frames, ST_SETUP, "cannot fork");
		goto close_pipes;
	}
	close(pout[1]);
	close(perr[1]);
	s->pid = pid;
	s->out = pout[0];
	s->err = perr[0];
	fcntl(s->out, F_SETFL, fcntl(s->out, F_GETFL) | O_NONBLOCK);
	fcntl(s->err, F_SETFL, fcntl(s->err, F_GETFL) | O_NONBLOCK);
	goto out;
close_pipes:
	for (int i = 0; i < 2; i++) {
		if (pout[i] >= 0) close(pout[i]);
		if (perr[i] >= 0) close(perr[i]);
	}
out:
	free(argv);
	free_app_request(&r);
}
