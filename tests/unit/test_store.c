/* tests/unit/test_store.c - store/: open and schema, users, settings, data_version, snapshots. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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

/* Well-formed enough for the store, which checks the prefix and the length only. */
#define HASH_A "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGFoYXNoYWhhc2hhaGFzaGE"
#define HASH_B "$argon2id$v=19$m=65536,t=2,p=1$cGVwcGVycGVwcGVy$YmJiYmJiYmJiYmJiYmJiYmJiYmI"

/* ---- fixture: a private temporary directory ------------------------------------------------ */

#include "tmpdir.h"

static void path_in(const struct tmp *t, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", t->dir, name);
}

/* Run SQL on a file with SQLite directly, as another program would. */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
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

/* store_open must fail with want; *out untouched, a message given. Returns the message. */
static const char *open_fails(const char *path, unsigned flags, int want)
{
	struct store *sentinel = (struct store *)(uintptr_t)0x1234;
	struct store *s = sentinel;
	const char *err = NULL;
	int st = store_open(path, flags, &s, &err);

	if (st != want)
		fail_msg("store_open(%s) = %s, want %s (%s)", path, status_str(st), status_str(want),
			 err != NULL ? err : "no message");
	assert_ptr_equal(s, sentinel);
	assert_non_null(err);
	assert_true(strlen(err) > 0);
	return err;
}

/* ---- a user list as one string, to compare before and after -------------------------------- */

struct listing {
	char text[4096];
	size_t n;
};

static void list_cb(const struct store_user_info *info, void *ctx)
{
	struct listing *l = ctx;
	size_t used = strlen(l->text);

	snprintf(l->text + used, sizeof(l->text) - used, "%s:%d;", info->name, info->enabled ? 1 : 0);
	l->n++;
}

static void list_users(struct store *s, struct listing *l)
{
	memset(l, 0, sizeof(*l));
	assert_int_equal(store_user_list(s, list_cb, l), ST_OK);
}

/* ---- open and schema ------------------------------------------------------------------------- */

static void test_open_memory(void **state)
{
	struct store *s;
	int version = -1;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_schema_version(s, &version), ST_OK);
	assert_int_equal(version, STORE_SCHEMA_VERSION);
	store_close(s);
	store_close(NULL);
}

