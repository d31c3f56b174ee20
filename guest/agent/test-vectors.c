/*
 * test-vectors: holds the agent's own frame codec (frame.c, request.c,
 * app-request.c) to the golden vectors of vectors.txt (its syntax is
 * described there):
 *
 *   gcc -std=gnu11 -o test-vectors test-vectors.c frame.c request.c app-request.c
 *   ./test-vectors vectors.txt
 *
 * Host-to-guest vectors are cut and judged as the agent does (frame_size,
 * frame_check_from_host, parse_request, parse_attach, parse_app_request).
 * Guest-to-host frames are written as the agent writes them
 * (frame_append*) and compared byte for byte; judging bytes from the guest
 * is the host's part, checked by the TypeScript test. Prints every failure
 * and a summary line; exits 1 on any failure or a line it cannot read. Run
 * by test/unit/guest-agent-vectors.test.ts.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUES 32
#define MAX_FIELDS 16

struct tok {
	char *s;   /* unescaped bytes, NUL-terminated as well */
	size_t len;
};

struct field {
	const char *key;
	struct tok v[MAX_VALUES];
	int n;
};

struct vec {
	const char *name;
	int line;
	const char *dir, *verdict, *type;
	struct buf bytes;
	struct field f[MAX_FIELDS];
	int nf;
};

static int failures, decoded, encoded, left_to_host;

/* request.c reports running out of memory through it */
void logmsg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void fail(const struct vec *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const struct vec *v, const char *fmt, ...)
{
	va_list ap;
	printf("FAIL %s (vectors.txt:%d): ", v->name, v->line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	failures++;
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10;
}

/* Splits a line in place into tokens: bare words and quoted strings
 * (unescaped in place). Returns the count, or -1 on a syntax error. */
static int tokenize(char *p, struct tok *t, int max)
{
	int n = 0;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r') p++;
		if (!*p || *p == '#') return n;
		if (n == max) return -1;
		if (*p == '"') {
			char *out = ++p;
			t[n].s = out;
			for (;;) {
				if (!*p) return -1;
				if (*p == '"') { p++; break; }
				if (*p != '\\') { *out++ = *p++; continue; }
				switch (*++p) {
				case '\\': case '"': *out++ = *p++; break;
				case 'n': *out++ = '\n'; p++; break;
				case 't': *out++ = '\t'; p++; break;
				case 'x':
					if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) return -1;
					*out++ = (char)(hexval(p[1]) << 4 | hexval(p[2]));
					p += 3;
					break;
				default: return -1;
				}
			}
			t[n].len = out - t[n].s;
			*out = 0; /* out is behind p: nothing unread is overwritten */
		} else {
			t[n].s = p;
			while (*p && !isspace((unsigned char)*p)) p++;
			t[n].len = p - t[n].s;
			if (*p) *p++ = 0;
		}
		n++;
	}
}

static const struct { const char *name; uint8_t code; } TYPES[] = {
	{ "EXEC", FRAME_EXEC }, { "STDIN", FRAME_STDIN }, { "STDIN_EOF", FRAME_STDIN_EOF },
	{ "RESIZE", FRAME_RESIZE }, { "SIGNAL", FRAME_SIGNAL }, { "ATTACH", FRAME_ATTACH }, { "APP", FRAME_APP }, { "SESSION", FRAME_SESSION },
	{ "STDOUT", FRAME_STDOUT }, { "STDERR", FRAME_STDERR }, { "EXIT", FRAME_EXIT },
	{ "ERROR", FRAME_ERROR },
};

static int type_code(const char *name)
{
	for (size_t i = 0; name && i < sizeof TYPES / sizeof TYPES[0]; i++)
		if (strcmp(TYPES[i].name, name) == 0) return TYPES[i].code;
	return -1;
}

static const struct field *field(const struct vec *v, const char *key)
{
	for (int i = 0; i < v->nf; i++)
		if (strcmp(v->f[i].key, key) == 0) return &v->f[i];
	fail(v, "no '%s' line", key);
	return NULL;
}

static int parse_num(const struct tok *t, unsigned long *out)
{
	char *end;
	*out = strtoul(t->s, &end, 10);
	return t->len > 0 && *end == 0 && isdigit((unsigned char)t->s[0]) ? 0 : -1;
}

/* The single value of a field: a number, or a string. */
static int num(const struct vec *v, const char *key, unsigned long *out)
{
	const struct field *f = field(v, key);
	if (!f) return -1;
	if (f->n != 1 || parse_num(&f->v[0], out) < 0) {
		fail(v, "'%s' wants one decimal number", key);
		return -1;
	}
	return 0;
}

