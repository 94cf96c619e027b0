/* tests/unit/test_store_pool.c - store/: the egress pool, health, usage, the pool in snapshots,
 * and the migration of a schema 1 file. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "base/status.h"
#include "store/snapshot.h"
#include "store/store.h"

#define HASH_A "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGFoYXNoYWhhc2hhaGFzaGE"

/* pool.db.sql as released with schema 1 (commit 4b03706), the file a migration starts from. */
static const char schema_v1[] =
	"CREATE TABLE users (\n"
	"    name     TEXT    NOT NULL PRIMARY KEY\n"
	"                     CHECK (length(name) BETWEEN 1 AND 64\n"
	"                            AND name NOT GLOB '*[^A-Za-z0-9_.]*'\n"
	"                            AND substr(name, 1, 1) GLOB '[A-Za-z0-9]'),\n"
	"    hash     TEXT    NOT NULL CHECK (hash GLOB '$argon2id$*'),  -- crypto_pwhash_str output\n"
	"    enabled  INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),\n"
	"    created  INTEGER NOT NULL                                   -- Unix seconds\n"
	") STRICT;\n"
	"CREATE TABLE settings (\n"
	"    key    TEXT NOT NULL PRIMARY KEY,\n"
	"    value  TEXT NOT NULL\n"
	") STRICT;\n"
	"PRAGMA user_version = 1;\n";

/* ---- fixture: a private temporary directory ------------------------------------------------ */

#include "tmpdir.h"

/* Run SQL on a file with SQLite directly, as another program would. */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
			 SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err != NULL ? err : "?");
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* One integer from a query on the file, read with SQLite directly. */
static int64_t raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt;
	int64_t v;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	return v;
}

static struct store *open_ok(const char *path, unsigned flags)
{
	struct store *s = NULL;
	const char *err = NULL;
	int st = store_open(path, flags, &s, &err);

	if (st != ST_OK)
		fail_msg("store_open(%s): %s: %s", path, status_str(st), err != NULL ? err : "?");
	assert_non_null(s);
	return s;
}

/* ---- building entries ------------------------------------------------------------------------ */

/* An entry from text: "192.0.2.1", "2001:db8::1", "2001:db8::/64"; weight 1, no tags. */
static struct store_pool_new entry(const char *text)
{
	struct store_pool_new e;
	char head[64];
	const char *slash = strchr(text, '/');
	size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);

	memset(&e, 0, sizeof(e));
	assert_true(len < sizeof(head));
	memcpy(head, text, len);
	head[len] = '\0';
	e.weight = 1;
	if (inet_pton(AF_INET, head, e.addr) == 1) {
		e.family = AF_INET;
		e.prefix_len = 32;
	} else if (inet_pton(AF_INET6, head, e.addr) == 1) {
		e.family = AF_INET6;
		e.prefix_len = slash != NULL ? (uint8_t)atoi(slash + 1) : 128;
	} else {
		fail_msg("test entry '%s' does not parse", text);
	}
	return e;
}

static void entry_tag(struct store_pool_new *e, const char *key, const char *value)
{
	assert_true(e->ntags < STORE_POOL_TAGS_MAX);
	e->tag_keys[e->ntags] = key;
	e->tag_values[e->ntags] = value;
	e->ntags++;
}

/* ---- the pool as one string, to compare before and after ------------------------------------ */

struct dump {
	char text[8192];
	size_t n;
};

/* "address|enabled|weight|k=v,k=v|note;" per entry, in id order, from a snapshot. */
static void pool_dump(struct store *s, struct dump *d)
{
	struct snapshot *snap;
	size_t used = 0;

	memset(d, 0, sizeof(*d));
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	for (size_t i = 0; i < snap->npool; i++) {
		const struct snapshot_pool_entry *e = &snap->pool[i];

		used += (size_t)snprintf(d->text + used, sizeof(d->text) - used, "%s|%d|%u|", e->address,
					 e->enabled ? 1 : 0, e->weight);
		for (size_t t = 0; t < e->ntags; t++)
			used += (size_t)snprintf(d->text + used, sizeof(d->text) - used, "%s%s=%s",
						 t > 0 ? "," : "", e->tags[t].key, e->tags[t].value);
		used += (size_t)snprintf(d->text + used, sizeof(d->text) - used, "|%s;", e->note);
		assert_true(used < sizeof(d->text));
	}
	d->n = snap->npool;
	snapshot_unref(snap);
}

/* store_pool_add must fail with want, naming entry want_bad, and change nothing. */
static void add_fails(struct store *s, const struct store_pool_new *entries, size_t n, int want,
		      size_t want_bad)
{
	struct dump before, after;
	size_t bad = 999;
	int st;

	pool_dump(s, &before);
	st = store_pool_add(s, entries, n, &bad);
	if (st != want)
		fail_msg("store_pool_add = %s, want %s (%s)", status_str(st), status_str(want),
			 store_errmsg(s));
	assert_int_equal(bad, want_bad);
	assert_true(strlen(store_errmsg(s)) > 0);
	pool_dump(s, &after);
	assert_string_equal(before.text, after.text);
	/* NULL for bad is allowed. */
	assert_int_equal(store_pool_add(s, entries, n, NULL), want);
}

/* ---- address text ---------------------------------------------------------------------------- */

