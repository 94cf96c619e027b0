/*
 * socks/server.c - listeners, workers and the control loop.
 *
 * Threads: the caller's thread runs the control loop (libev's default loop: signals, the database
 * poll, shutdown); each worker runs its own loop. The control loop talks to workers through one
 * ev_async each plus atomics; workers talk back through another ev_async when they exit.
 */
#include "socks/server.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <sched.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "crypto/pwhash.h"
#include "crypto/keys.h"
#include "crypto/link.h"
#include "socks/penalty.h"
#include "socks/quota.h"
#include "socks/resolve.h"
#include "socks/route.h"
#include "socks/throttle.h"
#include "socks/worker.h"
#include "store/store.h"

#define SERVER_BACKLOG 4096
/* Accepts per readiness event. One, as nginx does without multi_accept: epoll is level-triggered,
 * so a deeper backlog is reported again at once, and no accept4 per connection ends in EAGAIN. */
#define ACCEPT_BATCH 1
/* First flights remembered (LINK.md: 180 s): 1,000 handshakes a second, fail closed beyond. */
#define REPLAY_CAPACITY (180 * 1000)
#define PENALTY_SLOTS 4096
#define ACCEPT_RETRY 0.1	  /* seconds before accepting again after EMFILE/ENFILE */
#define CACHE_SLOTS 4096	  /* verified credentials remembered per worker */
#define CACHE_TTL 900.0		  /* seconds a verified credential is remembered */
#define THROTTLE_SLOTS 4096	  /* client addresses tracked for failed logins */
#define AUTH_QUEUE_MAX 256	  /* verifications waiting for a thread */
#define POLL_INTERVAL 1.0	  /* seconds between two looks at the database */
#define FLUSH_INTERVAL 2.0	  /* seconds between two writes of health and usage */
#define HEALTH_BATCH 256	  /* health rows written per statement batch */

void server_config_defaults(struct server_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = 0;
	cfg->max_conns = 10000;
	cfg->handshake_timeout = 10;
	cfg->connect_timeout = 10;
	cfg->idle_timeout = 300;
	cfg->grace = 10;
	cfg->bind_timeout = 60;
	cfg->udp_rate = 10000;
	cfg->udp_per_user = 32;
	cfg->no_auth = false;
	cfg->link_handshake_timeout = 30;
}

/* ---- listening sockets ------------------------------------------------------------------------ */

static int listen_socket(const struct addr *a, int *out)
{
	int one = 1;
	int fd, saved;

	fd = socket(addr_family(a), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return ST_ESYS;
	/* TCP_NODELAY here: Linux copies it to every accepted socket, one setsockopt per
	 * connection saved (sessions write whole replies; Nagle would only delay relayed bytes). */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		goto fail;
	/* [::]:PORT must not also take 0.0.0.0:PORT: the operator lists what is exposed. */
	if (addr_family(a) == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, &a->u.sa, a->len) < 0 || listen(fd, SERVER_BACKLOG) < 0)
		goto fail;
	*out = fd;
	return ST_OK;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return ST_ESYS;
}

/* ---- the worker -------------------------------------------------------------------------------- */

static bool server_slot_take(struct server *srv)
{
	unsigned prev = atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);

	if (prev < srv->cfg.max_conns)
		return true;
	atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
	return false;
}

static void worker_accept_start(struct worker *w)
{
	if (w->accepting || w->draining)
		return;
	for (size_t i = 0; i < w->nlisteners; i++)
		ev_io_start(w->loop, &w->listeners[i].io);
	w->accepting = true;
}

static void worker_accept_stop(struct worker *w)
{
	if (!w->accepting)
		return;
	for (size_t i = 0; i < w->nlisteners; i++)
		ev_io_stop(w->loop, &w->listeners[i].io);
	w->accepting = false;
}

static void worker_listeners_close(struct worker *w)
{
	worker_accept_stop(w);
	ev_timer_stop(w->loop, &w->accept_retry);
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i].fd >= 0)
			close(w->listeners[i].fd);
		w->listeners[i].fd = -1;
	}
	w->nlisteners = 0;
}

/* The encrypted link's server key (made by `serve` at first start, kept in the database), the
 * replay cache and the penalty box. */
