/*
 * tests/unit/tmpdir.h - a private temporary directory per test (cmocka setup/teardown), for tests
 * that need real files. Header-only, included by the test programs that use it.
 */
#ifndef SHROUD_TESTS_TMPDIR_H
#define SHROUD_TESTS_TMPDIR_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tmp {
	char dir[64];
	char db[128]; /* dir/pool.db */
};

static int tmp_setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "/tmp/shroud-test-XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	snprintf(t->db, sizeof(t->db), "%s/pool.db", t->dir);
	*state = t;
	return 0;
}

/* Remove everything the test left in the directory (one level of subdirectories), then it. */
static int tmp_teardown(void **state)
{
	struct tmp *t = *state;
	struct dirent *e;
	DIR *d = opendir(t->dir);

	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno == EISDIR)
				(void)unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
		}
		closedir(d);
	}
	(void)rmdir(t->dir);
	free(t);
	return 0;
}

#endif
