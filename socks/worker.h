/*
 * socks/worker.h - internals shared by the server (socks/server.c) and the sessions
 * (socks/session.c). Not for other modules.
 *
 * A worker is one thread with one ev_loop and its own listening socket per configured address
 * (SO_REUSEPORT: the kernel spreads connections). Nothing on a worker's hot path is shared but the
 * read-only snapshot and one atomic connection counter.
 */
#ifndef SHROUD_SOCKS_WORKER_H
#define SHROUD_SOCKS_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "socks/auth.h"
#include "socks/pipes.h"
#include "socks/server.h"
#include "socks/usage.h"

struct session;
struct snapshot;
struct pwhash_cache;
struct resolver;
struct throttle;
struct link_server_key;
struct link_replay;
struct penalty;
struct quota;

/* Plain listeners first, then the link's. */
#define SERVER_LISTENERS_MAX (2 * SERVER_LISTEN_MAX)

struct listener {
	ev_io io;
	int fd;
	bool loopback; /* bound to a loopback address: may offer no-auth when no user exists */
	bool link;     /* the encrypted link (LINK.md): first flight, then records */
	struct worker *w;
};

struct worker {
	struct server *srv;
	unsigned id;
	pthread_t thread;
	struct ev_loop *loop;
	ev_async wake;	       /* control -> worker: new snapshot, stop, resume */
	ev_timer accept_retry; /* after EMFILE/ENFILE: try accepting again later */
	struct listener listeners[SERVER_LISTENERS_MAX];
	size_t nlisteners;
	bool accepting; /* listener watchers are running */
	bool draining;	/* shutting down: no listener, exit when the last session ends */

	_Atomic(struct snapshot *) next_snap; /* published by control, taken by the worker */
	atomic_bool paused_at_cap;	      /* set while waiting for a free connection slot */
	struct snapshot *snap;		      /* the worker's current snapshot (one reference) */

	struct pwhash_cache *cache;
	struct resolver *resolver;
	struct auth_sink sink;
	struct auth_job *auth_out; /* this worker's verifications still out (owned by the pool) */

	struct session *sessions; /* every open session, for the forced close at shutdown */
	unsigned nsessions;

	struct usage usage; /* counters since the control thread's last flush */
	struct pipe_pool pipes; /* empty pipes for the zero-copy relay */
	uint8_t *udp_buf; /* one datagram and room for its header (socks/udp.c), at the first use */
};

struct server {
	struct server_config cfg;
	struct store *store;
	struct ev_loop *loop; /* control loop: signals, database poll */
	ev_signal sigint, sigterm;
	ev_timer poll, grace_timer, flush;
	ev_async worker_exit;
	int64_t data_version;
	size_t users_at_start; /* for the banner */
	size_t pool_at_start;  /* for the banner: enabled pool entries */
	struct snapshot *current; /* the newest snapshot: health is carried over from it */

	struct worker *workers;
	unsigned nworkers;
	atomic_uint workers_alive;
	atomic_int stop_level; /* 0 running, 1 draining, 2 closing everything */

	struct auth_pool *auth;
	struct throttle *throttle;
	struct quota *udp_quota; /* open UDP associations per user, over all workers */
	char dummy_hash[SNAPSHOT_HASH_MAX]; /* verified against for unknown users: same cost */

	atomic_uint active; /* open client connections over all workers */

	bool deny_internal;	    /* refuse internal destinations and the host's own addresses */
	struct addr *own_addrs;	    /* the host's addresses at start (getifaddrs) */
	size_t nown_addrs;

	struct addr bound[SERVER_LISTENERS_MAX]; /* plain ones, then the link's */
	bool bound_loopback[SERVER_LISTENERS_MAX];
	int listen_fds[SERVER_LISTENERS_MAX]; /* the first worker's sockets, bound by server_new */
	size_t nbound, nplain;

	/* The encrypted link (LINK.md), when it has listeners. */
	struct link_server_key *link_key; /* read-only, shared by the workers */
	pthread_mutex_t replay_lock;	  /* a replay may come to any worker */
	struct link_replay *replay;
	struct penalty *penalty;
};

/* Session side (socks/session.c). */

/* Take over an accepted client socket. ST_OK, or ST_ENOMEM (fd closed). */
NODISCARD int session_start(struct worker *w, struct listener *l, int fd, const struct addr *peer);

/* Close a session now (shutdown's forced close). */
void session_abort(struct session *s);

/* The worker took a new snapshot: close link sessions whose client key is no longer allowed. */
void session_snapshot_changed(struct worker *w);

/* A verification finished: resume its session (or drop the job if the session went away). */
void session_auth_done(struct worker *w, struct auth_job *job);

/* Server side (socks/server.c), called by sessions. */

/* A session ended: count it, resume accepting if paused, finish draining if it was the last. */
void worker_session_ended(struct worker *w);

/* True when the server refuses to connect to dst (DESIGN.md: an exposed proxy is no door into
 * its own network). Checked on every address actually connected to. */
bool server_target_denied(const struct server *srv, const struct addr *dst);

#endif
