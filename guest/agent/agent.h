/* Shared declarations of rkt-agent (see agent.c and PROTOCOL.md). */
#ifndef RKT_AGENT_H
#define RKT_AGENT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Frame = type (1 byte) + payload length (u32, big-endian) + payload. */
#define FRAME_HDR 5
#define FRAME_MAX (1u << 20)
#define PROTOCOL_VERSION 1

/* host -> guest */
#define FRAME_EXEC 0x01
#define FRAME_STDIN 0x02
#define FRAME_STDIN_EOF 0x03
#define FRAME_RESIZE 0x04
#define FRAME_SIGNAL 0x05
#define FRAME_ATTACH 0x06
#define FRAME_APP 0x07
/* guest -> host */
#define FRAME_SESSION 0x80
#define FRAME_STDOUT 0x81
#define FRAME_STDERR 0x82
#define FRAME_EXIT 0x83
#define FRAME_ERROR 0x84

#define EXEC_FLAG_TTY 0x01
/* ATTACH flags: which of the app's streams the session takes */
#define ATTACH_STDIN 0x01
#define ATTACH_STDOUT 0x02
#define ATTACH_STDERR 0x04

/* An app's stream modes (rkt's --stdin, --stdout, --stderr), see app-io.c. */
enum { IO_NULL, IO_LOG, IO_STREAM, IO_TTY };
/* A stream stdin: the app has not connected yet, has, or its input has ended. */
enum { STDIN_WAITING, STDIN_OPEN, STDIN_DONE };

struct session;

/* The attachable streams of one app (app-io.c). */
struct app_io {
	char name[256];
	int mode[3];          /* stdin, stdout, stderr: IO_* */
	int master;           /* pty master, if any stream is IO_TTY */
	int slave;            /* its slave, held so that the terminal never hangs up (app-io.c) */
	int in, out, err;     /* FIFOs of the IO_STREAM streams, held read-write */
	struct session *holder; /* the attached session, if any */
	int mark;             /* the "attached" file, flocked while output is on its way */
	int listen;           /* stream stdin: the socket the app connects to */
	int stdin_state;      /* STDIN_* */
	int held;
};

void appio_setup(void);
/* A mutable pod's app came (modes: "STDIN STDOUT STDERR") or went (app-ctl.c). */
int appio_add(const char *name, const char *modes);
void appio_remove(const char *name);
struct app_io *appio_find(const char *name);
int appio_fd(const struct app_io *a, int which);
void appio_close_stdin(struct app_io *a);
struct pollfd;
int appio_pollfds(struct pollfd *pf, int max);
void appio_accept(void);
/* The app connected its stdin while s is attached to it. */
void session_app_stdin(struct session *s, struct app_io *a);
int appio_pending(void);
void appio_mark(struct app_io *a, int attached);
int appio_hold(struct app_io *a, int hold);

struct buf {
	uint8_t *data;
	size_t len, cap;
};

void buf_append(struct buf *b, const void *data, size_t len);
void buf_consume(struct buf *b, size_t len);

static inline uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* A parsed EXEC request (request.c). */
struct request {
	int tty;
	uint32_t session;     /* chosen by the host, echoed in the SESSION frame */
	uint32_t uid, gid;
	uint16_t rows, cols;
	char *app, *cwd;
	uint32_t ngroups;
	gid_t *groups;
	char **argv, **env;
};

int parse_request(struct request *r, const uint8_t *payload, uint32_t len);

/* A parsed ATTACH request (request.c). */
struct attach_request {
	int flags;            /* ATTACH_* */
	uint32_t session;
	uint16_t rows, cols;
	char *app;
};

int parse_attach(struct attach_request *r, const uint8_t *payload, uint32_t len);

/* A parsed APP request (app-ctl.c): manage an app of a mutable pod. */
enum { APP_PING = 1, APP_ADD, APP_START, APP_STOP, APP_RM };
#define APP_UNITS_MAX 16
#define APP_BINDS_MAX 256
struct app_request {
	int op;               /* APP_* */
	uint32_t session;
	char *app, *io;
	uint32_t nunits, nbinds;
	char *unit_name[APP_UNITS_MAX], *unit_text[APP_UNITS_MAX];
	int bind_ro[APP_BINDS_MAX];
	char *bind_path[APP_BINDS_MAX];
};

