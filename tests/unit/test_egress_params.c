/* tests/unit/test_egress_params.c - the username parameter grammar of egress/params.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "egress/params.h"

/* A result nobody would produce, to see that a failed call left *out alone. */
static void poison(struct egress_params *p)
{
	memset(p, 0x5a, sizeof(*p));
}

static void assert_poisoned(const struct egress_params *p)
{
	struct egress_params q;

	poison(&q);
	assert_memory_equal(p, &q, sizeof(q));
}

static void assert_parses(const char *username, struct egress_params *p)
{
	const char *why = NULL;

	poison(p);
	if (egress_params_parse(username, p, &why) != ST_OK)
		fail_msg("\"%s\" rejected: %s", username, why);
}

/* Rejected, *out unchanged, and a reason that does not repeat the input. */
static void assert_rejected(const char *username)
{
	struct egress_params p;
	const char *why = NULL;

	poison(&p);
	if (egress_params_parse(username, &p, &why) != ST_EINVAL)
		fail_msg("\"%s\" accepted", username);
	assert_poisoned(&p);
	assert_non_null(why);
	assert_true(strlen(why) > 0);
	if (strlen(username) >= 4 && strstr(why, username) != NULL)
		fail_msg("reason \"%s\" repeats the input", why);
}

static void assert_tail_rejected(const char *tail)
{
	struct egress_params p;
	const char *why = NULL;

	poison(&p);
	if (egress_params_parse_tail(tail, &p, &why) != ST_EINVAL)
		fail_msg("tail \"%s\" accepted", tail);
	assert_poisoned(&p);
	assert_non_null(why);
}

static void test_name_only(void **state)
{
	struct egress_params p;

	(void)state;
	assert_parses("alice", &p);
	assert_string_equal(p.name, "alice");
	assert_string_equal(p.session, "");
	assert_false(p.has_ttl);
	assert_int_equal(p.nfilters, 0);

	assert_parses("0user_9.x", &p);
	assert_string_equal(p.name, "0user_9.x");
	assert_parses("A", &p);
	assert_string_equal(p.name, "A");
}

static void test_every_key(void **state)
{
	struct egress_params p;

	(void)state;
	assert_parses("alice-session-s42-ttl-600-country-de", &p);
	assert_string_equal(p.name, "alice");
	assert_string_equal(p.session, "s42");
	assert_true(p.has_ttl);
	assert_int_equal(p.ttl, 600);
	assert_int_equal(p.nfilters, 1);
	assert_string_equal(p.filters[0].key, "country");
	assert_string_equal(p.filters[0].value, "de");

	/* Any order; tags keep their order of appearance, country where it appears. */
	assert_parses("bob-tag-residential-country-US-ttl-0-tag-fast.net-session-A_b.c", &p);
	assert_string_equal(p.name, "bob");
	assert_string_equal(p.session, "A_b.c");
	assert_true(p.has_ttl);
	assert_int_equal(p.ttl, 0);
	assert_int_equal(p.nfilters, 3);
	assert_string_equal(p.filters[0].key, "");
	assert_string_equal(p.filters[0].value, "residential");
	assert_string_equal(p.filters[1].key, "country");
	assert_string_equal(p.filters[1].value, "us"); /* lower-cased */
	assert_string_equal(p.filters[2].key, "");
	assert_string_equal(p.filters[2].value, "fast.net");

	assert_parses("c-country-Fr", &p);
	assert_string_equal(p.filters[0].value, "fr");
	assert_parses("c-session-.", &p);
	assert_string_equal(p.session, ".");
	assert_parses("c-tag-_", &p);
	assert_string_equal(p.filters[0].value, "_");
}

static void test_ttl_values(void **state)
{
	static const struct {
		const char *text;
		uint32_t ttl;
	} good[] = {
		{ "u-ttl-0", 0 },
		{ "u-ttl-1", 1 },
		{ "u-ttl-9", 9 },
		{ "u-ttl-10", 10 },
		{ "u-ttl-600", 600 },
		{ "u-ttl-86400", 86400 },
		{ "u-ttl-604799", 604799 },
		{ "u-ttl-604800", EGRESS_TTL_MAX },
	};
	struct egress_params p;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_parses(good[i].text, &p);
		assert_true(p.has_ttl);
		assert_int_equal(p.ttl, good[i].ttl);
	}
}

static void test_limits_exactly(void **state)
{
	char name[EGRESS_NAME_MAX + 2], user[256];
	char session[EGRESS_SESSION_MAX + 2], tag[EGRESS_TAG_MAX + 2];
	struct egress_params p;

	(void)state;
	memset(name, 'n', EGRESS_NAME_MAX);
	name[EGRESS_NAME_MAX] = '\0';
	assert_parses(name, &p);
	assert_int_equal(strlen(p.name), EGRESS_NAME_MAX);
	name[EGRESS_NAME_MAX] = 'n';
	name[EGRESS_NAME_MAX + 1] = '\0';
	assert_rejected(name);

	memset(session, 's', EGRESS_SESSION_MAX);
	session[EGRESS_SESSION_MAX] = '\0';
	snprintf(user, sizeof(user), "u-session-%s", session);
	assert_parses(user, &p);
	assert_string_equal(p.session, session);
	session[EGRESS_SESSION_MAX] = 's';
	session[EGRESS_SESSION_MAX + 1] = '\0';
	snprintf(user, sizeof(user), "u-session-%s", session);
	assert_rejected(user);

	memset(tag, 't', EGRESS_TAG_MAX);
	tag[EGRESS_TAG_MAX] = '\0';
	snprintf(user, sizeof(user), "u-tag-%s", tag);
	assert_parses(user, &p);
	assert_string_equal(p.filters[0].value, tag);
	tag[EGRESS_TAG_MAX] = 't';
	tag[EGRESS_TAG_MAX + 1] = '\0';
	snprintf(user, sizeof(user), "u-tag-%s", tag);
	assert_rejected(user);
}