static void test_address_text(void **state)
{
	static const char *const round[] = {
		"192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::", "::ffff:192.0.2.1",
		"2001:db8::/32", "2001:db8:1:2::/64", "2001:db8::/127", "fe80::1:2:3:4",
	};
	char out[STORE_ADDRESS_MAX];
	struct store_pool_new e;

	(void)state;
	for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
		e = entry(round[i]);
		store_pool_address_text(e.family, e.addr, e.prefix_len, out);
		assert_string_equal(out, round[i]);
	}
	/* inet_ntop's canonical form: lowercase, the longest zero run compressed. */
	e = entry("2001:DB8:0:0:0:0:0:1");
	store_pool_address_text(e.family, e.addr, e.prefix_len, out);
	assert_string_equal(out, "2001:db8::1");
	/* /128 is one address: no suffix. IPv4 ignores the prefix length. */
	e = entry("2001:db8::1/128");
	store_pool_address_text(e.family, e.addr, e.prefix_len, out);
	assert_string_equal(out, "2001:db8::1");
	e = entry("192.0.2.1");
	store_pool_address_text(AF_INET, e.addr, 24, out);
	assert_string_equal(out, "192.0.2.1");
	/* The longest text fits. */
	e = entry("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
	store_pool_address_text(AF_INET6, e.addr, 100, out);
	assert_string_equal(out, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/100");
	memset(out, 'x', sizeof(out));
	store_pool_address_text(AF_UNIX, e.addr, 32, out);
	assert_string_equal(out, "");
}

/* ---- tags ------------------------------------------------------------------------------------ */

static void test_tag_valid(void **state)
{
	static const char *const keys[] = { "a", "country", "_", ".", "0", "k_1.x" };
	static const char *const values[] = { "de", "DE", "Residential", "a_B.9" };
	static const char *const neither[] = { "", "a-b", "a b", "a=b", "a,b", "a\tb", "\xc3\xa4",
					       "a/b" };
	char text[STORE_TAG_MAX + 2];

	(void)state;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		assert_true(store_pool_tag_valid(keys[i], true));
		assert_true(store_pool_tag_valid(keys[i], false));
	}
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
		assert_true(store_pool_tag_valid(values[i], false));
	/* Keys are lowercase: "country" and "Country" would be two keys to a reader. */
	assert_false(store_pool_tag_valid("DE", true));
	assert_false(store_pool_tag_valid("Residential", true));
	for (size_t i = 0; i < sizeof(neither) / sizeof(neither[0]); i++) {
		if (store_pool_tag_valid(neither[i], true) || store_pool_tag_valid(neither[i], false))
			fail_msg("tag '%s' accepted", neither[i]);
	}
	assert_false(store_pool_tag_valid(NULL, true));
	assert_false(store_pool_tag_valid(NULL, false));
	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	assert_false(store_pool_tag_valid(text, true));
	text[STORE_TAG_MAX] = '\0';
	assert_true(store_pool_tag_valid(text, true));
	assert_true(store_pool_tag_valid(text, false));
}

/* ---- add ------------------------------------------------------------------------------------- */

static void test_add_and_snapshot(void **state)
{
	struct store_pool_new e[4];
	struct snapshot *snap;
	struct store *s;
	const struct snapshot_pool_entry *p;
	int64_t lo, hi;
	size_t bad = 999;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 0);
	assert_null(snap->pool);
	snapshot_unref(snap);
	/* Nothing to add is no error. */
	assert_int_equal(store_pool_add(s, NULL, 0, &bad), ST_OK);
	assert_int_equal(bad, 999);

	e[0] = entry("192.0.2.7");
	e[0].weight = 5;
	e[0].note = "rack 3";
	entry_tag(&e[0], "country", "de");
	entry_tag(&e[0], "kind", "Residential_1.x");
	entry_tag(&e[0], "asn", "64496");
	e[1] = entry("2001:db8::1");
	e[2] = entry("2001:db8:1::/48");
	e[2].weight = 1000000;
	entry_tag(&e[2], "country", "fr");
	e[3] = entry("2001:db8:2::/127");
	lo = (int64_t)time(NULL);
	assert_int_equal(store_pool_add(s, e, 4, &bad), ST_OK);
	hi = (int64_t)time(NULL);
	assert_int_equal(bad, 999);

	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 4);
	for (size_t i = 1; i < snap->npool; i++)
		assert_true(snap->pool[i - 1].id < snap->pool[i].id);

	p = &snap->pool[0];
	assert_string_equal(p->address, "192.0.2.7");
	assert_int_equal(p->family, AF_INET);
	assert_int_equal(p->prefix_len, 32);
	assert_memory_equal(p->addr, e[0].addr, 4);
	assert_int_equal(p->weight, 5);
	assert_true(p->enabled);
	assert_string_equal(p->note, "rack 3");
	assert_true(p->added >= lo && p->added <= hi);
	assert_int_equal(p->cooldown_until, 0);
	assert_int_equal(p->failures, 0);
	/* Tags come ordered by key. */
	assert_int_equal(p->ntags, 3);
	assert_string_equal(p->tags[0].key, "asn");
	assert_string_equal(p->tags[0].value, "64496");
	assert_string_equal(p->tags[1].key, "country");
	assert_string_equal(p->tags[1].value, "de");
	assert_string_equal(p->tags[2].key, "kind");
	assert_string_equal(p->tags[2].value, "Residential_1.x");

	p = &snap->pool[1];
	assert_string_equal(p->address, "2001:db8::1");
	assert_int_equal(p->family, AF_INET6);
	assert_int_equal(p->prefix_len, 128);
	assert_memory_equal(p->addr, e[1].addr, 16);
	assert_int_equal(p->weight, 1);
	assert_string_equal(p->note, "");
	assert_int_equal(p->ntags, 0);

	p = &snap->pool[2];
	assert_string_equal(p->address, "2001:db8:1::/48");
	assert_int_equal(p->prefix_len, 48);
	assert_memory_equal(p->addr, e[2].addr, 16);
	assert_int_equal(p->weight, 1000000);
	assert_int_equal(p->ntags, 1);
	assert_string_equal(p->tags[0].key, "country");
	assert_string_equal(p->tags[0].value, "fr");
	assert_string_equal(snap->pool[3].address, "2001:db8:2::/127");
	assert_int_equal(snap->pool[3].prefix_len, 127);
	snapshot_unref(snap);
	store_close(s);
}

/* The bounds that are allowed: each alone in a list, each added. */
static void test_add_boundaries(void **state)
{
	char key32[STORE_TAG_MAX + 1], value32[STORE_TAG_MAX + 1], keys[STORE_POOL_TAGS_MAX][8];
	struct store_pool_new e[6];
	struct snapshot *snap;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	memset(key32, 'k', STORE_TAG_MAX);
	key32[STORE_TAG_MAX] = '\0';
	memset(value32, 'V', STORE_TAG_MAX);
	value32[STORE_TAG_MAX] = '\0';
	e[0] = entry("198.51.100.1");
	e[0].weight = 1;
	entry_tag(&e[0], key32, value32);
	entry_tag(&e[0], "a", "b");
	entry_tag(&e[0], "_.09az", "_.09azAZ");
	e[1] = entry("2001:db8::/32");
	e[1].weight = 1000000;
	e[2] = entry("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe/127");
	e[3] = entry("2001:db8::2/128");
	e[4] = entry("::");
	e[5] = entry("198.51.100.2");
	for (size_t i = 0; i < STORE_POOL_TAGS_MAX; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
		entry_tag(&e[5], keys[i], "v");
	}
	assert_int_equal(store_pool_add(s, e, 6, NULL), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 6);
	assert_int_equal(snap->pool[0].ntags, 3);
	assert_string_equal(snap->pool[0].tags[2].key, key32);
	assert_string_equal(snap->pool[0].tags[2].value, value32);
	assert_string_equal(snap->pool[2].address, "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe/127");
	assert_string_equal(snap->pool[3].address, "2001:db8::2");
	assert_string_equal(snap->pool[4].address, "::");
	assert_int_equal(snap->pool[5].ntags, STORE_POOL_TAGS_MAX);
	snapshot_unref(snap);
	store_close(s);
}