int parse_app_request(struct app_request *r, const uint8_t *payload, uint32_t len);
int app_name_ok(const char *s);
int unit_name_ok(const char *app, const char *unit);
int bind_path_ok(const char *app, const char *path);
void free_app_request(struct app_request *r);

/* Reading a payload with every length checked (request.c). */
struct cursor {
	const uint8_t *p;
	uint32_t left;
	int bad;
};
uint32_t take_u32(struct cursor *c);
char *take_str(struct cursor *c);
void free_request(struct request *r);

/* The frame layer, without I/O (frame.c). */
#define ERROR_MSG_MAX 1024 /* longer ERROR messages are cut */
/* Size of the frame at the start of p (header + payload): 0 if not all of
 * it is there yet, -1 if its length is over FRAME_MAX (protocol error). */
long frame_size(const uint8_t *p, size_t len);
/* Whether a whole frame from the host has a type and payload size the
 * agent takes: 0 yes, -1 protocol error. */
int frame_check_from_host(uint8_t type, uint32_t len);
void frame_append(struct buf *b, uint8_t type, const void *data, uint32_t len);
void frame_append_u32(struct buf *b, uint8_t type, uint32_t v); /* SESSION, EXIT */
void frame_append_error(struct buf *b, uint32_t status, const char *msg);

/* One `rkt enter` session: a child process and its stdio. */
struct session {
	struct buf *out_frames; /* frames for the host of this session's port */
	struct app_io *attached; /* an ATTACH session: the app's streams, not a child of ours */
	int stdin_wait;       /* attached to a stdin the app has not connected yet: keep input */
	pid_t pid;            /* 0: no session; the child may already have exited */
	int tty;
	int in, out, err;     /* child's stdin (write end), stdout, stderr (read ends); pty: in == out */
	struct buf inbuf;     /* STDIN bytes the child has not read yet */
	int stdin_eof;        /* close stdin once inbuf is empty */
	int exited;           /* waitpid() has reported the child */
	int status;           /* exit status for the EXIT frame: code, or 128 + signal */
	long long drain_until;/* after exit: wait for output EOF until then (ms, monotonic) */
};

void session_init(struct session *s, struct buf *out);
void session_start(struct session *s, const uint8_t *payload, uint32_t len);
void session_attach(struct session *s, const uint8_t *payload, uint32_t len);
void session_app(struct session *s, const uint8_t *payload, uint32_t len);
/* Whether the session has something running: a command, or an attachment. */
static inline int session_active(const struct session *s) { return s->pid > 0 || s->attached; }
void session_stdin(struct session *s, const uint8_t *data, uint32_t len);
void session_stdin_eof(struct session *s);
void session_write_stdin(struct session *s);
void session_resize(struct session *s, uint16_t rows, uint16_t cols);
void session_signal(struct session *s, int sig);
void session_read_output(struct session *s, int which);
/* The child pid ended with wait status st: 1 if it was this session's. */
int session_reaped(struct session *s, pid_t pid, int st);
void session_maybe_finish(struct session *s, long long now, int drain_ms);
void session_abort(struct session *s);

/* Steps of starting an enter'd command, for its ERROR message (session.c). */
enum child_step {
	STEP_TERMINAL, STEP_CHROOT, STEP_CHDIR, STEP_SETGROUPS, STEP_SETGID, STEP_SETUID, STEP_EXEC,
	STEP_NAMESPACES, STEP_CGROUP, STEP_CAPS, STEP_COUNT
};

/* app-context.c: put the calling process in the context of a running
 * process of the app (cgroup, namespaces, capability bounding set,
 * no_new_privs), or chroot into its rootfs root if it has none.
 * 0 on success; -1 with errno and *step saying what failed. */
int enter_app_context(const char *app, const char *root, int *step);

/* io.c */
int io_start(void);
int flush_main(void);
int find_port(const char *name, char *path, size_t size);

/* agent.c */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
