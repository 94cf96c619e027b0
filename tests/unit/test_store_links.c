/* tests/unit/test_store_links.c - store/: the encrypted link's clients, the server's link key, and
 * the links in snapshots. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

#include "tmpdir.h"

#define HASH_A "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGFoYXNoYWhhc2hhaGFzaGE"

#define KEY_A "1111111111111111111111111111111111111111111111111111111111111111"
#define KEY_B "2222222222222222222222222222222222222222222222222222222222222222"

/* ---- helpers --------------------------------------------------------------------------------- */

static struct store *open_ok(const char *path, unsigned flags)
{
	struct store *s = NULL;
	const char *err = NULL;
	int st = store_open(path, flags, &s, &err);

	if (st != ST_OK)
		fail_msg("store_open(%s): %s: %s", path, status_str(st), err != NULL ? err : "?");
	return s;
}

/* A 32-byte key whose bytes are all b, except the first, which is first (to order them). */
static void key_fill(uint8_t out[32], uint8_t first, uint8_t b)
{
	memset(out, b, 32);
	out[0] = first;
}

struct dump {
	char *out;
	size_t size, used;
};

static int dump_cb(void *ctx, int ncols, char **values, char **names)
{
	struct dump *d = ctx;

	(void)names;
	for (int i = 0; i < ncols; i++)
		d->used += (size_t)snprintf(d->out + d->used, d->size - d->used, "%s|",
					    values[i] != NULL ? values[i] : "NULL");
	d->used += (size_t)snprintf(d->out + d->used, d->size - d->used, "\n");
	assert_true(d->used < d->size);
	return 0;
}

/* Everything the link functions may touch, as text (the links with their PSKs, the settings,
 * the users), read with a connection of its own, as another program would. */
static void db_state_path(const char *path, char *out, size_t size)
{
	struct dump d = { out, size, 0 };
	sqlite3 *db = NULL;

	out[0] = '\0';
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "SELECT name, user, hex(public_key), hex(psk), enabled, created"
				      " FROM links ORDER BY name;"
				      "SELECT key, value FROM settings ORDER BY key;"
				      "SELECT name, enabled FROM users ORDER BY name;",
				      dump_cb, &d, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

struct names {
	char text[1024];
	size_t n;
};

static void names_cb(const struct store_link_info *info, void *ctx)
{
	struct names *l = ctx;
	size_t used = strlen(l->text);

	snprintf(l->text + used, sizeof(l->text) - used, "%s:%s:%02x:%d;", info->name, info->user,
		 info->public_key[0], info->enabled ? 1 : 0);
	l->n++;
}

static void list_links(struct store *s, struct names *l)
{
	memset(l, 0, sizeof(*l));
	assert_int_equal(store_link_list(s, names_cb, l), ST_OK);
}

/* Add a link with keys made by key_fill; asserts success. */
static void add_ok(struct store *s, const char *name, const char *user, uint8_t key_first,
		   uint8_t psk_byte)
{
	uint8_t key[32], psk[32];
	struct store_link_new l = { .name = name, .user = user, .public_key = key, .psk = psk };
	enum store_link_field bad = STORE_LINK_FIELD_PUBLIC_KEY;
	int st;

	key_fill(key, key_first, 0x77);
	memset(psk, psk_byte, sizeof(psk));
	st = store_link_add(s, &l, NULL, NULL, &bad);
	if (st != ST_OK)
		fail_msg("add %s: %s (%s)", name, status_str(st), store_errmsg(s));
	assert_int_equal(bad, STORE_LINK_FIELD_NONE);
}

/* ---- add, list, find, revoke ----------------------------------------------------------------- */

static void test_add_list_find_revoke(void **state)
{
	struct store_link_info info, keep;
	struct names l;
	struct store *s;
	uint8_t key[32];
	time_t t0 = time(NULL);

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "bob", HASH_A), ST_OK);
	list_links(s, &l);
	assert_int_equal(l.n, 0);

	add_ok(s, "phone", "alice", 0x20, 0x01);
	add_ok(s, "laptop", "alice", 0x10, 0x02);
	add_ok(s, "Work.PC_2", "bob", 0x30, 0x03);
	list_links(s, &l);
	assert_int_equal(l.n, 3);
	/* By name, byte order. */
	assert_string_equal(l.text, "Work.PC_2:bob:30:1;laptop:alice:10:1;phone:alice:20:1;");

	memset(&info, 0, sizeof(info));
	assert_int_equal(store_link_find(s, "laptop", &info), ST_OK);
	assert_string_equal(info.name, "laptop");
	assert_string_equal(info.user, "alice");
	key_fill(key, 0x10, 0x77);
	assert_memory_equal(info.public_key, key, 32);
	assert_true(info.enabled);
	assert_true(info.created >= t0 - 1 && info.created <= time(NULL) + 1);

	keep = info;
	assert_int_equal(store_link_find(s, "nope", &info), ST_ENOTFOUND);
	assert_int_equal(store_link_find(s, "bad-name", &info), ST_ENOTFOUND);
	assert_int_equal(store_link_find(s, NULL, &info), ST_ENOTFOUND);
	assert_memory_equal(&info, &keep, sizeof(info));

	assert_int_equal(store_link_revoke(s, "laptop"), ST_OK);
	assert_int_equal(store_link_find(s, "laptop", &info), ST_ENOTFOUND);
	assert_int_equal(store_link_revoke(s, "laptop"), ST_ENOTFOUND);
	assert_int_equal(store_link_revoke(s, "bad-name"), ST_ENOTFOUND);
	list_links(s, &l);
	assert_string_equal(l.text, "Work.PC_2:bob:30:1;phone:alice:20:1;");
	/* The name and key are free again. */
	add_ok(s, "laptop", "alice", 0x10, 0x04);
	store_close(s);
}

