/* cli/serve.c - `shroud serve`: parse the flags, open the database, run the daemon. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "cli/cli.h"
#include "crypto/keys.h"
#include "egress/site.h"
#include "socks/server.h"
#include "store/store.h"

static void serve_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s serve [OPTIONS]\n\n"
		"Run the SOCKS5 proxy in the foreground. Prints one line on stdout once listening.\n\n"
		"  --db PATH               database (default $SHROUD_DB, else ./shroud.db); created\n"
		"                          mode 0600 if missing; refused if group or others may read it\n"
		"  --listen ADDR:PORT      SOCKS5 listener, repeatable: 127.0.0.1:1080, [::1]:1080;\n"
		"                          port 0 picks a free port (default 127.0.0.1:1080); 'none'\n"
		"                          for the encrypted link alone\n"
		"  --link-listen ADDR:PORT encrypted link listener (LINK.md), repeatable: clients run\n"
		"                          'shroud link' with an access key from 'shroud link add'\n"
		"  --link-handshake-timeout S  seconds a link client has to send its first flight,\n"
		"                          plus up to a tenth more at random, at most 3 s (default 30)\n"
		"  --no-auth               accept clients without a password, even when users exist or\n"
		"                          a listener is not on loopback (an open proxy: be sure)\n"
		"  --allow-private         let clients reach loopback, private, link-local and this\n"
		"                          host's addresses even when a listener is not on loopback\n"
		"  --deny-private          refuse those destinations even on a loopback-only proxy\n"
		"                          (default: refused as soon as any listener is not on loopback)\n"
		"  --workers N             event loops, one thread each (default: one per usable core)\n"
		"  --max-conns N           open client connections at most (default 10000)\n"
		"  --handshake-timeout S   seconds from accept to a complete request (default 10)\n"
		"  --connect-timeout S     seconds to resolve and connect to the target (default 10)\n"
		"  --idle-timeout S        seconds a relay may pass without a byte, or a UDP association\n"
		"                          without a datagram (default 300)\n"
		"  --grace S               on SIGINT/SIGTERM, seconds open connections may finish (10)\n"
		"  --bind-timeout S        BIND: seconds to wait for the expected peer (default 60)\n"
		"  --udp-rate N            UDP ASSOCIATE: datagrams per second per association, both\n"
		"                          ways together; 0 = no limit (default 10000)\n"
		"  --udp-per-user N        UDP associations one user (or, without a login, one client\n"
		"                          address) may hold open at once (default 32)\n"
		"  --log-level LEVEL       error, warn, info or debug (default info; only debug names\n"
		"                          destinations)\n"
		"  --no-splice             relay through user-space buffers instead of splice(2)\n"
		"                          (for comparison and debugging)\n"
		"  --help                  this text\n",
		cli_progname);
}

/* Parse a positive number of seconds into *out; false (and a message) otherwise. */
static bool parse_seconds(const char *flag, const char *text, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v <= 0 || v > 86400 * 7) {
		cli_error("%s: '%s' is not a number of seconds between 0 and 604800", flag, text);
		return false;
	}
	*out = v;
	return true;
}

/* The encrypted link's static key: made once, at the first start with a link listener (or by the
 * first `link add`), kept in the database, never printed. */