/* Every invalid field is refused as entry 2 of 4 (two good ones before, one after): nothing
 * written, the index given. */
static void test_add_invalid(void **state)
{
	char key33[STORE_TAG_MAX + 2], value33[STORE_TAG_MAX + 2];
	struct store_pool_new base[4], e[4], bad;
	struct store *s;
	struct dump d;

	(void)state;
	s = open_ok(":memory:", 0);
	/* Something in the table already, so "unchanged" is not just "empty". */
	base[0] = entry("203.0.113.1");
	entry_tag(&base[0], "country", "nl");
	assert_int_equal(store_pool_add(s, base, 1, NULL), ST_OK);

	base[0] = entry("192.0.2.1");
	base[1] = entry("2001:db8::1");
	entry_tag(&base[1], "country", "de");
	base[3] = entry("192.0.2.3");
	memset(key33, 'k', STORE_TAG_MAX + 1);
	key33[STORE_TAG_MAX + 1] = '\0';
	memset(value33, 'v', STORE_TAG_MAX + 1);
	value33[STORE_TAG_MAX + 1] = '\0';

#define REFUSED(setup)                                                  \
	do {                                                            \
		bad = entry("192.0.2.2");                               \
		setup;                                                  \
		memcpy(e, base, sizeof(e));                             \
		e[2] = bad;                                             \
		add_fails(s, e, 4, ST_EINVAL, 2);                       \
	} while (0)

	/* family */
	REFUSED(bad.family = 0);
	REFUSED(bad.family = AF_UNIX);
	/* IPv4 is one address */
	REFUSED(bad.prefix_len = 31);
	REFUSED(bad.prefix_len = 24);
	REFUSED(bad.prefix_len = 128);
	/* IPv6 prefix bounds and host bits */
	REFUSED(bad = entry("2001:db8::/31"));
	REFUSED(bad = entry("2001:db8::/0"));
	REFUSED(bad = entry("2001:db8::/129"));
	REFUSED(bad = entry("2001:db8::1/64"));
	REFUSED(bad = entry("2001:db8:0:0:8000::/64")); /* the first host bit */
	REFUSED(bad = entry("2001:db8::1/127"));	    /* the last one */
	REFUSED(bad = entry("2001:db8:1::/32"));
	/* weight */
	REFUSED(bad.weight = 0);
	REFUSED(bad.weight = 1000001);
	REFUSED(bad.weight = UINT32_MAX);
	/* tags */
	REFUSED(entry_tag(&bad, "Country", "de"));
	REFUSED(entry_tag(&bad, "", "de"));
	REFUSED(entry_tag(&bad, key33, "de"));
	REFUSED(entry_tag(&bad, "coun-try", "de"));
	REFUSED(entry_tag(&bad, "country", "d-e"));
	REFUSED(entry_tag(&bad, "country", ""));
	REFUSED(entry_tag(&bad, "country", value33));
	REFUSED(entry_tag(&bad, "country", "de ch"));
	REFUSED(entry_tag(&bad, "country", "d\xc3\xa9"));
	REFUSED(entry_tag(&bad, "k=v", "x"));
	REFUSED(entry_tag(&bad, NULL, "de"));
	REFUSED(entry_tag(&bad, "country", NULL));
	REFUSED({
		entry_tag(&bad, "country", "de");
		entry_tag(&bad, "kind", "dc");
		entry_tag(&bad, "country", "fr");
	});
	REFUSED({
		entry_tag(&bad, "country", "de");
		bad.ntags = STORE_POOL_TAGS_MAX + 1;
	});
#undef REFUSED

	/* An invalid entry is reported even after a duplicate: fields are checked first. */
	memcpy(e, base, sizeof(e));
	e[1] = entry("203.0.113.1");
	e[2].weight = 0;
	add_fails(s, e, 4, ST_EINVAL, 2);
	/* A NULL list with entries. */
	assert_int_equal(store_pool_add(s, NULL, 1, NULL), ST_EINVAL);

	pool_dump(s, &d);
	assert_string_equal(d.text, "203.0.113.1|1|1|country=nl|;");
	store_close(s);
}

static void test_add_duplicates(void **state)
{
	struct store_pool_new e[5];
	struct store *s;
	struct dump d;

	(void)state;
	s = open_ok(":memory:", 0);
	e[0] = entry("192.0.2.1");
	e[1] = entry("2001:db8::/64");
	assert_int_equal(store_pool_add(s, e, 2, NULL), ST_OK);

	/* Against the table, at the end of a list. */
	e[0] = entry("192.0.2.2");
	e[1] = entry("192.0.2.3");
	entry_tag(&e[1], "country", "de");
	e[2] = entry("192.0.2.1");
	add_fails(s, e, 3, ST_EEXIST, 2);
	assert_non_null(strstr(store_errmsg(s), "192.0.2.1 is already in the pool"));
	/* First in the list. */
	e[0] = entry("2001:db8::/64");
	add_fails(s, e, 2, ST_EEXIST, 0);
	assert_non_null(strstr(store_errmsg(s), "2001:db8::/64"));
	/* Within the list: the second one is named. The same address written two ways. */
	e[0] = entry("192.0.2.4");
	e[1] = entry("2001:db8::5");
	e[2] = entry("192.0.2.6");
	e[3] = entry("2001:DB8:0::5");
	e[4] = entry("192.0.2.7");
	add_fails(s, e, 5, ST_EEXIST, 3);
	assert_non_null(strstr(store_errmsg(s), "2001:db8::5 is twice in the list"));
	/* /128 and no suffix are one entry. */
	e[3] = entry("2001:db8::5/128");
	add_fails(s, e, 5, ST_EEXIST, 3);

	/* Distinct entries though they overlap: a prefix, an address inside it, a longer prefix. */
	e[0] = entry("2001:db8::");
	e[1] = entry("2001:db8::/96");
	e[2] = entry("2001:db8::/63");
	assert_int_equal(store_pool_add(s, e, 3, NULL), ST_OK);
	pool_dump(s, &d);
	assert_string_equal(d.text, "192.0.2.1|1|1||;2001:db8::/64|1|1||;2001:db8::|1|1||;"
				    "2001:db8::/96|1|1||;2001:db8::/63|1|1||;");
	store_close(s);
}