/* Refusals name the field and write nothing: another connection sees no commit at all. */
static void test_refusals_change_nothing(void **state)
{
	struct tmp *t = *state;
	char before[4096], after[4096];
	uint8_t key[32], psk[32], other[32];
	struct store_link_new l = { .public_key = key, .psk = psk };
	enum store_link_field bad;
	struct store *s, *watcher;
	char server[STORE_LINK_SERVER_KEY_HEX + 1] = "untouched";
	int64_t v0, v1;
	struct {
		const char *name, *user;
		const uint8_t *key;
		const char *candidate;
		int want;
		enum store_link_field field;
		const char *msg;
	} cases[] = {
		{ "laptop2", "nobody", other, KEY_B, ST_ENOTFOUND, STORE_LINK_FIELD_USER, "user" },
		{ "laptop", "alice", other, KEY_B, ST_EEXIST, STORE_LINK_FIELD_NAME, "name" },
		{ "laptop2", "alice", key, KEY_B, ST_EEXIST, STORE_LINK_FIELD_PUBLIC_KEY, "'laptop'" },
		{ "bad-name", "alice", other, KEY_B, ST_EINVAL, STORE_LINK_FIELD_NAME, "name" },
		{ "", "alice", other, KEY_B, ST_EINVAL, STORE_LINK_FIELD_NAME, "name" },
		{ "laptop2", "al ice", other, KEY_B, ST_EINVAL, STORE_LINK_FIELD_USER, "user" },
		{ "laptop2", "alice", other, "xyz", ST_EINVAL, STORE_LINK_FIELD_SERVER_KEY, "hex" },
		{ "laptop2", "alice", other, KEY_B "0", ST_EINVAL, STORE_LINK_FIELD_SERVER_KEY,
		  "hex" },
		{ "laptop2", "alice", other,
		  "g222222222222222222222222222222222222222222222222222222222222222", ST_EINVAL,
		  STORE_LINK_FIELD_SERVER_KEY, "hex" },
	};

	s = open_ok(t->db, STORE_CREATE);
	watcher = open_ok(t->db, 0);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	key_fill(key, 0x10, 0x77);
	key_fill(other, 0x11, 0x77);
	memset(psk, 0x42, sizeof(psk));
	l.name = "laptop";
	l.user = "alice";
	assert_int_equal(store_link_add(s, &l, KEY_A, server, &bad), ST_OK);
	assert_string_equal(server, KEY_A);

	db_state_path(t->db, before, sizeof(before));
	assert_non_null(strstr(before, "laptop|alice|1077"));
	assert_int_equal(store_data_version(watcher, &v0), ST_OK);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st;

		l.name = cases[i].name;
		l.user = cases[i].user;
		l.public_key = cases[i].key;
		memcpy(server, "untouched", 10);
		bad = STORE_LINK_FIELD_NONE;
		st = store_link_add(s, &l, cases[i].candidate, server, &bad);
		if (st != cases[i].want || bad != cases[i].field)
			fail_msg("case %zu (%s): %s field %d, want %s field %d (%s)", i, cases[i].name,
				 status_str(st), bad, status_str(cases[i].want), cases[i].field,
				 store_errmsg(s));
		if (strstr(store_errmsg(s), cases[i].msg) == NULL)
			fail_msg("case %zu: message '%s' does not mention '%s'", i, store_errmsg(s),
				 cases[i].msg);
		assert_string_equal(server, "untouched");
	}
	/* Missing pieces. */
	l.name = "laptop2";
	l.user = "alice";
	l.public_key = NULL;
	assert_int_equal(store_link_add(s, &l, KEY_B, server, &bad), ST_EINVAL);
	l.public_key = other;
	assert_int_equal(store_link_add(s, &l, KEY_B, NULL, &bad), ST_EINVAL);
	assert_int_equal(bad, STORE_LINK_FIELD_SERVER_KEY);
	assert_int_equal(store_link_add(s, NULL, NULL, NULL, NULL), ST_EINVAL);
	assert_int_equal(store_link_revoke(s, "nothere"), ST_ENOTFOUND);

	db_state_path(t->db, after, sizeof(after));
	assert_string_equal(before, after);
	assert_int_equal(store_data_version(watcher, &v1), ST_OK);
	assert_int_equal(v0, v1);
	store_close(watcher);
	store_close(s);
}