static void test_open_file_private_mode(void **state)
{
	struct tmp *t = *state;
	char side[192];
	struct listing l;
	struct store *s;
	struct stat st;
	mode_t old = umask(0);
	int version = -1;

	/* umask 0 would give 0666 to a plain creat(): the store must still make it 0600. */
	s = open_ok(t->db, STORE_CREATE | STORE_REQUIRE_PRIVATE);
	umask(old);
	assert_int_equal(store_schema_version(s, &version), ST_OK);
	assert_int_equal(version, STORE_SCHEMA_VERSION);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);

	assert_int_equal(stat(t->db, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	/* SQLite gives the WAL and shared-memory files the database's mode. */
	snprintf(side, sizeof(side), "%s-wal", t->db);
	assert_int_equal(stat(side, &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	snprintf(side, sizeof(side), "%s-shm", t->db);
	assert_int_equal(stat(side, &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	store_close(s);

	/* Reopen without STORE_CREATE: the data is there. */
	s = open_ok(t->db, STORE_REQUIRE_PRIVATE);
	list_users(s, &l);
	assert_string_equal(l.text, "alice:1;");
	store_close(s);
}

static void test_open_missing(void **state)
{
	struct tmp *t = *state;
	char sub[192];
	const char *err;
	struct stat st;

	err = open_fails(t->db, 0, ST_ENOTFOUND);
	assert_non_null(strstr(err, "does not exist"));
	assert_int_equal(stat(t->db, &st), -1);
	assert_int_equal(errno, ENOENT);
	open_fails(t->db, STORE_REQUIRE_PRIVATE, ST_ENOTFOUND);

	/* A missing directory is a system error, with errno kept. */
	path_in(t, "nodir/pool.db", sub, sizeof(sub));
	errno = 0;
	open_fails(sub, STORE_CREATE, ST_ESYS);
	assert_int_equal(errno, ENOENT);
	open_fails("", STORE_CREATE, ST_EINVAL);
}

static void test_open_require_private(void **state)
{
	struct tmp *t = *state;
	const char *err;
	struct store *s;

	store_close(open_ok(t->db, STORE_CREATE));
	assert_int_equal(chmod(t->db, 0644), 0);
	err = open_fails(t->db, STORE_REQUIRE_PRIVATE, ST_EPERM);
	assert_non_null(strstr(err, "readable by group or others"));
	assert_non_null(strstr(err, "0644"));
	assert_non_null(strstr(err, "chmod 600"));
	open_fails(t->db, STORE_CREATE | STORE_REQUIRE_PRIVATE, ST_EPERM);
	/* Group-writable only is refused too. */
	assert_int_equal(chmod(t->db, 0620), 0);
	open_fails(t->db, STORE_REQUIRE_PRIVATE, ST_EPERM);

	/* Without the flag the caller has chosen to accept it. */
	s = open_ok(t->db, 0);
	store_close(s);
	assert_int_equal(chmod(t->db, 0600), 0);
	s = open_ok(t->db, STORE_REQUIRE_PRIVATE);
	store_close(s);
}

static void test_open_not_a_file(void **state)
{
	struct tmp *t = *state;
	char link[192], sub[192];
	const char *err;
	struct stat st;

	/* A symbolic link, even to a good database, is refused: so is a dangling one, which
	 * STORE_CREATE must not follow to create its target. */
	store_close(open_ok(t->db, STORE_CREATE));
	path_in(t, "link.db", link, sizeof(link));
	assert_int_equal(symlink(t->db, link), 0);
	err = open_fails(link, 0, ST_EPERM);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(unlink(link), 0);
	path_in(t, "target.db", sub, sizeof(sub));
	assert_int_equal(symlink(sub, link), 0);
	open_fails(link, STORE_CREATE, ST_EPERM);
	assert_int_equal(lstat(sub, &st), -1);

	path_in(t, "subdir", sub, sizeof(sub));
	assert_int_equal(mkdir(sub, 0700), 0);
	err = open_fails(sub, STORE_CREATE, ST_EPERM);
	assert_non_null(strstr(err, "not a regular file"));
}

/* A relative path that looks like an SQLite URI is still a file name (Debian's SQLite reads
 * "file:" names as URIs unless told otherwise). */
static void test_open_uri_like_path(void **state)
{
	struct tmp *t = *state;
	const char *name = "file:pool.db?mode=memory";
	char full[192];
	struct listing l;
	struct store *s;
	struct stat st;
	int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(cwd >= 0);
	assert_int_equal(chdir(t->dir), 0);
	s = open_ok(name, STORE_CREATE | STORE_REQUIRE_PRIVATE);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	store_close(s);
	s = open_ok(name, 0);
	list_users(s, &l);
	store_close(s);
	assert_int_equal(fchdir(cwd), 0);
	close(cwd);
	/* The data went to a file of that very name, not to memory. */
	assert_string_equal(l.text, "alice:1;");
	path_in(t, name, full, sizeof(full));
	assert_int_equal(stat(full, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_open_newer_version(void **state)
{
	struct tmp *t = *state;
	const char *err;

	store_close(open_ok(t->db, STORE_CREATE));
	raw_exec(t->db, "PRAGMA user_version = 7");
	err = open_fails(t->db, 0, ST_EVERSION);
	assert_non_null(strstr(err, "newer shroud"));
	assert_non_null(strstr(err, "schema 7"));
}

static void test_open_foreign_database(void **state)
{
	struct tmp *t = *state;
	const char *err;
	sqlite3 *db;
	sqlite3_stmt *stmt;

	raw_exec(t->db, "CREATE TABLE other (x INTEGER)");
	assert_int_equal(chmod(t->db, 0600), 0);
	err = open_fails(t->db, STORE_CREATE, ST_EDB);
	assert_non_null(strstr(err, "not a shroud database"));

	/* Left as it was: one table, version 0. */
	assert_int_equal(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT (SELECT count(*) FROM sqlite_master),"
					    " (SELECT user_version FROM pragma_user_version)",
					    -1, &stmt, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(stmt, 0), 1);
	assert_int_equal(sqlite3_column_int(stmt, 1), 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
}

static void test_open_garbage_file(void **state)
{
	struct tmp *t = *state;
	char junk[4096];
	const char *err;
	int fd;

	memset(junk, 'x', sizeof(junk));
	fd = open(t->db, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	err = open_fails(t->db, 0, ST_EDB);
	assert_non_null(strstr(err, "not a shroud database"));
}

struct opener {
	const char *path;
	int status;
	int version;
	char err[256];
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;
	struct store *s = NULL;
	const char *err = NULL;

	o->status = store_open(o->path, STORE_CREATE, &s, &err);
	if (o->status != ST_OK)
		snprintf(o->err, sizeof(o->err), "%s", err != NULL ? err : "no message");
	if (o->status == ST_OK) {
		o->status = store_schema_version(s, &o->version);
		store_close(s);
	}
	return NULL;
}

/* Several openers of one new file at once: one applies the schema, the others find it done
 * (had two applied it, the second CREATE TABLE would fail). */
static void test_open_concurrent_create(void **state)
{
	struct tmp *t = *state;
	struct opener o[4];
	pthread_t th[4];

	for (size_t i = 0; i < 4; i++) {
		o[i] = (struct opener){ .path = t->db, .status = -999, .version = -1, .err = "" };
		assert_int_equal(pthread_create(&th[i], NULL, opener_main, &o[i]), 0);
	}
	/* Join them all before any assertion: a failed assertion leaves the test at once, and a
	 * thread left running would outlive it. */
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (size_t i = 0; i < 4; i++) {
		if (o[i].status != ST_OK)
			fail_msg("opener %zu: %s: %s", i, status_str(o[i].status), o[i].err);
		assert_int_equal(o[i].version, STORE_SCHEMA_VERSION);
	}
}

/* The same across processes, the real case (a CLI and a daemon started together): the children
 * wait on a pipe, so they all call store_open at once when the parent closes it. */
static void test_open_concurrent_processes(void **state)
{
	struct tmp *t = *state;
	pid_t pid[4];
	int gate[2], wstatus;
	char c;

	assert_int_equal(pipe(gate), 0);
	for (size_t i = 0; i < 4; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			struct opener o = { .path = t->db, .status = -999, .version = -1 };

			/* A child never outlives a broken run by much. */
			alarm(30);
			close(gate[1]);
			if (read(gate[0], &c, 1) != 0)
				_exit(2);
			opener_main(&o);
			if (o.status != ST_OK)
				fprintf(stderr, "child: %s: %s\n", status_str(o.status), o.err);
			_exit(o.status == ST_OK && o.version == STORE_SCHEMA_VERSION ? 0 : 1);
		}
	}
	close(gate[0]);
	close(gate[1]);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(waitpid(pid[i], &wstatus, 0), pid[i]);
		assert_true(WIFEXITED(wstatus));
		assert_int_equal(WEXITSTATUS(wstatus), 0);
	}
}

/* ---- users ----------------------------------------------------------------------------------- */

static void test_user_names(void **state)
{
	static const char *const bad[] = {
		"",	 "-a",	"a-b",	  ".a",	   "_a",   "a b", "\xc3\xa4" /* ä */,
		"a\xc3\xa4", "a/b",  "/a",	   "a/",   "../a", "a\tb", "a\nb",
	};
	static const char *const good[] = { "a", "Z", "0", "Alice_1.x", "a.", "9_" };
	char name[STORE_USER_NAME_MAX + 2];
	struct listing before, after;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_false(store_user_name_valid(NULL));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (store_user_name_valid(bad[i]))
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(store_user_add(s, bad[i], HASH_A), ST_EINVAL);
	}
	/* 64 characters is the longest; 65 is refused. */
	memset(name, 'a', STORE_USER_NAME_MAX + 1);
	name[STORE_USER_NAME_MAX + 1] = '\0';
	assert_false(store_user_name_valid(name));
	assert_int_equal(store_user_add(s, name, HASH_A), ST_EINVAL);
	list_users(s, &before);
	assert_int_equal(before.n, 0);

	name[STORE_USER_NAME_MAX] = '\0';
	assert_true(store_user_name_valid(name));
	assert_int_equal(store_user_add(s, name, HASH_A), ST_OK);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!store_user_name_valid(good[i]))
			fail_msg("\"%s\" refused", good[i]);
		assert_int_equal(store_user_add(s, good[i], HASH_A), ST_OK);
	}
	list_users(s, &before);
	assert_int_equal(before.n, 1 + sizeof(good) / sizeof(good[0]));
	/* Bad names are never found either, and change nothing. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(store_user_remove(s, bad[i]), ST_ENOTFOUND);
		assert_int_equal(store_user_set_hash(s, bad[i], HASH_B), ST_ENOTFOUND);
		assert_int_equal(store_user_set_enabled(s, bad[i], false), ST_ENOTFOUND);
	}
	list_users(s, &after);
	assert_string_equal(before.text, after.text);
	store_close(s);
}

static void test_user_operations(void **state)
{
	char long_hash[SNAPSHOT_HASH_MAX + 1];
	struct listing before, after;
	struct store *s;
	struct snapshot *snap;
	const struct snapshot_user *u;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_user_add(s, "bob", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	list_users(s, &before);
	assert_string_equal(before.text, "alice:1;bob:1;");

	/* Every failure leaves the list as it was. */
	assert_int_equal(store_user_add(s, "alice", HASH_B), ST_EEXIST);
	assert_true(strlen(store_errmsg(s)) > 0);
	assert_int_equal(store_user_add(s, "carol", "plaintext"), ST_EINVAL);
	assert_int_equal(store_user_add(s, "carol", "$argon2i$v=19$m=4096,t=3,p=1$abc$def"), ST_EINVAL);
	assert_int_equal(store_user_add(s, "carol", ""), ST_EINVAL);
	assert_int_equal(store_user_add(s, "carol", NULL), ST_EINVAL);
	assert_int_equal(store_user_add(s, NULL, HASH_A), ST_EINVAL);
	/* A hash must fit a snapshot: 127 characters is the longest. */
	memset(long_hash, 'h', sizeof(long_hash));
	memcpy(long_hash, "$argon2id$", 10);
	long_hash[SNAPSHOT_HASH_MAX] = '\0';
	assert_int_equal(store_user_add(s, "carol", long_hash), ST_EINVAL);
	assert_int_equal(store_user_remove(s, "carol"), ST_ENOTFOUND);
	assert_int_equal(store_user_set_hash(s, "carol", HASH_B), ST_ENOTFOUND);
	assert_int_equal(store_user_set_hash(s, "alice", "nope"), ST_EINVAL);
	assert_int_equal(store_user_set_hash(s, "alice", long_hash), ST_EINVAL);
	assert_int_equal(store_user_set_enabled(s, "carol", false), ST_ENOTFOUND);
	/* Case matters: "Alice" is another name. */
	assert_int_equal(store_user_remove(s, "Alice"), ST_ENOTFOUND);
	list_users(s, &after);
	assert_string_equal(before.text, after.text);

	long_hash[SNAPSHOT_HASH_MAX - 1] = '\0';
	assert_int_equal(store_user_add(s, "carol", long_hash), ST_OK);
	assert_int_equal(store_user_set_enabled(s, "bob", false), ST_OK);
	assert_int_equal(store_user_set_enabled(s, "bob", false), ST_OK);
	assert_int_equal(store_user_set_hash(s, "alice", HASH_B), ST_OK);
	list_users(s, &after);
	assert_string_equal(after.text, "alice:1;bob:0;carol:1;");
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	u = snapshot_user_find(snap, "alice");
	assert_non_null(u);
	assert_string_equal(u->hash, HASH_B);
	u = snapshot_user_find(snap, "carol");
	assert_non_null(u);
	assert_string_equal(u->hash, long_hash);
	snapshot_unref(snap);

	assert_int_equal(store_user_remove(s, "bob"), ST_OK);
	assert_int_equal(store_user_remove(s, "bob"), ST_ENOTFOUND);
	assert_int_equal(store_user_set_enabled(s, "bob", true), ST_ENOTFOUND);
	list_users(s, &after);
	assert_string_equal(after.text, "alice:1;carol:1;");
	/* A removed name can be added again. */
	assert_int_equal(store_user_add(s, "bob", HASH_A), ST_OK);
	list_users(s, &after);
	assert_string_equal(after.text, "alice:1;bob:1;carol:1;");
	store_close(s);
}

struct created_check {
	int64_t lo, hi;
	size_t n;
};

static void created_cb(const struct store_user_info *info, void *ctx)
{
	struct created_check *c = ctx;

	assert_true(info->created >= c->lo && info->created <= c->hi);
	c->n++;
}

static void test_user_created_time(void **state)
{
	struct created_check c;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	c.lo = (int64_t)time(NULL);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	c.hi = (int64_t)time(NULL);
	c.n = 0;
	assert_int_equal(store_user_list(s, created_cb, &c), ST_OK);
	assert_int_equal(c.n, 1);
	store_close(s);
}

/* ---- settings -------------------------------------------------------------------------------- */

static void test_settings(void **state)
{
	char buf[8];
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	memcpy(buf, "keepme", 7);
	assert_int_equal(store_setting_get(s, "sticky_ttl", buf, sizeof(buf)), ST_ENOTFOUND);
	assert_string_equal(buf, "keepme");
	assert_int_equal(store_setting_set(s, "sticky_ttl", "600"), ST_OK);
	assert_int_equal(store_setting_get(s, "sticky_ttl", buf, sizeof(buf)), ST_OK);
	assert_string_equal(buf, "600");
	assert_int_equal(store_setting_set(s, "sticky_ttl", "1234567"), ST_OK);
	assert_int_equal(store_setting_get(s, "sticky_ttl", buf, sizeof(buf)), ST_OK);
	assert_string_equal(buf, "1234567");
	/* 8 characters need 9 bytes: too big, buf untouched. */
	assert_int_equal(store_setting_set(s, "sticky_ttl", "12345678"), ST_OK);
	assert_int_equal(store_setting_get(s, "sticky_ttl", buf, sizeof(buf)), ST_ETOOBIG);
	assert_string_equal(buf, "1234567");
	assert_int_equal(store_setting_set(s, "empty", ""), ST_OK);
	assert_int_equal(store_setting_get(s, "empty", buf, sizeof(buf)), ST_OK);
	assert_string_equal(buf, "");
	assert_int_equal(store_setting_get(s, "empty", buf, 0), ST_ETOOBIG);
	assert_int_equal(store_setting_set(s, "k", NULL), ST_EINVAL);
	assert_int_equal(store_setting_set(s, NULL, "v"), ST_EINVAL);
	store_close(s);
}

/* ---- data_version ---------------------------------------------------------------------------- */

static void test_data_version(void **state)
{
	struct tmp *t = *state;
	struct store *daemon, *cli;
	struct listing l;
	struct snapshot *snap;
	int64_t v0, v1, v2;

	daemon = open_ok(t->db, STORE_CREATE);
	cli = open_ok(t->db, 0);
	assert_int_equal(store_data_version(daemon, &v0), ST_OK);

	/* Its own reads and writes do not move it: only another connection's commits do. */
	list_users(daemon, &l);
	assert_int_equal(store_snapshot_build(daemon, &snap), ST_OK);
	snapshot_unref(snap);
	assert_int_equal(store_setting_set(daemon, "x", "1"), ST_OK);
	assert_int_equal(store_data_version(daemon, &v1), ST_OK);
	assert_int_equal(v0, v1);
	list_users(cli, &l);
	assert_int_equal(store_data_version(daemon, &v1), ST_OK);
	assert_int_equal(v0, v1);

	/* A failed write by the other connection commits nothing. */
	assert_int_equal(store_user_remove(cli, "nobody"), ST_ENOTFOUND);
	assert_int_equal(store_data_version(daemon, &v1), ST_OK);
	assert_int_equal(v0, v1);

	assert_int_equal(store_user_add(cli, "alice", HASH_A), ST_OK);
	assert_int_equal(store_data_version(daemon, &v1), ST_OK);
	assert_true(v1 != v0);
	assert_int_equal(store_data_version(daemon, &v2), ST_OK);
	assert_int_equal(v1, v2);
	assert_int_equal(store_user_set_enabled(cli, "alice", false), ST_OK);
	assert_int_equal(store_data_version(daemon, &v2), ST_OK);
	assert_true(v2 != v1);

	/* And the daemon sees the change. */
	assert_int_equal(store_snapshot_build(daemon, &snap), ST_OK);
	assert_int_equal(snap->nusers, 1);
	assert_false(snap->users[0].enabled);
	snapshot_unref(snap);
	store_close(cli);
	store_close(daemon);
}

/* ---- snapshots ------------------------------------------------------------------------------- */

static void test_snapshot_contents(void **state)
{
	struct snapshot *snap, *snap2;
	struct store *s;
	const struct snapshot_user *u;

	(void)state;
	s = open_ok(":memory:", 0);

	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nusers, 0);
	assert_null(snapshot_user_find(snap, "alice"));
	assert_null(snapshot_user_find(NULL, "alice"));
	snapshot_unref(snap);

	assert_int_equal(store_user_add(s, "carol", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "bob", HASH_B), ST_OK);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "Zed", HASH_B), ST_OK);
	assert_int_equal(store_user_add(s, "a.b", HASH_A), ST_OK);
	assert_int_equal(store_user_add(s, "a_b", HASH_A), ST_OK);
	assert_int_equal(store_user_set_enabled(s, "bob", false), ST_OK);

	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(atomic_load(&snap->refs), 1);
	assert_int_equal(snap->nusers, 6);
	/* strcmp order: uppercase before lowercase, '.' before '_'. */
	assert_string_equal(snap->users[0].name, "Zed");
	assert_string_equal(snap->users[1].name, "a.b");
	assert_string_equal(snap->users[2].name, "a_b");
	assert_string_equal(snap->users[3].name, "alice");
	assert_string_equal(snap->users[4].name, "bob");
	assert_string_equal(snap->users[5].name, "carol");
	for (size_t i = 1; i < snap->nusers; i++)
		assert_true(strcmp(snap->users[i - 1].name, snap->users[i].name) < 0);
	assert_string_equal(snap->users[0].hash, HASH_B);
	assert_string_equal(snap->users[4].hash, HASH_B);
	assert_string_equal(snap->users[5].hash, HASH_A);
	for (size_t i = 0; i < snap->nusers; i++)
		assert_int_equal(snap->users[i].enabled, i != 4);

	/* Every name found, at its own entry; near misses are not. */
	for (size_t i = 0; i < snap->nusers; i++)
		assert_ptr_equal(snapshot_user_find(snap, snap->users[i].name), &snap->users[i]);
	u = snapshot_user_find(snap, "bob");
	assert_non_null(u);
	assert_false(u->enabled);
	static const char *const misses[] = { "", "A", "Alice", "alic", "alicee", "a", "zed", "zzz",
					      "0", "bob " };
	for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++)
		assert_null(snapshot_user_find(snap, misses[i]));
	assert_null(snapshot_user_find(snap, NULL));

	/* A later snapshot has a larger generation; the earlier one is unchanged by later writes. */
	assert_int_equal(store_user_remove(s, "carol"), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap2), ST_OK);
	assert_true(snap2->generation > snap->generation);
	assert_int_equal(snap2->nusers, 5);
	assert_null(snapshot_user_find(snap2, "carol"));
	assert_non_null(snapshot_user_find(snap, "carol"));
	snapshot_unref(snap);
	snapshot_unref(snap2);
	store_close(s);
}

