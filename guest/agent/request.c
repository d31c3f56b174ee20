/*
 * rkt-agent: byte buffers and the EXEC request's wire format
 * (PROTOCOL.md, "EXEC payload"). Every length is checked against what is
 * left of the payload before it is trusted.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void buf_append(struct buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + len) cap *= 2;
		b->data = realloc(b->data, cap);
		if (!b->data) { logmsg("out of memory"); _exit(1); }
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

void buf_consume(struct buf *b, size_t len)
{
	memmove(b->data, b->data + len, b->len - len);
	b->len -= len;
}


uint32_t take_u32(struct cursor *c)
{
	uint32_t v;
	if (c->left < 4) { c->bad = 1; return 0; }
	v = get_u32(c->p);
	c->p += 4; c->left -= 4;
	return v;
}

char *take_str(struct cursor *c)
{
	uint32_t n = take_u32(c);
	char *s;
	if (c->bad || n > c->left || memchr(c->p, 0, n)) { c->bad = 1; return NULL; }
	s = malloc(n + 1);
	if (!s) { c->bad = 1; return NULL; }
	memcpy(s, c->p, n);
	s[n] = 0;
	c->p += n; c->left -= n;
	return s;
}

static char **take_strv(struct cursor *c)
{
	uint32_t n = take_u32(c);
	char **v;
	/* every string needs at least its 4-byte length */
	if (c->bad || n > c->left / 4) { c->bad = 1; return NULL; }
	v = calloc(n + 1, sizeof *v);
	for (uint32_t i = 0; v && i < n && !c->bad; i++) v[i] = take_str(c);
	if (!v) c->bad = 1;
	return v;
}

static void free_strv(char **v)
{
	for (size_t i = 0; v && v[i]; i++) free(v[i]);
	free(v);
}

void free_request(struct request *r)
{
	free(r->app); free(r->cwd); free(r->groups);
	free_strv(r->argv); free_strv(r->env);
}

/* Layout in PROTOCOL.md: version, flags, session, uid, gid, rows, cols, app, cwd, groups, argv, env. */
int parse_request(struct request *r, const uint8_t *p, uint32_t len)
{
	struct cursor c = { p, len, 0 };
	memset(r, 0, sizeof *r);
	if (len < 18 || p[0] != PROTOCOL_VERSION) return -1;
	r->tty = p[1] & EXEC_FLAG_TTY;
	r->session = get_u32(p + 2);
	r->uid = get_u32(p + 6);
	r->gid = get_u32(p + 10);
	r->rows = get_u16(p + 14);
	r->cols = get_u16(p + 16);
	c.p += 18; c.left -= 18;
	r->app = take_str(&c);
	r->cwd = take_str(&c);
	r->ngroups = take_u32(&c);
	if (!c.bad && r->ngroups > c.left / 4) c.bad = 1;
	if (!c.bad) {
		r->groups = calloc(r->ngroups + 1, sizeof(gid_t));
		for (uint32_t i = 0; i < r->ngroups; i++) r->groups[i] = take_u32(&c);
	}
	r->argv = take_strv(&c);
	r->env = take_strv(&c);
	if (c.bad || c.left || !r->argv || !r->argv[0] || !r->argv[0][0]) return -1;
	return 0;
}


/* Layout in PROTOCOL.md: version, flags, session, rows, cols, app. */
int parse_attach(struct attach_request *r, const uint8_t *p, uint32_t len)
{
	struct cursor c = { p, len, 0 };
	memset(r, 0, sizeof *r);
	if (len < 10 || p[0] != PROTOCOL_VERSION) return -1;
	r->flags = p[1];
	r->session = get_u32(p + 2);
	r->rows = get_u16(p + 6);
	r->cols = get_u16(p + 8);
	c.p += 10; c.left -= 10;
	r->app = take_str(&c);
	if (c.bad || c.left || !(r->flags & (ATTACH_STDIN | ATTACH_STDOUT | ATTACH_STDERR)) || (r->flags & ~7)) return -1;
	return 0;
}