/* A refused add on a database without a server key does not make one. */
static void test_refused_add_makes_no_server_key(void **state)
{
	uint8_t key[32], psk[32];
	struct store_link_new l = { .name = "laptop", .user = "nobody", .public_key = key, .psk = psk };
	char hex[STORE_LINK_SERVER_KEY_HEX + 1];
	enum store_link_field bad;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	key_fill(key, 1, 2);
	memset(psk, 3, sizeof(psk));
	assert_int_equal(store_link_add(s, &l, KEY_A, hex, &bad), ST_ENOTFOUND);
	assert_int_equal(bad, STORE_LINK_FIELD_USER);
	assert_int_equal(store_link_server_key_get(s, hex), ST_ENOTFOUND);
	/* Now with the user: made, and the same key from then on. */
	assert_int_equal(store_user_add(s, "nobody", HASH_A), ST_OK);
	assert_int_equal(store_link_add(s, &l, KEY_A, hex, &bad), ST_OK);
	assert_string_equal(hex, KEY_A);
	l.name = "second";
	key_fill(key, 2, 2);
	assert_int_equal(store_link_add(s, &l, KEY_B, hex, &bad), ST_OK);
	assert_string_equal(hex, KEY_A);
	/* Without a candidate the server key is neither made nor read. */
	l.name = "third";
	key_fill(key, 3, 2);
	assert_int_equal(store_link_add(s, &l, NULL, NULL, &bad), ST_OK);
	store_close(s);
}

/* ---- the server key -------------------------------------------------------------------------- */

static void test_server_key_made_once(void **state)
{
	char hex[STORE_LINK_SERVER_KEY_HEX + 1], raw[80];
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	memcpy(hex, "untouched", 10);
	assert_int_equal(store_link_server_key_get(s, hex), ST_ENOTFOUND);
	assert_string_equal(hex, "untouched");
	assert_int_equal(store_link_server_key_init_if_absent(s, "abc", hex), ST_EINVAL);
	assert_int_equal(store_link_server_key_init_if_absent(s, KEY_A "1", hex), ST_EINVAL);
	assert_int_equal(store_link_server_key_init_if_absent(s, NULL, hex), ST_EINVAL);
	assert_int_equal(store_link_server_key_get(s, hex), ST_ENOTFOUND);
	assert_string_equal(hex, "untouched");

	assert_int_equal(store_link_server_key_init_if_absent(s, KEY_A, hex), ST_OK);
	assert_string_equal(hex, KEY_A);
	assert_int_equal(store_link_server_key_init_if_absent(s, KEY_B, hex), ST_OK);
	assert_string_equal(hex, KEY_A);
	memset(hex, 0, sizeof(hex));
	assert_int_equal(store_link_server_key_get(s, hex), ST_OK);
	assert_string_equal(hex, KEY_A);
	/* It is the settings row the schema documents. */
	assert_int_equal(store_setting_get(s, "link_server_key", raw, sizeof(raw)), ST_OK);
	assert_string_equal(raw, KEY_A);
	store_close(s);
}