/* A large add that fails on its last entry writes nothing, tags included: no commit at all, as
 * another connection (the daemon's) sees it. */
static void test_add_all_or_nothing(void **state)
{
	struct tmp *t = *state;
	struct store_pool_new *e;
	struct store *s, *observer;
	struct dump d;
	size_t n = 4096, bad = 0;
	int64_t v0, v1;

	s = open_ok(t->db, STORE_CREATE);
	observer = open_ok(t->db, 0);
	e = calloc(n, sizeof(*e));
	assert_non_null(e);
	e[0] = entry("10.0.0.1");
	assert_int_equal(store_pool_add(s, e, 1, NULL), ST_OK);
	assert_int_equal(store_data_version(observer, &v0), ST_OK);

	for (size_t i = 0; i < n - 1; i++) {
		e[i] = entry("10.1.0.0");
		e[i].addr[2] = (uint8_t)(i >> 8);
		e[i].addr[3] = (uint8_t)i;
		entry_tag(&e[i], "batch", "one");
		entry_tag(&e[i], "n", "x");
	}
	e[n - 1] = entry("10.0.0.1");
	assert_int_equal(store_pool_add(s, e, n, &bad), ST_EEXIST);
	assert_int_equal(bad, n - 1);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool"), 1);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_tags"), 0);
	assert_int_equal(store_data_version(observer, &v1), ST_OK);
	assert_int_equal(v0, v1);
	pool_dump(observer, &d);
	assert_string_equal(d.text, "10.0.0.1|1|1||;");

	/* And the same list without the duplicate goes in whole, in one commit. */
	e[n - 1] = entry("10.2.0.0");
	assert_int_equal(store_pool_add(s, e, n, NULL), ST_OK);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool"), (int64_t)n + 1);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_tags"), 2 * ((int64_t)n - 1));
	assert_int_equal(store_data_version(observer, &v1), ST_OK);
	assert_true(v1 != v0);
	free(e);
	store_close(observer);
	store_close(s);
}

/* ---- remove, enable, disable ----------------------------------------------------------------- */

static void test_remove(void **state)
{
	struct tmp *t = *state;
	struct store_pool_new e[3];
	struct store_health h[2];
	struct dump before, after;
	struct snapshot *snap;
	struct store *s;
	size_t bad = 999;

	s = open_ok(t->db, STORE_CREATE);
	e[0] = entry("192.0.2.1");
	entry_tag(&e[0], "country", "de");
	e[1] = entry("2001:db8::/64");
	entry_tag(&e[1], "country", "fr");
	e[2] = entry("192.0.2.3");
	assert_int_equal(store_pool_add(s, e, 3, NULL), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	h[0] = (struct store_health){ snap->pool[0].id, 2000000000, 3 };
	h[1] = (struct store_health){ snap->pool[1].id, 2000000000, 1 };
	snapshot_unref(snap);
	assert_int_equal(store_health_write(s, h, 2), ST_OK);
	pool_dump(s, &before);

	{
		/* The second is missing: the first stays. */
		const char *const a[] = { "192.0.2.1", "192.0.2.9" };

		assert_int_equal(store_pool_remove(s, a, 2, &bad), ST_ENOTFOUND);
		assert_int_equal(bad, 1);
		assert_non_null(strstr(store_errmsg(s), "192.0.2.9 is not in the pool"));
	}
	{
		/* Only the canonical text selects: "/128", other spellings, a containing prefix
		 * do not. */
		const char *const a[] = { "2001:db8::/64", "2001:db8:0::/64" };
		const char *const b[] = { "192.0.2.1/32" };
		const char *const c[] = { "" };

		assert_int_equal(store_pool_remove(s, a, 2, &bad), ST_ENOTFOUND);
		assert_int_equal(bad, 1);
		assert_int_equal(store_pool_remove(s, b, 1, &bad), ST_ENOTFOUND);
		assert_int_equal(bad, 0);
		assert_int_equal(store_pool_remove(s, c, 1, NULL), ST_ENOTFOUND);
	}
	{
		const char *const a[] = { "192.0.2.1", NULL };

		bad = 999;
		assert_int_equal(store_pool_remove(s, a, 2, &bad), ST_EINVAL);
		assert_int_equal(bad, 1);
		assert_int_equal(store_pool_remove(s, NULL, 1, NULL), ST_EINVAL);
		assert_int_equal(store_pool_remove(s, NULL, 0, NULL), ST_OK);
	}
	pool_dump(s, &after);
	assert_string_equal(before.text, after.text);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_health"), 2);

	{
		/* Named twice: removed once, not "not found" the second time. */
		const char *const a[] = { "2001:db8::/64", "192.0.2.1", "2001:db8::/64" };

		assert_int_equal(store_pool_remove(s, a, 3, &bad), ST_OK);
	}
	pool_dump(s, &after);
	assert_string_equal(after.text, "192.0.2.3|1|1||;");
	/* Tags and health went with them. */
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_tags"), 0);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_health"), 0);
	{
		const char *const a[] = { "192.0.2.1" };

		assert_int_equal(store_pool_remove(s, a, 1, &bad), ST_ENOTFOUND);
	}
	/* A removed address can be added again. */
	assert_int_equal(store_pool_add(s, e, 1, NULL), ST_OK);
	pool_dump(s, &after);
	assert_string_equal(after.text, "192.0.2.3|1|1||;192.0.2.1|1|1|country=de|;");
	store_close(s);
}