static void test_snapshot_refcount(void **state)
{
	struct snapshot *snap;
	struct store *s;

	(void)state;
	s = open_ok(":memory:", 0);
	assert_int_equal(store_user_add(s, "alice", HASH_A), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_ptr_equal(snapshot_ref(snap), snap);
	assert_int_equal(atomic_load(&snap->refs), 2);
	snapshot_unref(snap);
	/* Still alive with one reference (ASan would flag a use after free here). */
	assert_int_equal(atomic_load(&snap->refs), 1);
	assert_string_equal(snap->users[0].name, "alice");
	/* The last one frees it (LeakSanitizer would report it otherwise). */
	snapshot_unref(snap);
	snapshot_unref(NULL);
	store_close(s);
}

/* A file edited behind our back: the snapshot refuses what it cannot hold, and the store stays
 * usable (no transaction left open). */
static void test_snapshot_bad_rows(void **state)
{
	struct tmp *t = *state;
	char sql[512], hash[200];
	struct snapshot *snap = (struct snapshot *)(uintptr_t)0x1234;
	struct store *s;

	store_close(open_ok(t->db, STORE_CREATE));
	memset(hash, 'h', sizeof(hash) - 1);
	hash[sizeof(hash) - 1] = '\0';
	memcpy(hash, "$argon2id$", 10);
	snprintf(sql, sizeof(sql), "INSERT INTO users VALUES ('mallory', '%s', 1, 0)", hash);
	raw_exec(t->db, sql);

	s = open_ok(t->db, 0);
	assert_int_equal(store_snapshot_build(s, &snap), ST_EDB);
	assert_ptr_equal(snap, (struct snapshot *)(uintptr_t)0x1234);
	assert_non_null(strstr(store_errmsg(s), "mallory"));
	assert_int_equal(store_user_remove(s, "mallory"), ST_OK);
	assert_int_equal(store_snapshot_build(s, &snap), ST_OK);
	assert_int_equal(snap->nusers, 0);
	snapshot_unref(snap);
	store_close(s);
}

/* ---- the daemon reading while the CLI writes -------------------------------------------------- */

#define WRITER_USERS 100 /* added, then removed: 200 writes */

struct reader {
	const char *path;
	atomic_bool stop;
	atomic_bool started; /* the first build is done (or failed): the writer may start */
	int status; /* first failure, ST_OK if none */
	char err[256];
	size_t builds;
	size_t bad;	 /* snapshots that were not sorted or not whole */
	size_t max_seen;
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
	/* At least a few builds even if the writer is quick. */
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
		if (snap->nusers > r->max_seen)
			r->max_seen = snap->nusers;
		for (size_t i = 0; i < snap->nusers; i++) {
			if ((i > 0 && strcmp(snap->users[i - 1].name, snap->users[i].name) >= 0) ||
			    strcmp(snap->users[i].hash, HASH_A) != 0)
				r->bad++;
		}
		snapshot_unref(snap);
	}
	store_close(s);
	return NULL;
}