/* A malformed stored key is reported, never replaced: the clients pin its public half. */
static void test_server_key_malformed(void **state)
{
	static const char *const bad[] = {
		"", "zz", KEY_A "1", "111111111111111111111111111111111111111111111111111111111111111",
		"11111111111111111111111111111111111111111111111111111111111111 1",
	};
	char hex[STORE_LINK_SERVER_KEY_HEX + 1], raw[80];
	uint8_t key[32], psk[32];
	struct store_link_new l = { .name = "laptop", .user = "alice", .public_key = key, .psk = psk };
	enum store_link_field field;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	key_fill(key, 1, 1);
	memset(psk, 2, sizeof(psk));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(store_setting_set(s, "link_server_key", bad[i]), ST_OK);
		memcpy(hex, "untouched", 10);
		assert_int_equal(store_link_server_key_get(s, hex), ST_EDB);
		assert_int_equal(store_link_server_key_init_if_absent(s, KEY_A, hex), ST_EDB);
		assert_int_equal(store_link_add(s, &l, KEY_A, hex, &field), ST_EDB);
		assert_int_equal(field, STORE_LINK_FIELD_SERVER_KEY);
		assert_string_equal(hex, "untouched");
		assert_non_null(strstr(store_errmsg(s), "malformed"));
		assert_int_equal(store_setting_get(s, "link_server_key", raw, sizeof(raw)), ST_OK);
		assert_string_equal(raw, bad[i]);
		assert_int_equal(store_link_find(s, "laptop", &(struct store_link_info){ 0 }),
				 ST_ENOTFOUND);
	}
	/* Upper-case hex (a hand edit) is still a key. */
	assert_int_equal(store_setting_set(s, "link_server_key",
					   "ABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCD"),
			 ST_OK);
	assert_int_equal(store_link_server_key_get(s, hex), ST_OK);
	store_close(s);
}

/* Processes starting at once, each with its own candidate: all end up with the same key. */
static void test_server_key_concurrent_first_use(void **state)
{
	struct tmp *t = *state;
	char got[4][STORE_LINK_SERVER_KEY_HEX + 1], stored[STORE_LINK_SERVER_KEY_HEX + 1];
	int gate[2], out[4][2], wstatus;
	struct store *s;
	pid_t pid[4];
	char c;

	s = open_ok(t->db, STORE_CREATE);
	assert_int_equal(pipe(gate), 0);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(pipe(out[i]), 0);
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			char candidate[STORE_LINK_SERVER_KEY_HEX + 1], hex[STORE_LINK_SERVER_KEY_HEX + 1];
			struct store *cs = NULL;
			const char *err = NULL;

			alarm(30);
			close(gate[1]);
			memset(candidate, "abcd"[i], STORE_LINK_SERVER_KEY_HEX);
			candidate[STORE_LINK_SERVER_KEY_HEX] = '\0';
			if (store_open(t->db, 0, &cs, &err) != ST_OK)
				_exit(1);
			if (read(gate[0], &c, 1) != 0)
				_exit(2);
			if (store_link_server_key_init_if_absent(cs, candidate, hex) != ST_OK)
				_exit(3);
			if (write(out[i][1], hex, sizeof(hex)) != (ssize_t)sizeof(hex))
				_exit(4);
			store_close(cs);
			_exit(0);
		}
		close(out[i][1]);
	}
	close(gate[0]);
	close(gate[1]);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(waitpid(pid[i], &wstatus, 0), pid[i]);
		assert_true(WIFEXITED(wstatus));
		assert_int_equal(WEXITSTATUS(wstatus), 0);
		assert_int_equal(read(out[i][0], got[i], sizeof(got[i])), (ssize_t)sizeof(got[i]));
		close(out[i][0]);
	}
	assert_int_equal(store_link_server_key_get(s, stored), ST_OK);
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(got[i], stored);
	/* One of the candidates. */
	assert_true(strspn(stored, "abcd") == STORE_LINK_SERVER_KEY_HEX &&
		    strspn(stored, (char[]){ stored[0], '\0' }) == STORE_LINK_SERVER_KEY_HEX);
	store_close(s);
}