static int serve_ensure_link_key(struct store *store)
{
	char hex[STORE_LINK_SERVER_KEY_HEX + 1], candidate[STORE_LINK_SERVER_KEY_HEX + 1];
	uint8_t pub[KEYS_X25519_BYTES];
	struct keys_secret *priv = NULL;
	int rc = store_link_server_key_get(store, hex);

	if (rc == ST_ENOTFOUND) {
		rc = keys_secret_new(KEYS_X25519_BYTES, &priv);
		if (rc == ST_OK)
			rc = keys_x25519_generate(priv, pub);
		if (rc == ST_OK) {
			keys_hex_encode(candidate, keys_secret_bytes(priv), KEYS_X25519_BYTES);
			rc = store_link_server_key_init_if_absent(store, candidate, hex);
		}
		keys_secret_free(priv);
		explicit_bzero(candidate, sizeof(candidate));
	}
	explicit_bzero(hex, sizeof(hex));
	if (rc != ST_OK) {
		cli_error("cannot make or read the link server key: %s",
			  rc == ST_EDB || rc == ST_EINVAL ? store_errmsg(store) : status_str(rc));
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* The secret key of sticky hashing: made once, at the first start, and kept in the database. */
static int serve_ensure_salt(struct store *store)
{
	uint8_t salt[32];
	char hex[2 * sizeof(salt) + 1];
	int rc = store_setting_get(store, "sticky_salt", hex, sizeof(hex));

	if (rc == ST_OK)
		return CLI_OK;
	if (rc != ST_ENOTFOUND) {
		cli_error("cannot read the sticky_salt setting: %s", store_errmsg(store));
		return CLI_FAIL;
	}
	keys_random(salt, sizeof(salt));
	for (size_t i = 0; i < sizeof(salt); i++)
		snprintf(hex + 2 * i, 3, "%02x", salt[i]);
	explicit_bzero(salt, sizeof(salt));
	rc = store_setting_set(store, "sticky_salt", hex);
	explicit_bzero(hex, sizeof(hex));
	if (rc != ST_OK) {
		cli_error("cannot store the sticky_salt setting: %s", store_errmsg(store));
		return CLI_FAIL;
	}
	return CLI_OK;
}

enum {
	OPT_DB = 256,
	OPT_LISTEN,
	OPT_NO_AUTH,
	OPT_NO_SPLICE,
	OPT_LINK_LISTEN,
	OPT_LINK_HANDSHAKE,
	OPT_ALLOW_PRIVATE,
	OPT_DENY_PRIVATE,
	OPT_WORKERS,
	OPT_MAX_CONNS,
	OPT_HANDSHAKE,
	OPT_CONNECT,
	OPT_IDLE,
	OPT_GRACE,
	OPT_BIND_TIMEOUT,
	OPT_UDP_RATE,
	OPT_UDP_PER_USER,
	OPT_LOG_LEVEL,
	OPT_HELP,
};

static const struct option serve_options[] = {
	{ "db", required_argument, NULL, OPT_DB },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "no-auth", no_argument, NULL, OPT_NO_AUTH },
	{ "no-splice", no_argument, NULL, OPT_NO_SPLICE },
	{ "link-listen", required_argument, NULL, OPT_LINK_LISTEN },
	{ "link-handshake-timeout", required_argument, NULL, OPT_LINK_HANDSHAKE },
	{ "allow-private", no_argument, NULL, OPT_ALLOW_PRIVATE },
	{ "deny-private", no_argument, NULL, OPT_DENY_PRIVATE },
	{ "workers", required_argument, NULL, OPT_WORKERS },
	{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
	{ "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE },
	{ "connect-timeout", required_argument, NULL, OPT_CONNECT },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE },
	{ "grace", required_argument, NULL, OPT_GRACE },
	{ "bind-timeout", required_argument, NULL, OPT_BIND_TIMEOUT },
	{ "udp-rate", required_argument, NULL, OPT_UDP_RATE },
	{ "udp-per-user", required_argument, NULL, OPT_UDP_PER_USER },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

int cmd_serve(int argc, char **argv)
{
	struct server_config cfg;
	const char *db_flag = NULL;
	const char *path, *why = NULL;
	struct store *store;
	struct server *srv;
	const struct addr *bound;
	size_t nbound;
	bool listen_none = false;
	int opt, rc;

	server_config_defaults(&cfg);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", serve_options, NULL)) != -1) {
		switch (opt) {
		case OPT_DB:
			db_flag = optarg;
			break;
		case OPT_LISTEN:
			if (strcmp(optarg, "none") == 0) {
				listen_none = true;
				break;
			}
			if (cfg.nlisten == SERVER_LISTEN_MAX) {
				cli_error("--listen: at most %d listeners", SERVER_LISTEN_MAX);
				return CLI_USAGE;
			}
			if (addr_parse_hostport(optarg, &cfg.listen[cfg.nlisten]) != ST_OK) {
				cli_error("--listen: '%s' is not ADDR:PORT (IPv4 like 127.0.0.1:1080, "
					  "IPv6 like [::1]:1080)",
					  optarg);
				return CLI_USAGE;
			}
			cfg.nlisten++;
			break;
		case OPT_LINK_LISTEN:
			if (cfg.nlink_listen == SERVER_LISTEN_MAX) {
				cli_error("--link-listen: at most %d listeners", SERVER_LISTEN_MAX);
				return CLI_USAGE;
			}
			if (addr_parse_hostport(optarg, &cfg.link_listen[cfg.nlink_listen]) != ST_OK) {
				cli_error("--link-listen: '%s' is not ADDR:PORT (IPv4 like 0.0.0.0:8443, "
					  "IPv6 like [::]:8443)",
					  optarg);
				return CLI_USAGE;
			}
			cfg.nlink_listen++;
			break;
		case OPT_LINK_HANDSHAKE:
			if (!parse_seconds("--link-handshake-timeout", optarg,
					   &cfg.link_handshake_timeout))
				return CLI_USAGE;
			break;
		case OPT_NO_SPLICE:
			cfg.no_splice = true;
			break;
		case OPT_NO_AUTH:
			cfg.no_auth = true;
			break;
		case OPT_ALLOW_PRIVATE:
		case OPT_DENY_PRIVATE:
			if (cfg.private_targets != SERVER_PRIVATE_AUTO) {
				cli_error("--allow-private and --deny-private: one of them, once");
				return CLI_USAGE;
			}
			cfg.private_targets = opt == OPT_ALLOW_PRIVATE ? SERVER_PRIVATE_ALLOW
								       : SERVER_PRIVATE_DENY;
			break;
		case OPT_WORKERS:
			if (!cli_parse_count("--workers", optarg, 1, 256, &cfg.workers))
				return CLI_USAGE;
			break;
		case OPT_MAX_CONNS:
			if (!cli_parse_count("--max-conns", optarg, 1, 10000000, &cfg.max_conns))
				return CLI_USAGE;
			break;
		case OPT_HANDSHAKE:
			if (!parse_seconds("--handshake-timeout", optarg, &cfg.handshake_timeout))
				return CLI_USAGE;
			break;
		case OPT_CONNECT:
			if (!parse_seconds("--connect-timeout", optarg, &cfg.connect_timeout))
				return CLI_USAGE;
			break;
		case OPT_IDLE:
			if (!parse_seconds("--idle-timeout", optarg, &cfg.idle_timeout))
				return CLI_USAGE;
			break;
		case OPT_GRACE:
			if (!parse_seconds("--grace", optarg, &cfg.grace))
				return CLI_USAGE;
			break;
		case OPT_BIND_TIMEOUT:
			if (!parse_seconds("--bind-timeout", optarg, &cfg.bind_timeout))
				return CLI_USAGE;
			break;
		case OPT_UDP_RATE:
			if (!cli_parse_count("--udp-rate", optarg, 0, 10000000, &cfg.udp_rate))
				return CLI_USAGE;
			break;
		case OPT_UDP_PER_USER:
			if (!cli_parse_count("--udp-per-user", optarg, 1, 1000000, &cfg.udp_per_user))
				return CLI_USAGE;
			break;
		case OPT_LOG_LEVEL:
			if (log_level_parse(optarg, &log_threshold) != ST_OK) {
				cli_error("--log-level: '%s' is not error, warn, info or debug", optarg);
				return CLI_USAGE;
			}
			break;
		case OPT_HELP:
			serve_usage(stdout);
			return CLI_OK;
		default:
			cli_error("serve: unknown or incomplete option '%s' (see 'shroud serve --help')",
				  argv[optind - 1]);
			return CLI_USAGE;
		}
	}
	if (optind < argc) {
		cli_error("serve: unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	if (listen_none && cfg.nlisten > 0) {
		cli_error("--listen none: no other --listen may be given with it");
		return CLI_USAGE;
	}
	if (listen_none && cfg.nlink_listen == 0) {
		cli_error("--listen none: nothing would listen; give --link-listen ADDR:PORT");
		return CLI_USAGE;
	}
	if (cfg.nlisten == 0 && !listen_none) {
		rc = addr_parse_hostport("127.0.0.1:1080", &cfg.listen[0]);
		if (rc != ST_OK)
			return CLI_FAIL;
		cfg.nlisten = 1;
	}

	path = cli_db_path(db_flag);
	store = cli_store_open(path, true, true);
	if (store == NULL)
		return CLI_FAIL;
	if (serve_ensure_salt(store) != CLI_OK ||
	    (cfg.nlink_listen > 0 && serve_ensure_link_key(store) != CLI_OK)) {
		store_close(store);
		return CLI_FAIL;
	}
	if (egress_site_init() != ST_OK) {
		store_close(store);
		cli_error("cannot load the Public Suffix List (libpsl)");
		return CLI_FAIL;
	}
	/* A peer that vanishes must be an EPIPE from write(2), not a dead daemon. */
	signal(SIGPIPE, SIG_IGN);
	rc = server_new(&cfg, store, &srv, &why);
	if (rc != ST_OK) {
		store_close(store);
		cli_error("%s", why != NULL ? why : status_str(rc));
		return CLI_FAIL;
	}

	/* The one banner line; tests and scripts wait for it as the readiness signal. */
	bound = server_bound(srv, &nbound);
	printf("shroud: listening on");
	if (nbound == 0)
		printf(" none");
	for (size_t i = 0; i < nbound; i++) {
		char text[ADDR_STRLEN];

		printf(" %s", addr_format(&bound[i], text, sizeof(text)));
	}
	bound = server_link_bound(srv, &nbound);
	if (nbound > 0)
		printf("; link on");
	for (size_t i = 0; i < nbound; i++) {
		char text[ADDR_STRLEN];

		printf(" %s", addr_format(&bound[i], text, sizeof(text)));
	}
	printf("; database %s; auth %s; workers %u; private destinations %s; ", path,
	       server_auth_mode(srv), server_workers(srv),
	       server_denies_internal(srv) ? "refused" : "allowed");
	if (server_pool_size(srv) == 0)
		printf("egress system default address (the pool is empty)\n");
	else
		printf("egress pool of %zu\n", server_pool_size(srv));
	fflush(stdout);

	rc = server_run(srv);
	server_free(srv);
	if (rc != ST_OK) {
		cli_error("serve: %s", status_str(rc));
		return CLI_FAIL;
	}
	return CLI_OK;
}