static const struct tok *str(const struct vec *v, const char *key)
{
	const struct field *f = field(v, key);
	if (!f) return NULL;
	if (f->n != 1) {
		fail(v, "'%s' wants one value", key);
		return NULL;
	}
	return &f->v[0];
}

static void expect_num(const struct vec *v, const char *key, unsigned long got)
{
	unsigned long want;
	if (num(v, key, &want) == 0 && want != got) fail(v, "%s: decoded %lu, want %lu", key, got, want);
}

static void expect_bytes(const struct vec *v, const char *key, const void *got, size_t len)
{
	const struct tok *want = str(v, key);
	if (want && (want->len != len || memcmp(want->s, got, len) != 0))
		fail(v, "%s: decoded %zu bytes \"%.*s\", want \"%s\"", key, len, (int)len, (const char *)got, want->s);
}

static void expect_strv(const struct vec *v, const char *key, char **got)
{
	const struct field *f = field(v, key);
	int n = 0;
	if (!f) return;
	while (got && got[n]) n++;
	if (n != f->n) {
		fail(v, "%s: decoded %d strings, want %d", key, n, f->n);
		return;
	}
	for (int i = 0; i < n; i++)
		if (strlen(got[i]) != f->v[i].len || strcmp(got[i], f->v[i].s) != 0)
			fail(v, "%s[%d]: decoded \"%s\", want \"%s\"", key, i, got[i], f->v[i].s);
}

static void check_exec(const struct vec *v, const uint8_t *p, uint32_t len)
{
	struct request r;
	const struct field *groups;
	if (parse_request(&r, p, len) < 0) {
		fail(v, "parse_request() refused it");
		free_request(&r);
		return;
	}
	expect_num(v, "session", r.session);
	expect_num(v, "tty", r.tty ? 1 : 0);
	expect_num(v, "uid", r.uid);
	expect_num(v, "gid", r.gid);
	expect_num(v, "rows", r.rows);
	expect_num(v, "cols", r.cols);
	expect_bytes(v, "app", r.app, strlen(r.app));
	expect_bytes(v, "cwd", r.cwd, strlen(r.cwd));
	if ((groups = field(v, "groups"))) {
		if ((uint32_t)groups->n != r.ngroups) fail(v, "groups: decoded %u, want %d", r.ngroups, groups->n);
		for (int i = 0; i < groups->n && (uint32_t)i < r.ngroups; i++) {
			unsigned long want;
			if (parse_num(&groups->v[i], &want) < 0 || want != r.groups[i])
				fail(v, "groups[%d]: decoded %u, want %s", i, (unsigned)r.groups[i], groups->v[i].s);
		}
	}
	expect_strv(v, "argv", r.argv);
	expect_strv(v, "env", r.env);
	free_request(&r);
}

static void check_attach(const struct vec *v, const uint8_t *p, uint32_t len)
{
	struct attach_request r;
	if (parse_attach(&r, p, len) < 0) {
		fail(v, "parse_attach() refused it");
		free(r.app);
		return;
	}
	expect_num(v, "session", r.session);
	expect_num(v, "stdin", !!(r.flags & ATTACH_STDIN));
	expect_num(v, "stdout", !!(r.flags & ATTACH_STDOUT));
	expect_num(v, "stderr", !!(r.flags & ATTACH_STDERR));
	expect_num(v, "rows", r.rows);
	expect_num(v, "cols", r.cols);
	expect_bytes(v, "app", r.app, strlen(r.app));
	free(r.app);
}

