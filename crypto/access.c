/* crypto/access.c - the access key codec (the format is in access.h). */
#include "crypto/access.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "base/status.h"

#define TAG_LEN (sizeof(LINK_ACCESS_TAG) - 1)
#define KEY_B64_LEN 43	 /* base64url of 32 bytes, no padding */
#define CHECK_BYTES 6
#define CHECK_B64_LEN 8	 /* base64url of 6 bytes */
#define PORT_DIGITS_MAX 5
#define LABEL_MAX 63

#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING

_Static_assert(sodium_base64_ENCODED_LEN(32, B64URL) == KEY_B64_LEN + 1, "43 characters");
_Static_assert(sodium_base64_ENCODED_LEN(CHECK_BYTES, B64URL) == CHECK_B64_LEN + 1, "8 characters");
/* The longest line: tag, a 253-character name, ":65535/", three keys and the check with their
 * dots; the NUL. */
_Static_assert(TAG_LEN + LINK_ACCESS_HOST_MAX + 1 + PORT_DIGITS_MAX + 1 + 3 * (KEY_B64_LEN + 1) +
			       CHECK_B64_LEN + 1 <=
		       LINK_ACCESS_MAX,
	       "LINK_ACCESS_MAX holds the longest access key");

/* ---- HOST:PORT ------------------------------------------------------------------------------- */

/* A DNS name by the rule in access.h (RFC 1123 §2.1 host names, without a final dot). */
static bool dns_name_valid(const char *name, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > LINK_ACCESS_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (c == '.') {
			/* Empty labels (a leading, doubled or final dot) and labels ending in '-'. */
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > LABEL_MAX)
			return false;
	}
	return label > 0 && name[len - 1] != '-';
}

/* Only digits and dots: meant as an IPv4 address, so it must be one ("10.1" is not a name). */
static bool looks_numeric(const char *name, size_t len)
{
	/* Not strspn: name[len] need not be a NUL (an access key is parsed in place). */
	for (size_t i = 0; i < len; i++) {
		if ((name[i] < '0' || name[i] > '9') && name[i] != '.')
			return false;
	}
	return true;
}

/* Check host[0..len) (an IPv6 address without brackets when ipv6) and write its form into out:
 * address literals canonical (inet_ntop), names as given. NULL, or why not. */
static const char *host_parse(const char *host, size_t len, bool ipv6,
			      char out[static LINK_ACCESS_HOST_MAX + 1])
{
	char text[INET6_ADDRSTRLEN];
	uint8_t addr[16];

	if (len == 0)
		return "the host is missing (HOST:PORT)";
	if (ipv6) {
		/* inet_pton takes no zone ("%eth0"), which means nothing to a remote client. */
		if (len >= sizeof(text))
			return "the address in brackets is not an IPv6 address";
		memcpy(text, host, len);
		text[len] = '\0';
		if (inet_pton(AF_INET6, text, addr) != 1)
			return "the address in brackets is not an IPv6 address";
		if (inet_ntop(AF_INET6, addr, out, LINK_ACCESS_HOST_MAX + 1) == NULL)
			return "the address in brackets is not an IPv6 address";
		return NULL;
	}
	if (memchr(host, ':', len) != NULL)
		return "an IPv6 address goes in brackets ([2001:db8::1]:443)";
	if (looks_numeric(host, len)) {
		if (len >= sizeof(text))
			return "the host is not a valid IPv4 address";
		memcpy(text, host, len);
		text[len] = '\0';
		if (inet_pton(AF_INET, text, addr) != 1 ||
		    inet_ntop(AF_INET, addr, out, LINK_ACCESS_HOST_MAX + 1) == NULL)
			return "the host is not a valid IPv4 address";
		return NULL;
	}
	if (!dns_name_valid(host, len))
		return "the host is not a valid name (labels of 1 to 63 letters, digits and '-', "
		       "joined by '.', 253 characters at most)";
	memcpy(out, host, len);
	out[len] = '\0';
	return NULL;
}

/* host_parse; with exact, a literal must already be written in its canonical form (an access key
 * has one spelling only). */