static int server_link_setup(struct server *srv, const char **why)
{
	char hex[STORE_LINK_SERVER_KEY_HEX + 1];
	struct keys_secret *priv = NULL;
	int rc;

	rc = store_link_server_key_get(srv->store, hex);
	if (rc != ST_OK) {
		*why = rc == ST_ENOTFOUND ? "the database has no link server key" :
					    "the link server key in the database is malformed";
		return rc;
	}
	rc = keys_secret_from_hex(hex, KEYS_X25519_BYTES, &priv);
	explicit_bzero(hex, sizeof(hex));
	if (rc == ST_OK)
		rc = link_server_key_new(keys_secret_bytes(priv), &srv->link_key);
	keys_secret_free(priv);
	if (rc != ST_OK) {
		*why = "cannot load the link server key";
		return rc;
	}
	rc = link_replay_new(REPLAY_CAPACITY, &srv->replay);
	if (rc == ST_OK)
		rc = penalty_new(PENALTY_SLOTS, &srv->penalty);
	if (rc != ST_OK)
		*why = "out of memory for the link's replay cache";
	return rc;
}

static void listener_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct listener *l = container_of(io, struct listener, io);
	struct worker *w = l->w;
	struct server *srv = w->srv;

	UNUSED(loop);
	UNUSED(revents);
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct addr peer;
		int fd;

		if (!server_slot_take(srv)) {
			/* At the cap: stop accepting (the kernel's backlog holds newcomers) until a
			 * session ends here, or another worker wakes us when one ends there. */
			atomic_store(&w->paused_at_cap, true);
			worker_accept_stop(w);
			/* A slot may have been freed between the check and the flag. */
			if (atomic_load(&srv->active) < srv->cfg.max_conns)
				ev_async_send(w->loop, &w->wake);
			return;
		}
		peer.len = sizeof(peer.u);
		fd = accept4(l->fd, &peer.u.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int err = errno;

			atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
				/* Out of descriptors or memory: no busy loop on a ready listener; wait
				 * for a session to end or for the retry timer. */
				log_warn("accept: %s; pausing new connections", strerror(err));
				worker_accept_stop(w);
				ev_timer_stop(w->loop, &w->accept_retry);
				ev_timer_set(&w->accept_retry, ACCEPT_RETRY, 0.);
				ev_timer_start(w->loop, &w->accept_retry);
				return;
			}
			/* ECONNABORTED and friends concern one client only. */
			continue;
		}
		if (session_start(w, l, fd, &peer) != ST_OK) {
			atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
			log_warn("out of memory for a new session");
		}
	}
}

static void worker_accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = container_of(t, struct worker, accept_retry);

	UNUSED(loop);
	UNUSED(revents);
	worker_accept_start(w);
}

static void worker_maybe_resume(struct worker *w)
{
	struct server *srv = w->srv;

	if (!atomic_load(&w->paused_at_cap) || w->draining)
		return;
	if (atomic_load(&srv->active) >= srv->cfg.max_conns)
		return;
	atomic_store(&w->paused_at_cap, false);
	if (!ev_is_active(&w->accept_retry))
		worker_accept_start(w);
}

void worker_session_ended(struct worker *w)
{
	struct server *srv = w->srv;
	unsigned prev;

	w->nsessions--;
	prev = atomic_fetch_sub_explicit(&srv->active, 1, memory_order_relaxed);
	if (prev >= srv->cfg.max_conns) {
		/* A slot just opened at the cap: wake every worker waiting for one. */
		for (unsigned i = 0; i < srv->nworkers; i++) {
			struct worker *o = &srv->workers[i];

			if (o != w && atomic_load(&o->paused_at_cap))
				ev_async_send(o->loop, &o->wake);
		}
	}
	worker_maybe_resume(w);
	if (ev_is_active(&w->accept_retry)) {
		/* A descriptor was just freed: EMFILE may be over. */
		ev_timer_stop(w->loop, &w->accept_retry);
		worker_accept_start(w);
	}
	if (w->draining && w->nsessions == 0)
		ev_break(w->loop, EVBREAK_ALL);
}

