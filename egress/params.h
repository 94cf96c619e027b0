/*
 * egress/params.h - the parameters a SOCKS username carries after the user name.
 *
 *   NAME[-session-ID][-ttl-SECONDS][-country-CC][-tag-VALUE]...
 *
 * in any order after NAME, e.g. "alice-session-s42-ttl-600-country-de" (the convention of commercial
 * rotating proxies, so scraping tools work unchanged). '-' separates, so no part contains one.
 *   NAME      1..64 of [A-Za-z0-9_.], first a letter or digit (the user name rule of store/)
 *   session   1..64 of [A-Za-z0-9_.]: a sticky identity of its own; absent = the user's default
 *   ttl       0..604800 decimal seconds, no sign or leading zeros (but "0"): how long the same
 *             (user, session, site) keeps its address; 0 = a new address for every connection
 *   country   2 letters, matched case-insensitively against the pool tag country=cc
 *   tag       1..32 of [A-Za-z0-9_.]: the entry must carry a tag whose value is VALUE (any key),
 *             e.g. tag-residential matches kind=residential; up to EGRESS_TAGS_MAX of them
 * session, ttl and country may appear once each. Any other key, a missing or malformed value, or
 * a repeated key is an error: the login fails (RFC 1929 status 0x01).
 *
 * Pure: no allocation, no I/O. On failure *out is unchanged and *why names the problem (a static
 * string, fit for a debug log: it never contains the input).
 */
#ifndef SHROUD_EGRESS_PARAMS_H
#define SHROUD_EGRESS_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

#define EGRESS_NAME_MAX 64
#define EGRESS_SESSION_MAX 64
#define EGRESS_TAG_MAX 32
#define EGRESS_TAGS_MAX 8
#define EGRESS_TTL_MAX 604800

/* A required pool tag: key "" means any key (tag-VALUE); country-CC gives key "country". */
struct egress_tag_filter {
	char key[EGRESS_TAG_MAX + 1];
	char value[EGRESS_TAG_MAX + 1];
};

struct egress_params {
	char name[EGRESS_NAME_MAX + 1];
	char session[EGRESS_SESSION_MAX + 1]; /* "" when absent */
	bool has_ttl;
	uint32_t ttl;
	size_t nfilters;
	struct egress_tag_filter filters[EGRESS_TAGS_MAX + 1]; /* tags, and country */
};

/* Parse a whole username (NUL-terminated). ST_OK or ST_EINVAL. */
NODISCARD int egress_params_parse(const char *username, struct egress_params *out,
				  const char **why);

/* Parse only the parameter part ("session-s1-ttl-0", or "" for none), as the encrypted link's
 * CONNECT record carries it; out->name is left empty. ST_OK or ST_EINVAL. */
NODISCARD int egress_params_parse_tail(const char *params, struct egress_params *out,
				       const char **why);

#endif