static const char *host_take(const char *host, size_t len, bool ipv6, bool exact,
			     char out[static LINK_ACCESS_HOST_MAX + 1])
{
	const char *why = host_parse(host, len, ipv6, out);

	if (why == NULL && exact && (strlen(out) != len || memcmp(out, host, len) != 0))
		why = "the address is not written in its canonical form";
	return why;
}

/* PORT: 1..65535, digits only, no leading zero. NULL, or why not. */
static const char *port_take(const char *text, size_t len, uint16_t *port)
{
	unsigned long v = 0;

	if (len == 0)
		return "the port is missing (HOST:PORT)";
	if (len > PORT_DIGITS_MAX || text[0] == '0')
		return "the port is not a number from 1 to 65535";
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return "the port is not a number from 1 to 65535";
		v = v * 10 + (unsigned long)(text[i] - '0');
	}
	if (v < 1 || v > 65535)
		return "the port is not a number from 1 to 65535";
	*port = (uint16_t)v;
	return NULL;
}

/* HOST:PORT in text[0..len) into host and *port (both unchanged on failure); exact as for
 * host_take. NULL, or why not. */
static const char *server_take(const char *text, size_t len, bool exact,
			       char host[static LINK_ACCESS_HOST_MAX + 1], uint16_t *port)
{
	char h[LINK_ACCESS_HOST_MAX + 1];
	const char *colon, *why;
	uint16_t p = 0;
	bool ipv6 = false;
	size_t hlen;

	if (len > 0 && text[0] == '[') {
		const char *close = memchr(text, ']', len);

		if (close == NULL)
			return "the IPv6 address has no closing ']'";
		if ((size_t)(close - text) + 1 == len || close[1] != ':')
			return "the port is missing after ']' ([2001:db8::1]:443)";
		ipv6 = true;
		text++;
		hlen = (size_t)(close - text);
		colon = close + 1;
		len--;
	} else {
		colon = memchr(text, ':', len);
		if (colon == NULL)
			return "the port is missing (HOST:PORT)";
		/* A name or an IPv4 address has no ':'; several mean an IPv6 address without its
		 * brackets. */
		if (memchr(colon + 1, ':', len - (size_t)(colon + 1 - text)) != NULL)
			return "an IPv6 address goes in brackets ([2001:db8::1]:443)";
		hlen = (size_t)(colon - text);
	}
	why = host_take(text, hlen, ipv6, exact, h);
	if (why == NULL)
		why = port_take(colon + 1, len - (size_t)(colon + 1 - text), &p);
	if (why != NULL)
		return why;
	memcpy(host, h, strlen(h) + 1);
	*port = p;
	return NULL;
}

int link_access_server_parse(const char *text, char host[static LINK_ACCESS_HOST_MAX + 1],
			     uint16_t *port, const char **why)
{
	const char *problem;

	if (text == NULL)
		problem = "the server address is missing (HOST:PORT)";
	else
		problem = server_take(text, strlen(text), false, host, port);
	if (problem != NULL) {
		if (why != NULL)
			*why = problem;
		return ST_EINVAL;
	}
	return ST_OK;
}

/* ---- the check ------------------------------------------------------------------------------- */

/* CHECK over text[0..len): the first CHECK_BYTES of BLAKE2b-256. */
static void check_compute(uint8_t out[static CHECK_BYTES], const char *text, size_t len)
{
	uint8_t digest[crypto_generichash_BYTES];

	crypto_generichash(digest, sizeof(digest), (const unsigned char *)text, len, NULL, 0);
	memcpy(out, digest, CHECK_BYTES);
	sodium_memzero(digest, sizeof(digest));
}

/* ---- format ---------------------------------------------------------------------------------- */

/* Append the base64url of n bytes at out + *used; the room was checked by the caller. */
static void put_b64(char *out, size_t *used, const uint8_t *bin, size_t n)
{
	sodium_bin2base64(out + *used, sodium_base64_ENCODED_LEN(n, B64URL), bin, n, B64URL);
	*used += sodium_base64_ENCODED_LEN(n, B64URL) - 1;
}

