/* cli/link.c - `shroud link add|allow|list|revoke`: the clients of the encrypted link (LINK.md). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/status.h"
#include "cli/cli.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "store/store.h"

static void link_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s link ACTION [ARGS] [OPTIONS]\n\n"
		"Manage the clients of the encrypted link: each has a static X25519 key pair and a\n"
		"pre-shared key (PSK) of its own, and acts as one user.\n\n"
		"Actions:\n"
		"  add NAME --user USER --server HOST:PORT\n"
		"        make the client's key pair and PSK, store its public key and the PSK, and print\n"
		"        its access key: one line holding HOST:PORT, the server's public key, the PSK\n"
		"        and the client's private key. Hand it over privately; it is not stored.\n"
		"  allow NAME PUBKEY --user USER --server HOST:PORT\n"
		"        the same for a client that made its own key pair ('%s keygen FILE' prints\n"
		"        PUBKEY): the access key printed has no private part\n"
		"  list [--json]\n"
		"        one line per link: name, user, state, date added, public key\n"
		"  revoke NAME\n"
		"        delete the link: its public key and PSK leave the database\n\n"
		"The server's own key pair is made by the first add or allow and kept in the database\n"
		"(settings.link_server_key); it is never printed. HOST is a DNS name, an IPv4 address or\n"
		"an IPv6 address in brackets ([2001:db8::1]:443): the address clients connect to.\n"
		"Nothing but the access key goes to standard output for add and allow.\n\n"
		"Exit status: 0 done; 1 refused by the database (no such user, a name or key already\n"
		"used, no such link) or failed; 2 the command line is wrong (nothing was opened).\n\n"
		"Options:\n"
		"  --user USER         the user the client acts as (it must exist)\n"
		"  --server HOST:PORT  where clients reach the link server\n"
		"  --json              list as a JSON array of {name, user, public_key, enabled,\n"
		"                      created}\n"
		"  --db PATH           database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --help              this text\n\n"
		"Names are 1 to %d characters of A-Z a-z 0-9 _ . starting with a letter or digit.\n\n"
		"The client: '%s link --access-key-file FILE|- [--key FILE] [--listen ADDR:PORT]',\n"
		"or '%s link < FILE'.\n",
		cli_progname, cli_progname, STORE_LINK_NAME_MAX, cli_progname, cli_progname);
}

/* ---- the command line ------------------------------------------------------------------------ */

struct link_args {
	const char *action;
	const char *name;
	const char *pubkey_text;
	const char *user;
	const char *server;
	const char *db;
	bool json;
	char host[LINK_ACCESS_HOST_MAX + 1]; /* --server, parsed */
	uint16_t port;
	uint8_t public_key[KEYS_X25519_BYTES]; /* allow's PUBKEY, decoded */
};

enum { OPT_DB = 256, OPT_USER, OPT_SERVER, OPT_JSON, OPT_HELP };