/* ---- cascade --------------------------------------------------------------------------------- */

static void test_user_removal_cascades(void **state)
{
	struct snapshot *snap;
	struct names l;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "bob", HASH_A), ST_OK);
	add_ok(s, "a1", "alice", 1, 1);
	add_ok(s, "a2", "alice", 2, 2);
	add_ok(s, "b1", "bob", 3, 3);
	assert_int_equal(store_user_remove(s, "alice"), ST_OK);
	list_links(s, &l);
	assert_string_equal(l.text, "b1:bob:03:1;");
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nlinks, 1);
	assert_string_equal(snap->links[0].name, "b1");
	snapshot_unref(snap);
	/* A new alice does not get the old links back. */
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	list_links(s, &l);
	assert_int_equal(l.n, 1);
	store_close(s);
}

/* ---- snapshots ------------------------------------------------------------------------------- */

static void test_snapshot_links(void **state)
{
	struct tmp *t = *state;
	const struct snapshot_link *found;
	struct snapshot *snap;
	struct store *s;
	uint8_t key[32], psk[32];

	s = open_ok(t->db, STORE_CREATE);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nlinks, 0);
	assert_null(snap->links);
	key_fill(key, 0x10, 0x77);
	assert_null(snapshot_link_find(snap, key));
	snapshot_unref(snap);
	assert_null(snapshot_link_find(NULL, key));

	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "bob", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "carol", HASH_A), ST_OK);
	/* Added out of key order. */
	add_ok(s, "z", "alice", 0xf0, 0xa1);
	add_ok(s, "y", "alice", 0x05, 0xa2);
	add_ok(s, "x", "bob", 0x80, 0xa3);
	add_ok(s, "w", "bob", 0x00, 0xa4);
	add_ok(s, "off", "alice", 0x40, 0xa5);
	add_ok(s, "carols", "carol", 0x41, 0xa6);
	/* A disabled link, and the links of a disabled user, may not connect: not in the snapshot. */
	raw_exec(t->db, "UPDATE links SET enabled = 0 WHERE name = 'off'");
	assert_int_equal(store_user_set_enabled(s, "carol", false), ST_OK);

	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nlinks, 4);
	for (size_t i = 1; i < snap->nlinks; i++)
		assert_true(memcmp(snap->links[i - 1].public_key, snap->links[i].public_key, 32) < 0);
	assert_string_equal(snap->links[0].name, "w");
	assert_string_equal(snap->links[1].name, "y");
	assert_string_equal(snap->links[2].name, "x");
	assert_string_equal(snap->links[3].name, "z");

	key_fill(key, 0x80, 0x77);
	found = snapshot_link_find(snap, key);
	assert_non_null(found);
	assert_string_equal(found->name, "x");
	assert_string_equal(found->user, "bob");
	memset(psk, 0xa3, sizeof(psk));
	assert_memory_equal(found->psk, psk, 32);
	assert_memory_equal(found->public_key, key, 32);
	for (size_t i = 0; i < snap->nlinks; i++)
		assert_ptr_equal(snapshot_link_find(snap, snap->links[i].public_key), &snap->links[i]);
	key_fill(key, 0x40, 0x77); /* disabled */
	assert_null(snapshot_link_find(snap, key));
	key_fill(key, 0x41, 0x77); /* disabled user */
	assert_null(snapshot_link_find(snap, key));
	key_fill(key, 0x80, 0x78); /* near miss */
	assert_null(snapshot_link_find(snap, key));
	snapshot_unref(snap);

	/* Re-enabled, they are back; revoked, gone. */
	raw_exec(t->db, "UPDATE links SET enabled = 1 WHERE name = 'off'");
	assert_int_equal(store_user_set_enabled(s, "carol", true), ST_OK);
	assert_int_equal(store_link_revoke(s, "x"), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nlinks, 5);
	key_fill(key, 0x41, 0x77);
	assert_non_null(snapshot_link_find(snap, key));
	key_fill(key, 0x80, 0x77);
	assert_null(snapshot_link_find(snap, key));
	snapshot_unref(snap);
	store_close(s);
}