static void worker_close_all(struct worker *w)
{
	while (w->sessions != NULL)
		session_abort(w->sessions);
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = container_of(a, struct worker, wake);
	struct snapshot *next;
	int level;

	UNUSED(revents);
	next = atomic_exchange(&w->next_snap, NULL);
	if (next != NULL) {
		snapshot_unref(w->snap);
		w->snap = next;
		if (w->srv->link_key != NULL)
			session_snapshot_changed(w); /* revoked link keys lose their connections */
	}
	level = atomic_load(&w->srv->stop_level);
	if (level >= 1 && !w->draining) {
		worker_listeners_close(w);
		w->draining = true;
	}
	if (level >= 2)
		worker_close_all(w);
	if (w->draining && w->nsessions == 0) {
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	worker_maybe_resume(w);
}

static void worker_auth_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct auth_sink *sink = container_of(a, struct auth_sink, async);
	struct worker *w = container_of(sink, struct worker, sink);
	struct auth_job *job = auth_sink_take(sink);

	UNUSED(loop);
	UNUSED(revents);
	while (job != NULL) {
		struct auth_job *next = job->next;

		session_auth_done(w, job);
		job = next;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;

	/* The first snapshot was published before the thread started: take it before the first
	 * client can be accepted, so a session never sees no snapshot. */
	w->snap = atomic_exchange(&w->next_snap, NULL);
	worker_accept_start(w);
	ev_run(w->loop, 0);

	/* Whatever is still open (forced shutdown) closes now, on this thread. */
	worker_close_all(w);
	worker_listeners_close(w);
	resolver_free(w->resolver);
	w->resolver = NULL;
	ev_async_stop(w->loop, &w->wake);
	ev_async_stop(w->loop, &w->sink.async);

	atomic_fetch_sub(&srv->workers_alive, 1);
	ev_async_send(srv->loop, &srv->worker_exit);
	return NULL;
}

static int worker_init(struct server *srv, struct worker *w, unsigned id)
{
	int rc;

	w->srv = srv;
	w->id = id;
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (w->loop == NULL)
		return ST_ENOMEM;
	ev_async_init(&w->wake, worker_wake_cb);
	ev_async_start(w->loop, &w->wake);
	ev_timer_init(&w->accept_retry, worker_accept_retry_cb, ACCEPT_RETRY, 0.);
	auth_sink_init(&w->sink, w->loop, worker_auth_cb);
	ev_async_start(w->loop, &w->sink.async);
	atomic_init(&w->next_snap, NULL);
	atomic_init(&w->paused_at_cap, false);
	usage_init(&w->usage);
	pipe_pool_init(&w->pipes);
	rc = pwhash_cache_new(CACHE_SLOTS, CACHE_TTL, &w->cache);
	if (rc != ST_OK)
		return rc;
	rc = resolver_new(w->loop, srv->cfg.connect_timeout, &w->resolver);
	if (rc != ST_OK)
		return rc;
	for (size_t i = 0; i < srv->nbound; i++) {
		struct listener *l = &w->listeners[i];
		int fd;

		if (id == 0) {
			fd = srv->listen_fds[i];
			srv->listen_fds[i] = -1; /* transferred */
		} else {
			rc = listen_socket(&srv->bound[i], &fd);
			if (rc != ST_OK)
				return rc;
		}
		l->fd = fd;
		l->w = w;
		l->loopback = srv->bound_loopback[i];
		l->link = i >= srv->nplain;
		ev_io_init(&l->io, listener_cb, fd, EV_READ);
		w->nlisteners++;
	}
	return ST_OK;
}

static void worker_destroy(struct worker *w)
{
	if (w->loop == NULL)
		return;
	worker_listeners_close(w);
	resolver_free(w->resolver);
	auth_sink_destroy(&w->sink);
	usage_destroy(&w->usage);
	pipe_pool_destroy(&w->pipes);
	pwhash_cache_free(w->cache);
	free(w->udp_buf);
	snapshot_unref(w->snap);
	snapshot_unref(atomic_exchange(&w->next_snap, NULL));
	ev_loop_destroy(w->loop);
	w->loop = NULL;
}

/* ---- the control loop ------------------------------------------------------------------------ */

static void server_wake_workers(struct server *srv)
{
	for (unsigned i = 0; i < srv->nworkers; i++)
		ev_async_send(srv->workers[i].loop, &srv->workers[i].wake);
}

static void server_publish(struct server *srv, struct snapshot *snap)
{
	for (unsigned i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];

		snapshot_unref(atomic_exchange(&w->next_snap, snapshot_ref(snap)));
	}
	server_wake_workers(srv);
}

