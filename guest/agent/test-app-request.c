/*
 * test-app-request: the agent's judge of APP requests (app-request.c) on
 * payloads from the host's fuzz test (test/unit/guest-agent-app.test.ts),
 * which holds its verdicts to the host's own (decodeApp). Built with the
 * address and undefined-behaviour sanitizers there: a payload that makes
 * the parser read or write out of bounds ends the run.
 *
 * stdin: one payload per line, in hex; stdout: "1" (taken) or "0"
 * (refused) per line.
 */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void logmsg(const char *fmt, ...) { (void)fmt; }

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int main(void)
{
	static char line[1 << 21];
	while (fgets(line, sizeof line, stdin)) {
		size_t n = strcspn(line, "\n"), len = n / 2;
		/* exactly the payload's bytes, so that the sanitizer sees any read past them */
		uint8_t *p = malloc(len ? len : 1);
		struct app_request r;
		for (size_t i = 0; i < len; i++) {
			int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
			if (hi < 0 || lo < 0) return 2;
			p[i] = (uint8_t)(hi << 4 | lo);
		}
		printf("%d\n", parse_app_request(&r, p, (uint32_t)len) == 0);
		free_app_request(&r);
		free(p);
	}
	return 0;
}