static void check_app(const struct vec *v, const uint8_t *p, uint32_t len)
{
	static const char *const ops[] = { [APP_PING] = "ping", [APP_ADD] = "add", [APP_START] = "start", [APP_STOP] = "stop", [APP_RM] = "rm" };
	struct app_request r;
	const struct field *f;
	if (parse_app_request(&r, p, len) < 0) {
		fail(v, "parse_app_request() refused it");
		free_app_request(&r);
		return;
	}
	expect_num(v, "session", r.session);
	expect_bytes(v, "op", ops[r.op], strlen(ops[r.op]));
	expect_bytes(v, "app", r.app, strlen(r.app));
	expect_bytes(v, "io", r.io, strlen(r.io));
	if ((f = field(v, "units"))) {
		if ((uint32_t)f->n != 2 * r.nunits) fail(v, "units: decoded %u, want %d", r.nunits, f->n / 2);
		for (uint32_t i = 0; i < r.nunits && 2 * i + 1 < (uint32_t)f->n; i++) {
			if (strcmp(r.unit_name[i], f->v[2 * i].s) != 0) fail(v, "units[%u]: decoded name \"%s\"", i, r.unit_name[i]);
			if (strcmp(r.unit_text[i], f->v[2 * i + 1].s) != 0) fail(v, "units[%u]: decoded text \"%s\"", i, r.unit_text[i]);
		}
	}
	if ((f = field(v, "binds"))) {
		if ((uint32_t)f->n != 2 * r.nbinds) fail(v, "binds: decoded %u, want %d", r.nbinds, f->n / 2);
		for (uint32_t i = 0; i < r.nbinds && 2 * i + 1 < (uint32_t)f->n; i++) {
			if (strcmp(r.bind_ro[i] ? "ro" : "rw", f->v[2 * i].s) != 0) fail(v, "binds[%u]: decoded %s", i, r.bind_ro[i] ? "ro" : "rw");
			if (strcmp(r.bind_path[i], f->v[2 * i + 1].s) != 0) fail(v, "binds[%u]: decoded path \"%s\"", i, r.bind_path[i]);
		}
	}
	free_app_request(&r);
}

/* As the agent's read_port() and handle_frame() take bytes from the host. */
static void check_from_host(const struct vec *v)
{
	const uint8_t *b = v->bytes.data;
	size_t n = v->bytes.len;
	long size = frame_size(b, n);
	int code = type_code(v->type);
	const uint8_t *p = b + FRAME_HDR;
	uint32_t len = n >= FRAME_HDR ? n - FRAME_HDR : 0;
	struct request r;
	int rc;

	decoded++;
	if (strcmp(v->verdict, "incomplete") == 0) {
		if (size != 0) fail(v, "frame_size() = %ld, want 0 (wait for more)", size);
		return;
	}
	if (strcmp(v->verdict, "error") == 0) {
		if (size == 0) fail(v, "taken as incomplete, want a protocol error");
		else if (size > 0 && frame_check_from_host(b[0], size - FRAME_HDR) == 0) fail(v, "accepted, want a protocol error");
		return;
	}
	if (size != (long)n) {
		fail(v, "frame_size() = %ld, want the whole %zu bytes", size, n);
		return;
	}
	if (code < 0 || b[0] != code) {
		fail(v, "type byte 0x%02x is not '%s'", b[0], v->type ? v->type : "(no type line)");
		return;
	}
	if (frame_check_from_host(b[0], len) < 0) {
		fail(v, "frame_check_from_host() calls it a protocol error");
		return;
	}
	if (strcmp(v->verdict, "refused") == 0) {
		if (code == FRAME_APP) {
			struct app_request a;
			rc = parse_app_request(&a, p, len);
			free_app_request(&a);
			if (rc == 0) fail(v, "parse_app_request() accepted it");
			return;
		}
		if (code == FRAME_ATTACH) {
			struct attach_request a;
			rc = parse_attach(&a, p, len);
			free(a.app);
			if (rc == 0) fail(v, "parse_attach() accepted it");
			return;
		}
		rc = parse_request(&r, p, len);
		free_request(&r);
		if (code != FRAME_EXEC) fail(v, "only EXEC, ATTACH and APP can be refused");
		else if (rc == 0) fail(v, "parse_request() accepted it");
		return;
	}
	if (strcmp(v->verdict, "frame") != 0) {
		fail(v, "unknown verdict '%s'", v->verdict);
		return;
	}
	switch (code) {
	case FRAME_EXEC: check_exec(v, p, len); break;
	case FRAME_STDIN: expect_bytes(v, "data", p, len); break;
	case FRAME_STDIN_EOF: break;
	case FRAME_RESIZE: expect_num(v, "rows", get_u16(p)); expect_num(v, "cols", get_u16(p + 2)); break;
	case FRAME_SIGNAL: expect_num(v, "signal", p[0]); break;
	case FRAME_ATTACH: check_attach(v, p, len); break;
	case FRAME_APP: check_app(v, p, len); break;
	default: fail(v, "'%s' is not a host-to-guest type", v->type);
	}
}

static void hexdump(const char *what, const uint8_t *p, size_t n)
{
	printf("  %s:", what);
	for (size_t i = 0; i < n; i++) printf(" %02x", p[i]);
	putchar('\n');
}