static void test_set_enabled(void **state)
{
	struct store_pool_new e[3];
	struct dump before, after;
	struct store *s;
	size_t bad = 999;

	(void)state;
	s = open_ok(":memory:", 0);
	e[0] = entry("192.0.2.1");
	e[1] = entry("2001:db8::/64");
	e[2] = entry("192.0.2.3");
	assert_int_equal(store_pool_add(s, e, 3, NULL), ST_OK);
	{
		const char *const a[] = { "192.0.2.1", "192.0.2.3" };

		assert_int_equal(store_pool_set_enabled(s, a, 2, false, &bad), ST_OK);
		/* Again: already disabled is still found. */
		assert_int_equal(store_pool_set_enabled(s, a, 2, false, &bad), ST_OK);
		assert_int_equal(bad, 999);
	}
	pool_dump(s, &before);
	assert_string_equal(before.text, "192.0.2.1|0|1||;2001:db8::/64|1|1||;192.0.2.3|0|1||;");
	{
		/* All or nothing: the first two would change, the third is missing. */
		const char *const a[] = { "192.0.2.1", "192.0.2.3", "2001:db8::" };

		assert_int_equal(store_pool_set_enabled(s, a, 3, true, &bad), ST_ENOTFOUND);
		assert_int_equal(bad, 2);
		assert_non_null(strstr(store_errmsg(s), "2001:db8:: is not in the pool"));
		assert_int_equal(store_pool_set_enabled(s, a, 3, false, NULL), ST_ENOTFOUND);
	}
	{
		const char *const a[] = { NULL };

		assert_int_equal(store_pool_set_enabled(s, a, 1, true, &bad), ST_EINVAL);
		assert_int_equal(bad, 0);
	}
	pool_dump(s, &after);
	assert_string_equal(before.text, after.text);
	{
		const char *const a[] = { "192.0.2.3", "2001:db8::/64", "192.0.2.3" };

		assert_int_equal(store_pool_set_enabled(s, a, 3, true, &bad), ST_OK);
	}
	pool_dump(s, &after);
	assert_string_equal(after.text, "192.0.2.1|0|1||;2001:db8::/64|1|1||;192.0.2.3|1|1||;");
	assert_int_equal(store_pool_set_enabled(s, NULL, 0, true, NULL), ST_OK);
	store_close(s);
}

/* ---- health ---------------------------------------------------------------------------------- */

static void test_health(void **state)
{
	struct tmp *t = *state;
	struct store_pool_new e[3];
	struct store_health h[3];
	struct snapshot *snap;
	struct store *s;
	uint32_t id[3];

	s = open_ok(t->db, STORE_CREATE);
	e[0] = entry("192.0.2.1");
	e[1] = entry("192.0.2.2");
	e[2] = entry("192.0.2.3");
	assert_int_equal(store_pool_add(s, e, 3, NULL), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	for (size_t i = 0; i < 3; i++)
		id[i] = snap->pool[i].id;
	snapshot_unref(snap);

	assert_int_equal(store_health_write(s, NULL, 0), ST_OK);
	assert_int_equal(store_health_write(s, NULL, 1), ST_EINVAL);
	h[0] = (struct store_health){ id[0], 1700000000, 1 };
	h[1] = (struct store_health){ id[2], 1700000100, 4 };
	assert_int_equal(store_health_write(s, h, 2), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->pool[0].cooldown_until, 1700000000);
	assert_int_equal(snap->pool[0].failures, 1);
	assert_int_equal(snap->pool[1].cooldown_until, 0);
	assert_int_equal(snap->pool[1].failures, 0);
	assert_int_equal(snap->pool[2].cooldown_until, 1700000100);
	assert_int_equal(snap->pool[2].failures, 4);
	snapshot_unref(snap);

	/* Upsert: the row is replaced, not added to; recovery writes failures 0. */
	h[0] = (struct store_health){ id[0], 1700000500, 0 };
	assert_int_equal(store_health_write(s, h, 1), ST_OK);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_health"), 2);

	/* The CLI removes an entry the daemon still reports on: skipped, the rest written. */
	{
		const char *const a[] = { "192.0.2.2" };

		assert_int_equal(store_pool_remove(s, a, 1, NULL), ST_OK);
	}
	h[0] = (struct store_health){ id[1], 1800000000, 9 };
	h[1] = (struct store_health){ id[2], 1800000000, UINT32_MAX };
	h[2] = (struct store_health){ 999999, 1800000000, 9 };
	assert_int_equal(store_health_write(s, h, 3), ST_OK);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_health"), 2);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM pool_health WHERE pool_id NOT IN"
					" (SELECT id FROM pool)"),
			 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 2);
	assert_int_equal(snap->pool[0].cooldown_until, 1700000500);
	assert_int_equal(snap->pool[0].failures, 0);
	assert_int_equal(snap->pool[1].id, id[2]);
	assert_int_equal(snap->pool[1].cooldown_until, 1800000000);
	assert_int_equal(snap->pool[1].failures, UINT32_MAX);
	snapshot_unref(snap);
	store_close(s);
}

/* ---- usage ----------------------------------------------------------------------------------- */