static void server_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct server *srv = container_of(t, struct server, poll);
	struct snapshot *snap;
	int64_t version;

	UNUSED(loop);
	UNUSED(revents);
	if (store_data_version(srv->store, &version) != ST_OK) {
		log_warn("cannot read the database version: %s", store_errmsg(srv->store));
		return;
	}
	if (version == srv->data_version)
		return;
	if (store_snapshot_build(srv->store, &snap) != ST_OK) {
		/* Keep serving from the last good snapshot; try again at the next tick. */
		log_warn("cannot load the database: %s", store_errmsg(srv->store));
		return;
	}
	/* The egress index is built here, on the control thread, never on a worker's loop. */
	if (route_attach(snap, srv->current) != ST_OK) {
		log_warn("cannot build the egress index; keeping the previous pool");
		snapshot_unref(snap);
		return;
	}
	srv->data_version = version;
	server_publish(srv, snap);
	log_debug("database changed: %zu users, %zu pool entries", snap->nusers, snap->npool);
	snapshot_unref(srv->current);
	srv->current = snap; /* transferred */
}

static void server_usage_row(struct store_usage *out, const struct usage_row *r)
{
	*out = (struct store_usage){ r->key,	       r->connections, r->bytes_up,
				     r->bytes_down, r->failures,    r->datagrams };
}

/* Write what changed in the pool's health, and the usage counted by the workers. */
static void server_flush(struct server *srv)
{
	struct store_health rows[HEALTH_BATCH];
	struct usage_map egress = { 0 }, users = { 0 };
	struct store_usage *eu = NULL, *uu = NULL;
	size_t n, ne = 0, nu = 0;
	char day[16];
	struct tm tm;
	time_t now = time(NULL);

	while ((n = route_health_changed(srv->current, rows, ARRAY_SIZE(rows))) > 0)
		if (store_health_write(srv->store, rows, n) != ST_OK)
			log_warn("cannot write pool health: %s", store_errmsg(srv->store));
	for (unsigned i = 0; i < srv->nworkers; i++) {
		struct usage_map we, wu;

		usage_take(&srv->workers[i].usage, &we, &wu);
		if (usage_map_merge(&egress, &we) != ST_OK || usage_map_merge(&users, &wu) != ST_OK)
			log_warn("out of memory merging usage counters");
		usage_map_free(&we);
		usage_map_free(&wu);
	}
	if (egress.n == 0 && users.n == 0)
		goto out;
	eu = calloc(egress.n, sizeof(*eu));
	uu = calloc(users.n, sizeof(*uu));
	if (eu == NULL || uu == NULL) {
		log_warn("out of memory writing usage counters");
		goto out;
	}
	for (size_t i = 0; i < egress.cap; i++)
		if (egress.rows[i].used)
			server_usage_row(&eu[ne++], &egress.rows[i]);
	for (size_t i = 0; i < users.cap; i++)
		if (users.rows[i].used)
			server_usage_row(&uu[nu++], &users.rows[i]);
	gmtime_r(&now, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	if (store_usage_add(srv->store, day, eu, ne, uu, nu) != ST_OK)
		log_warn("cannot write usage counters: %s", store_errmsg(srv->store));
out:
	free(eu);
	free(uu);
	usage_map_free(&egress);
	usage_map_free(&users);
}

static void server_flush_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	UNUSED(loop);
	UNUSED(revents);
	server_flush(container_of(t, struct server, flush));
}

static void server_stop(struct server *srv, int level)
{
	if (atomic_load(&srv->stop_level) >= level)
		return;
	atomic_store(&srv->stop_level, level);
	server_wake_workers(srv);
}

static void server_signal_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct server *srv = sig->data;

	UNUSED(revents);
	if (atomic_load(&srv->stop_level) == 0) {
		log_info("signal %d: draining, up to %.0f s", sig->signum, srv->cfg.grace);
		ev_timer_stop(loop, &srv->poll);
		ev_timer_set(&srv->grace_timer, srv->cfg.grace, 0.);
		ev_timer_start(loop, &srv->grace_timer);
		server_stop(srv, 1);
	} else {
		log_info("second signal: closing every connection now");
		server_stop(srv, 2);
	}
}