static void test_reader_while_writer(void **state)
{
	struct tmp *t = *state;
	struct reader r = { .path = t->db, .status = ST_OK };
	struct store *w;
	struct snapshot *snap;
	pthread_t th;
	char name[32];
	int wst = ST_OK;

	w = open_ok(t->db, STORE_CREATE);
	atomic_init(&r.stop, false);
	atomic_init(&r.started, false);
	assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
	/* Write while the reader reads, not after it. */
	while (!atomic_load(&r.started))
		sched_yield();
	/* No assertion until the reader is joined: it must not outlive a failed test. */
	for (int i = 0; i < WRITER_USERS && wst == ST_OK; i++) {
		snprintf(name, sizeof(name), "user%03d", (i * 37) % WRITER_USERS);
		wst = store_user_add(w, name, HASH_A);
	}
	for (int i = 0; i < WRITER_USERS && wst == ST_OK; i++) {
		snprintf(name, sizeof(name), "user%03d", i);
		wst = store_user_remove(w, name);
	}
	atomic_store(&r.stop, true);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (wst != ST_OK)
		fail_msg("writer: %s: %s", status_str(wst), store_errmsg(w));

	if (r.status != ST_OK)
		fail_msg("reader: %s: %s", status_str(r.status), r.err);
	assert_true(r.builds >= 10);
	print_message("reader: %zu snapshots, at most %zu users\n", r.builds, r.max_seen);
	assert_int_equal(r.bad, 0);
	assert_true(r.max_seen <= WRITER_USERS);
	assert_int_equal(store_snapshot_build(w, &snap), ST_OK);
	assert_int_equal(snap->nusers, 0);
	snapshot_unref(snap);
	store_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_memory),
		cmocka_unit_test_setup_teardown(test_open_file_private_mode, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_missing, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_require_private, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_not_a_file, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_uri_like_path, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_newer_version, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_foreign_database, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_garbage_file, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_concurrent_create, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_open_concurrent_processes, tmp_setup,
						tmp_teardown),
		cmocka_unit_test(test_user_names),
		cmocka_unit_test(test_user_operations),
		cmocka_unit_test(test_user_created_time),
		cmocka_unit_test(test_settings),
		cmocka_unit_test_setup_teardown(test_data_version, tmp_setup, tmp_teardown),
		cmocka_unit_test(test_snapshot_contents),
		cmocka_unit_test(test_snapshot_refcount),
		cmocka_unit_test_setup_teardown(test_snapshot_bad_rows, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_reader_while_writer, tmp_setup, tmp_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
