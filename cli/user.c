/* cli/user.c - `shroud user add|rm|passwd|enable|disable|list`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "cli/cli.h"
#include "crypto/pwhash.h"
#include "store/store.h"

static void user_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s user ACTION [NAME] [OPTIONS]\n\n"
		"Manage the users that may log in (RFC 1929 username/password). A running daemon\n"
		"applies every change within about a second.\n\n"
		"Actions:\n"
		"  add NAME       add a user; the password is asked twice on the terminal\n"
		"  passwd NAME    change a user's password\n"
		"  rm NAME        remove a user\n"
		"  disable NAME   refuse a user's logins, keeping the user\n"
		"  enable NAME    accept a disabled user's logins again\n"
		"  list           one line per user: name, state, date added\n\n"
		"Options:\n"
		"  --db PATH          database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --password-stdin   read the password from the first line of standard input\n"
		"  --help             this text\n\n"
		"Names are 1 to %d characters of A-Z a-z 0-9 _ . starting with a letter or digit\n"
		"(no '-': it separates the name from session parameters in a SOCKS username).\n",
		cli_progname, STORE_USER_NAME_MAX);
}

struct user_args {
	const char *action;
	const char *name;
	const char *db;
	bool password_stdin;
};

enum { OPT_DB = 256, OPT_PASSWORD_STDIN, OPT_HELP };

static const struct option user_options[] = {
	{ "db", required_argument, NULL, OPT_DB },
	{ "password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static void user_list_print(const struct store_user_info *info, void *ctx)
{
	char date[32];

	UNUSED(ctx);
	cli_time_text(info->created, date, sizeof(date));
	printf("%-24s %-9s %s\n", info->name, info->enabled ? "enabled" : "disabled", date);
}

static int user_fail(const struct user_args *a, struct store *s, int rc)
{
	if (rc == ST_EEXIST)
		cli_error("user '%s' already exists", a->name);
	else if (rc == ST_ENOTFOUND)
		cli_error("no user '%s'", a->name);
	else
		cli_error("user %s: %s (%s)", a->action, status_str(rc), store_errmsg(s));
	return CLI_FAIL;
}

/* add and passwd: read and hash the password, then write. */
static int user_set_password(const struct user_args *a, struct store *s, bool add)
{
	char pass[258];
	char hash[PWHASH_STR_MAX];
	int rc;

	rc = cli_read_password(a->password_stdin, pass, sizeof(pass));
	if (rc != CLI_OK)
		return rc;
	rc = pwhash_hash(pass, strlen(pass), hash);
	explicit_bzero(pass, sizeof(pass));
	if (rc != ST_OK) {
		cli_error("cannot hash the password: %s", status_str(rc));
		return CLI_FAIL;
	}
	rc = add ? store_user_add(s, a->name, hash) : store_user_set_hash(s, a->name, hash);
	return rc == ST_OK ? CLI_OK : user_fail(a, s, rc);
}

int cmd_user(int argc, char **argv)
{
	struct user_args a = { 0 };
	const char *positional[3];
	size_t npos = 0;
	struct store *s;
	int opt, rc;
	bool needs_name;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "-", user_options, NULL)) != -1) {
		switch (opt) {
		case 1: /* a positional argument, in order ("-" optstring) */
			if (npos == ARRAY_SIZE(positional)) {
				cli_error("user: unexpected argument '%s'", optarg);
				return CLI_USAGE;
			}
			positional[npos++] = optarg;
			break;
		case OPT_DB:
			a.db = optarg;
			break;
		case OPT_PASSWORD_STDIN:
			a.password_stdin = true;
			break;
		case OPT_HELP:
			user_usage(stdout);
			return CLI_OK;
		default:
			cli_error("user: unknown or incomplete option '%s' (see 'shroud user --help')",
				  argv[optind - 1]);
			return CLI_USAGE;
		}
	}
	if (npos == 0) {
		cli_error("user: which action? (add, passwd, rm, disable, enable, list)");
		return CLI_USAGE;
	}
	a.action = positional[0];
	needs_name = strcmp(a.action, "list") != 0;
	if (strcmp(a.action, "add") != 0 && strcmp(a.action, "passwd") != 0 &&
	    strcmp(a.action, "rm") != 0 && strcmp(a.action, "disable") != 0 &&
	    strcmp(a.action, "enable") != 0 && strcmp(a.action, "list") != 0) {
		cli_error("user: unknown action '%s' (add, passwd, rm, disable, enable, list)", a.action);
		return CLI_USAGE;
	}
	if (needs_name && npos != 2) {
		cli_error("user %s: %s", a.action, npos < 2 ? "NAME is missing" : "only one NAME");
		return CLI_USAGE;
	}
	if (!needs_name && npos != 1) {
		cli_error("user list: unexpected argument '%s'", positional[1]);
		return CLI_USAGE;
	}
	a.name = needs_name ? positional[1] : NULL;
	if (a.password_stdin && strcmp(a.action, "add") != 0 && strcmp(a.action, "passwd") != 0) {
		cli_error("user %s: --password-stdin goes with add and passwd only", a.action);
		return CLI_USAGE;
	}
	if (a.name != NULL && !store_user_name_valid(a.name)) {
		cli_error("user %s: '%s' is not a valid name: 1 to %d characters of A-Z a-z 0-9 _ . "
			  "starting with a letter or digit (no '-')",
			  a.action, a.name, STORE_USER_NAME_MAX);
		return CLI_FAIL;
	}

	s = cli_store_open(cli_db_path(a.db), strcmp(a.action, "add") == 0, false);
	if (s == NULL)
		return CLI_FAIL;
	if (strcmp(a.action, "add") == 0)
		rc = user_set_password(&a, s, true);
	else if (strcmp(a.action, "passwd") == 0)
		rc = user_set_password(&a, s, false);
	else if (strcmp(a.action, "rm") == 0) {
		rc = store_user_remove(s, a.name);
		rc = rc == ST_OK ? CLI_OK : user_fail(&a, s, rc);
	} else if (strcmp(a.action, "disable") == 0 || strcmp(a.action, "enable") == 0) {
		rc = store_user_set_enabled(s, a.name, strcmp(a.action, "enable") == 0);
		rc = rc == ST_OK ? CLI_OK : user_fail(&a, s, rc);
	} else {
		rc = store_user_list(s, user_list_print, NULL);
		rc = rc == ST_OK ? CLI_OK : user_fail(&a, s, rc);
	}
	store_close(s);
	return rc;
}