static void server_grace_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct server *srv = container_of(t, struct server, grace_timer);

	UNUSED(loop);
	UNUSED(revents);
	log_info("grace period over: closing the remaining connections");
	server_stop(srv, 2);
}

static void server_worker_exit_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct server *srv = container_of(a, struct server, worker_exit);

	UNUSED(revents);
	if (atomic_load(&srv->workers_alive) == 0)
		ev_break(loop, EVBREAK_ALL);
}

/* ---- destinations ------------------------------------------------------------------------------ */

/* The host's own addresses: a client of an exposed proxy must not reach services bound to them. */
static int server_load_own_addrs(struct server *srv)
{
	struct ifaddrs *list, *ifa;
	size_t n = 0;

	if (getifaddrs(&list) < 0)
		return ST_ESYS;
	for (ifa = list; ifa != NULL; ifa = ifa->ifa_next)
		if (ifa->ifa_addr != NULL &&
		    (ifa->ifa_addr->sa_family == AF_INET || ifa->ifa_addr->sa_family == AF_INET6))
			n++;
	srv->own_addrs = calloc(n > 0 ? n : 1, sizeof(*srv->own_addrs));
	if (srv->own_addrs == NULL) {
		freeifaddrs(list);
		return ST_ENOMEM;
	}
	for (ifa = list; ifa != NULL; ifa = ifa->ifa_next) {
		if (ifa->ifa_addr == NULL)
			continue;
		if (addr_from_sockaddr(&srv->own_addrs[srv->nown_addrs], ifa->ifa_addr,
				       ifa->ifa_addr->sa_family == AF_INET6
					       ? sizeof(struct sockaddr_in6)
					       : sizeof(struct sockaddr_in)) == ST_OK)
			srv->nown_addrs++;
	}
	freeifaddrs(list);
	return ST_OK;
}

bool server_target_denied(const struct server *srv, const struct addr *dst)
{
	struct addr v4;

	if (!srv->deny_internal)
		return false;
	if (addr_is_internal(dst))
		return true;
	/* Compare an IPv4-mapped destination as the IPv4 address it is. */
	if (addr_family(dst) == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&dst->u.sin6.sin6_addr)) {
		addr_from_ipv4(&v4, &dst->u.sin6.sin6_addr.s6_addr[12], addr_port(dst));
		dst = &v4;
	}
	for (size_t i = 0; i < srv->nown_addrs; i++)
		if (addr_equal_ip(&srv->own_addrs[i], dst))
			return true;
	return false;
}

bool server_denies_internal(const struct server *srv)
{
	return srv->deny_internal;
}

/* ---- public ------------------------------------------------------------------------------------ */

