/*
 * tests/fuzz/fuzz_access.c - libFuzzer target for the access key codec (crypto/access.h).
 *
 * Each input is used twice. As an access key: the status is ST_OK or ST_EINVAL (or an allocation
 * failure), a refusal gives a reason and leaves the output byte-identical, and a key that parses
 * is formatted again from its fields and must give back exactly the input (one spelling per key).
 * As the fields of a key (port, three keys, a flag, the host text): whatever link_access_format
 * accepts parses back to the same fields, unless the server key is a low-order point, which the
 * parser refuses. HOST:PORT parsing gets the host text too. Anything else aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "crypto/pwhash.h"

#define SENTINEL 0xA5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_parse(const uint8_t *data, size_t size)
{
	struct link_access a, before;
	char again[LINK_ACCESS_MAX];
	const char *why = NULL;
	int st;

	memset(&a, SENTINEL, sizeof(a));
	memcpy(&before, &a, sizeof(a));
	st = link_access_parse((const char *)data, size, &a, &why);
	if (st == ST_ENOMEM || st == ST_ESYS) {
		check(memcmp(&a, &before, sizeof(a)) == 0);
		return;
	}
	if (st != ST_OK) {
		check(st == ST_EINVAL);
		check(why != NULL && why[0] != '\0');
		check(memcmp(&a, &before, sizeof(a)) == 0);
		return;
	}
	check(a.psk != NULL && keys_secret_len(a.psk) == KEYS_PSK_BYTES);
	check(a.client_private == NULL || keys_secret_len(a.client_private) == KEYS_X25519_BYTES);
	check(keys_x25519_public_usable(a.server_public));
	check(link_access_format(again, sizeof(again), a.host, a.port, a.server_public,
				 keys_secret_bytes(a.psk),
				 a.client_private != NULL ? keys_secret_bytes(a.client_private)
							  : NULL) == ST_OK);
	check(strlen(again) == size && memcmp(again, data, size) == 0);
	link_access_clear(&a);
	check(a.psk == NULL && a.client_private == NULL);
}

/* port (2) | server (32) | psk (32) | client (32) | flags (1) | host text */
#define FIELDS 99

static void check_format(const uint8_t *data, size_t size)
{
	char host[LINK_ACCESS_HOST_MAX + 2], line[LINK_ACCESS_MAX], again[LINK_ACCESS_MAX];
	char canonical[LINK_ACCESS_HOST_MAX + 1];
	const uint8_t *server = data + 2, *psk = data + 34, *client = data + 66;
	struct link_access a;
	const char *why = NULL;
	uint16_t port, parsed_port = 0;
	size_t hlen;
	bool with_client;
	int st;

	if (size < FIELDS)
		return;
	port = (uint16_t)(data[0] << 8 | data[1]);
	with_client = data[98] & 1;
	hlen = size - FIELDS < sizeof(host) - 1 ? size - FIELDS : sizeof(host) - 1;
	memcpy(host, data + FIELDS, hlen);
	host[hlen] = '\0';

	st = link_access_format(line, sizeof(line), host, port, server, psk,
				with_client ? client : NULL);
	if (st != ST_OK) {
		check(st == ST_EINVAL);
		check(line[0] == '\0');
		return;
	}
	check(strlen(line) < sizeof(line));
	st = link_access_parse(line, strlen(line), &a, &why);
	if (!keys_x25519_public_usable(server)) {
		check(st == ST_EINVAL);
		return;
	}
	if (st == ST_ENOMEM || st == ST_ESYS)
		return;
	check(st == ST_OK);
	/* One spelling: the parsed fields format to the same line. */
	check(link_access_format(again, sizeof(again), a.host, a.port, a.server_public,
				 keys_secret_bytes(a.psk),
				 a.client_private != NULL ? keys_secret_bytes(a.client_private)
							  : NULL) == ST_OK);
	check(strcmp(again, line) == 0);
	check(a.port == port);
	check(memcmp(a.server_public, server, KEYS_X25519_BYTES) == 0);
	check(memcmp(keys_secret_bytes(a.psk), psk, KEYS_PSK_BYTES) == 0);
	if (with_client)
		check(a.client_private != NULL &&
		      memcmp(keys_secret_bytes(a.client_private), client, KEYS_X25519_BYTES) == 0);
	else
		check(a.client_private == NULL);
	/* The host comes back in its canonical form: what HOST:PORT parsing makes of it. */
	snprintf(line, sizeof(line), "%s%s%s:%u", strchr(host, ':') != NULL ? "[" : "", host,
		 strchr(host, ':') != NULL ? "]" : "", (unsigned)port);
	check(link_access_server_parse(line, canonical, &parsed_port, &why) == ST_OK);
	check(strcmp(canonical, a.host) == 0 && parsed_port == port);
	link_access_clear(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;

	if (!ready) {
		check(pwhash_init() == ST_OK);
		ready = true;
	}
	check_parse(data, size);
	check_format(data, size);
	return 0;
}
