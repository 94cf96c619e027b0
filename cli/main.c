/* cli/main.c - dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "cli/cli.h"
#include "crypto/pwhash.h"

static const struct cli_command commands[] = {
	{ "serve", cmd_serve, "run the SOCKS5 proxy" },
	{ "user", cmd_user, "manage the users that may log in (add, rm, passwd, list, ...)" },
	{ "pool", cmd_pool, "manage the egress addresses connections leave from (add, rm, list, ...)" },
	{ "config", cmd_config, "show or set daemon-wide settings (sticky-ttl)" },
	{ "link", cmd_link, "manage the encrypted link's clients (add, allow, list, revoke)" },
	{ "keygen", cmd_keygen, "make a client key pair for the encrypted link (FILE)" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: %s COMMAND [ARGS]...\n\n"
		   "A SOCKS5 proxy that sends each connection from an address drawn from a pool.\n\n"
		   "Commands:\n",
		cli_progname);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nEvery command takes --db PATH (default $SHROUD_DB, else ./shroud.db) and --help.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return CLI_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("shroud 0.1.0\n");
		return CLI_OK;
	}
	if (pwhash_init() != ST_OK) {
		cli_error("cannot initialise libsodium");
		return CLI_FAIL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	cli_error("unknown command '%s' (see '%s --help')", argv[1], cli_progname);
	return CLI_USAGE;
}