static void test_tag_count(void **state)
{
	char user[256] = "u";
	struct egress_params p;

	(void)state;
	for (int i = 0; i < EGRESS_TAGS_MAX; i++) {
		size_t len = strlen(user);

		snprintf(user + len, sizeof(user) - len, "-tag-t%d", i);
	}
	/* EGRESS_TAGS_MAX tags and a country: every filter slot used. */
	strcat(user, "-country-se");
	assert_parses(user, &p);
	assert_int_equal(p.nfilters, EGRESS_TAGS_MAX + 1);
	assert_string_equal(p.filters[EGRESS_TAGS_MAX - 1].value, "t7");
	assert_string_equal(p.filters[EGRESS_TAGS_MAX].key, "country");
	/* One tag more is refused. */
	strcat(user, "-tag-x");
	assert_rejected(user);
	/* Repeating a tag is allowed (it is only a filter twice). */
	assert_parses("u-tag-a-tag-a", &p);
	assert_int_equal(p.nfilters, 2);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		/* the name */
		"", "-", "-alice", "_alice", ".alice", "al ice", "al@ice", "alice\x7f", "al\xc3\xa9",
		/* missing or empty parts */
		"alice-", "alice--", "alice--session-s1", "alice-session", "alice-session-",
		"alice-ttl", "alice-ttl-", "alice-country", "alice-country-", "alice-tag",
		"alice-tag-", "alice-session-s1-", "alice-session--ttl-1",
		/* unknown keys, keys are lower case */
		"alice-foo-bar", "alice-Session-s1", "alice-TTL-1", "alice-zone-x", "alice-sessions-x",
		"alice-tags-x", "alice-s-x",
		/* bad values */
		"alice-session-s 1", "alice-session-s/1", "alice-tag-a+b", "alice-tag-a=b",
		"alice-country-d", "alice-country-deu", "alice-country-d1", "alice-country-1e",
		"alice-country-d_", "alice-country-..",
		/* ttl: sign, leading zero, not decimal, too large, overflow */
		"alice-ttl-+1", "alice-ttl- 1", "alice-ttl-00", "alice-ttl-01", "alice-ttl-0600",
		"alice-ttl-1x", "alice-ttl-x", "alice-ttl-0x10", "alice-ttl-1.5", "alice-ttl-1e3",
		"alice-ttl-604801", "alice-ttl-999999", "alice-ttl-4294967296",
		"alice-ttl-18446744073709551617", "alice-ttl-99999999999999999999999",
		/* repeated session, ttl, country */
		"alice-session-a-session-a", "alice-session-a-ttl-1-session-b", "alice-ttl-1-ttl-1",
		"alice-ttl-0-ttl-600", "alice-country-de-country-de", "alice-country-de-country-fr",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_rejected(bad[i]);
}

static void test_tail(void **state)
{
	struct egress_params p;
	const char *why = NULL;

	(void)state;
	poison(&p);
	assert_int_equal(egress_params_parse_tail("", &p, &why), ST_OK);
	assert_string_equal(p.name, "");
	assert_string_equal(p.session, "");
	assert_false(p.has_ttl);
	assert_int_equal(p.nfilters, 0);

	poison(&p);
	assert_int_equal(egress_params_parse_tail("session-s1-ttl-0-tag-dc", &p, &why), ST_OK);
	assert_string_equal(p.name, "");
	assert_string_equal(p.session, "s1");
	assert_true(p.has_ttl);
	assert_int_equal(p.ttl, 0);
	assert_int_equal(p.nfilters, 1);
	assert_string_equal(p.filters[0].value, "dc");

	/* A tail has no name: a leading word is an unknown key. */
	assert_tail_rejected("alice");
	assert_tail_rejected("alice-session-s1");
	assert_tail_rejected("-session-s1");
	assert_tail_rejected("session-s1-");
	assert_tail_rejected("session");
	assert_tail_rejected("ttl-01");
	assert_tail_rejected("country-de-country-de");
}

/* Every proper prefix of a valid username either parses or is refused cleanly; every single
 * character replaced by one outside the grammar is refused. */
static void test_prefixes_and_replacements(void **state)
{
	static const char *const good[] = {
		"alice-session-s42-ttl-600-country-de-tag-residential",
		"u.9-tag-a-tag-b-ttl-0",
	};
	static const char bad_chars[] = { ' ', '@', '/', '+', '=', ':', '\t', '\x80', '\xff' };

	(void)state;
	for (size_t g = 0; g < sizeof(good) / sizeof(good[0]); g++) {
		char buf[128];
		size_t len = strlen(good[g]);

		for (size_t cut = 0; cut < len; cut++) {
			struct egress_params p;
			const char *why = NULL;
			int st;

			memcpy(buf, good[g], cut);
			buf[cut] = '\0';
			poison(&p);
			st = egress_params_parse(buf, &p, &why);
			if (st == ST_OK)
				assert_true(strlen(p.name) > 0);
			else
				assert_rejected(buf);
		}
		for (size_t i = 0; i < len; i++) {
			for (size_t c = 0; c < sizeof(bad_chars); c++) {
				strcpy(buf, good[g]);
				buf[i] = bad_chars[c];
				assert_rejected(buf);
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_only),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_ttl_values),
		cmocka_unit_test(test_limits_exactly),
		cmocka_unit_test(test_tag_count),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_tail),
		cmocka_unit_test(test_prefixes_and_replacements),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