static void test_usage(void **state)
{
	struct tmp *t = *state;
	struct store_usage eg[2], us[2];
	struct store *s;

	s = open_ok(t->db, STORE_CREATE);
	eg[0] = (struct store_usage){ "192.0.2.1", 3, 100, 2000, 1, 0 };
	eg[1] = (struct store_usage){ "", 1, 10, 20, 0, 0 };
	us[0] = (struct store_usage){ "alice", 4, 110, 2020, 1, 0 };
	assert_int_equal(store_usage_add(s, "2024-03-01", eg, 2, us, 1), ST_OK);
	eg[0] = (struct store_usage){ "192.0.2.1", 2, 50, 500, 0, 7 };
	us[0] = (struct store_usage){ "alice", 2, 50, 500, 0, 7 };
	us[1] = (struct store_usage){ "bob", 1, 1, 1, 1, 0 };
	assert_int_equal(store_usage_add(s, "2024-03-01", eg, 1, us, 2), ST_OK);
	/* Another day is another row. */
	assert_int_equal(store_usage_add(s, "2024-03-02", eg, 1, NULL, 0), ST_OK);
	assert_int_equal(store_usage_add(s, "2024-03-02", NULL, 0, NULL, 0), ST_OK);

	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM usage_egress"), 3);
	assert_int_equal(raw_int(t->db, "SELECT connections * 1000000 + failures FROM usage_egress"
					" WHERE day = '2024-03-01' AND address = '192.0.2.1'"),
			 5000001);
	assert_int_equal(raw_int(t->db, "SELECT bytes_up * 1000000 + bytes_down FROM usage_egress"
					" WHERE day = '2024-03-01' AND address = '192.0.2.1'"),
			 150002500);
	assert_int_equal(raw_int(t->db, "SELECT connections FROM usage_egress WHERE day = "
					"'2024-03-02' AND address = '192.0.2.1'"),
			 2);
	assert_int_equal(raw_int(t->db, "SELECT bytes_down FROM usage_egress WHERE address = ''"), 20);
	assert_int_equal(raw_int(t->db, "SELECT datagrams FROM usage_egress WHERE day = '2024-03-01'"
					" AND address = '192.0.2.1'"),
			 7);
	assert_int_equal(raw_int(t->db, "SELECT datagrams FROM usage_user WHERE user = 'alice'"), 7);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM usage_user"), 2);
	assert_int_equal(raw_int(t->db, "SELECT connections * 1000000 + failures FROM usage_user"
					" WHERE user = 'alice'"),
			 6000001);
	assert_int_equal(raw_int(t->db, "SELECT bytes_up * 1000000 + bytes_down FROM usage_user"
					" WHERE user = 'alice'"),
			 160002520);

	/* Refused before anything is written: a bad day, a missing key, a counter SQLite cannot
	 * hold (in the second table: the first is not written either). */
	static const char *const bad_days[] = { NULL,	      "",	    "2024-3-01", "2024-03-1",
						"2024/03/01", "2024-13-01", "2024-00-10", "2024-01-32",
						"2024-01-00", "20240-01-01", "2024-01-01 ", "x024-01-01" };
	for (size_t i = 0; i < sizeof(bad_days) / sizeof(bad_days[0]); i++)
		assert_int_equal(store_usage_add(s, bad_days[i], eg, 1, us, 1), ST_EINVAL);
	eg[1] = (struct store_usage){ NULL, 1, 1, 1, 1, 0 };
	assert_int_equal(store_usage_add(s, "2024-03-03", eg, 2, NULL, 0), ST_EINVAL);
	us[1] = (struct store_usage){ "bob", 1, (uint64_t)INT64_MAX + 1, 1, 1, 0 };
	assert_int_equal(store_usage_add(s, "2024-03-03", eg, 1, us, 2), ST_EINVAL);
	assert_int_equal(store_usage_add(s, "2024-03-03", NULL, 1, NULL, 0), ST_EINVAL);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM usage_egress WHERE day = '2024-03-03'"),
			 0);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM usage_user WHERE day = '2024-03-03'"),
			 0);
	/* The largest counter goes in. */
	us[1] = (struct store_usage){ "carol", 1, (uint64_t)INT64_MAX, 1, 1, 0 };
	assert_int_equal(store_usage_add(s, "2024-03-03", NULL, 0, &us[1], 1), ST_OK);
	assert_int_equal(raw_int(t->db, "SELECT bytes_up FROM usage_user WHERE user = 'carol'"),
			 INT64_MAX);
	store_close(s);
}

/* ---- settings in the snapshot ---------------------------------------------------------------- */

