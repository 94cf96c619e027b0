/*
 * cli/link_client.c - `shroud link --access-key-file FILE ...`: the client side of the encrypted
 * link (LINK.md), SOCKS5 on loopback carried to the server in Noise sessions (socks/link_client.h).
 *
 * cmd_link (cli/link.c) hands this function every `shroud link` command line that starts with an
 * option. Here: the flags, the access key and key file (never from argv; files refused unless only
 * their owner may read them), the probe handshake's verdict in words, the ready line.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/status.h"
#include "cli/cli.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "crypto/link.h"
#include "socks/link_client.h"

#define KEY_FILE_MAX 1024 /* an access key is at most LINK_ACCESS_MAX; a key file 45 bytes */

static void link_client_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s link [--access-key-file FILE|-] [--key FILE] [--listen ADDR:PORT]\n\n"
		"The client side of the encrypted link: serve SOCKS5 to the applications of this\n"
		"machine on a loopback address and carry each connection to the server in a Noise\n"
		"session of its own. Domain names are resolved by the server, never here.\n\n"
		"The access key ('%s link add' on the server prints it) is read from FILE, or from\n"
		"standard input with '-' or without --access-key-file; never from the command line.\n"
		"Before serving, one handshake with the server checks the keys and the clock; then\n"
		"one line goes to standard output:\n"
		"  shroud link: listening on 127.0.0.1:PORT; server HOST:PORT\n\n"
		"Applications may log in with any user name and password: the password is ignored,\n"
		"and the user name's part after its first '-' (anything-session-s1-ttl-600) goes to\n"
		"the server as the parameters that choose the egress address.\n\n"
		"Options:\n"
		"  --access-key-file FILE  the access key, one line (FILE mode 0600; '-' = stdin)\n"
		"  --key FILE              the private key '%s keygen FILE' made (mode 0600), for an\n"
		"                          access key without one ('%s link allow')\n"
		"  --listen ADDR:PORT      where applications connect, a loopback address only\n"
		"                          (default 127.0.0.1:1080; port 0 picks a free port)\n"
		"  --max-conns N           open application connections at most (default %d)\n"
		"  --log-level LEVEL       error, warn, info or debug (default info; only debug names\n"
		"                          destinations)\n"
		"  --help                  this text\n\n"
		"Exit status: 0 stopped by SIGINT or SIGTERM; 1 the server could not be reached or the\n"
		"handshake failed (the message says why); 2 the command line or a key is wrong.\n",
		cli_progname, cli_progname, cli_progname, cli_progname, LINK_CLIENT_CONNS_DEFAULT);
}

/* ---- secrets from files ---------------------------------------------------------------------- */

/*
 * Open a key file for reading: no symbolic link (O_NOFOLLOW), a regular file, and no access for
 * group or others, checked on the opened descriptor (fstat), so nothing can be swapped in between.
 * The fd, or -1 with a message.
 */