static const struct option link_options[] = {
	{ "db", required_argument, NULL, OPT_DB },
	{ "user", required_argument, NULL, OPT_USER },
	{ "server", required_argument, NULL, OPT_SERVER },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* An option's value, once. CLI_OK or CLI_USAGE. */
static int link_option_set(const char **slot, const char *flag, const char *value)
{
	if (*slot != NULL) {
		cli_error("link: %s is given twice", flag);
		return CLI_USAGE;
	}
	/* "--user --db PATH": getopt takes "--db" as the user. No user name or HOST:PORT starts
	 * with '-', so say what was meant. */
	if (strcmp(flag, "--db") != 0 && value[0] == '-') {
		cli_error("link: %s needs a value (it was followed by '%s')", flag, value);
		return CLI_USAGE;
	}
	*slot = value;
	return CLI_OK;
}

/* Everything that can be checked without the database. CLI_OK or CLI_USAGE with a message naming
 * the argument. */
static int link_args_check(struct link_args *a, const char *const *pos, size_t npos)
{
	bool add = strcmp(a->action, "add") == 0, allow = strcmp(a->action, "allow") == 0;
	bool list = strcmp(a->action, "list") == 0;
	size_t want = allow ? 3 : list ? 1 : 2;
	const char *why = NULL;

	if (npos < want) {
		cli_error("link %s: %s is missing", a->action,
			  npos == 1 ? "NAME" : "PUBKEY (the public key 'shroud keygen' printed)");
		return CLI_USAGE;
	}
	if (npos > want) {
		cli_error("link %s: unexpected argument '%s'", a->action, pos[want]);
		return CLI_USAGE;
	}
	if ((add || allow) && a->user == NULL) {
		cli_error("link %s: --user USER is missing (the user the client acts as)", a->action);
		return CLI_USAGE;
	}
	if ((add || allow) && a->server == NULL) {
		cli_error("link %s: --server HOST:PORT is missing (where clients reach the server)",
			  a->action);
		return CLI_USAGE;
	}
	if (!add && !allow && (a->user != NULL || a->server != NULL)) {
		cli_error("link %s: --user and --server go with add and allow only", a->action);
		return CLI_USAGE;
	}
	if (!list && a->json) {
		cli_error("link %s: --json goes with list only", a->action);
		return CLI_USAGE;
	}
	if (list)
		return CLI_OK;

	a->name = pos[1];
	if (!store_link_name_valid(a->name)) {
		cli_error("link %s: '%s' is not a valid link name: 1 to %d characters of A-Z a-z 0-9 "
			  "_ . starting with a letter or digit",
			  a->action, a->name, STORE_LINK_NAME_MAX);
		return CLI_USAGE;
	}
	if (!add && !allow)
		return CLI_OK;
	if (!store_user_name_valid(a->user)) {
		cli_error("link %s: --user: '%s' is not a valid user name", a->action, a->user);
		return CLI_USAGE;
	}
	if (link_access_server_parse(a->server, a->host, &a->port, &why) != ST_OK) {
		cli_error("link %s: --server: '%s': %s", a->action, a->server, why);
		return CLI_USAGE;
	}
	if (allow) {
		a->pubkey_text = pos[2];
		if (keys_base64_decode(a->public_key, a->pubkey_text, strlen(a->pubkey_text)) !=
		    ST_OK) {
			cli_error("link allow: PUBKEY '%s' is not a public key: want the %d characters "
				  "of base64 that '%s keygen' prints",
				  a->pubkey_text, KEYS_BASE64_LEN, cli_progname);
			return CLI_USAGE;
		}
		if (!keys_x25519_public_usable(a->public_key)) {
			cli_error("link allow: PUBKEY '%s' is not a usable X25519 public key (a "
				  "low-order point)",
				  a->pubkey_text);
			return CLI_USAGE;
		}
	}
	return CLI_OK;
}

/* ---- add and allow --------------------------------------------------------------------------- */

/* The refusal of store_link_add, naming the argument. */
static int link_add_fail(const struct link_args *a, struct store *s, int st,
			 enum store_link_field bad)
{
	if (st == ST_ENOTFOUND && bad == STORE_LINK_FIELD_USER)
		cli_error("link %s: --user: no user '%s' (add it first: %s user add %s); nothing "
			  "changed",
			  a->action, a->user, cli_progname, a->user);
	else if (st == ST_EEXIST && bad == STORE_LINK_FIELD_NAME)
		cli_error("link %s: a link named '%s' already exists; nothing changed", a->action,
			  a->name);
	else if (st == ST_EEXIST && bad == STORE_LINK_FIELD_PUBLIC_KEY)
		cli_error("link %s: PUBKEY '%s': %s; nothing changed", a->action,
			  a->pubkey_text != NULL ? a->pubkey_text : "(generated)", store_errmsg(s));
	else if (bad == STORE_LINK_FIELD_SERVER_KEY)
		cli_error("link %s: the server key: %s; nothing changed", a->action, store_errmsg(s));
	else
		cli_error("link %s: %s (%s); nothing changed", a->action, status_str(st),
			  store_errmsg(s));
	return CLI_FAIL;
}

/*
 * The server's public key from the private key's hex (which is wiped by the caller). The private
 * key passes through guarded memory only.
 */
static int link_server_public(const char *hex, uint8_t pub[static KEYS_X25519_BYTES])
{
	struct keys_secret *priv = NULL;
	int st = keys_secret_from_hex(hex, KEYS_X25519_BYTES, &priv);

	if (st == ST_OK)
		st = keys_x25519_public(pub, keys_secret_bytes(priv));
	keys_secret_free(priv);
	return st;
}

/*
 * add and allow: the client's keys (add) and PSK, the server key made if this is the first link,
 * both stored in one transaction; then the access key, printed from guarded memory.
 */
static int link_add(struct store *s, struct link_args *a, bool allow)
{
	struct keys_secret *client = NULL, *psk = NULL, *server = NULL, *line = NULL;
	char candidate[STORE_LINK_SERVER_KEY_HEX + 1], effective[STORE_LINK_SERVER_KEY_HEX + 1];
	uint8_t client_public[KEYS_X25519_BYTES], server_public[KEYS_X25519_BYTES];
	enum store_link_field bad = STORE_LINK_FIELD_NONE;
	struct store_link_new l;
	char *text;
	size_t len;
	int st, rc = CLI_FAIL;

	memset(candidate, 0, sizeof(candidate));
	memset(effective, 0, sizeof(effective));
	if (keys_secret_new(KEYS_PSK_BYTES, &psk) != ST_OK ||
	    keys_secret_new(KEYS_X25519_BYTES, &server) != ST_OK ||
	    keys_secret_new(LINK_ACCESS_MAX + 1, &line) != ST_OK ||
	    (!allow && keys_secret_new(KEYS_X25519_BYTES, &client) != ST_OK)) {
		cli_error("link %s: out of memory", a->action);
		goto out;
	}
	/* A candidate server key, stored only if this database has none yet. */
	if (keys_x25519_generate(server, server_public) != ST_OK ||
	    (!allow && keys_x25519_generate(client, client_public) != ST_OK)) {
		cli_error("link %s: cannot make a key pair", a->action);
		goto out;
	}
	keys_hex_encode(candidate, keys_secret_bytes(server), KEYS_X25519_BYTES);
	keys_secret_free(server);
	server = NULL;
	keys_random(keys_secret_data(psk), KEYS_PSK_BYTES);
	if (keys_secret_lock(psk) != ST_OK || (client != NULL && keys_secret_lock(client) != ST_OK)) {
		cli_error("link %s: cannot protect the keys in memory: %s", a->action,
			  strerror(errno));
		goto out;
	}

	l.name = a->name;
	l.user = a->user;
	l.public_key = allow ? a->public_key : client_public;
	l.psk = keys_secret_bytes(psk);
	st = store_link_add(s, &l, candidate, effective, &bad);
	if (st != ST_OK) {
		rc = link_add_fail(a, s, st, bad);
		goto out;
	}
	/* The key in effect may be another process's, written first: its public half goes out. */
	if (link_server_public(effective, server_public) != ST_OK) {
		cli_error("link %s: the server key in the database is unusable; the link '%s' was "
			  "added: revoke it",
			  a->action, a->name);
		goto out;
	}
	text = (char *)keys_secret_data(line);
	st = link_access_format(text, LINK_ACCESS_MAX, a->host, a->port, server_public,
				keys_secret_bytes(psk), client != NULL ? keys_secret_bytes(client) : NULL);
	if (st != ST_OK) {
		cli_error("link %s: cannot write the access key (%s); the link '%s' was added: revoke "
			  "it",
			  a->action, status_str(st), a->name);
		goto out;
	}
	len = strlen(text);
	text[len++] = '\n';
	/* Not stdio: it would keep a copy of the key in its buffer. */
	if (!cli_write_all(STDOUT_FILENO, text, len)) {
		cli_error("link %s: cannot print the access key (%s); the link '%s' was added: revoke "
			  "it",
			  a->action, strerror(errno), a->name);
		goto out;
	}
	cli_error("link '%s' added for user '%s'. The line above is its access key: it holds the "
		  "PSK%s, so hand it over privately; it is not stored anywhere.",
		  a->name, a->user, allow ? "" : " and the client's private key");
	rc = CLI_OK;
out:
	explicit_bzero(candidate, sizeof(candidate));
	explicit_bzero(effective, sizeof(effective));
	keys_secret_free(client);
	keys_secret_free(psk);
	keys_secret_free(server);
	keys_secret_free(line);
	return rc;
}

/* ---- list ------------------------------------------------------------------------------------ */

struct link_listing {
	bool json;
	size_t n;
};

static void link_list_print(const struct store_link_info *info, void *ctx)
{
	struct link_listing *l = ctx;
	char key[KEYS_BASE64_SIZE], when[64];

	keys_base64_encode(key, info->public_key);
	/* Names and user names are of [A-Za-z0-9_.] (checked when read): nothing to escape. */
	if (l->json) {
		printf("%s{\"name\": \"%s\", \"user\": \"%s\", \"public_key\": \"%s\", "
		       "\"enabled\": %s, \"created\": %lld}",
		       l->n > 0 ? ",\n  " : "\n  ", info->name, info->user, key,
		       info->enabled ? "true" : "false", (long long)info->created);
	} else {
		cli_time_text(info->created, when, sizeof(when));
		printf("%-24s %-24s %-9s %s %s\n", info->name, info->user,
		       info->enabled ? "enabled" : "disabled", when, key);
	}
	l->n++;
}

static int link_list(struct store *s, const struct link_args *a)
{
	struct link_listing l = { .json = a->json, .n = 0 };
	int st;

	if (a->json)
		putchar('[');
	st = store_link_list(s, link_list_print, &l);
	if (a->json)
		fputs(l.n > 0 ? "\n]\n" : "]\n", stdout);
	if (st != ST_OK) {
		cli_error("link list: %s (%s)", status_str(st), store_errmsg(s));
		return CLI_FAIL;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_error("link list: cannot write the listing");
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* ---- the subcommand -------------------------------------------------------------------------- */

int cmd_link(int argc, char **argv)
{
	static const char *const actions[] = { "add", "allow", "list", "revoke" };
	struct link_args a;
	const char **pos = NULL;
	struct store *s = NULL;
	size_t npos = 0;
	bool known = false;
	int opt, st, rc = CLI_OK;

	/* The one place the client mode branches off: `shroud link --access-key-file FILE ...`
	 * (an option first) is the client, an action word first is the operator. */
	if (argc >= 2 && strncmp(argv[1], "--", 2) == 0 && strcmp(argv[1], "--help") != 0)
		return cmd_link_client(argc, argv);
	/* `shroud link < FILE`: nothing but the access key on stdin. */
	if (argc == 1 && !isatty(STDIN_FILENO))
		return cmd_link_client(argc, argv);

	memset(&a, 0, sizeof(a));
	pos = calloc((size_t)argc + 1, sizeof(*pos));
	if (pos == NULL) {
		cli_error("out of memory");
		return CLI_FAIL;
	}
	opterr = 0;
	/* "-": positional arguments come back in order as 1; ":": a missing value as ':'. */
	/* In "-" mode getopt returns every argument in order, so the one it is looking at is the
	 * one at optind before the call: the argument an error is about (optind - 1 is not, inside
	 * a group of short options such as a pasted base64url key "-_v7..."). */
	for (int at = optind; (opt = getopt_long(argc, argv, "-:", link_options, NULL)) != -1;
	     at = optind) {
		switch (opt) {
		case 1:
			pos[npos++] = optarg;
			break;
		case OPT_DB:
			rc = link_option_set(&a.db, "--db", optarg);
			break;
		case OPT_USER:
			rc = link_option_set(&a.user, "--user", optarg);
			break;
		case OPT_SERVER:
			rc = link_option_set(&a.server, "--server", optarg);
			break;
		case OPT_JSON:
			a.json = true;
			break;
		case OPT_HELP:
			link_usage(stdout);
			goto out;
		case ':':
			cli_error("link: %s needs a value (see '%s link --help')", argv[at],
				  cli_progname);
			rc = CLI_USAGE;
			break;
		default:
			cli_error("link: unknown option '%s' (see '%s link --help')", argv[at],
				  cli_progname);
			rc = CLI_USAGE;
			break;
		}
		if (rc != CLI_OK)
			goto out;
	}
	/* After "--" everything is an argument. */
	while (optind < argc)
		pos[npos++] = argv[optind++];

	if (npos == 0) {
		cli_error("link: which action? (add, allow, list, revoke; see '%s link --help')",
			  cli_progname);
		rc = CLI_USAGE;
		goto out;
	}
	a.action = pos[0];
	for (size_t i = 0; i < ARRAY_SIZE(actions); i++)
		known = known || strcmp(a.action, actions[i]) == 0;
	if (!known) {
		cli_error("link: unknown action '%s' (add, allow, list, revoke)", a.action);
		rc = CLI_USAGE;
		goto out;
	}
	/* Every argument is checked before the database is opened: a typo changes nothing. */
	rc = link_args_check(&a, pos, npos);
	if (rc != CLI_OK)
		goto out;

	/* add and allow write secrets: into a file only its owner may read. */
	s = cli_store_open(cli_db_path(a.db), false,
			   strcmp(a.action, "add") == 0 || strcmp(a.action, "allow") == 0);
	if (s == NULL) {
		rc = CLI_FAIL;
		goto out;
	}
	if (strcmp(a.action, "add") == 0) {
		rc = link_add(s, &a, false);
	} else if (strcmp(a.action, "allow") == 0) {
		rc = link_add(s, &a, true);
	} else if (strcmp(a.action, "list") == 0) {
		rc = link_list(s, &a);
	} else {
		st = store_link_revoke(s, a.name);
		if (st == ST_OK) {
			cli_error("link '%s' revoked: its public key and PSK are deleted from the "
				  "database",
				  a.name);
			rc = CLI_OK;
		} else if (st == ST_ENOTFOUND) {
			cli_error("link revoke: no link '%s'; nothing changed", a.name);
			rc = CLI_FAIL;
		} else {
			cli_error("link revoke: %s (%s)", status_str(st), store_errmsg(s));
			rc = CLI_FAIL;
		}
	}
out:
	store_close(s);
	free(pos);
	return rc;
}
