/*
 * socks/server.h - the daemon: listeners, one worker thread and event loop per core, and the control
 * loop that follows the database and the signals.
 *
 * Life cycle: server_new binds every listening socket (so the caller can print the real addresses,
 * port 0 resolved) and builds the first snapshot; server_run starts the workers and runs the control
 * loop on the calling thread until SIGINT/SIGTERM, then drains: listeners close at once, open
 * connections get `grace` seconds to finish, then are closed. server_free releases everything.
 */
#ifndef SHROUD_SOCKS_SERVER_H
#define SHROUD_SOCKS_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "base/addr.h"
#include "base/compiler.h"

struct store;

#define SERVER_LISTEN_MAX 16

struct server_config {
	struct addr listen[SERVER_LISTEN_MAX]; /* plain SOCKS5 listeners (none: link only) */
	size_t nlisten;
	struct addr link_listen[SERVER_LISTEN_MAX]; /* encrypted link listeners (LINK.md) */
	size_t nlink_listen;
	double link_handshake_timeout; /* accept -> first flight read, absolute; plus a jitter of up
					* to a tenth of it, at most 3 s (LINK.md: 30 s + 3 s) */
	unsigned workers;	  /* event loops (threads); 0 = one per online core */
	unsigned max_conns;	  /* open client connections, over all workers */
	double handshake_timeout; /* accept -> request received, seconds */
	double connect_timeout;	  /* request -> target connected (DNS included), seconds */
	double idle_timeout;	  /* relay with no byte either way, seconds */
	double grace;		  /* shutdown: how long open connections may finish, seconds */
	double bind_timeout;	  /* BIND: first reply -> the expected peer connected, seconds */
	unsigned udp_rate;	  /* datagrams per second per UDP association, both ways; 0 = no limit */
	unsigned udp_per_user;	  /* UDP associations one user (or one client address) holds at once */
	bool no_auth;		  /* offer "no authentication" even with users / off loopback */
	bool no_splice;		  /* relay through user-space buffers only (comparisons, debugging) */
	enum server_private {
		SERVER_PRIVATE_AUTO,  /* refused when any listener is outside loopback */
		SERVER_PRIVATE_ALLOW, /* --allow-private */
		SERVER_PRIVATE_DENY,  /* --deny-private */
	} private_targets;	      /* internal destinations (addr_is_internal, own addresses) */
};

/* Defaults for every field but the listen addresses. */
void server_config_defaults(struct server_config *cfg);

struct server;

/*
 * Bind the listeners and load the first snapshot from store (which the server then owns and uses
 * on its control thread only). Refuses (ST_EPERM, with *why) a listener outside loopback while no
 * user exists and no_auth is off. ST_ESYS (errno; *why names the address) when a bind fails.
 * With link listeners, the server's link key must be in the store (settings.link_server_key:
 * the caller makes it at first start, as it makes the sticky salt).
 */
NODISCARD int server_new(const struct server_config *cfg, struct store *store, struct server **out,
			 const char **why);

/* The bound addresses, one per configured listener, ports resolved: the plain SOCKS5 ones, and
 * the encrypted link's. */
const struct addr *server_bound(const struct server *srv, size_t *n);
const struct addr *server_link_bound(const struct server *srv, size_t *n);

/* The number of worker threads that server_run starts. */
unsigned server_workers(const struct server *srv);

/* True when internal destinations and the host's own addresses are refused (REP 0x02). */
bool server_denies_internal(const struct server *srv);

/* Enabled pool entries at start (0: connections leave from the system's default address). */
size_t server_pool_size(const struct server *srv);

/* "password", "none" or "none+password": what clients must present now. */
const char *server_auth_mode(const struct server *srv);

/* Run until a signal ends it and every worker is done. ST_OK after a clean shutdown. */
NODISCARD int server_run(struct server *srv);

/* Free everything, the store included. */
void server_free(struct server *srv);

#endif
