/*
 * rkt-agent: the frame layer of PROTOCOL.md ("Frames"), without any I/O:
 * how the agent cuts and judges frames from the host, and how it writes
 * its own. Kept apart so that test-vectors.c can check it against the
 * golden vectors (vectors.txt) the host's TypeScript codec is checked
 * against too.
 */
#include "agent.h"

#include <string.h>

long frame_size(const uint8_t *p, size_t len)
{
	uint32_t n;
	if (len < FRAME_HDR) return 0;
	n = get_u32(p + 1);
	/* judged on the header alone: no point waiting for 4 GiB */
	if (n > FRAME_MAX) return -1;
	return len - FRAME_HDR < n ? 0 : (long)(FRAME_HDR + n);
}

int frame_check_from_host(uint8_t type, uint32_t len)
{
	switch (type) {
	case FRAME_EXEC:      /* its payload is parse_request()'s business */
	case FRAME_ATTACH:    /* and this one parse_attach()'s */
	case FRAME_APP:       /* and this one parse_app_request()'s */
	case FRAME_STDIN:
	case FRAME_STDIN_EOF: /* a payload, though there should be none, is ignored */
		return 0;
	case FRAME_RESIZE:
		return len == 4 ? 0 : -1;
	case FRAME_SIGNAL:
		return len == 1 ? 0 : -1;
	default:              /* unknown, or a guest-to-host type */
		return -1;
	}
}

void frame_append(struct buf *b, uint8_t type, const void *data, uint32_t len)
{
	uint8_t hdr[FRAME_HDR];
	hdr[0] = type;
	put_u32(hdr + 1, len);
	buf_append(b, hdr, sizeof hdr);
	if (len) buf_append(b, data, len);
}

void frame_append_u32(struct buf *b, uint8_t type, uint32_t v)
{
	uint8_t p[4];
	put_u32(p, v);
	frame_append(b, type, p, 4);
}

void frame_append_error(struct buf *b, uint32_t status, const char *msg)
{
	uint8_t p[4 + ERROR_MSG_MAX];
	size_t n = strlen(msg);
	if (n > ERROR_MSG_MAX) n = ERROR_MSG_MAX;
	put_u32(p, status);
	memcpy(p + 4, msg, n);
	frame_append(b, FRAME_ERROR, p, 4 + n);
}