/* A hand-edited row that breaks what the CHECKs promise fails the build, and the listing. */
static void test_snapshot_bad_link_rows(void **state)
{
	struct tmp *t = *state;
	struct snapshot *snap = NULL;
	struct names l;
	struct store *s;

	s = open_ok(t->db, STORE_CREATE);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	add_ok(s, "good", "alice", 1, 1);
	raw_exec(t->db, "PRAGMA ignore_check_constraints = ON;"
			"INSERT INTO links (name, user, public_key, psk, enabled, created)"
			" VALUES ('short', 'alice', zeroblob(31), zeroblob(32), 1, 0)");
	assert_int_equal(store_snapshot_build(s, &snap), ST_EDB);
	assert_null(snap);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_link_list(s, names_cb, &l), ST_EDB);
	raw_exec(t->db, "PRAGMA ignore_check_constraints = ON;"
			"UPDATE links SET public_key = zeroblob(32), psk = zeroblob(33)"
			" WHERE name = 'short'");
	assert_int_equal(store_snapshot_build(s, &snap), ST_EDB);
	raw_exec(t->db, "PRAGMA ignore_check_constraints = ON;"
			"UPDATE links SET psk = zeroblob(32), name = 'bad name' WHERE name = 'short'");
	assert_int_equal(store_snapshot_build(s, &snap), ST_EDB);
	raw_exec(t->db, "DELETE FROM links WHERE name = 'bad name'");
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nlinks, 1);
	snapshot_unref(snap);
	store_close(s);
}

/* ---- revoke leaves no PSK on disk ------------------------------------------------------------ */

static bool file_contains(const char *path, const uint8_t *needle, size_t n)
{
	static uint8_t buf[1 << 22];
	ssize_t len;
	int fd = open(path, O_RDONLY);
	bool found = false;

	if (fd < 0) {
		assert_int_equal(errno, ENOENT);
		return false;
	}
	len = read(fd, buf, sizeof(buf));
	close(fd);
	assert_true(len >= 0 && (size_t)len < sizeof(buf));
	for (ssize_t i = 0; !found && i + (ssize_t)n <= len; i++)
		found = memcmp(buf + i, needle, n) == 0;
	return found;
}

static void test_revoke_wipes_psk_from_files(void **state)
{
	struct tmp *t = *state;
	char wal[160];
	uint8_t key[32], psk[32];
	struct store_link_new l = { .name = "laptop", .user = "alice", .public_key = key, .psk = psk };
	struct store *s;

	snprintf(wal, sizeof(wal), "%s-wal", t->db);
	s = open_ok(t->db, STORE_CREATE);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	for (size_t i = 0; i < 32; i++) {
		key[i] = (uint8_t)(0x90 + i);
		psk[i] = (uint8_t)(0xc0 + (i * 7) % 61);
	}
	assert_int_equal(store_link_add(s, &l, NULL, NULL, NULL), ST_OK);
	/* The test can see it where it is... */
	assert_true(file_contains(t->db, psk, sizeof(psk)) || file_contains(wal, psk, sizeof(psk)));
	assert_int_equal(store_link_revoke(s, "laptop"), ST_OK);
	/* ... and it is nowhere after the revocation, while the store is still open. */
	assert_false(file_contains(t->db, psk, sizeof(psk)));
	assert_false(file_contains(wal, psk, sizeof(psk)));
	assert_false(file_contains(t->db, key, sizeof(key)));
	assert_false(file_contains(wal, key, sizeof(key)));
	store_close(s);
	assert_false(file_contains(t->db, psk, sizeof(psk)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_list_find_revoke),
		cmocka_unit_test_setup_teardown(test_refusals_change_nothing, tmp_setup, tmp_teardown),
		cmocka_unit_test(test_refused_add_makes_no_server_key),
		cmocka_unit_test(test_server_key_made_once),
		cmocka_unit_test(test_server_key_malformed),
		cmocka_unit_test_setup_teardown(test_server_key_concurrent_first_use, tmp_setup,
						tmp_teardown),
		cmocka_unit_test(test_user_removal_cascades),
		cmocka_unit_test_setup_teardown(test_snapshot_links, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_bad_link_rows, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_revoke_wipes_psk_from_files, tmp_setup,
						tmp_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
