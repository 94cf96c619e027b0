/* egress/params.c - the parameters a SOCKS username carries (grammar in egress/params.h). */
#include "egress/params.h"

#include <string.h>

#include "base/status.h"

#define COUNTRY_LEN 2

/* One '-'-separated part of the input: never NUL-terminated in place (the input is const). */
struct part {
	const char *p;
	size_t len;
};

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* [A-Za-z0-9_.]: store's name characters; ASCII only, no locale. */
static bool is_name_char(char c)
{
	return is_alnum(c) || c == '_' || c == '.';
}

static bool part_is(const struct part *pt, const char *word)
{
	size_t n = strlen(word);

	return pt->len == n && memcmp(pt->p, word, n) == 0;
}

/* Cut the next part off *cursor: up to the next '-' or the end. *cursor then points past the
 * '-', or is NULL after the last part. */
static struct part part_next(const char **cursor)
{
	struct part pt = { *cursor, 0 };
	const char *dash = strchr(*cursor, '-');

	if (dash == NULL) {
		pt.len = strlen(*cursor);
		*cursor = NULL;
	} else {
		pt.len = (size_t)(dash - *cursor);
		*cursor = dash + 1;
	}
	return pt;
}

/* 1..max of [A-Za-z0-9_.]; on success copied NUL-terminated into dst (max + 1 bytes). */
static int copy_word(const struct part *pt, size_t max, char *dst, const char **why)
{
	if (pt->len == 0) {
		*why = "empty parameter value";
		return ST_EINVAL;
	}
	if (pt->len > max) {
		*why = "parameter value too long";
		return ST_EINVAL;
	}
	for (size_t i = 0; i < pt->len; i++) {
		if (!is_name_char(pt->p[i])) {
			*why = "invalid character in parameter value";
			return ST_EINVAL;
		}
	}
	memcpy(dst, pt->p, pt->len);
	dst[pt->len] = '\0';
	return ST_OK;
}

/* Decimal 0..EGRESS_TTL_MAX, no sign, no leading zero except "0" itself. */
static int parse_ttl(const struct part *pt, uint32_t *ttl, const char **why)
{
	uint32_t v = 0;

	if (pt->len == 0) {
		*why = "empty ttl";
		return ST_EINVAL;
	}
	if (pt->len > 1 && pt->p[0] == '0') {
		*why = "ttl has a leading zero";
		return ST_EINVAL;
	}
	for (size_t i = 0; i < pt->len; i++) {
		char c = pt->p[i];

		if (c < '0' || c > '9') {
			*why = "ttl is not a decimal number";
			return ST_EINVAL;
		}
		/* Checked before the multiplication, so v never exceeds EGRESS_TTL_MAX * 10 + 9. */
		v = v * 10 + (uint32_t)(c - '0');
		if (v > EGRESS_TTL_MAX) {
			*why = "ttl too large";
			return ST_EINVAL;
		}
	}
	*ttl = v;
	return ST_OK;
}

/* The parameter list after NAME: key-value pairs until the end. Fills p (a local of the
 * caller's); the caller commits it. */
static int parse_pairs(const char *cursor, struct egress_params *p, const char **why)
{
	bool has_session = false, has_country = false;
	size_t ntags = 0;

	while (cursor != NULL) {
		struct part key = part_next(&cursor);
		struct part value;
		int st;

		if (key.len == 0) {
			*why = "empty parameter name";
			return ST_EINVAL;
		}
		if (cursor == NULL) {
			*why = "parameter without a value";
			return ST_EINVAL;
		}
		value = part_next(&cursor);
		if (part_is(&key, "session")) {
			if (has_session) {
				*why = "session given twice";
				return ST_EINVAL;
			}
			st = copy_word(&value, EGRESS_SESSION_MAX, p->session, why);
			if (st != ST_OK)
				return st;
			has_session = true;
		} else if (part_is(&key, "ttl")) {
			if (p->has_ttl) {
				*why = "ttl given twice";
				return ST_EINVAL;
			}
			st = parse_ttl(&value, &p->ttl, why);
			if (st != ST_OK)
				return st;
			p->has_ttl = true;
		} else if (part_is(&key, "country")) {
			struct egress_tag_filter *f = &p->filters[p->nfilters];

			if (has_country) {
				*why = "country given twice";
				return ST_EINVAL;
			}
			if (value.len != COUNTRY_LEN || !is_alpha(value.p[0]) || !is_alpha(value.p[1])) {
				*why = "country is not two letters";
				return ST_EINVAL;
			}
			/* The pool stores country=cc; matching is case-insensitive, lower case is
			 * the canonical form. */
			strcpy(f->key, "country");
			for (size_t i = 0; i < COUNTRY_LEN; i++) {
				char c = value.p[i];

				f->value[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
			}
			f->value[COUNTRY_LEN] = '\0';
			p->nfilters++;
			has_country = true;
		} else if (part_is(&key, "tag")) {
			struct egress_tag_filter *f = &p->filters[p->nfilters];

			if (ntags == EGRESS_TAGS_MAX) {
				*why = "too many tags";
				return ST_EINVAL;
			}
			st = copy_word(&value, EGRESS_TAG_MAX, f->value, why);
			if (st != ST_OK)
				return st;
			f->key[0] = '\0';
			p->nfilters++;
			ntags++;
		} else {
			*why = "unknown parameter";
			return ST_EINVAL;
		}
	}
	return ST_OK;
}

int egress_params_parse_tail(const char *params, struct egress_params *out, const char **why)
{
	struct egress_params p;
	int st;

	memset(&p, 0, sizeof(p));
	if (params[0] != '\0') {
		st = parse_pairs(params, &p, why);
		if (st != ST_OK)
			return st;
	}
	*out = p;
	return ST_OK;
}

int egress_params_parse(const char *username, struct egress_params *out, const char **why)
{
	struct egress_params p;
	const char *cursor = username;
	struct part name = part_next(&cursor);
	int st;

	/* The user name rule of store/ (pool.db.sql, users.name): 1..64 of [A-Za-z0-9_.], the
	 * first a letter or digit. */
	if (name.len == 0) {
		*why = "empty user name";
		return ST_EINVAL;
	}
	if (name.len > EGRESS_NAME_MAX) {
		*why = "user name too long";
		return ST_EINVAL;
	}
	if (!is_alnum(name.p[0])) {
		*why = "user name must start with a letter or digit";
		return ST_EINVAL;
	}
	for (size_t i = 1; i < name.len; i++) {
		if (!is_name_char(name.p[i])) {
			*why = "invalid character in user name";
			return ST_EINVAL;
		}
	}
	memset(&p, 0, sizeof(p));
	memcpy(p.name, name.p, name.len);
	p.name[name.len] = '\0';
	if (cursor != NULL) {
		st = parse_pairs(cursor, &p, why);
		if (st != ST_OK)
			return st;
	}
	*out = p;
	return ST_OK;
}
