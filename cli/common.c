/* cli/common.c - what every subcommand shares: errors, the database, passwords. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "store/store.h"

const char *cli_progname = "shroud";

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cli_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

bool cli_parse_count(const char *flag, const char *text, unsigned min, unsigned max, unsigned *out)
{
	unsigned long v = 0;
	char *end = NULL;

	/* strtoul would take a sign or leading spaces: digits only. */
	errno = 0;
	if (text[0] >= '0' && text[0] <= '9')
		v = strtoul(text, &end, 10);
	if (end == NULL || *end != '\0' || errno != 0 || v < min || v > max) {
		cli_error("%s: '%s' is not a whole number from %u to %u", flag, text, min, max);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

const char *cli_db_path(const char *flag_value)
{
	const char *env;

	if (flag_value != NULL)
		return flag_value;
	env = getenv("SHROUD_DB");
	if (env != NULL && env[0] != '\0')
		return env;
	return "./shroud.db";
}

struct store *cli_store_open(const char *path, bool create, bool require_private)
{
	struct store *s;
	const char *why = NULL;
	unsigned flags = (create ? STORE_CREATE : 0) | (require_private ? STORE_REQUIRE_PRIVATE : 0);
	int rc = store_open(path, flags, &s, &why);

	if (rc == ST_OK)
		return s;
	if (rc == ST_ENOTFOUND)
		cli_error("%s: no such database (create it with 'shroud serve' or 'shroud user add')",
			  path);
	else
		cli_error("%s: %s", path, why != NULL ? why : status_str(rc));
	return NULL;
}

/* Read one line into buf without its newline. Returns its length, or -1 (EOF first, too long). */
static ssize_t read_line(FILE *f, char *buf, size_t size)
{
	size_t len;

	if (fgets(buf, (int)size, f) == NULL)
		return -1;
	len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	else if (!feof(f))
		return -1; /* longer than the buffer */
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	return (ssize_t)len;
}

static ssize_t prompt_noecho(FILE *tty, const char *prompt, char *buf, size_t size)
{
	struct termios old, quiet;
	ssize_t len;

	fputs(prompt, tty);
	fflush(tty);
	if (tcgetattr(fileno(tty), &old) < 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	if (tcsetattr(fileno(tty), TCSAFLUSH, &quiet) < 0)
		return -1;
	len = read_line(tty, buf, size);
	(void)tcsetattr(fileno(tty), TCSAFLUSH, &old);
	return len;
}

int cli_read_password(bool from_stdin, char *buf, size_t size)
{
	char again[258];
	ssize_t len;
	FILE *tty;

	if (from_stdin) {
		len = read_line(stdin, buf, size);
		if (len < 0) {
			cli_error("--password-stdin: no password line on standard input (or longer than "
				  "255 bytes)");
			return CLI_FAIL;
		}
	} else {
		tty = fopen("/dev/tty", "r+e");
		if (tty == NULL) {
			cli_error("no terminal to ask for the password on; use --password-stdin");
			return CLI_FAIL;
		}
		len = prompt_noecho(tty, "Password: ", buf, size);
		if (len >= 0 && prompt_noecho(tty, "Password again: ", again, sizeof(again)) != len)
			len = -2;
		else if (len >= 0 && strcmp(buf, again) != 0)
			len = -2;
		explicit_bzero(again, sizeof(again));
		fclose(tty);
		if (len == -2) {
			cli_error("the two passwords differ; nothing changed");
			return CLI_FAIL;
		}
		if (len < 0) {
			cli_error("could not read the password from the terminal");
			return CLI_FAIL;
		}
	}
	if (len == 0 || len > 255) {
		cli_error("a password is 1 to 255 bytes (RFC 1929)");
		explicit_bzero(buf, size);
		return CLI_FAIL;
	}
	return CLI_OK;
}

void cli_time_text(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "@%lld", (long long)t);
}

bool cli_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return false;
		}
		buf += n;
		len -= (size_t)n;
	}
	return true;
}
