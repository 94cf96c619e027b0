/*
 * tests/fuzz/fuzz_params.c - libFuzzer target for the text every SOCKS client controls: the
 * parameters of its RFC 1929 username (egress/params.h) and the site of its target host name
 * (egress/site.h).
 *
 * Each input is cut to what the callers can pass (up to the first NUL, at most 255 bytes: ULEN and
 * the link's LINK_PARAMS_MAX for the parameters, the domain length byte for the name) and used
 * three times, as a username, as a parameter tail and as a host name. The contract checked:
 *   params: the status is ST_OK or ST_EINVAL; a failure left *out byte-identical and set *why to
 *     a short printable static string (not a pointer into the input); a success left *why alone,
 *     and every string field is NUL-terminated in its array, within its limit and of its
 *     alphabet, the ttl within 0..EGRESS_TTL_MAX (0 when absent), at most EGRESS_TAGS_MAX tags and
 *     one country (two lower-case letters); the name is the input up to its first '-'. Written
 *     back as text the result is a permutation of the input's pairs (the same length) and parses
 *     to the same result. A username parses iff its name is valid and its tail, if it has one,
 *     does (to the same result).
 *   site: the status is ST_OK or ST_EINVAL (for an empty name, or "." only); a failure left out
 *     byte-identical; a success is a non-empty NUL-terminated suffix of the normalised name
 *     (ASCII lower-cased, one trailing dot removed) starting at a label boundary, and is either
 *     the whole name or has a dot. The site does not depend on the case of the letters nor on a
 *     trailing dot, a name under a site has that site (the first label dropped, the site is
 *     unchanged), and the site of a site is itself.
 *   both: the same input gives the same result twice, and nothing is allocated (both headers
 *     promise purity; counted through the sanitizer's malloc hook in the ASan build).
 * Anything else aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "egress/params.h"
#include "egress/site.h"

/* Only ASan's allocator runs malloc hooks: a fuzz build without SHROUD_SANITIZE has the
 * installer (in libFuzzer's runtime) but never calls the hooks, so only ASan counts allocations. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNT_ALLOCATIONS 1
#include <sanitizer/allocator_interface.h>
#endif
#endif
#ifndef COUNT_ALLOCATIONS
#define COUNT_ALLOCATIONS 0
#endif

#define SENTINEL 0xA5
#define TEXT_MAX 255 /* ULEN, LINK_PARAMS_MAX and a SOCKS domain name are all at most 255 */
#define WHY_MAX 100
/* The longest result written back: a name, a session, a ttl and every filter at its longest. */
#define ENCODED_MAX 512

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Allocations made by this thread while a function under test runs. */
static _Thread_local bool counting;
static _Thread_local size_t allocations;

/* What *why holds before a call: a success must leave it there. */
static const char why_unset[] = "unset";

static void check(int ok)
{
	if (!ok)
		abort();
}

#if COUNT_ALLOCATIONS
static void on_malloc(const volatile void *ptr, size_t size)
{
	(void)ptr;
	(void)size;
	if (counting)
		allocations++;
}

static void on_free(const volatile void *ptr)
{
	(void)ptr;
}
#endif

static void count_start(void)
{
	allocations = 0;
	counting = true;
}

static void count_stop_expect_none(void)
{
	counting = false;
	check(allocations == 0);
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_name_char(char c)
{
	return is_alnum(c) || c == '_' || c == '.';
}

/* A NUL inside the array, and 1..max of [A-Za-z0-9_.] before it. */
static bool is_word(const char *s, size_t size, size_t max)
{
	size_t len;

	if (memchr(s, '\0', size) == NULL)
		return false;
	len = strlen(s);
	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!is_name_char(s[i]))
			return false;
	}
	return true;
}

/* The user name rule: 1..EGRESS_NAME_MAX name characters, the first a letter or digit. */
static bool is_user_name(const char *s, size_t len)
{
	if (len == 0 || len > EGRESS_NAME_MAX || !is_alnum(s[0]))
		return false;
	for (size_t i = 1; i < len; i++) {
		if (!is_name_char(s[i]))
			return false;
	}
	return true;
}

static void check_fields(const struct egress_params *p, bool has_name)
{
	size_t ntags = 0, ncountries = 0;

	if (has_name)
		check(is_word(p->name, sizeof(p->name), EGRESS_NAME_MAX) && is_alnum(p->name[0]));
	else
		check(p->name[0] == '\0');
	check(p->session[0] == '\0' ||
	      is_word(p->session, sizeof(p->session), EGRESS_SESSION_MAX));
	check(p->has_ttl ? p->ttl <= EGRESS_TTL_MAX : p->ttl == 0);
	check(p->nfilters <= EGRESS_TAGS_MAX + 1);
	for (size_t i = 0; i < p->nfilters; i++) {
		const struct egress_tag_filter *f = &p->filters[i];

		check(memchr(f->key, '\0', sizeof(f->key)) != NULL);
		if (f->key[0] == '\0') {
			check(is_word(f->value, sizeof(f->value), EGRESS_TAG_MAX));
			ntags++;
		} else {
			check(strcmp(f->key, "country") == 0);
			check(f->value[0] >= 'a' && f->value[0] <= 'z');
			check(f->value[1] >= 'a' && f->value[1] <= 'z');
			check(f->value[2] == '\0');
			ncountries++;
		}
	}
	check(ntags <= EGRESS_TAGS_MAX && ncountries <= 1);
}

