/*
 * cli/cli.h - the shroud command line: a table of subcommands, one file each (WireGuard's wg.c).
 *
 * A subcommand returns its exit code: CLI_OK, CLI_FAIL (the operation failed: message on stderr) or
 * CLI_USAGE (the command line was wrong: the message names the argument). Only cli/ prints or exits.
 */
#ifndef SHROUD_CLI_CLI_H
#define SHROUD_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2

struct store;

struct cli_command {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name */
	const char *summary;
};

int cmd_serve(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_pool(int argc, char **argv);
int cmd_link(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

/*
 * `shroud link --OPTION ...`: the client side of the encrypted link (LINK.md), which reads an
 * access key and serves SOCKS5 on loopback. cmd_link hands it every command line whose first
 * argument after "link" starts with "--" (except --help); the operator's actions (add, allow,
 * list, revoke) are words. In cli/link_client.c.
 */
int cmd_link_client(int argc, char **argv);

/* The program name for messages ("shroud"). */
extern const char *cli_progname;

/* Print "shroud: <message>" to stderr. */
void cli_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Parse a decimal whole number min..max (digits only: no sign, no spaces) given to flag.
 * true, or false with a message naming the flag and the value. */
bool cli_parse_count(const char *flag, const char *text, unsigned min, unsigned max, unsigned *out);

/* The database path: the --db value if given, else $SHROUD_DB, else "./shroud.db". */
const char *cli_db_path(const char *flag_value);

/* Open the database (creating it when `create`), printing a clear error. NULL on failure. */
struct store *cli_store_open(const char *path, bool create, bool require_private);

/*
 * Read a new password: from stdin (one line, newline stripped) when from_stdin, else from the
 * terminal without echo, asked twice. buf holds at least 256 bytes. CLI_OK, or CLI_FAIL with a
 * message printed. Passwords are 1..255 bytes (RFC 1929) without NUL or newline.
 */
int cli_read_password(bool from_stdin, char *buf, size_t size);

/* write(2) all of buf (for secrets: stdio would keep a copy); false with errno set when it cannot. */
bool cli_write_all(int fd, const char *buf, size_t len);

/* A Unix time as "2024-03-01T12:00:00Z" (UTC), or "@SECONDS" when it has no calendar form. */
void cli_time_text(int64_t t, char *out, size_t size);

#endif