/* As the agent's send_frame(), send_frame_u32() and send_error() write frames. */
static void check_to_host(const struct vec *v)
{
	struct buf out = { 0 };
	unsigned long x;
	const struct tok *t;
	int code = type_code(v->type);

	if (strcmp(v->verdict, "frame") != 0) {
		left_to_host++;
		return;
	}
	encoded++;
	switch (code) {
	case FRAME_SESSION:
		if (num(v, "session", &x) < 0) return;
		frame_append_u32(&out, code, x);
		break;
	case FRAME_EXIT:
		if (num(v, "status", &x) < 0) return;
		frame_append_u32(&out, code, x);
		break;
	case FRAME_STDOUT:
	case FRAME_STDERR:
		if (!(t = str(v, "data"))) return;
		frame_append(&out, code, t->s, t->len);
		break;
	case FRAME_ERROR:
		if (num(v, "status", &x) < 0 || !(t = str(v, "message"))) return;
		frame_append_error(&out, x, t->s);
		break;
	default:
		fail(v, "'%s' is not a guest-to-host type", v->type ? v->type : "(no type line)");
		return;
	}
	if (out.len != v->bytes.len || memcmp(out.data, v->bytes.data, out.len) != 0) {
		fail(v, "the agent writes other bytes");
		hexdump("agent", out.data, out.len);
		hexdump("want ", v->bytes.data, v->bytes.len);
	}
	free(out.data);
}

static void check(const struct vec *v)
{
	if (!v->dir || !v->verdict) fail(v, "needs dir and verdict lines");
	else if (strcmp(v->dir, "h2g") == 0) check_from_host(v);
	else if (strcmp(v->dir, "g2h") == 0) check_to_host(v);
	else fail(v, "unknown dir '%s'", v->dir);
}

int main(int argc, char **argv)
{
	FILE *f;
	char *text = NULL, *line, *next;
	size_t size = 0;
	struct vec *v = NULL;
	int lineno = 0, nvec = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s vectors.txt\n", argv[0]);
		return 2;
	}
	if (!(f = fopen(argv[1], "r"))) {
		perror(argv[1]);
		return 2;
	}
	if (getdelim(&text, &size, 0, f) < 0) {
		perror(argv[1]);
		return 2;
	}
	fclose(f);

	for (line = text; line; line = next) {
		struct tok t[MAX_VALUES + 1];
		int n;
		if ((next = strchr(line, '\n'))) *next++ = 0;
		lineno++;
		if ((n = tokenize(line, t, MAX_VALUES + 1)) < 0) {
			printf("FAIL vectors.txt:%d: cannot read this line\n", lineno);
			return 1;
		}
		if (n == 0) continue;
		if (strcmp(t[0].s, "vector") == 0) {
			if (v) check(v);
			v = calloc(1, sizeof *v);
			v->name = n > 1 ? t[1].s : "(unnamed)";
			v->line = lineno;
			nvec++;
			continue;
		}
		if (!v) {
			printf("FAIL vectors.txt:%d: '%s' before the first vector\n", lineno, t[0].s);
			return 1;
		}
		if (strcmp(t[0].s, "bytes") == 0) {
			for (int i = 1; i < n; i++) {
				if (t[i].len % 2) {
					printf("FAIL vectors.txt:%d: odd number of hex digits\n", lineno);
					return 1;
				}
				for (size_t j = 0; j < t[i].len; j += 2) {
					uint8_t byte;
					if (!isxdigit((unsigned char)t[i].s[j]) || !isxdigit((unsigned char)t[i].s[j + 1])) {
						printf("FAIL vectors.txt:%d: not hex: %s\n", lineno, t[i].s);
						return 1;
					}
					byte = (uint8_t)(hexval(t[i].s[j]) << 4 | hexval(t[i].s[j + 1]));
					buf_append(&v->bytes, &byte, 1);
				}
			}
		} else if (strcmp(t[0].s, "dir") == 0 && n == 2) {
			v->dir = t[1].s;
		} else if (strcmp(t[0].s, "verdict") == 0 && n == 2) {
			v->verdict = t[1].s;
		} else if (strcmp(t[0].s, "type") == 0 && n == 2) {
			v->type = t[1].s;
		} else if (v->nf < MAX_FIELDS) {
			struct field *fl = &v->f[v->nf++];
			fl->key = t[0].s;
			fl->n = n - 1;
			memcpy(fl->v, t + 1, (n - 1) * sizeof t[0]);
		} else {
			printf("FAIL vectors.txt:%d: too many lines in one vector\n", lineno);
			return 1;
		}
	}
	if (v) check(v);
	printf("%d vectors: %d host-to-guest decoded, %d guest-to-host encoded, %d guest-to-host left to the host; %d failures\n",
	       nvec, decoded, encoded, left_to_host, failures);
	return failures || nvec == 0 ? 1 : 0;
}