static bool params_equal(const struct egress_params *a, const struct egress_params *b)
{
	if (strcmp(a->name, b->name) != 0 || strcmp(a->session, b->session) != 0 ||
	    a->has_ttl != b->has_ttl || a->ttl != b->ttl || a->nfilters != b->nfilters)
		return false;
	for (size_t i = 0; i < a->nfilters; i++) {
		if (strcmp(a->filters[i].key, b->filters[i].key) != 0 ||
		    strcmp(a->filters[i].value, b->filters[i].value) != 0)
			return false;
	}
	return true;
}

static void append(char *buf, size_t *len, const char *a, const char *b)
{
	int n = snprintf(buf + *len, ENCODED_MAX - *len, "-%s-%s", a, b);

	check(n > 0 && (size_t)n < ENCODED_MAX - *len);
	*len += (size_t)n;
}

/* A parsed result written back in the grammar: NAME, then session, ttl and the filters in their
 * order; without a name, the pairs without the leading '-' (a tail). */
static const char *encode(const struct egress_params *p, bool has_name, char buf[ENCODED_MAX])
{
	char ttl[16];
	size_t len;

	check(strlen(p->name) < ENCODED_MAX);
	len = (size_t)snprintf(buf, ENCODED_MAX, "%s", p->name);
	if (p->session[0] != '\0')
		append(buf, &len, "session", p->session);
	if (p->has_ttl) {
		snprintf(ttl, sizeof(ttl), "%u", (unsigned)p->ttl);
		append(buf, &len, "ttl", ttl);
	}
	for (size_t i = 0; i < p->nfilters; i++)
		append(buf, &len, p->filters[i].key[0] != '\0' ? "country" : "tag",
		       p->filters[i].value);
	return has_name || buf[0] == '\0' ? buf : buf + 1;
}

/* A refusal's reason: set, not the input, short and printable. */
static void check_why(const char *why, const char *text)
{
	uintptr_t w = (uintptr_t)why, t = (uintptr_t)text;
	size_t len;

	check(why != NULL && why != why_unset);
	check(w < t || w > t + strlen(text));
	len = strlen(why);
	check(len > 0 && len <= WHY_MAX);
	for (size_t i = 0; i < len; i++)
		check(why[i] >= 0x20 && why[i] < 0x7f);
}

typedef int parse_fn(const char *text, struct egress_params *out, const char **why);

/* One parse under the contract, twice; returns the status, the result in *res on success. */
static int parse_checked(parse_fn *parse, bool has_name, const char *text,
			 struct egress_params *res)
{
	struct egress_params p, before, again, back;
	const char *why = why_unset, *why_again = why_unset;
	char buf[ENCODED_MAX];
	const char *enc;
	int st;

	memset(&p, SENTINEL, sizeof(p));
	memcpy(&before, &p, sizeof(p));
	count_start();
	st = parse(text, &p, &why);
	count_stop_expect_none();
	check(st == ST_OK || st == ST_EINVAL);

	/* Deterministic, and not led by what *out held before. */
	memset(&again, ~SENTINEL & 0xff, sizeof(again));
	check(parse(text, &again, &why_again) == st);
	if (st != ST_OK) {
		check(memcmp(&p, &before, sizeof(p)) == 0);
		check_why(why, text);
		check(why_again == why);
		return st;
	}
	check(why == why_unset && why_again == why_unset);
	check_fields(&p, has_name);
	check(params_equal(&p, &again));

	/* Written back, the same pairs (maybe in another order) and the same result. */
	enc = encode(&p, has_name, buf);
	check(strlen(enc) == strlen(text));
	check(parse(enc, &back, &why) == ST_OK);
	check(params_equal(&back, &p));
	*res = p;
	return st;
}