static unsigned server_default_workers(void)
{
	cpu_set_t set;
	long n;

	/* The cores this process may run on (taskset, cgroups), not every core online: two loops
	 * on one allowed core only fight each other. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int server_new(const struct server_config *cfg, struct store *store, struct server **out,
	       const char **why)
{
	static char msg[256];
	struct server *srv;
	struct snapshot *snap = NULL;
	int rc;

	*why = NULL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return ST_ENOMEM;
	srv->cfg = *cfg;
	if (srv->cfg.workers == 0)
		srv->cfg.workers = server_default_workers();
	srv->store = store;
	for (size_t i = 0; i < SERVER_LISTENERS_MAX; i++)
		srv->listen_fds[i] = -1;
	pthread_mutex_init(&srv->replay_lock, NULL);
	atomic_init(&srv->active, 0);
	atomic_init(&srv->stop_level, 0);
	atomic_init(&srv->workers_alive, 0);

	rc = store_data_version(store, &srv->data_version);
	if (rc == ST_OK)
		rc = store_snapshot_build(store, &snap);
	if (rc != ST_OK) {
		snprintf(msg, sizeof(msg), "cannot load the database: %s", store_errmsg(store));
		*why = msg;
		goto fail;
	}
	rc = route_attach(snap, NULL);
	if (rc != ST_OK) {
		snprintf(msg, sizeof(msg), "cannot build the egress index: %s", status_str(rc));
		*why = msg;
		goto fail;
	}
	if (!snap->has_salt) {
		*why = "the database has no sticky_salt setting (serve makes one at start)";
		rc = ST_EINVAL;
		goto fail;
	}
	if (cfg->nlisten + cfg->nlink_listen == 0) {
		*why = "no listener: give --listen or --link-listen";
		rc = ST_EINVAL;
		goto fail;
	}
	for (size_t i = 0; i < cfg->nlisten + cfg->nlink_listen; i++) {
		bool link = i >= cfg->nlisten;
		const struct addr *a = link ? &cfg->link_listen[i - cfg->nlisten] : &cfg->listen[i];
		char text[ADDR_STRLEN];

		/* A link client authenticates with its key: only the plain port may be open. */
		if (!link && !addr_is_loopback(a) && snap->nusers == 0 && !cfg->no_auth) {
			snprintf(msg, sizeof(msg),
				 "refusing to listen on %s without authentication: no user exists. Add one "
				 "with 'shroud user add NAME', or pass --no-auth to run an open proxy",
				 addr_format(a, text, sizeof(text)));
			*why = msg;
			rc = ST_EPERM;
			goto fail;
		}
		rc = listen_socket(a, &srv->listen_fds[i]);
		if (rc != ST_OK) {
			snprintf(msg, sizeof(msg), "cannot listen on %s: %s",
				 addr_format(a, text, sizeof(text)), strerror(errno));
			*why = msg;
			goto fail;
		}
		srv->bound[i].len = sizeof(srv->bound[i].u);
		if (getsockname(srv->listen_fds[i], &srv->bound[i].u.sa, &srv->bound[i].len) < 0) {
			rc = ST_ESYS;
			goto fail;
		}
		srv->bound_loopback[i] = addr_is_loopback(a);
		srv->nbound++;
		srv->nplain += !link;
	}
	if (cfg->nlink_listen > 0) {
		rc = server_link_setup(srv, why);
		if (rc != ST_OK)
			goto fail;
	}
	switch (cfg->private_targets) {
	case SERVER_PRIVATE_ALLOW:
		srv->deny_internal = false;
		break;
	case SERVER_PRIVATE_DENY:
		srv->deny_internal = true;
		break;
	default:
		srv->deny_internal = false;
		for (size_t i = 0; i < srv->nbound; i++)
			if (!srv->bound_loopback[i])
				srv->deny_internal = true;
		break;
	}
	if (srv->deny_internal) {
		rc = server_load_own_addrs(srv);
		if (rc != ST_OK)
			goto fail;
	}
	rc = throttle_new(THROTTLE_SLOTS, &srv->throttle);
	if (rc != ST_OK)
		goto fail;
	rc = quota_new(&srv->udp_quota);
	if (rc != ST_OK)
		goto fail;
	{
		/* Unknown users are checked against this, so their failure costs what a wrong
		 * password costs: timing does not tell which names exist. */
		char random_pass[32];
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		ssize_t got = fd >= 0 ? read(fd, random_pass, sizeof(random_pass)) : -1;

		if (fd >= 0)
			close(fd);
		if (got != (ssize_t)sizeof(random_pass)) {
			rc = ST_ESYS;
			goto fail;
		}
		rc = pwhash_hash(random_pass, sizeof(random_pass), srv->dummy_hash);
		explicit_bzero(random_pass, sizeof(random_pass));
		if (rc != ST_OK)
			goto fail;
	}
	srv->nworkers = srv->cfg.workers;
	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	if (srv->workers == NULL) {
		rc = ST_ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < srv->nworkers; i++) {
		rc = worker_init(srv, &srv->workers[i], i);
		if (rc != ST_OK) {
			snprintf(msg, sizeof(msg), "cannot start worker %u: %s", i,
				 rc == ST_ESYS ? strerror(errno) : status_str(rc));
			*why = msg;
			goto fail;
		}
	}
	/* Signals are caught from here on: the caller prints its readiness line after this returns,
	 * and a SIGTERM that follows it at once must drain, not kill. */
	srv->loop = ev_default_loop(EVFLAG_AUTO);
	if (srv->loop == NULL) {
		rc = ST_ENOMEM;
		goto fail;
	}
	ev_signal_init(&srv->sigint, server_signal_cb, SIGINT);
	ev_signal_init(&srv->sigterm, server_signal_cb, SIGTERM);
	srv->sigint.data = srv->sigterm.data = srv;
	ev_signal_start(srv->loop, &srv->sigint);
	ev_signal_start(srv->loop, &srv->sigterm);
	srv->users_at_start = snap->nusers;
	for (size_t i = 0; i < snap->npool; i++)
		srv->pool_at_start += snap->pool[i].enabled;
	server_publish(srv, snap);
	srv->current = snap; /* transferred */
	*out = srv;
	return ST_OK;