int link_access_format(char *out, size_t size, const char *host, uint16_t port,
		       const uint8_t server_public[static KEYS_X25519_BYTES],
		       const uint8_t psk[static KEYS_PSK_BYTES], const uint8_t *client_private)
{
	char h[LINK_ACCESS_HOST_MAX + 1], p[8];
	uint8_t check[CHECK_BYTES];
	size_t hlen, need, used = 0;
	bool ipv6;

	if (out == NULL || host == NULL || port == 0)
		goto invalid;
	hlen = strlen(host);
	ipv6 = memchr(host, ':', hlen) != NULL;
	if (host_take(host, hlen, ipv6, false, h) != NULL)
		goto invalid;
	snprintf(p, sizeof(p), "%u", (unsigned)port);
	hlen = strlen(h);
	need = TAG_LEN + (ipv6 ? 2 : 0) + hlen + 1 + strlen(p) + 1 +
	       (client_private != NULL ? 3 : 2) * (KEY_B64_LEN + 1) + CHECK_B64_LEN + 1;
	if (size < need) {
		memset(out, 0, size);
		return ST_ETOOBIG;
	}

	used = (size_t)snprintf(out, size, "%s%s%s%s:%s/", LINK_ACCESS_TAG, ipv6 ? "[" : "", h,
				ipv6 ? "]" : "", p);
	put_b64(out, &used, server_public, KEYS_X25519_BYTES);
	out[used++] = '.';
	put_b64(out, &used, psk, KEYS_PSK_BYTES);
	out[used++] = '.';
	if (client_private != NULL) {
		put_b64(out, &used, client_private, KEYS_X25519_BYTES);
		out[used++] = '.';
	}
	/* CHECK covers everything before its own dot. */
	check_compute(check, out, used - 1);
	put_b64(out, &used, check, sizeof(check));
	out[used] = '\0';
	return ST_OK;

invalid:
	if (out != NULL)
		memset(out, 0, size);
	return ST_EINVAL;
}

/* ---- parse ----------------------------------------------------------------------------------- */

/* Decode one 43-character field into a new locked secret. */
static int secret_take(const char *field, struct keys_secret **out)
{
	struct keys_secret *s = NULL;
	size_t n = 0;
	int st = keys_secret_new(32, &s);

	if (st != ST_OK)
		return st;
	/* Straight into guarded memory: no copy of the secret anywhere else. */
	if (sodium_base642bin(keys_secret_data(s), 32, field, KEY_B64_LEN, NULL, &n, NULL, B64URL) !=
		    0 ||
	    n != 32) {
		keys_secret_free(s);
		return ST_EINVAL;
	}
	st = keys_secret_lock(s);
	if (st != ST_OK) {
		keys_secret_free(s);
		return st;
	}
	*out = s;
	return ST_OK;
}

