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
/* guest -> host */
#define FRAME_SESSION 0x80
#define FRAME_STDOUT 0x81
#define FRAME_STDERR 0x82
#define FRAME_EXIT 0x83
#define FRAME_ERROR 0x84

#define EXEC_FLAG_TTY 0x01

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
	pid_t pid;            /* 0: no session; the child may already have exited */
	int tty;
	int in, out, err;     /* child's stdin (write end), stdout, stderr (read ends); pty: in == out */
	struct buf inbuf;     /* STDIN bytes the child has not read yet */
	int stdin_eof;        /* close stdin once inbuf is empty */
	int exited;           /* waitpid() has reported the child */
	int status;           /* exit status for the EXIT frame: code, or 128 + signal */
	long long drain_until;/* after exit: wait for output EOF until then (ms, monotonic) */
};

void session_init(struct session *s);
void session_start(struct session *s, const uint8_t *payload, uint32_t len);
void session_stdin(struct session *s, const uint8_t *data, uint32_t len);
void session_stdin_eof(struct session *s);
void session_write_stdin(struct session *s);
void session_resize(struct session *s, uint16_t rows, uint16_t cols);
void session_signal(struct session *s, int sig);
void session_read_output(struct session *s, int which);
void session_reap(struct session *s);
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
void send_frame(uint8_t type, const void *data, uint32_t len);
void send_frame_u32(uint8_t type, uint32_t v);
void send_error(uint32_t status, const char *msg);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
