/*
 * rkt-agent: the APP request's wire format (PROTOCOL.md, "APP payload"),
 * without I/O: what a host may ask of a mutable pod's apps, judged before
 * anything in the guest is touched. Every name and path is held to a
 * grammar here, so that a request can only ever reach the files and mounts
 * of the one app it names: its units in /run/systemd/system, its volumes
 * under /opt/stage2/<app>/rootfs.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* An app name as rkt takes them ([a-z0-9]+([-._][a-z0-9]+)*): also safe as a path component and a unit name. */
int app_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 200 || !alnum_lower(s[0]) || !alnum_lower(s[n - 1])) return 0;
	for (size_t i = 1; i < n; i++)
		if (!alnum_lower(s[i]) && (!strchr("-._", s[i]) || !alnum_lower(s[i - 1]))) return 0;
	return 1;
}

static int unit_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '@';
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* "<app>.<...>.service", or one of its drop-ins "<app>.<...>.service.d/<name>.conf". */
int unit_name_ok(const char *app, const char *u)
{
	size_t a = strlen(app), n = strlen(u);
	const char *slash = strchr(u, '/');
	if (n > 255 || strncmp(u, app, a) != 0 || u[a] != '.' || strstr(u, "..")) return 0;
	for (size_t i = 0; i < n; i++)
		if (!unit_char(u[i]) && !(u + i == slash)) return 0;
	if (!slash) return ends_with(u, n, ".service");
	if (strchr(slash + 1, '/')) return 0;
	return ends_with(u, slash - u, ".service.d") && slash[1] && ends_with(u, n, ".conf");
}

/* An absolute path inside the app's rootfs: no empty, "." or ".." component, no control character. */
int bind_path_ok(const char *app, const char *p)
{
	char prefix[300];
	size_t k = (size_t)snprintf(prefix, sizeof prefix, "/opt/stage2/%s/rootfs/", app);
	if (k >= sizeof prefix || strncmp(p, prefix, k) != 0 || strlen(p) > 4000) return 0;
	for (const char *c = p; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f) return 0;
	for (const char *c = p + 1; ; ) {
		const char *end = strchrnul(c, '/');
		size_t len = end - c;
		if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return 0;
		if (!*end) return 1;
		c = end + 1;
	}
}

/* Three stream modes, "null|log|stream|tty" each, or nothing. */
static int io_ok(const char *io)
{
	static const char *const modes[] = { "null", "log", "stream", "tty" };
	const char *c = io;
	if (!io[0]) return 1;
	for (int w = 0; w < 3; w++) {
		int ok = 0;
		for (int m = 0; m < 4 && !ok; m++) {
			size_t k = strlen(modes[m]);
			if (strncmp(c, modes[m], k) == 0 && (c[k] == (w < 2 ? ' ' : 0))) ok = 1, c += k + (w < 2);
		}
		if (!ok) return 0;
	}
	return 1;
}

void free_app_request(struct app_request *r)
{
	free(r->app); free(r->io);
	for (uint32_t i = 0; i < APP_UNITS_MAX; i++) { free(r->unit_name[i]); free(r->unit_text[i]); }
	for (uint32_t i = 0; i < APP_BINDS_MAX; i++) free(r->bind_path[i]);
	memset(r, 0, sizeof *r);
}

/* Layout in PROTOCOL.md: version, op, session, app, io, units (name, text), binds (flags, path). */
int parse_app_request(struct app_request *r, const uint8_t *p, uint32_t len)
{
	struct cursor c = { p, len, 0 };
	memset(r, 0, sizeof *r);
	if (len < 6 || p[0] != PROTOCOL_VERSION || p[1] < APP_PING || p[1] > APP_RM) return -1;
	r->op = p[1];
	r->session = get_u32(p + 2);
	c.p += 6; c.left -= 6;
	r->app = take_str(&c);
	r->io = take_str(&c);
	r->nunits = take_u32(&c);
	if (c.bad || r->nunits > APP_UNITS_MAX) return -1;
	for (uint32_t i = 0; i < r->nunits && !c.bad; i++) {
		r->unit_name[i] = take_str(&c);
		r->unit_text[i] = take_str(&c);
	}
	r->nbinds = take_u32(&c);
	if (c.bad || r->nbinds > APP_BINDS_MAX) return -1;
	for (uint32_t i = 0; i < r->nbinds && !c.bad; i++) {
		if (c.left < 1) { c.bad = 1; break; }
		if (c.p[0] > 1) c.bad = 1;
		r->bind_ro[i] = c.p[0];
		c.p++; c.left--;
		r->bind_path[i] = take_str(&c);
	}
	if (c.bad || c.left) return -1;
	/* PING names no app; every other op exactly one, and only its own units and paths */
	if (r->op == APP_PING) return r->app[0] || r->io[0] || r->nunits || r->nbinds ? -1 : 0;
	if (!app_name_ok(r->app) || !io_ok(r->io)) return -1;
	if (r->op != APP_ADD && (r->io[0] || r->nbinds)) return -1;
	for (uint32_t i = 0; i < r->nunits; i++) {
		if (!unit_name_ok(r->app, r->unit_name[i])) return -1;
		if (r->op != APP_ADD && r->unit_text[i][0]) return -1;
	}
	for (uint32_t i = 0; i < r->nbinds; i++)
		if (!bind_path_ok(r->app, r->bind_path[i])) return -1;
	return 0;
}