int link_access_parse(const char *text, size_t len, struct link_access *out, const char **why)
{
	static const char *const bad_length[2][4] = {
		{ "the server key is not 43 characters (base64url of 32 bytes)",
		  "the PSK is not 43 characters (base64url of 32 bytes)",
		  "the check is not 8 characters", NULL },
		{ "the server key is not 43 characters (base64url of 32 bytes)",
		  "the PSK is not 43 characters (base64url of 32 bytes)",
		  "the client's private key is not 43 characters (base64url of 32 bytes)",
		  "the check is not 8 characters" },
	};
	static const char *const bad_b64[2][4] = {
		{ "the server key is not valid base64url", "the PSK is not valid base64url",
		  "the check is not valid base64url", NULL },
		{ "the server key is not valid base64url", "the PSK is not valid base64url",
		  "the client's private key is not valid base64url",
		  "the check is not valid base64url" },
	};
	struct link_access a;
	const char *fields[4], *slash, *end, *problem = NULL;
	uint8_t check[CHECK_BYTES], want[CHECK_BYTES];
	size_t flen[4], nfields = 0, keys;
	size_t n = 0;
	int st = ST_EINVAL;

	memset(&a, 0, sizeof(a));
	if (text == NULL) {
		problem = "no access key given";
		goto out;
	}
	if (len >= LINK_ACCESS_MAX) {
		problem = "too long for an access key";
		goto out;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			problem = "contains a space or a line break: an access key is one line "
				  "without spaces (was it wrapped?)";
			goto out;
		}
		if (c < 0x21 || c > 0x7e) {
			problem = "contains a character that is not in an access key";
			goto out;
		}
	}
	if (len < TAG_LEN || memcmp(text, LINK_ACCESS_TAG, TAG_LEN) != 0) {
		/* Another version is worth naming: the fix is another shroud, not another key. */
		problem = len >= 11 && memcmp(text, "shroud-link", 11) == 0
				  ? "an access key of another version (this shroud reads "
				    "shroud-link1:)"
				  : "not a shroud access key (it does not start with "
				    "shroud-link1:)";
		goto out;
	}
	end = text + len;
	slash = memchr(text + TAG_LEN, '/', (size_t)(end - text) - TAG_LEN);
	if (slash == NULL) {
		problem = "the keys are missing (no '/' after HOST:PORT)";
		goto out;
	}
	problem = server_take(text + TAG_LEN, (size_t)(slash - text) - TAG_LEN, true, a.host, &a.port);
	if (problem != NULL)
		goto out;

	/* SERVER_KEY.PSK[.CLIENT_KEY].CHECK */
	for (const char *p = slash + 1;;) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		const char *stop = dot != NULL ? dot : end;

		if (nfields == ARRAY_SIZE(fields)) {
			problem = "too many fields after '/' (SERVER_KEY.PSK[.CLIENT_KEY].CHECK)";
			goto out;
		}
		fields[nfields] = p;
		flen[nfields] = (size_t)(stop - p);
		nfields++;
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	if (nfields < 3) {
		problem = "fields are missing after '/' (SERVER_KEY.PSK[.CLIENT_KEY].CHECK)";
		goto out;
	}
	keys = nfields - 1;
	for (size_t i = 0; i < nfields; i++) {
		size_t want_len = i == keys ? CHECK_B64_LEN : KEY_B64_LEN;

		if (flen[i] != want_len) {
			problem = bad_length[nfields - 3][i];
			goto out;
		}
	}

	if (sodium_base642bin(a.server_public, sizeof(a.server_public), fields[0], KEY_B64_LEN, NULL,
			      &n, NULL, B64URL) != 0 ||
	    n != sizeof(a.server_public)) {
		problem = bad_b64[nfields - 3][0];
		goto out;
	}
	st = secret_take(fields[1], &a.psk);
	if (st == ST_EINVAL)
		problem = bad_b64[nfields - 3][1];
	if (st == ST_OK && keys == 3) {
		st = secret_take(fields[2], &a.client_private);
		if (st == ST_EINVAL)
			problem = bad_b64[1][2];
	}
	if (st != ST_OK)
		goto out;
	st = ST_EINVAL;
	if (sodium_base642bin(check, sizeof(check), fields[keys], CHECK_B64_LEN, NULL, &n, NULL,
			      B64URL) != 0 ||
	    n != sizeof(check)) {
		problem = bad_b64[nfields - 3][keys];
		goto out;
	}
	check_compute(want, text, (size_t)(fields[keys] - 1 - text));
	if (sodium_memcmp(check, want, sizeof(check)) != 0) {
		problem = "the key is damaged (its check does not match): copy it again, whole";
		goto out;
	}
	if (!keys_x25519_public_usable(a.server_public)) {
		problem = "the server key is not a usable X25519 public key";
		goto out;
	}

	*out = a;
	memset(&a, 0, sizeof(a)); /* transferred */
	st = ST_OK;
out:
	link_access_clear(&a);
	if (st == ST_EINVAL && why != NULL)
		*why = problem;
	return st;
}

void link_access_clear(struct link_access *a)
{
	keys_secret_free(a->psk);
	keys_secret_free(a->client_private);
	sodium_memzero(a, sizeof(*a));
}