fail:
	snapshot_unref(snap);
	srv->store = NULL; /* the caller still owns it on failure */
	server_free(srv);
	return rc;
}

const struct addr *server_bound(const struct server *srv, size_t *n)
{
	*n = srv->nplain;
	return srv->bound;
}

const struct addr *server_link_bound(const struct server *srv, size_t *n)
{
	*n = srv->nbound - srv->nplain;
	return srv->bound + srv->nplain;
}

size_t server_pool_size(const struct server *srv)
{
	return srv->pool_at_start;
}

unsigned server_workers(const struct server *srv)
{
	return srv->nworkers;
}

const char *server_auth_mode(const struct server *srv)
{
	bool users = srv->users_at_start > 0;

	if (srv->cfg.no_auth)
		return users ? "none+password" : "none";
	return users ? "password" : "none";
}

int server_run(struct server *srv)
{
	sigset_t block, old;
	unsigned started = 0;
	int rc = ST_OK;

	if (auth_pool_new(srv->nworkers > 1 ? 2 : 1, AUTH_QUEUE_MAX, &srv->auth) != ST_OK)
		return ST_ESYS;
	ev_timer_init(&srv->poll, server_poll_cb, POLL_INTERVAL, POLL_INTERVAL);
	ev_timer_start(srv->loop, &srv->poll);
	ev_timer_init(&srv->grace_timer, server_grace_cb, 0., 0.);
	ev_async_init(&srv->worker_exit, server_worker_exit_cb);
	ev_async_start(srv->loop, &srv->worker_exit);
	ev_timer_init(&srv->flush, server_flush_cb, FLUSH_INTERVAL, FLUSH_INTERVAL);
	ev_timer_start(srv->loop, &srv->flush);

	/* Workers never take the process's signals: the control loop handles them. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (; started < srv->nworkers; started++) {
		atomic_fetch_add(&srv->workers_alive, 1);
		if (pthread_create(&srv->workers[started].thread, NULL, worker_main,
				   &srv->workers[started]) != 0) {
			atomic_fetch_sub(&srv->workers_alive, 1);
			rc = ST_ESYS;
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != ST_OK) {
		atomic_store(&srv->stop_level, 2);
		server_wake_workers(srv);
	}
	if (atomic_load(&srv->workers_alive) > 0)
		ev_run(srv->loop, 0);
	for (unsigned i = 0; i < started; i++)
		pthread_join(srv->workers[i].thread, NULL);
	/* The last counters of the connections that just ended. */
	server_flush(srv);
	ev_timer_stop(srv->loop, &srv->flush);
	ev_timer_stop(srv->loop, &srv->poll);
	ev_timer_stop(srv->loop, &srv->grace_timer);
	ev_async_stop(srv->loop, &srv->worker_exit);
	return rc;
}

void server_free(struct server *srv)
{
	if (srv == NULL)
		return;
	/* Verifier threads first: a job they finish lands in a worker's sink, which must exist. */
	auth_pool_free(srv->auth);
	if (srv->loop != NULL) {
		ev_signal_stop(srv->loop, &srv->sigint);
		ev_signal_stop(srv->loop, &srv->sigterm);
	}
	for (unsigned i = 0; srv->workers != NULL && i < srv->nworkers; i++)
		worker_destroy(&srv->workers[i]);
	free(srv->workers);
	for (size_t i = 0; i < SERVER_LISTENERS_MAX; i++)
		if (srv->listen_fds[i] >= 0)
			close(srv->listen_fds[i]);
	throttle_free(srv->throttle);
	link_server_key_free(srv->link_key);
	link_replay_free(srv->replay);
	penalty_free(srv->penalty);
	pthread_mutex_destroy(&srv->replay_lock);
	quota_free(srv->udp_quota);
	snapshot_unref(srv->current);
	free(srv->own_addrs);
	if (srv->store != NULL)
		store_close(srv->store);
	free(srv);
}