static void check_username(const char *text)
{
	struct egress_params p, tail;
	const char *dash = strchr(text, '-');
	size_t nlen = dash != NULL ? (size_t)(dash - text) : strlen(text);
	bool expect_ok;
	int st, tail_st = ST_OK;

	st = parse_checked(egress_params_parse, true, text, &p);
	/* The name is the part before the first '-'; the rest is exactly a tail. "NAME-" is not
	 * "NAME": the '-' promises a pair. */
	if (dash != NULL)
		tail_st = parse_checked(egress_params_parse_tail, false, dash + 1, &tail);
	expect_ok = is_user_name(text, nlen) &&
		    (dash == NULL || (dash[1] != '\0' && tail_st == ST_OK));
	check((st == ST_OK) == expect_ok);
	if (st != ST_OK)
		return;
	check(strlen(p.name) == nlen && memcmp(p.name, text, nlen) == 0);
	if (dash != NULL) {
		snprintf(tail.name, sizeof(tail.name), "%s", p.name);
		check(params_equal(&tail, &p));
	} else {
		check(p.session[0] == '\0' && !p.has_ttl && p.nfilters == 0);
	}
}

static void check_tail(const char *text)
{
	struct egress_params p;

	if (parse_checked(egress_params_parse_tail, false, text, &p) == ST_OK && text[0] == '\0')
		check(p.session[0] == '\0' && !p.has_ttl && p.nfilters == 0);
}

/* The site of name, which must be ST_OK, in out. */
static void site_of(const char *name, char out[static EGRESS_SITE_MAX])
{
	check(egress_site_of_name(name, out) == ST_OK);
	check(memchr(out, '\0', EGRESS_SITE_MAX) != NULL);
}

static void check_site(const char *name)
{
	char out[EGRESS_SITE_MAX], before[EGRESS_SITE_MAX], other[EGRESS_SITE_MAX];
	char lower[TEXT_MAX + 2], variant[TEXT_MAX + 2];
	size_t len = strlen(name), nlen = len, slen, off;
	const char *first_dot;
	int st;

	memset(out, SENTINEL, sizeof(out));
	memcpy(before, out, sizeof(out));
	count_start();
	st = egress_site_of_name(name, out);
	count_stop_expect_none();
	check(st == ST_OK || st == ST_EINVAL);

	/* The normalised name: one trailing dot removed, ASCII letters lower-cased. */
	if (nlen > 0 && name[nlen - 1] == '.')
		nlen--;
	for (size_t i = 0; i < nlen; i++) {
		char c = name[i];

		lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	lower[nlen] = '\0';
	check((st == ST_EINVAL) == (nlen == 0 || nlen >= EGRESS_SITE_MAX));
	if (st != ST_OK) {
		check(memcmp(out, before, sizeof(out)) == 0);
		return;
	}

	/* A suffix of the name that starts a label: the whole name, or a registrable domain (a
	 * label and a public suffix, so at least one dot). */
	check(memchr(out, '\0', sizeof(out)) != NULL);
	slen = strlen(out);
	check(slen > 0 && slen <= nlen);
	off = nlen - slen;
	check(memcmp(lower + off, out, slen) == 0);
	check(off == 0 || (lower[off - 1] == '.' && strchr(out, '.') != NULL));

	site_of(name, other);
	check(strcmp(other, out) == 0);

	/* One site whatever the client's spelling: other case, a trailing dot or not. */
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		else if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		variant[i] = c;
	}
	variant[len] = '\0';
	site_of(variant, other);
	check(strcmp(other, out) == 0);
	if (nlen == len && len < TEXT_MAX) {
		memcpy(variant, name, len);
		memcpy(variant + len, ".", 2);
		site_of(variant, other);
		check(strcmp(other, out) == 0);
	}

	/* A name under the site has the same site: drop the first label (of the name as given, so
	 * that it is normalised alike), unless that exposes an empty label (libpsl gives a name
	 * with a leading dot no registrable domain). */
	first_dot = strchr(name, '.');
	if (off > 0 && first_dot != NULL && (size_t)(first_dot + 1 - name) <= off &&
	    first_dot[1] != '.') {
		site_of(first_dot + 1, other);
		check(strcmp(other, out) == 0);
	}

	/* The site of a site is itself, unless it keeps a trailing dot (the name ended in "..":
	 * only one dot is removed, so it would lose one more). */
	if (out[slen - 1] != '.') {
		site_of(out, other);
		check(strcmp(other, out) == 0);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	check(egress_site_init() == ST_OK);
#if COUNT_ALLOCATIONS
	{
		/* volatile, so that the compiler may not drop the allocation the count is tested
		 * with */
		static void *volatile probe;

		check(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0);
		count_start();
		probe = malloc(1);
		counting = false;
		check(probe != NULL && allocations == 1);
		free(probe);
	}
#endif
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t len = nul != NULL ? (size_t)(nul - data) : size;
	char *text;

	/* Exactly the text's bytes on the heap, so a read past its NUL is caught. */
	if (len > TEXT_MAX)
		len = TEXT_MAX;
	text = malloc(len + 1);
	check(text != NULL);
	memcpy(text, data, len);
	text[len] = '\0';
	check_username(text);
	check_tail(text);
	check_site(text);
	free(text);
	return 0;
}