static void test_snapshot_settings(void **state)
{
	static const char salt_hex[] =
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	static const char salt_upper[] =
		"F0E1D2C3B4A5968778695A4B3C2D1E0F00FF00FF00FF00FF00FF00FF00FF00FF";
	static const char *const bad_salts[] = {
		"",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00000000",
		"g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1 ",
		" 00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
		"0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	};
	static const struct {
		const char *text;
		uint32_t ttl;
	} ttls[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "600", 600 },
		{ "3600", 3600 },
		{ "604800", 604800 },
		{ "604801", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "999999", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "1000000", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "99999999999999999999999", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "-1", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "+60", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "060", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "00", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ " 60", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "60 ", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "60s", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "1e3", SNAPSHOT_STICKY_TTL_DEFAULT },
		{ "0x10", SNAPSHOT_STICKY_TTL_DEFAULT },
	};
	struct snapshot *snap;
	struct store *s;
	uint8_t zero[SNAPSHOT_SALT_BYTES] = { 0 };

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_false(snap->has_salt);
	assert_memory_equal(snap->salt, zero, sizeof(zero));
	assert_int_equal(snap->sticky_ttl, SNAPSHOT_STICKY_TTL_DEFAULT);
	snapshot_unref(snap);

	assert_int_equal(store_setting_set(s, "sticky_salt", salt_hex), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_true(snap->has_salt);
	for (size_t i = 0; i < SNAPSHOT_SALT_BYTES; i++)
		assert_int_equal(snap->salt[i], i);
	snapshot_unref(snap);
	assert_int_equal(store_setting_set(s, "sticky_salt", salt_upper), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_true(snap->has_salt);
	assert_int_equal(snap->salt[0], 0xf0);
	assert_int_equal(snap->salt[1], 0xe1);
	assert_int_equal(snap->salt[31], 0xff);
	snapshot_unref(snap);
	for (size_t i = 0; i < sizeof(bad_salts) / sizeof(bad_salts[0]); i++) {
		assert_int_equal(store_setting_set(s, "sticky_salt", bad_salts[i]), ST_OK);
		assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
		if (snap->has_salt)
			fail_msg("salt '%s' accepted", bad_salts[i]);
		assert_memory_equal(snap->salt, zero, sizeof(zero));
		snapshot_unref(snap);
	}

	for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
		assert_int_equal(store_setting_set(s, "sticky_ttl", ttls[i].text), ST_OK);
		assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
		if (snap->sticky_ttl != ttls[i].ttl)
			fail_msg("sticky_ttl '%s' gave %u, want %u", ttls[i].text, snap->sticky_ttl,
				 ttls[i].ttl);
		snapshot_unref(snap);
	}
	store_close(s);
}

/* ---- attachments ----------------------------------------------------------------------------- */

static int attachment_frees;

static void attachment_free(void *p)
{
	attachment_frees++;
	free(p);
}

static void test_snapshot_attachment(void **state)
{
	struct store_pool_new e = entry("192.0.2.1");
	struct snapshot *snap;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_pool_add(s, &e, 1, NULL), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_null(snap->attachment);
	assert_null(snap->attachment_free);
	snap->attachment = malloc(64);
	assert_non_null(snap->attachment);
	snap->attachment_free = attachment_free;
	attachment_frees = 0;
	snapshot_ref(snap);
	snapshot_unref(snap);
	assert_int_equal(attachment_frees, 0);
	/* The last reference frees it, once (LeakSanitizer checks the memory). */
	snapshot_unref(snap);
	assert_int_equal(attachment_frees, 1);

	/* A function without an attachment is not called. */
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	snap->attachment_free = attachment_free;
	snapshot_unref(snap);
	assert_int_equal(attachment_frees, 1);
	store_close(s);
}

/* ---- a file edited by hand ------------------------------------------------------------------- */

static void test_snapshot_bad_pool_rows(void **state)
{
	static const char *const bad[] = {
		/* Not canonical: inet_ntop would write it otherwise. */
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:0db8::1', 6, 128, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:DB8::1', 6, 128, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:db8::1/128', 6, 128, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:db8::/064', 6, 64, 0)",
		/* Text and columns disagree. */
		"INSERT INTO pool (address, family, prefix, added) VALUES ('192.0.2.1', 6, 128, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:db8::', 4, 32, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:db8::/64', 6, 48, 0)",
		/* Host bits, not an address, an id a snapshot cannot carry. */
		"INSERT INTO pool (address, family, prefix, added) VALUES ('2001:db8::1/64', 6, 64, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('example.com', 4, 32, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES ('', 4, 32, 0)",
		"INSERT INTO pool (id, address, family, prefix, added) VALUES (4294967296, '192.0.2.9', 4, "
		"32, 0)",
		"INSERT INTO pool (id, address, family, prefix, added) VALUES (-1, '192.0.2.9', 4, 32, 0)",
		"INSERT INTO pool (address, family, prefix, added) VALUES (CAST(X'3139322e302e322e3100' AS "
		"TEXT), 4, 32, 0)",
	};
	struct tmp *t = *state;
	struct snapshot *snap = (struct snapshot *)(uintptr_t)0x1234;
	struct store *s;

	store_close(open_ok(t->db, STORE_CREATE));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		raw_exec(t->db, "DELETE FROM pool");
		raw_exec(t->db, bad[i]);
		s = open_ok(t->db, 0);
		if (store_snapshot_build(s, &snap) != ST_EDB)
			fail_msg("accepted: %s", bad[i]);
		assert_ptr_equal(snap, (struct snapshot *)(uintptr_t)0x1234);
		/* Nothing left open: the store still writes. */
		assert_int_equal(store_setting_set(s, "x", "y"), ST_OK);
		store_close(s);
	}
	/* The CLI can remove such an entry by its text; then all is well. */
	raw_exec(t->db, "DELETE FROM pool");
	raw_exec(t->db, bad[0]);
	s = open_ok(t->db, 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_EDB);
	assert_non_null(strstr(store_errmsg(s), "2001:0db8::1"));
	{
		const char *const a[] = { "2001:0db8::1" };

		assert_int_equal(store_pool_remove(s, a, 1, NULL), ST_OK);
	}
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 0);
	snapshot_unref(snap);
	store_close(s);

	/* The largest id a snapshot carries is fine. */
	raw_exec(t->db, "INSERT INTO pool (id, address, family, prefix, added) VALUES (4294967295, "
			"'192.0.2.9', 4, 32, 0)");
	s = open_ok(t->db, 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->npool, 1);
	assert_int_equal(snap->pool[0].id, UINT32_MAX);
	snapshot_unref(snap);
	store_close(s);
}

/* ---- the migrations from schema 1 (through 2) ------------------------------------------------------------- */

/* "type|name|sql\n" for every object, ordered by name, runs of whitespace made one space. */
static void schema_text(const char *path, char *out, size_t size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt;
	size_t used = 0;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT type, name, sql FROM sqlite_schema ORDER BY name",
					    -1, &stmt, NULL),
			 SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		const char *sql = (const char *)sqlite3_column_text(stmt, 2);
		bool space = false;

		used += (size_t)snprintf(out + used, size - used, "%s|%s|",
					 (const char *)sqlite3_column_text(stmt, 0),
					 (const char *)sqlite3_column_text(stmt, 1));
		assert_true(used < size);
		for (; sql != NULL && *sql != '\0'; sql++) {
			if (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r') {
				space = true;
				continue;
			}
			assert_true(used + 3 < size);
			if (space)
				out[used++] = ' ';
			space = false;
			out[used++] = *sql;
		}
		assert_true(used + 2 < size);
		out[used++] = '\n';
		out[used] = '\0';
	}
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_migration_v1(void **state)
{
	struct tmp *t = *state;
	char fresh_path[192], *migrated, *fresh;
	struct store_pool_new e = entry("192.0.2.1");
	struct snapshot *snap;
	struct store *s;
	int version = -1;

	raw_exec(t->db, schema_v1);
	raw_exec(t->db, "INSERT INTO users VALUES ('alice', '" HASH_A "', 0, 1700000000);"
			"INSERT INTO settings VALUES ('sticky_ttl', '42')");
	assert_int_equal(chmod(t->db, 0600), 0);
	assert_int_equal(raw_int(t->db, "PRAGMA user_version"), 1);

	s = open_ok(t->db, STORE_REQUIRE_PRIVATE);
	assert_int_equal(store_schema_version(s, &version), ST_OK);
	assert_int_equal(version, 3);
	assert_int_equal(STORE_SCHEMA_VERSION, 3);
	/* The user and the setting are kept; the new tables work. */
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nusers, 1);
	assert_string_equal(snap->users[0].name, "alice");
	assert_string_equal(snap->users[0].hash, HASH_A);
	assert_false(snap->users[0].enabled);
	assert_int_equal(snap->sticky_ttl, 42);
	assert_int_equal(snap->npool, 0);
	snapshot_unref(snap);
	entry_tag(&e, "country", "de");
	assert_int_equal(store_pool_add(s, &e, 1, NULL), ST_OK);
	store_close(s);
	assert_int_equal(raw_int(t->db, "PRAGMA user_version"), 3);
	assert_int_equal(raw_int(t->db, "SELECT created FROM users WHERE name = 'alice'"),
			 1700000000);

	/* The same schema as a new file's, object by object. */
	snprintf(fresh_path, sizeof(fresh_path), "%s/fresh.db", t->dir);
	store_close(open_ok(fresh_path, STORE_CREATE));
	migrated = calloc(1, 65536);
	fresh = calloc(1, 65536);
	assert_non_null(migrated);
	assert_non_null(fresh);
	schema_text(t->db, migrated, 65536);
	schema_text(fresh_path, fresh, 65536);
	assert_non_null(strstr(fresh, "table|pool_health|CREATE TABLE pool_health ("));
	assert_non_null(strstr(fresh, "table|usage_user|"));
	assert_non_null(strstr(fresh, "failures INTEGER NOT NULL DEFAULT 0, datagrams INTEGER NOT NULL"
				      " DEFAULT 0, PRIMARY KEY (day, user)"));
	assert_non_null(strstr(fresh, "table|links|CREATE TABLE links ("));
	assert_string_equal(migrated, fresh);
	free(migrated);
	free(fresh);

	/* Opening again migrates nothing more. */
	s = open_ok(t->db, 0);
	assert_int_equal(store_schema_version(s, &version), ST_OK);
	assert_int_equal(version, 3);
	store_close(s);
}