static int key_file_open(const char *flag, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		if (errno == ELOOP)
			cli_error("link: %s %s is a symbolic link: give the key file itself", flag,
				  path);
		else
			cli_error("link: %s: cannot open %s: %s", flag, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		cli_error("link: %s: cannot read %s: %s", flag, path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		cli_error("link: %s: %s is not a regular file", flag, path);
		close(fd);
		return -1;
	}
	if ((st.st_mode & 077) != 0) {
		cli_error("link: %s: %s has mode %04o: group or others may read it or write it, and it "
			  "holds secrets; refusing it (chmod 600 %s)",
			  flag, path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Read a secret text into a new keys_secret: from fd to its end, or only up to the first newline
 * (`one_line`, for a terminal or a pipe). *len = its length without a final "\n" or "\r\n".
 * CLI_OK, or CLI_USAGE/CLI_FAIL with a message.
 */
static int secret_text_read(int fd, const char *what, bool one_line, struct keys_secret **out,
			    size_t *len)
{
	struct keys_secret *s = NULL;
	uint8_t *p;
	size_t n = 0;

	if (keys_secret_new(KEY_FILE_MAX + 1, &s) != ST_OK) {
		cli_error("link: out of memory");
		return CLI_FAIL;
	}
	p = keys_secret_data(s);
	for (;;) {
		ssize_t r;

		if (n > KEY_FILE_MAX) {
			cli_error("link: %s is longer than any key (%d bytes)", what, KEY_FILE_MAX);
			keys_secret_free(s);
			return CLI_USAGE;
		}
		/* One byte at a time for a line: nothing after the newline is consumed. */
		r = read(fd, p + n, one_line ? 1 : KEY_FILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			cli_error("link: cannot read %s: %s", what, strerror(errno));
			keys_secret_free(s);
			return CLI_FAIL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (one_line && p[n - 1] == '\n')
			break;
	}
	if (n > 0 && p[n - 1] == '\n')
		n--;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (n == 0) {
		cli_error("link: %s is empty", what);
		keys_secret_free(s);
		return CLI_USAGE;
	}
	*out = s;
	*len = n;
	return CLI_OK;
}

/* The access key: from path, or from standard input for NULL or "-". */
static int access_key_read(const char *path, struct link_access *a)
{
	struct keys_secret *text = NULL;
	const char *why = NULL;
	size_t len = 0;
	int fd, rc, st;

	if (path == NULL || strcmp(path, "-") == 0) {
		if (isatty(STDIN_FILENO))
			fprintf(stderr, "Paste the access key (one line), then Enter:\n");
		rc = secret_text_read(STDIN_FILENO, "the access key on standard input", true, &text,
				      &len);
	} else {
		fd = key_file_open("--access-key-file", path);
		if (fd < 0)
			return CLI_USAGE;
		rc = secret_text_read(fd, path, false, &text, &len);
		close(fd);
	}
	if (rc != CLI_OK)
		return rc;
	st = link_access_parse((const char *)keys_secret_bytes(text), len, a, &why);
	keys_secret_free(text);
	if (st == ST_EINVAL) {
		cli_error("link: not a valid access key: %s", why != NULL ? why : "malformed");
		return CLI_USAGE;
	}
	if (st != ST_OK) {
		cli_error("link: cannot read the access key: %s", status_str(st));
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* The client's private key from a `shroud keygen` file. */
static int private_key_read(const char *path, struct keys_secret **out)
{
	struct keys_secret *text = NULL;
	size_t len = 0;
	int fd, rc, st;

	fd = key_file_open("--key", path);
	if (fd < 0)
		return CLI_USAGE;
	rc = secret_text_read(fd, path, false, &text, &len);
	close(fd);
	if (rc != CLI_OK)
		return rc;
	st = keys_private_parse((const char *)keys_secret_bytes(text), len, out);
	keys_secret_free(text);
	if (st == ST_EINVAL) {
		cli_error("link: --key: %s is not a private key made by '%s keygen' (one line of "
			  "base64, %d characters)",
			  path, cli_progname, KEYS_BASE64_LEN);
		return CLI_USAGE;
	}
	if (st != ST_OK) {
		cli_error("link: --key: cannot read %s: %s", path, status_str(st));
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* The client's key material from the access key and, without a private part in it, --key. */
static int client_key_load(const char *access_path, const char *key_path, char *host,
			   uint16_t *port, struct link_client_key **out)
{
	struct keys_secret *file_priv = NULL;
	struct link_access a;
	const uint8_t *priv;
	int rc, st;

	memset(&a, 0, sizeof(a));
	rc = access_key_read(access_path, &a);
	if (rc != CLI_OK)
		return rc;
	if (a.client_private != NULL && key_path != NULL) {
		cli_error("link: the access key carries the private key already; --key goes with an "
			  "access key without one ('%s link allow')",
			  cli_progname);
		rc = CLI_USAGE;
		goto out;
	}
	if (a.client_private == NULL && key_path == NULL) {
		cli_error("link: this access key has no private key (the server's operator made it "
			  "with 'link allow'): give the file '%s keygen' wrote with --key FILE",
			  cli_progname);
		rc = CLI_USAGE;
		goto out;
	}
	if (a.client_private == NULL) {
		rc = private_key_read(key_path, &file_priv);
		if (rc != CLI_OK)
			goto out;
	}
	priv = keys_secret_bytes(a.client_private != NULL ? a.client_private : file_priv);
	st = link_client_key_new(priv, a.server_public, keys_secret_bytes(a.psk), out);
	if (st != ST_OK) {
		cli_error("link: unusable keys: %s", status_str(st));
		rc = st == ST_ECRYPTO ? CLI_USAGE : CLI_FAIL;
		goto out;
	}
	memcpy(host, a.host, sizeof(a.host));
	*port = a.port;
	rc = CLI_OK;
out:
	keys_secret_free(file_priv);
	link_access_clear(&a);
	return rc;
}

/* ---- the command ----------------------------------------------------------------------------- */

/* The probe's verdict in words. */
static void probe_error(int st, const char *addr)
{
	switch (st) {
	case ST_ESYS:
		cli_error("link: cannot connect to the server %s: %s", addr, strerror(errno));
		break;
	case ST_ETIMEDOUT:
		cli_error("link: no answer from the server in %.0f s: the server key or PSK is wrong, "
			  "this key was revoked, or this machine's clock is more than %d s off",
			  LINK_REPLY_TIMEOUT, LINK_CLOCK_SKEW);
		break;
	case ST_ECRYPTO:
		cli_error("link: the server answered but the handshake failed: wrong PSK or server "
			  "key");
		break;
	case ST_EPROTO:
		cli_error("link: the server %s closed the connection without answering: is it the "
			  "link port of '%s serve --link-listen'?",
			  addr, cli_progname);
		break;
	case ST_AGAIN:
		cli_error("link: stopped before the server answered");
		break;
	default:
		cli_error("link: the handshake with the server %s failed: %s", addr,
			  status_str(st));
		break;
	}
}

enum { OPT_ACCESS = 256, OPT_KEY, OPT_LISTEN, OPT_MAX_CONNS, OPT_LOG_LEVEL, OPT_HELP };

/* An option's value, once. */
static bool option_once(const char **slot, const char *flag, const char *value)
{
	if (*slot != NULL) {
		cli_error("link: %s is given twice", flag);
		return false;
	}
	*slot = value;
	return true;
}

int cmd_link_client(int argc, char **argv)
{
	static const struct option options[] = {
		{ "access-key-file", required_argument, NULL, OPT_ACCESS },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	const char *access_path = NULL, *key_path = NULL, *listen = NULL, *max_text = NULL;
	const char *level_text = NULL;
	char host[LINK_ACCESS_HOST_MAX + 1], text[ADDR_STRLEN], addr[ADDR_STRLEN];
	char why[LINK_CLIENT_WHY_MAX];
	struct link_client_config cfg;
	struct link_client_key *key = NULL;
	struct link_client *c = NULL;
	enum log_level level = LOG_INFO;
	unsigned max_conns = 0;
	uint16_t port = 0;
	bool ok = true;
	int opt, rc, st;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
		switch (opt) {
		case OPT_ACCESS:
			ok = option_once(&access_path, "--access-key-file", optarg);
			break;
		case OPT_KEY:
			ok = option_once(&key_path, "--key", optarg);
			break;
		case OPT_LISTEN:
			ok = option_once(&listen, "--listen", optarg);
			break;
		case OPT_MAX_CONNS:
			ok = option_once(&max_text, "--max-conns", optarg);
			break;
		case OPT_LOG_LEVEL:
			ok = option_once(&level_text, "--log-level", optarg);
			break;
		case OPT_HELP:
			link_client_usage(stdout);
			return CLI_OK;
		case ':':
			cli_error("link: %s needs a value", argv[optind - 1]);
			return CLI_USAGE;
		default:
			cli_error("link: unknown option '%s' (see '%s link --access-key-file - --help')",
				  argv[optind - 1], cli_progname);
			return CLI_USAGE;
		}
		if (!ok)
			return CLI_USAGE;
	}
	if (optind < argc) {
		/* Not echoed: the likeliest stray argument is a pasted access key, a secret. */
		cli_error("link: unexpected argument after the options (the client takes options only; "
			  "the access key is read from a file or standard input, never from the command "
			  "line)");
		return CLI_USAGE;
	}
	memset(&cfg, 0, sizeof(cfg));
	if (addr_parse_hostport(listen != NULL ? listen : "127.0.0.1:1080", &cfg.listen) != ST_OK) {
		cli_error("link: --listen: '%s' is not ADDR:PORT (127.0.0.1:1080, [::1]:1080)", listen);
		return CLI_USAGE;
	}
	if (!addr_is_loopback(&cfg.listen)) {
		cli_error("link: --listen: %s is not a loopback address: the local side of the link "
			  "serves this machine only, or anyone who reaches the port would use the link",
			  listen);
		return CLI_USAGE;
	}
	if (max_text != NULL && !cli_parse_count("--max-conns", max_text, 1, 100000, &max_conns))
		return CLI_USAGE;
	if (level_text != NULL && log_level_parse(level_text, &level) != ST_OK) {
		cli_error("link: --log-level: '%s' is not error, warn, info or debug", level_text);
		return CLI_USAGE;
	}
	if (key_path != NULL && strcmp(key_path, "-") == 0) {
		cli_error("link: --key needs a file ('-' is for the access key)");
		return CLI_USAGE;
	}
	log_threshold = level;

	rc = client_key_load(access_path, key_path, host, &port, &key);
	if (rc != CLI_OK)
		return rc;
	cfg.server_host = host;
	cfg.server_port = port;
	cfg.max_conns = max_conns;
	/* A peer that vanishes must be an error from write(2), not the end of the process. */
	signal(SIGPIPE, SIG_IGN);
	st = link_client_new(&cfg, key, &c, why);
	if (st != ST_OK) {
		cli_error("link: %s", why[0] != '\0' ? why : status_str(st));
		link_client_key_free(key);
		return st == ST_EPERM ? CLI_USAGE : CLI_FAIL;
	}
	key = NULL; /* transferred */

	st = link_client_probe(c, addr);
	if (st != ST_OK) {
		probe_error(st, addr);
		link_client_free(c);
		return CLI_FAIL;
	}
	/* The one ready line; scripts and tests wait for it. The server as the access key names
	 * it, an IPv6 address in brackets. */
	printf("shroud link: listening on %s; server %s%s%s:%u\n",
	       addr_format(link_client_bound(c), text, sizeof(text)),
	       strchr(host, ':') != NULL ? "[" : "", host, strchr(host, ':') != NULL ? "]" : "",
	       (unsigned)port);
	fflush(stdout);

	st = link_client_run(c);
	link_client_free(c);
	if (st != ST_OK) {
		cli_error("link: %s", status_str(st));
		return CLI_FAIL;
	}
	return CLI_OK;
}
