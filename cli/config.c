/* cli/config.c - `shroud config sticky-ttl [SECONDS]`: the daemon-wide settings. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "cli/cli.h"
#include "egress/params.h"
#include "store/snapshot.h"
#include "store/store.h"

static void config_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s config sticky-ttl [SECONDS] [--db PATH]\n\n"
		"Show or set daemon-wide settings. A running daemon applies a change within about a\n"
		"second.\n\n"
		"  sticky-ttl [SECONDS]  how long a (user, session, site) keeps its source address,\n"
		"                        0..%d (0: a new address per connection); default %d.\n"
		"                        A username's ttl-N parameter overrides it per request.\n"
		"  --db PATH             database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --help                this text\n",
		cli_progname, EGRESS_TTL_MAX, SNAPSHOT_STICKY_TTL_DEFAULT);
}

enum { OPT_DB = 256, OPT_HELP };

static const struct option config_options[] = {
	{ "db", required_argument, NULL, OPT_DB },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

int cmd_config(int argc, char **argv)
{
	const char *positional[3], *db = NULL;
	size_t npos = 0;
	unsigned ttl;
	char text[16];
	struct store *s;
	int opt, rc;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "-", config_options, NULL)) != -1) {
		switch (opt) {
		case 1:
			if (npos == ARRAY_SIZE(positional)) {
				cli_error("config: unexpected argument '%s'", optarg);
				return CLI_USAGE;
			}
			positional[npos++] = optarg;
			break;
		case OPT_DB:
			db = optarg;
			break;
		case OPT_HELP:
			config_usage(stdout);
			return CLI_OK;
		default:
			cli_error("config: unknown or incomplete option '%s' (see 'shroud config --help')",
				  argv[optind - 1]);
			return CLI_USAGE;
		}
	}
	if (npos == 0 || strcmp(positional[0], "sticky-ttl") != 0) {
		cli_error("config: which setting? (sticky-ttl)");
		return CLI_USAGE;
	}
	if (npos > 2) {
		cli_error("config sticky-ttl: unexpected argument '%s'", positional[2]);
		return CLI_USAGE;
	}
	if (npos == 2 && !cli_parse_count("config sticky-ttl", positional[1], 0, EGRESS_TTL_MAX, &ttl))
		return CLI_USAGE;

	s = cli_store_open(cli_db_path(db), npos == 2, false);
	if (s == NULL)
		return CLI_FAIL;
	if (npos == 2) {
		snprintf(text, sizeof(text), "%u", ttl);
		rc = store_setting_set(s, "sticky_ttl", text);
		if (rc != ST_OK)
			cli_error("config sticky-ttl: %s (%s)", status_str(rc), store_errmsg(s));
	} else {
		/* What the daemon uses: the stored value when valid, else the default. */
		struct snapshot *snap;

		rc = store_snapshot_build(s, &snap);
		if (rc == ST_OK) {
			printf("%u\n", snap->sticky_ttl);
			snapshot_unref(snap);
		} else {
			cli_error("config sticky-ttl: %s (%s)", status_str(rc), store_errmsg(s));
		}
	}
	store_close(s);
	return rc == ST_OK ? CLI_OK : CLI_FAIL;
}