/* A schema 1 file where the migration cannot apply (a table of that name already exists) is left
 * at schema 1, whole: the step is one transaction. */
static void test_migration_v1_fails_whole(void **state)
{
	struct tmp *t = *state;
	struct store *s = NULL;
	const char *err = NULL;

	raw_exec(t->db, schema_v1);
	raw_exec(t->db, "CREATE TABLE usage_user (x INTEGER);"
			"INSERT INTO users VALUES ('alice', '" HASH_A "', 1, 0)");
	assert_int_equal(store_open(t->db, 0, &s, &err), ST_EDB);
	assert_null(s);
	assert_non_null(err);
	assert_non_null(strstr(err, "usage_user"));
	assert_int_equal(raw_int(t->db, "PRAGMA user_version"), 1);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM sqlite_schema WHERE name = 'pool'"), 0);
	assert_int_equal(raw_int(t->db, "SELECT count(*) FROM users"), 1);
}

/* ---- the daemon reading while the CLI adds --------------------------------------------------- */

#define BATCHES 40
#define BATCH 25

struct reader {
	const char *path;
	atomic_bool stop;
	atomic_bool started;
	int status;
	char err[256];
	size_t builds, bad, max_seen;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct store *s = NULL;
	const char *err = NULL;
	struct snapshot *snap;
	int st;

	st = store_open(r->path, 0, &s, &err);
	if (st != ST_OK) {
		r->status = st;
		snprintf(r->err, sizeof(r->err), "%s", err);
		atomic_store(&r->started, true);
		return NULL;
	}
	while (!atomic_load(&r->stop) || r->builds < 10) {
		st = store_snapshot_build(s, &snap);
		if (st != ST_OK) {
			r->status = st;
			snprintf(r->err, sizeof(r->err), "%s", store_errmsg(s));
			atomic_store(&r->started, true);
			break;
		}
		r->builds++;
		atomic_store(&r->started, true);
		if (snap->npool > r->max_seen)
			r->max_seen = snap->npool;
		/* Batches are all or nothing; every entry has both its tags. */
		if (snap->npool % BATCH != 0)
			r->bad++;
		for (size_t i = 0; i < snap->npool; i++) {
			if (snap->pool[i].ntags != 2 || strcmp(snap->pool[i].tags[0].key, "batch") != 0 ||
			    strcmp(snap->pool[i].tags[1].key, "n") != 0)
				r->bad++;
		}
		snapshot_unref(snap);
	}
	store_close(s);
	return NULL;
}

static void test_reader_while_adding(void **state)
{
	struct tmp *t = *state;
	struct reader r = { .path = t->db, .status = ST_OK };
	struct store_pool_new e[BATCH];
	char num[BATCHES][8];
	struct store *w;
	pthread_t th;
	int wst = ST_OK;

	w = open_ok(t->db, STORE_CREATE);
	atomic_init(&r.stop, false);
	atomic_init(&r.started, false);
	assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
	while (!atomic_load(&r.started))
		sched_yield();
	/* No assertion until the reader is joined. */
	for (int b = 0; b < BATCHES && wst == ST_OK; b++) {
		snprintf(num[b], sizeof(num[b]), "%d", b);
		for (int i = 0; i < BATCH; i++) {
			memset(&e[i], 0, sizeof(e[i]));
			e[i].family = AF_INET6;
			e[i].prefix_len = 64;
			e[i].weight = 1;
			e[i].addr[0] = 0x20;
			e[i].addr[1] = 0x01;
			e[i].addr[2] = 0x0d;
			e[i].addr[3] = 0xb8;
			e[i].addr[4] = (uint8_t)b;
			e[i].addr[5] = (uint8_t)i;
			e[i].ntags = 2;
			e[i].tag_keys[0] = "n";
			e[i].tag_values[0] = num[b];
			e[i].tag_keys[1] = "batch";
			e[i].tag_values[1] = "yes";
		}
		wst = store_pool_add(w, e, BATCH, NULL);
	}
	atomic_store(&r.stop, true);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (wst != ST_OK)
		fail_msg("writer: %s: %s", status_str(wst), store_errmsg(w));
	if (r.status != ST_OK)
		fail_msg("reader: %s: %s", status_str(r.status), r.err);
	print_message("reader: %zu snapshots, at most %zu entries\n", r.builds, r.max_seen);
	assert_int_equal(r.bad, 0);
	assert_true(r.max_seen <= BATCHES * BATCH);
	store_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_text),
		cmocka_unit_test(test_tag_valid),
		cmocka_unit_test(test_add_and_snapshot),
		cmocka_unit_test(test_add_boundaries),
		cmocka_unit_test(test_add_invalid),
		cmocka_unit_test(test_add_duplicates),
		cmocka_unit_test_setup_teardown(test_add_all_or_nothing, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_remove, tmp_setup, tmp_teardown),
		cmocka_unit_test(test_set_enabled),
		cmocka_unit_test_setup_teardown(test_health, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_usage, tmp_setup, tmp_teardown),
		cmocka_unit_test(test_snapshot_settings),
		cmocka_unit_test(test_snapshot_attachment),
		cmocka_unit_test_setup_teardown(test_snapshot_bad_pool_rows, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_migration_v1, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_migration_v1_fails_whole, tmp_setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_reader_while_adding, tmp_setup, tmp_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
