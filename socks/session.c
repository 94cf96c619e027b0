/*
 * socks/session.c - one client connection, from accept to close.
 *
 * States: GREETING -> [AUTH -> AUTH_WAIT] -> REQUEST -> [RESOLVING] -> CONNECTING -> RELAY,
 * with FAIL_WAIT (a throttled login failure waits before it is told) and LINGER (an error reply is
 * flushed, then the connection half-closed and drained before close, so the client reads the reply
 * instead of a reset).
 * BIND: REQUEST -> [RESOLVING] -> BIND_WAIT (listening on the egress, first reply sent) -> RELAY
 * with the accepted connection as the target. UDP ASSOCIATE: REQUEST -> UDP, where socks/udp
 * relays the datagrams and this connection only keeps the association alive.
 *
 * Bytes from the client always land in `up` (client -> target) and bytes for the client always
 * leave from `down` (target -> client, and our own replies). The codec parses the head of `up`, so
 * whatever the client pipelined after its request stays there and is the first thing the target
 * gets. Each buffer has a fixed capacity, which is the relay's backpressure: a full buffer stops
 * reading its source.
 *
 * Every callback ends in session_settle(), the one place that frees a closed session or derives
 * from the state and the buffers which watchers run.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/status.h"
#include "base/clock.h"
#include "crypto/keys.h"
#include "crypto/link.h"
#include "crypto/pwhash.h"
#include "egress/bind.h"
#include "egress/params.h"
#include "egress/site.h"
#include "socks/penalty.h"
#include "socks/pipes.h"
#include "socks/proto.h"
#include "socks/resolve.h"
#include "socks/route.h"
#include "socks/throttle.h"
#include "socks/udp.h"
#include "socks/usage.h"
#include "socks/worker.h"
#include "store/snapshot.h"
#include "store/store.h"

#define SESSION_BUF 16384    /* bytes per direction */
#define LINGER_TIMEOUT 2.0   /* seconds an error reply may take to leave before the close */

enum session_state {
	S_GREETING,
	S_AUTH,
	S_AUTH_WAIT,
	S_FAIL_WAIT,
	S_REQUEST,
	S_RESOLVING,
	S_CONNECTING,
	S_RELAY,
	S_BIND_WAIT, /* BIND: listening, the first reply sent; tfd is the listening socket */
	S_UDP,	     /* UDP ASSOCIATE: the association lives as long as this connection */
	S_LINGER,
	S_LINK_FIRST,	/* link: reading the first flight and its padding */
	S_LINK_SILENT,	/* link: a failed handshake, read and dropped until the deadline */
	S_LINK_CONNECT, /* link: handshake done, waiting for the CONNECT record */
	S_CLOSED,
};

/*
 * The server's half of a handshake, from message 1 to the reply (LINK.md, server steps 4-6). It
 * holds secrets and an open connection needs none of it: allocated when the first flight's fixed
 * part is in, wiped and freed as soon as the handshake ends, either way.
 */
struct session_link_hs {
	struct link_server_hs hs;
	uint8_t psk[LINK_PSK_LEN]; /* from the allowlist */
	uint16_t pad_left;	   /* first-flight padding still to drop */
};

/*
 * The encrypted link's endpoint (LINK.md), server side: the client's socket carries the first
 * flight, then records. Records are opened from `rx` straight into `up` (DATA) and the target's
 * bytes are sealed from `down` into `tx`: past the handshake, selection, connect and relay are the
 * plain port's code. rx and tx follow the bytes like `up` and `down`.
 */
struct session_link {
	struct link_session ls;
	struct buf rx, tx;
	/* The handshake in progress. In S_LINK_FIRST, set once message 1 was accepted (its padding
	 * is being dropped); NULL before that and from the handshake's end on, either way. */
	struct session_link_hs *hs;
	uint8_t client_pub[LINK_KEY_LEN]; /* for revocation */
	bool authed;			  /* reply sent: client_pub is valid */
	bool unauth_counted;		  /* penalty_admit counted this connection */
	bool got_end;			  /* the client sent EOF or RESET */
	bool fin;			  /* read 0 from the client: rx holds all there will be */
	bool sent_eof;
	double started; /* monotonic, at the reply: a session lives at most LINK_SESSION_MAX */
};

/*
 * What the request needs to reach its target: the username's parameters, the target's addresses
 * and the source addresses to try. Allocated once the username is known (or at the request,
 * without authentication) and freed as soon as the relay starts: an open connection keeps only
 * what its close needs (who, from where, how many bytes), so idle connections stay small.
 */
struct session_route {
	struct egress_params params;   /* name, session, ttl, tag filters from the username */
	uint8_t key[EGRESS_KEY_BYTES]; /* selection key of (user, session, site) in its window */
	struct snapshot *snap;	       /* held from the pick until connected: candidates point in */
	struct route_candidate cands[ROUTE_CANDIDATES];
	uint8_t ncands, next_cand;
	uint8_t suspects; /* bit i: candidate i met an unreachable route; blamed if another works */
	bool has_key;	  /* key computed at the request (only when the pool was not empty) */
	bool pool_in_use;
	uint8_t ntargets, next_target;
	uint8_t fail_rep; /* the best REP so far while trying the targets */
	struct addr targets[RESOLVE_MAX_ADDRS];
};

struct session {
	struct worker *w;
	struct session *prev, *next;
	enum session_state state;
	bool loopback_listener;
	bool c_eof, t_eof;   /* read 0 from client / target */
	bool c_shut, t_shut; /* shutdown(SHUT_WR) sent to client / target */
	uint8_t method;
	uint8_t cmd; /* SOCKS_CMD_CONNECT or SOCKS_CMD_BIND once the request is in */
	int cfd, tfd;
	ev_io c_read, c_write, t_read, t_write;
	ev_timer timer;
	double last_active; /* relay: for the idle timeout */
	struct buf up, down;
	struct pipe_buf up_pipe, down_pipe; /* the relay's zero-copy path, when both ends are sockets */
	struct addr client;
	struct resolve_query *query;
	struct auth_job *job;
	struct session_route *route;
	struct session_link *link; /* the encrypted link's endpoint; NULL on the plain port */
	struct udp_assoc *udp; /* UDP ASSOCIATE */
	uint64_t bytes_up, bytes_down;
	bool connect_started; /* a CONNECT reached the connect stage: counted in usage */
	bool relayed;	      /* ... and connected */
	bool resolving_inline; /* inside resolver_query: an answer at once must not settle */
	uint32_t reply_bytes; /* our own bytes in `down`, not the target's: kept out of usage */
	char user[EGRESS_NAME_MAX + 1]; /* for usage: the user name without parameters, "" = none */
	char egress[STORE_ADDRESS_MAX]; /* for usage: the source address, "" = system default */
};

static void session_advance(struct session *s);
static void session_settle(struct session *s);

/* ---- small helpers ----------------------------------------------------------------------------- */

static bool session_buf_has_room(struct buf *b)
{
	return b->base == NULL || buf_room(b) > 0;
}

/* Sizes of the link's buffers: rx holds one whole record (it is opened in place), `up` one
 * record's data while the previous one is written out, tx two records. */
#define LINK_RX_BUF LINK_RECORD_MAX
#define LINK_UP_BUF (2 * SESSION_BUF)
#define LINK_TX_BUF (2 * LINK_RECORD_MAX)
/* `down` is sealed into records of at most LINK_DATA_MAX bytes: a buffer of exactly that many
 * makes every full read from the target one full record, where SESSION_BUF (16384) made each a
 * 16381-byte record and a 3-byte one (twice the seals, and a size pattern on the wire). */
#define LINK_DOWN_BUF LINK_DATA_MAX

/* The capacity a relay buffer gets when bytes first flow its way (buffers are allocated then, and
 * freed when they drain). */
static size_t session_buf_cap(const struct session *s, const struct buf *b)
{
	if (s->link == NULL)
		return SESSION_BUF;
	return b == &s->down ? LINK_DOWN_BUF : LINK_UP_BUF;
}

static void session_timer_set(struct session *s, double after)
{
	ev_timer_stop(s->w->loop, &s->timer);
	ev_timer_set(&s->timer, after, 0.);
	ev_timer_start(s->w->loop, &s->timer);
}

/* Mark closed; session_settle frees it when the current callback unwinds. */
static void session_close(struct session *s)
{
	s->state = S_CLOSED;
}

/* Queue bytes for the client. Replies are tiny and `down` is empty during the handshake. */
static void session_send(struct session *s, const uint8_t *p, size_t len)
{
	s->reply_bytes += (uint32_t)len;
	if (buf_ready(&s->down, session_buf_cap(s, &s->down)) != ST_OK ||
	    buf_append(&s->down, p, len) != ST_OK)
		session_close(s);
}

/* Send a final reply, then linger and close. */
static void session_fail(struct session *s, const uint8_t *p, size_t len)
{
	session_send(s, p, len);
	if (s->state == S_CLOSED)
		return;
	s->state = S_LINGER;
	session_timer_set(s, LINGER_TIMEOUT);
}

static void session_link_reply(struct session *s, uint8_t rep, const struct addr *bnd);

static void session_reply_fail(struct session *s, uint8_t rep)
{
	uint8_t reply[SOCKS_REPLY_MAX];
	size_t n = socks_write_reply(reply, rep, NULL);

	if (s->tfd >= 0) {
		ev_io_stop(s->w->loop, &s->t_read);
		ev_io_stop(s->w->loop, &s->t_write);
		close(s->tfd);
		s->tfd = -1;
	}
	if (s->link != NULL) {
		session_link_reply(s, rep, NULL);
		if (s->state == S_CLOSED)
			return;
		s->state = S_LINGER;
		session_timer_set(s, LINGER_TIMEOUT);
		return;
	}
	session_fail(s, reply, n);
}

/* RFC 1928 §6 reply codes for connect(2) errors. */
static uint8_t session_rep_from_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return SOCKS_REP_REFUSED;
	case ENETUNREACH:
	case ENETDOWN:
		return SOCKS_REP_NET_UNREACHABLE;
	case EHOSTUNREACH:
	case EHOSTDOWN:
		return SOCKS_REP_HOST_UNREACHABLE;
	case ETIMEDOUT:
		return SOCKS_REP_TTL_EXPIRED;
	case EACCES:
	case EPERM:
		return SOCKS_REP_NOT_ALLOWED;
	default:
		return SOCKS_REP_GENERAL_FAILURE;
	}
}

/* ---- connecting ------------------------------------------------------------------------------- */

static void session_route_free(struct session *s)
{
	if (s->route == NULL)
		return;
	snapshot_unref(s->route->snap);
	free(s->route);
	s->route = NULL;
}

/*
 * Whose fault is a failed connect? A source address that cannot be bound (EADDRNOTAVAIL: it is not
 * on this host) is at fault for sure. An unreachable route (ENETUNREACH, EHOSTUNREACH) may be the
 * source's (its prefix is not routed upstream) or the destination's (a dead host, a multicast
 * address): the next candidate is tried, and the source is blamed only if another one then reaches
 * the same target. So a client cannot cool the whole pool down by asking for unreachable targets.
 */
enum session_blame { BLAME_TARGET, BLAME_SOURCE, BLAME_SUSPECT };

static enum session_blame session_blame_of(int err, bool bind_failed)
{
	if (bind_failed || err == EADDRNOTAVAIL)
		return BLAME_SOURCE;
	if (err == ENETUNREACH || err == EHOSTUNREACH)
		return BLAME_SUSPECT;
	return BLAME_TARGET;
}

/* The candidate being tried, or NULL when connections leave from the system's default address. */
static const struct route_candidate *session_candidate(const struct session *s)
{
	const struct session_route *r = s->route;

	if (r == NULL || !r->pool_in_use || r->next_cand >= r->ncands)
		return NULL;
	return &r->cands[r->next_cand];
}

static void session_cool_down(struct session *s, unsigned i, int err)
{
	struct session_route *r = s->route;
	/* ev_now is wall-clock time (libev's ev_rt_now): Unix seconds, as the database keeps them. */
	int64_t wait = route_entry_failed(r->snap, r->cands[i].entry, (int64_t)ev_now(s->w->loop));

	log_debug("egress %s failed (%s): cooling down %lld s",
		  route_entry_address(r->snap, r->cands[i].entry), strerror(err), (long long)wait);
}

/* The current source failed: blame it now or keep it as a suspect, and move to the next one. */
static void session_candidate_failed(struct session *s, enum session_blame blame, int err)
{
	struct session_route *r = s->route;

	if (blame == BLAME_SOURCE)
		session_cool_down(s, r->next_cand, err);
	else
		r->suspects |= (uint8_t)(1u << r->next_cand);
	r->next_cand++;
	r->next_target = 0;
}

static void session_connect_next(struct session *s);
static void session_connected(struct session *s);

/* The connect under way finished with err (0: connected). */
static void session_connect_done(struct session *s, int err)
{
	if (err == 0) {
		session_connected(s);
		return;
	}
	log_debug("connect failed: %s", strerror(err));
	s->route->fail_rep = session_rep_from_errno(err);
	ev_io_stop(s->w->loop, &s->t_read);
	ev_io_stop(s->w->loop, &s->t_write);
	close(s->tfd);
	s->tfd = -1;
	if (session_candidate(s) != NULL && session_blame_of(err, false) != BLAME_TARGET)
		session_candidate_failed(s, session_blame_of(err, false), err);
	session_connect_next(s);
}

/*
 * A connect to a nearby target (loopback, the same host, the LAN) has often finished by the time
 * connect(2) returns EINPROGRESS: one poll with no timeout finds out, which saves the writability
 * round through epoll (two epoll_ctl and a loop iteration) and its latency. Otherwise the t_write
 * watcher waits as usual.
 */
static void session_connect_poll(struct session *s)
{
	struct pollfd p = { .fd = s->tfd, .events = POLLOUT };

	if (poll(&p, 1, 0) != 1)
		return;
	/* Writable and no error: connected, no SO_ERROR to ask for. */
	if (p.revents == POLLOUT)
		session_connect_done(s, 0);
	else if (p.revents & (POLLERR | POLLHUP))
		session_connect_done(s, egress_connect_result(s->tfd));
}

/*
 * Try source addresses and target addresses until a connect is under way. For each candidate source
 * (best first), the target's addresses of its family in order: a target that refuses is the target's
 * fault (its next address is tried, then the client is told); a source that cannot be bound or
 * routed is the source's fault (it cools down and the next candidate is tried).
 */
static void session_bind_next(struct session *s);

static void session_connect_next(struct session *s)
{
	struct session_route *r = s->route;

	if (s->cmd == SOCKS_CMD_BIND) {
		session_bind_next(s); /* the same sources, ranked the same way: listen, not connect */
		return;
	}
	for (;;) {
		const struct route_candidate *c = session_candidate(s);
		bool next_candidate = false;

		if (r->pool_in_use && c == NULL)
			break; /* every candidate failed */
		while (r->next_target < r->ntargets) {
			const struct addr *dst = &r->targets[r->next_target++];
			int fd, bind_failed;

			if (c != NULL && addr_family(dst) != c->entry->family)
				continue;
			if (server_target_denied(s->w->srv, dst)) {
				/* Checked on the resolved address itself: a name cannot smuggle it in. */
				log_debug("destination refused: internal or one of our own addresses");
				r->fail_rep = SOCKS_REP_NOT_ALLOWED;
				continue;
			}
			unsigned flags = c != NULL ? route_candidate_flags(c) : 0;

			if (egress_connect(c != NULL ? &c->src : NULL, dst, flags, &fd, &bind_failed) ==
			    ST_OK) {
				s->tfd = fd;
				s->state = S_CONNECTING;
				ev_io_set(&s->t_read, fd, EV_READ);
				ev_io_set(&s->t_write, fd, EV_WRITE);
				session_connect_poll(s);
				return;
			}
			if (c != NULL && session_blame_of(errno, bind_failed) != BLAME_TARGET) {
				r->fail_rep = session_rep_from_errno(errno);
				session_candidate_failed(s, session_blame_of(errno, bind_failed), errno);
				next_candidate = true;
				break;
			}
			r->fail_rep = session_rep_from_errno(errno);
			log_debug("connect failed at once: %s", strerror(errno));
		}
		if (!next_candidate)
			break; /* the target's addresses are exhausted: the target is at fault */
	}
	session_reply_fail(s, r->fail_rep);
}

static void session_connected(struct session *s)
{
	struct session_route *r = s->route;
	uint8_t reply[SOCKS_REPLY_MAX];
	struct addr bnd;
	size_t n;

	bnd.len = sizeof(bnd.u);
	if (getsockname(s->tfd, &bnd.u.sa, &bnd.len) < 0) {
		session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	const struct route_candidate *c = session_candidate(s);

	if (c != NULL) {
		/* Another source reached the target: the suspects' routes were at fault. */
		for (unsigned i = 0; i < r->next_cand; i++)
			if (r->suspects & (1u << i))
				session_cool_down(s, i, ENETUNREACH);
		route_entry_ok(r->snap, c->entry);
		snprintf(s->egress, sizeof(s->egress), "%s", route_entry_address(r->snap, c->entry));
	}
	/* The pool may change under a long relay: keep nothing of this snapshot, nor anything
	 * else of the request. */
	session_route_free(s);
	/* RFC 1928 §6: BND.ADDR/BND.PORT are the address the server assigned to connect. */
	if (s->link != NULL) {
		session_link_reply(s, SOCKS_REP_SUCCEEDED, &bnd);
	} else {
		n = socks_write_reply(reply, SOCKS_REP_SUCCEEDED, &bnd);
		session_send(s, reply, n);
	}
	if (s->state == S_CLOSED)
		return;
	s->state = S_RELAY;
	s->relayed = true;
	s->last_active = ev_now(s->w->loop);
	session_timer_set(s, s->w->srv->cfg.idle_timeout);
}

/* Route the request: rank source addresses for the families the target has. */
static void session_route_and_connect(struct session *s)
{
	struct session_route *r = s->route;
	unsigned families = 0;
	int n;

	r->next_target = 0;
	s->connect_started = true;
	if (route_pool_empty(s->w->snap)) {
		r->pool_in_use = false;
		session_connect_next(s); /* empty pool: the system's default address */
		return;
	}
	for (size_t i = 0; i < r->ntargets; i++)
		families |= addr_family(&r->targets[i]) == AF_INET6 ? EGRESS_FAMILY_V6
								     : EGRESS_FAMILY_V4;
	if (!r->has_key) {
		/* The pool filled up while this request was resolving: a one-off random key
		 * (as for ttl-0) rather than one every such request would share. */
		keys_random(r->key, sizeof(r->key));
		r->has_key = true;
	}
	r->snap = snapshot_ref(s->w->snap);
	r->pool_in_use = true;
	r->next_cand = 0;
	n = route_rank(r->snap, r->key, families, &r->params, (int64_t)ev_now(s->w->loop), r->cands,
		       ARRAY_SIZE(r->cands));
	if (n <= 0) {
		/* Tags that match nothing: not allowed by ruleset. No source of the target's
		 * families: unreachable, never the default address by accident. */
		log_debug("no egress address: %s", status_str(n));
		session_reply_fail(s, n == ST_EPERM ? SOCKS_REP_NOT_ALLOWED
						    : SOCKS_REP_HOST_UNREACHABLE);
		return;
	}
	r->ncands = (uint8_t)n;
	session_connect_next(s);
}

static void session_resolved(void *arg, int status, const struct addr *addrs, size_t n)
{
	struct session *s = arg;

	s->query = NULL;
	if (status != ST_OK) {
		log_debug("resolution failed: %s", status_str(status));
		session_reply_fail(s, SOCKS_REP_HOST_UNREACHABLE);
	} else {
		s->route->ntargets = (uint8_t)MIN(n, (size_t)RESOLVE_MAX_ADDRS);
		memcpy(s->route->targets, addrs, s->route->ntargets * sizeof(*addrs));
		session_route_and_connect(s);
	}
	/* Answered inside resolver_query (/etc/hosts, a literal): the caller's callback is still
	 * on the stack and settles (or frees) the session itself when it unwinds. */
	if (!s->resolving_inline)
		session_settle(s);
}

/* The route of a request without a username: an empty user and no parameters. */
static int session_route_ready(struct session *s)
{
	if (s->route == NULL)
		s->route = calloc(1, sizeof(*s->route));
	return s->route != NULL ? ST_OK : ST_ENOMEM;
}

/* The selection key: keyed hash of (user, session, site), site from the name as the client sent it. */
static void session_route_key(struct session *s, const struct socks_target *dst)
{
	char site[EGRESS_SITE_MAX];
	struct addr literal;
	uint32_t ttl;

	if (dst->atyp == SOCKS_ATYP_DOMAIN) {
		if (egress_site_of_name(dst->u.domain.name, site) != ST_OK)
			site[0] = '\0';
	} else {
		if (dst->atyp == SOCKS_ATYP_IPV4)
			addr_from_ipv4(&literal, dst->u.ipv4, 0);
		else
			addr_from_ipv6(&literal, dst->u.ipv6, 0);
		egress_site_of_addr(&literal, site);
	}
	route_key(s->w->snap, s->route->params.name, &s->route->params, site, (int64_t)ev_now(s->w->loop),
		  s->route->key, &ttl);
	s->route->has_key = true;
}

/* ---- BIND and UDP ASSOCIATE -------------------------------------------------------------------- */

static bool session_addr_unspecified(const struct addr *a)
{
	return addr_family(a) == AF_INET6 ? IN6_IS_ADDR_UNSPECIFIED(&a->u.sin6.sin6_addr)
					  : a->u.sin.sin_addr.s_addr == htonl(INADDR_ANY);
}

/* BIND's first reply is out: wait for the peer on the listening socket fd. */
static void session_bind_listening(struct session *s, int fd)
{
	uint8_t reply[SOCKS_REPLY_MAX];
	struct addr bnd;
	size_t n;

	bnd.len = sizeof(bnd.u);
	if (getsockname(fd, &bnd.u.sa, &bnd.len) < 0) {
		close(fd);
		session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	s->tfd = fd;
	ev_io_set(&s->t_read, fd, EV_READ); /* readable = a connection to accept */
	ev_io_set(&s->t_write, fd, EV_WRITE);
	if (s->route != NULL) {
		const struct route_candidate *c = session_candidate(s);

		if (c != NULL) {
			route_entry_ok(s->route->snap, c->entry);
			snprintf(s->egress, sizeof(s->egress), "%s",
				 route_entry_address(s->route->snap, c->entry));
		}
		/* The targets stay until the peer is checked; the snapshot goes now. */
		snapshot_unref(s->route->snap);
		s->route->snap = NULL;
	}
	/* RFC 1928 §4: the first reply names the address and port the server listens on. */
	n = socks_write_reply(reply, SOCKS_REP_SUCCEEDED, &bnd);
	session_send(s, reply, n);
	if (s->state == S_CLOSED)
		return;
	s->state = S_BIND_WAIT;
	session_timer_set(s, s->w->srv->cfg.bind_timeout);
}

/*
 * BIND: listen on the source the key of (user, session, site of DST.ADDR) ranks first, exactly
 * where a CONNECT to DST.ADDR would leave from; a source that cannot be bound cools down and the
 * next one is tried. With an empty pool: the address the client reached us on.
 */
static void session_bind_next(struct session *s)
{
	struct session_route *r = s->route;
	size_t kept = 0;

	/* The expected peer is a destination like any other: no door into our own network. */
	for (size_t i = 0; i < r->ntargets; i++)
		if (session_addr_unspecified(&r->targets[i]) ||
		    !server_target_denied(s->w->srv, &r->targets[i]))
			r->targets[kept++] = r->targets[i];
	if (kept == 0) {
		log_debug("BIND refused: the expected peer is internal or one of our own addresses");
		session_reply_fail(s, SOCKS_REP_NOT_ALLOWED);
		return;
	}
	r->ntargets = (uint8_t)kept;
	for (;;) {
		const struct route_candidate *c = session_candidate(s);
		bool pool = s->route != NULL && s->route->pool_in_use;
		unsigned flags = 0;
		struct addr src;
		int fd, bind_failed;

		if (pool && c == NULL)
			break; /* every candidate failed */
		if (c != NULL) {
			src = c->src;
			flags = route_candidate_flags(c);
		} else {
			src.len = sizeof(src.u);
			if (getsockname(s->cfd, &src.u.sa, &src.len) < 0) {
				r->fail_rep = SOCKS_REP_GENERAL_FAILURE;
				break;
			}
			addr_set_port(&src, 0);
		}
		if (egress_listen(&src, flags, &fd, &bind_failed) == ST_OK) {
			session_bind_listening(s, fd);
			return;
		}
		r->fail_rep = session_rep_from_errno(errno);
		if (c == NULL || !bind_failed)
			break;
		session_candidate_failed(s, BLAME_SOURCE, errno);
	}
	session_reply_fail(s, r->fail_rep);
}

/* True when peer may complete the BIND: DST.ADDR zero (any peer), else one of its addresses. */
static bool session_bind_peer_ok(const struct session *s, const struct addr *peer)
{
	const struct session_route *r = s->route;

	for (size_t i = 0; i < r->ntargets; i++)
		if (session_addr_unspecified(&r->targets[i]) || addr_equal_ip(&r->targets[i], peer))
			return true;
	return false;
}

/* The listening socket is readable: accept the expected peer, refuse others and keep listening. */
static void session_bind_accept(struct session *s)
{
	struct linger reset = { 1, 0 };
	uint8_t reply[SOCKS_REPLY_MAX];
	struct addr peer;
	int fd, one = 1;
	size_t n;

	for (;;) {
		peer.len = sizeof(peer.u);
		fd = accept4(s->tfd, &peer.u.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* Out of descriptors, say: the socket would stay readable, so give up. */
			log_debug("BIND: accept failed: %s", strerror(errno));
			session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
			return;
		}
		if (session_bind_peer_ok(s, &peer))
			break;
		/* Refused with a reset; the BIND is not used up and waits for the right peer. */
		log_debug("BIND: a connection from another address than the expected peer refused");
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(fd);
	}
	ev_io_stop(s->w->loop, &s->t_read);
	ev_io_stop(s->w->loop, &s->t_write);
	close(s->tfd); /* one connection per BIND */
	session_route_free(s); /* as at a CONNECT's relay start */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->tfd = fd;
	ev_io_set(&s->t_read, fd, EV_READ);
	ev_io_set(&s->t_write, fd, EV_WRITE);
	/* RFC 1928 §4: the second reply names the peer that connected. */
	n = socks_write_reply(reply, SOCKS_REP_SUCCEEDED, &peer);
	session_send(s, reply, n);
	if (s->state == S_CLOSED)
		return;
	s->state = S_RELAY;
	s->relayed = true;
	s->last_active = ev_now(s->w->loop);
	session_timer_set(s, s->w->srv->cfg.idle_timeout);
}

/* UDP ASSOCIATE: open the association (socks/udp) and name its relay address in the reply. */
static void session_associate(struct session *s, const struct socks_request *req)
{
	uint8_t reply[SOCKS_REPLY_MAX];
	struct addr relay;
	size_t n;
	int rc;

	if (session_route_ready(s) != ST_OK) {
		session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	rc = udp_assoc_new(s->w, s->cfd, &s->client, &req->dst, &s->route->params, &s->udp,
			   &relay);
	if (rc != ST_OK) {
		log_debug("UDP ASSOCIATE refused: %s",
			  rc == ST_ESYS ? strerror(errno) : status_str(rc));
		session_reply_fail(s, rc == ST_EFULL ? SOCKS_REP_NOT_ALLOWED
						     : SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	n = socks_write_reply(reply, SOCKS_REP_SUCCEEDED, &relay);
	session_send(s, reply, n);
	if (s->state == S_CLOSED)
		return;
	buf_consume(&s->up, buf_len(&s->up)); /* bytes after the request mean nothing here */
	s->state = S_UDP;
	session_timer_set(s, MIN(s->w->srv->cfg.idle_timeout, UDP_FLUSH_INTERVAL));
}

static void session_request(struct session *s, const struct socks_request *req)
{
	const struct socks_target *dst = &req->dst;

	if (req->cmd == SOCKS_CMD_UDP_ASSOCIATE) {
		session_associate(s, req);
		return;
	}
	s->cmd = req->cmd; /* CONNECT or BIND: both choose the egress from DST.ADDR's site */
	session_timer_set(s, s->w->srv->cfg.connect_timeout);
	if (session_route_ready(s) != ST_OK) {
		session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	s->route->fail_rep = SOCKS_REP_GENERAL_FAILURE;
	s->route->next_target = 0;
	/* With an empty pool the key is never used: no hashing, no suffix-list lookup. */
	if (!route_pool_empty(s->w->snap))
		session_route_key(s, dst);
	switch (dst->atyp) {
	case SOCKS_ATYP_IPV4:
		addr_from_ipv4(&s->route->targets[0], dst->u.ipv4, dst->port);
		s->route->ntargets = 1;
		break;
	case SOCKS_ATYP_IPV6:
		addr_from_ipv6(&s->route->targets[0], dst->u.ipv6, dst->port);
		s->route->ntargets = 1;
		break;
	default: {
		struct resolve_query *q;
		int rc;

		log_debug("resolving %s", dst->u.domain.name);
		s->state = S_RESOLVING;
		s->resolving_inline = true;
		rc = resolver_query(s->w->resolver, dst->u.domain.name, dst->port, session_resolved, s,
				    &q);
		s->resolving_inline = false;
		if (rc != ST_OK)
			session_reply_fail(s, rc == ST_EINVAL ? SOCKS_REP_HOST_UNREACHABLE
							      : SOCKS_REP_GENERAL_FAILURE);
		else if (q != NULL)
			s->query = q;
		/* else: answered at once, and session_resolved already moved on. */
		return;
	}
	}
	session_route_and_connect(s);
}

/* ---- authentication --------------------------------------------------------------------------- */

static void session_auth_ok(struct session *s)
{
	uint8_t reply[2];

	socks_write_auth_status(reply, SOCKS_AUTH_SUCCESS);
	session_send(s, reply, sizeof(reply));
	if (s->state != S_CLOSED)
		s->state = S_REQUEST;
}

static void session_auth_fail(struct session *s)
{
	struct server *srv = s->w->srv;
	double delay = throttle_fail(srv->throttle, &s->client, ev_now(s->w->loop));

	uint8_t reply[2];

	if (delay > 0) {
		/* Repeated failures from this address: make guessing slow. */
		s->state = S_FAIL_WAIT;
		session_timer_set(s, delay);
		return;
	}
	socks_write_auth_status(reply, SOCKS_AUTH_FAILURE);
	session_fail(s, reply, sizeof(reply));
}

/* Verify off the loop. A decoy job (unknown or disabled user) costs the same and always fails. A
 * login whose credentials are already being verified waits for that answer instead. */
static void session_auth_submit(struct session *s, const char *hash, bool decoy,
				const struct socks_auth *a)
{
	struct worker *w = s->w;
	const char *user = s->route->params.name;
	struct auth_job *job;
	uint8_t reply[2];

	for (job = w->auth_out; job != NULL; job = job->out_next) {
		if (auth_job_matches(job, user, hash, a->pass, a->plen, decoy)) {
			log_debug("login joins a password verification in progress");
			job->owners[job->nowners++] = s;
			s->job = job;
			s->state = S_AUTH_WAIT;
			return;
		}
	}
	job = auth_job_new(&w->sink);
	if (job == NULL) {
		session_auth_fail(s);
		return;
	}
	/* The user name without its parameters: a new session id must not cost a new hash. */
	snprintf(job->user, sizeof(job->user), "%s", user);
	memcpy(job->hash, hash, sizeof(job->hash));
	memcpy(job->pass, a->pass, (size_t)a->plen + 1);
	job->plen = a->plen;
	job->decoy = decoy;
	job->owners[0] = s;
	job->nowners = 1;
	if (auth_pool_submit(w->srv->auth, job) != ST_OK) {
		/* Every verifier busy and the queue full: an overload, not a wrong password. */
		log_warn("password verification queue full");
		auth_job_free(job);
		socks_write_auth_status(reply, SOCKS_AUTH_FAILURE);
		session_fail(s, reply, sizeof(reply));
		return;
	}
	log_debug("password verification started");
	job->out_next = w->auth_out;
	w->auth_out = job;
	s->job = job;
	s->state = S_AUTH_WAIT;
}

static void session_auth(struct session *s, const struct socks_auth *a)
{
	struct worker *w = s->w;
	struct server *srv = w->srv;
	const struct snapshot_user *u;
	double now = ev_now(w->loop);
	const char *why;

	/* A NUL inside the name or password (lengths are authoritative) can match nothing. */
	if (strlen(a->user) != a->ulen || strlen(a->pass) != a->plen) {
		session_auth_fail(s);
		return;
	}
	if (session_route_ready(s) != ST_OK) {
		session_auth_fail(s);
		return;
	}
	/* NAME-session-ID-ttl-N-...: a malformed parameter fails the login like a bad password. */
	if (egress_params_parse(a->user, &s->route->params, &why) != ST_OK) {
		log_debug("username refused: %s", why);
		session_auth_fail(s);
		return;
	}
	memcpy(s->user, s->route->params.name, sizeof(s->user));
	if (w->snap->nusers == 0) {
		/* No user exists and no-auth is allowed here (checked at the method choice): the
		 * credentials cannot be checked against anything, so they are not. */
		session_auth_ok(s);
		return;
	}
	u = snapshot_user_find(w->snap, s->route->params.name);
	if (u != NULL && !u->enabled)
		u = NULL;
	if (u != NULL && pwhash_cache_check(w->cache, u->name, a->pass, a->plen, u->hash, now)) {
		session_auth_ok(s);
		return;
	}
	if (throttle_blocked(srv->throttle, &s->client, now)) {
		log_debug("login from a throttled address refused without hashing");
		session_auth_fail(s);
		return;
	}
	/* Unknown users cost a hash too, so response times do not tell which names exist. */
	session_auth_submit(s, u != NULL ? u->hash : srv->dummy_hash, u == NULL, a);
}

void session_auth_done(struct worker *w, struct auth_job *job)
{
	struct auth_job **p = &w->auth_out;

	while (*p != job)
		p = &(*p)->out_next;
	*p = job->out_next;
	/* Remember a success under a keyed hash, even if every session that asked went away: the
	 * next connection skips Argon2id. */
	if (job->result == ST_OK)
		pwhash_cache_put(w->cache, job->user, job->pass, job->plen, job->hash, ev_now(w->loop));
	for (unsigned i = 0; i < job->nowners; i++) {
		struct session *s = job->owners[i];

		if (s == NULL)
			continue; /* closed while we were hashing */
		s->job = NULL;
		if (job->result == ST_OK)
			session_auth_ok(s);
		else
			session_auth_fail(s);
		session_advance(s);
		session_settle(s);
	}
	auth_job_free(job);
}

/* ---- the handshake ---------------------------------------------------------------------------- */

/* RFC 1928 §3: choose a method. Username/password whenever users exist and the client offers it
 * (the username may carry parameters); no authentication only where allowed. */
static uint8_t session_choose_method(const struct session *s, const struct socks_greeting *g)
{
	const struct server *srv = s->w->srv;
	bool users = s->w->snap->nusers > 0;
	bool allow_none = srv->cfg.no_auth || (!users && s->loopback_listener);

	if (g->offers_userpass && users)
		return SOCKS_METHOD_USERPASS;
	if (g->offers_none && allow_none)
		return SOCKS_METHOD_NONE;
	if (g->offers_userpass && allow_none)
		return SOCKS_METHOD_USERPASS; /* any credentials: there is nothing to check them against */
	return SOCKS_METHOD_UNACCEPTABLE;
}

/* The handshake needs more bytes: if the client has closed its side, they will never come. */
static void session_starved(struct session *s)
{
	if (s->c_eof)
		session_close(s);
}

/* Parse whatever complete messages sit at the head of `up`, as far as the state allows. */
static void session_advance(struct session *s)
{
	for (;;) {
		const uint8_t *p;
		size_t len;
		int n;

		/* Past the handshake nothing is parsed here (and `up` may be unallocated). */
		if (s->state != S_GREETING && s->state != S_AUTH && s->state != S_REQUEST)
			return;
		p = buf_data(&s->up);
		len = buf_len(&s->up);

		switch (s->state) {
		case S_GREETING: {
			struct socks_greeting g;
			uint8_t reply[2];

			n = socks_parse_greeting(p, len, &g);
			if (n == ST_NEED_MORE) {
				session_starved(s);
				return;
			}
			if (n < 0) {
				/* Not SOCKS5: there is no reply a SOCKS4 or HTTP client would read. */
				log_debug("bad greeting: %s", status_str(n));
				session_close(s);
				return;
			}
			buf_consume(&s->up, (size_t)n);
			s->method = session_choose_method(s, &g);
			socks_write_method(reply, s->method);
			if (s->method == SOCKS_METHOD_UNACCEPTABLE) {
				session_fail(s, reply, sizeof(reply));
				return;
			}
			session_send(s, reply, sizeof(reply));
			if (s->state == S_CLOSED)
				return;
			s->state = s->method == SOCKS_METHOD_USERPASS ? S_AUTH : S_REQUEST;
			break;
		}
		case S_AUTH: {
			struct socks_auth a;

			n = socks_parse_auth(p, len, &a);
			if (n == ST_NEED_MORE) {
				session_starved(s);
				return;
			}
			if (n < 0) {
				uint8_t reply[2];

				log_debug("bad credentials message: %s", status_str(n));
				socks_write_auth_status(reply, SOCKS_AUTH_FAILURE);
				session_fail(s, reply, sizeof(reply));
				return;
			}
			/* The password has been copied out: wipe it from the buffer at once, so no
			 * freed or reused buffer ever holds it. */
			explicit_bzero(s->up.base + s->up.head, (size_t)n);
			buf_consume(&s->up, (size_t)n);
			session_auth(s, &a);
			explicit_bzero(&a, sizeof(a));
			break;
		}
		case S_REQUEST: {
			struct socks_request req;

			n = socks_parse_request(p, len, &req);
			if (n == ST_NEED_MORE) {
				session_starved(s);
				return;
			}
			if (n < 0) {
				log_debug("bad request: %s", status_str(n));
				session_reply_fail(s, socks_request_error_rep(n));
				return;
			}
			buf_consume(&s->up, (size_t)n);
			session_request(s, &req);
			break;
		}
		default:
			/* Waiting for a thread, the resolver or the target, or relaying. */
			return;
		}
	}
}

/* ---- the encrypted link endpoint (LINK.md, server side) ----------------------------------------- */

static bool session_write(int fd, struct buf *b, uint64_t *count);

#define LINK_REKEY_RECORD (LINK_RECORD_OVERHEAD + LINK_FRAME_HDR)

/*
 * Make room in tx for one record carrying a frame of frame_len bytes, sealing the REKEY record
 * first when one is due (it needs its own room: a full tx must not end in a record that does not
 * fit). false when tx has no such room now (the client reads slower than the target sends: the
 * caller tries again once tx drains) or the session failed (then it is closed).
 */
static bool session_link_tx_room(struct session *s, size_t frame_len)
{
	struct session_link *l = s->link;
	bool rekey = link_rekey_due(&l->ls, clock_mono());
	size_t room;
	int n;

	if (buf_ready(&l->tx, LINK_TX_BUF) != ST_OK) {
		session_close(s);
		return false;
	}
	room = buf_room(&l->tx);
	if (room < frame_len + LINK_RECORD_OVERHEAD + (rekey ? LINK_REKEY_RECORD : 0))
		return false;
	if (rekey) {
		n = link_record_seal_rekey(&l->ls, clock_mono(), buf_space(&l->tx), room);
		if (n < 0) {
			session_close(s);
			return false;
		}
		buf_produce(&l->tx, (size_t)n);
	}
	return true;
}

/* Seal the frame at tx's free space + LINK_RECORD_HDR (built there, in place) into a record,
 * after session_link_tx_room said yes. false (the session is closed) on failure. */
static bool session_link_seal_in_place(struct session *s, size_t frame_len)
{
	struct session_link *l = s->link;
	size_t room = buf_room(&l->tx); /* first: buf_room may move what buf_space points at */
	uint8_t *out = buf_space(&l->tx);
	int n = link_record_seal(&l->ls, out + LINK_RECORD_HDR, frame_len, out, room);

	if (n < 0) {
		log_debug("link: cannot seal a record: %s", status_str(n));
		session_close(s);
		return false;
	}
	buf_produce(&l->tx, (size_t)n);
	return true;
}

/* A small control frame (reply, EOF): built in place. false when tx has no room now or the
 * session failed (closed). */
static bool session_link_seal_small(struct session *s, const uint8_t *frame, size_t len)
{
	if (!session_link_tx_room(s, len))
		return false;
	memcpy(buf_space(&s->link->tx) + LINK_RECORD_HDR, frame, len);
	return session_link_seal_in_place(s, len);
}

/* CONNECT_REPLY with the SOCKS5 REP and BND (none: 0.0.0.0:0). */
static void session_link_reply(struct session *s, uint8_t rep, const struct addr *bnd)
{
	uint8_t reply[SOCKS_REPLY_MAX], frame[LINK_FRAME_HDR + SOCKS_REPLY_MAX];
	size_t n = socks_write_reply(reply, rep, bnd);

	/* socks_write_reply: VER REP RSV | BND ATYP ADDR PORT; the frame takes the last part. */
	n = link_frame_connect_reply(frame, sizeof(frame), rep, reply + 3, n - 3);
	/* The reply is the first record of this direction: tx is empty, so no room means failure. */
	if (n == 0 || !session_link_seal_small(s, frame, n))
		session_close(s);
}

/* Forget the handshake's secrets and stop counting this connection as unauthenticated. Every
 * end of a handshake comes here (the reply, SILENT, the close); so does every later close. */
static void session_link_handshake_end(struct session *s)
{
	struct session_link *l = s->link;

	if (l->hs != NULL) {
		link_server_hs_wipe(&l->hs->hs);
		explicit_bzero(l->hs, sizeof(*l->hs)); /* the PSK */
		free(l->hs);
		l->hs = NULL;
	}
	if (l->unauth_counted) {
		penalty_unauth_done(s->w->srv->penalty, &s->client);
		l->unauth_counted = false;
	}
}

/*
 * LINK.md's SILENT: from now on nothing is written and nothing is parsed; what comes is read and
 * dropped until the client closes or the absolute deadline set at accept passes (the timer is left
 * as it is). A random probe, a replay, an unknown or revoked key and a bad clock look the same.
 */
static void session_link_silent(struct session *s, bool count_failure)
{
	struct session_link *l = s->link;

	if (count_failure)
		penalty_fail(s->w->srv->penalty, &s->client, clock_mono());
	session_link_handshake_end(s);
	buf_free(&l->rx);
	buf_free(&l->tx);
	s->state = S_LINK_SILENT;
}

/*
 * The first flight (LINK.md, server steps 3-6), cheapest check first. Every failure is silent.
 * On success the reply is queued in tx and the session waits for CONNECT.
 */
static void session_link_first(struct session *s)
{
	struct session_link *l = s->link;
	struct server *srv = s->w->srv;

	if (l->hs == NULL) {
		const struct snapshot_link *k;
		struct link_first first;
		int rc;

		if (buf_len(&l->rx) < LINK_FIRST_FIXED)
			return;
		l->hs = calloc(1, sizeof(*l->hs));
		if (l->hs == NULL) {
			session_close(s);
			return;
		}
		/* Step 3, mac1 (one keyed hash), then step 4, Noise message 1. */
		rc = link_server_read_first(&l->hs->hs, srv->link_key, buf_data(&l->rx),
					    buf_len(&l->rx), &first);
		if (rc != LINK_FIRST_FIXED) {
			session_link_silent(s, true);
			return;
		}
		buf_consume(&l->rx, LINK_FIRST_FIXED);
		k = snapshot_link_find(s->w->snap, first.client_pub);
		/* Step 5: the clock, then the replay cache, which remembers only what passed. */
		if (k == NULL || !link_clock_ok(first.timestamp, (int64_t)ev_now(s->w->loop))) {
			log_debug("link: unknown client key or clock off");
			session_link_silent(s, true);
			return;
		}
		pthread_mutex_lock(&srv->replay_lock);
		rc = link_replay_add(srv->replay, first.e_pub, clock_mono());
		pthread_mutex_unlock(&srv->replay_lock);
		if (rc != ST_OK) {
			log_debug("link: first flight refused by the replay cache: %s", status_str(rc));
			session_link_silent(s, true);
			return;
		}
		memcpy(l->hs->psk, k->psk, sizeof(l->hs->psk));
		memcpy(l->client_pub, first.client_pub, sizeof(l->client_pub));
		snprintf(s->user, sizeof(s->user), "%s", k->user);
		l->hs->pad_left = first.pad_len;
	}
	/* Step 6: drop the padding, then reply in one write. */
	if (l->hs->pad_left > 0) {
		size_t n = MIN(buf_len(&l->rx), (size_t)l->hs->pad_left);

		buf_consume(&l->rx, n);
		l->hs->pad_left = (uint16_t)(l->hs->pad_left - n);
		if (l->hs->pad_left > 0)
			return;
	}
	{
		uint8_t reply[LINK_REPLY_MAX];
		size_t n;
		int rc = link_server_reply(&l->hs->hs, l->hs->psk, clock_mono(), reply, &n, &l->ls);

		session_link_handshake_end(s);
		if (rc != ST_OK || buf_ready(&l->tx, LINK_TX_BUF) != ST_OK ||
		    buf_append(&l->tx, reply, n) != ST_OK) {
			session_link_silent(s, false);
			return;
		}
	}
	l->authed = true;
	l->started = clock_mono();
	s->state = S_LINK_CONNECT;
	session_timer_set(s, LINK_CONNECT_TIMEOUT);
}

/* CONNECT: the same request as a SOCKS5 CONNECT, the user being the key's. */
static void session_link_connect(struct session *s, const struct link_frame *f)
{
	struct socks_request req = { .cmd = SOCKS_CMD_CONNECT };
	char params[LINK_PARAMS_MAX + 1];
	const char *why;
	int rc;

	rc = socks_parse_target(f->target, f->target_len, &req.dst);
	if (rc != (int)f->target_len) {
		session_close(s); /* link_frame_decode checked the layout: this cannot be */
		return;
	}
	if (session_route_ready(s) != ST_OK) {
		session_reply_fail(s, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	memcpy(params, f->params, f->params_len);
	params[f->params_len] = '\0';
	if (egress_params_parse_tail(params, &s->route->params, &why) != ST_OK) {
		/* As a malformed username fails a plain login, refused parameters fail the request. */
		log_debug("link: parameters refused: %s", why);
		session_reply_fail(s, SOCKS_REP_NOT_ALLOWED);
		return;
	}
	snprintf(s->route->params.name, sizeof(s->route->params.name), "%s", s->user);
	session_request(s, &req);
}

/* Abort: the target gets a reset (a truncated or reset link must not look like a clean end). */
static void session_link_abort(struct session *s)
{
	if (s->tfd >= 0) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		(void)setsockopt(s->tfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	session_close(s);
}

/* Open the records waiting in rx, as far as `up` has room for their data. */
static void session_link_records(struct session *s)
{
	struct session_link *l = s->link;

	while (s->state != S_CLOSED && s->state != S_LINGER && !buf_empty(&l->rx)) {
		struct link_frame f;
		uint8_t *p = l->rx.base + l->rx.head;
		int n;

		if (buf_ready(&s->up, session_buf_cap(s, &s->up)) != ST_OK) {
			session_close(s);
			return;
		}
		if (buf_room(&s->up) < LINK_DATA_MAX)
			return; /* backpressure: the target has not taken the last record's data yet */
		n = link_record_open(&l->ls, p, buf_len(&l->rx), p + LINK_RECORD_HDR, &f);
		if (n == ST_NEED_MORE)
			return;
		if (n < 0) {
			/* A forged, reordered, truncated or out-of-rule record: close at once. */
			log_debug("link: bad record: %s", status_str(n));
			session_link_abort(s);
			return;
		}
		switch (f.type) {
		case LINK_FRAME_CONNECT:
			if (s->state != S_LINK_CONNECT) {
				session_link_abort(s); /* a second CONNECT */
				return;
			}
			session_link_connect(s, &f);
			break;
		case LINK_FRAME_DATA:
			if (s->state == S_LINK_CONNECT || buf_append(&s->up, f.data, f.data_len) != ST_OK) {
				session_link_abort(s);
				return;
			}
			s->last_active = ev_now(s->w->loop);
			break;
		case LINK_FRAME_EOF:
			l->got_end = true;
			s->c_eof = true;
			break;
		case LINK_FRAME_RESET:
			l->got_end = true;
			session_link_abort(s);
			return;
		default:
			break; /* PADDING; REKEY (the receive state is rekeyed already) */
		}
		/* The frame was decrypted in place: consume it only now that it has been used. */
		buf_consume(&l->rx, (size_t)n);
	}
}

/*
 * The client's TCP stream ended during the relay: open what rx still holds as `up` makes room. Once
 * nothing more can open, an end that no EOF or RESET record announced is a truncation and the
 * target gets a reset, not a clean end. After an EOF record the session goes on until the target's
 * side is done too (session_link_flush), as a half-close on the plain port does.
 */
static void session_link_after_fin(struct session *s)
{
	struct session_link *l = s->link;

	if (!l->fin || l->got_end || s->state != S_RELAY)
		return;
	session_link_records(s);
	if (s->state == S_RELAY && !l->got_end &&
	    (buf_empty(&l->rx) || buf_room(&s->up) >= LINK_DATA_MAX))
		session_link_abort(s); /* rx empty, or only part of a record that cannot complete */
}

/* The client's socket is readable: ciphertext into rx, then the handshake or the records. */
static void session_link_readable(struct session *s)
{
	struct session_link *l = s->link;
	size_t room;
	ssize_t n;

	if (s->state == S_LINK_SILENT || s->state == S_LINGER) {
		uint8_t sink[4096];

		n = read(s->cfd, sink, sizeof(sink));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			session_close(s);
		return;
	}
	if (buf_ready(&l->rx, LINK_RX_BUF) != ST_OK) {
		session_close(s);
		return;
	}
	room = buf_room(&l->rx); /* first: it may move the bytes buf_space points at */
	n = read(s->cfd, buf_space(&l->rx), room);
	if (n == 0) {
		l->fin = true;
		if (s->state == S_RELAY) {
			session_link_after_fin(s); /* records may still wait in rx for room in `up` */
			return;
		}
		/* Before the relay, the end of the connection is the end of the session. */
		if (!l->got_end)
			session_link_abort(s);
		else
			session_close(s);
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			session_close(s);
		return;
	}
	buf_produce(&l->rx, (size_t)n);
	if (s->state == S_LINK_FIRST)
		session_link_first(s);
	if (s->state != S_LINK_FIRST && s->state != S_LINK_SILENT)
		session_link_records(s);
}

/* Push the link's bytes: the target's data sealed into records, records to the client, the
 * client's data to the target; then half-closes as records (EOF) and shutdowns. */
static void session_link_flush(struct session *s)
{
	struct session_link *l = s->link;
	bool up_done, down_done;

	if (s->state == S_LINK_SILENT)
		return;
reseal:
	if (s->state == S_RELAY) {
		/* The target's bytes, LINK_DATA_MAX per record, framed straight into tx and sealed
		 * there, while tx has room for the record. */
		while (!buf_empty(&s->down) && s->state != S_CLOSED) {
			size_t take = MIN(buf_len(&s->down), (size_t)LINK_DATA_MAX), n;

			if (!session_link_tx_room(s, LINK_FRAME_HDR + take))
				break;
			n = link_frame_data(buf_space(&l->tx) + LINK_RECORD_HDR,
					    LINK_FRAME_HDR + take, buf_data(&s->down), take);
			if (n == 0 || !session_link_seal_in_place(s, n))
				return;
			buf_consume(&s->down, take);
			s->bytes_down += take;
		}
		if (s->state == S_CLOSED)
			return;
		if (s->t_eof && buf_empty(&s->down) && !l->sent_eof) {
			uint8_t frame[LINK_FRAME_HDR];
			size_t n = link_frame_eof(frame, sizeof(frame));

			/* No room yet: sealed on a later flush, once tx has drained. */
			l->sent_eof = session_link_seal_small(s, frame, n);
		}
	}
	if (s->state == S_CLOSED)
		return;
	if (!session_write(s->cfd, &l->tx, &(uint64_t){ 0 })) {
		session_close(s);
		return;
	}
	/* tx went out whole but `down` (or the EOF) still waits for room: seal it now, since neither
	 * the client's writability (tx is empty) nor the target (down is full, or ended) would call
	 * us again. */
	if (s->state == S_RELAY && buf_empty(&l->tx) &&
	    (!buf_empty(&s->down) || (s->t_eof && !l->sent_eof)))
		goto reseal;
	if (s->state == S_LINGER) {
		if (buf_empty(&l->tx) && !s->c_shut) {
			shutdown(s->cfd, SHUT_WR);
			s->c_shut = true;
		}
		return;
	}
	if (s->state != S_RELAY)
		return;
	for (int round = 0; round < 2; round++) {
		if (!session_write(s->tfd, &s->up, &s->bytes_up)) {
			session_close(s);
			return;
		}
		if (buf_empty(&l->rx) || !buf_empty(&s->up))
			break;
		/* The target took everything: open what waited for room. */
		session_link_records(s);
		if (s->state != S_RELAY)
			return;
	}
	session_link_after_fin(s);
	if (s->state != S_RELAY)
		return;
	up_done = s->c_eof && buf_empty(&s->up);
	down_done = l->sent_eof && buf_empty(&l->tx);
	if (up_done && down_done) {
		session_close(s);
		return;
	}
	if (up_done && !s->t_shut) {
		shutdown(s->tfd, SHUT_WR); /* the client's EOF record reaches the target */
		s->t_shut = true;
	}
}

/* A new snapshot: a link whose key was revoked or disabled loses its open connections. */
void session_snapshot_changed(struct worker *w)
{
	struct session *s, *next;

	for (s = w->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->link != NULL && s->link->authed &&
		    snapshot_link_find(w->snap, s->link->client_pub) == NULL) {
			log_debug("link: key revoked, closing its connection");
			session_link_abort(s);
			session_settle(s);
		}
	}
}

/* A new connection on a link listener: counted, maybe boxed, with its absolute deadline. */
static int session_link_start(struct session *s)
{
	struct server *srv = s->w->srv;
	double base = srv->cfg.link_handshake_timeout;
	double jitter = MIN(base / 10, LINK_HANDSHAKE_JITTER);
	enum penalty_verdict v;

	s->link = calloc(1, sizeof(*s->link));
	if (s->link == NULL)
		return ST_ENOMEM;
	v = penalty_admit(srv->penalty, &s->client, clock_mono());
	if (v == PENALTY_CLOSE) {
		log_debug("link: too many unauthenticated connections");
		session_close(s);
		return ST_OK;
	}
	s->link->unauth_counted = true;
	s->state = v == PENALTY_SILENT ? S_LINK_SILENT : S_LINK_FIRST;
	/* LINK.md step 2: one absolute deadline from accept, for every outcome but success. */
	{
		uint32_t r;

		keys_random(&r, sizeof(r));
		session_timer_set(s, base + jitter * (double)(r % 1001) / 1000.0);
	}
	return ST_OK;
}

/* ---- I/O --------------------------------------------------------------------------------------- */

/* Read from fd into b (given cap bytes of storage if it has none). Returns bytes read, 0 at EOF, -1
 * with nothing to read now, -2 on error. */
static ssize_t session_read(int fd, struct buf *b, size_t cap)
{
	size_t room;
	ssize_t n;

	if (buf_ready(b, cap) != ST_OK)
		return -2;
	room = buf_room(b); /* first: compacting moves the end that buf_space returns */
	n = read(fd, buf_space(b), room);
	if (n > 0) {
		buf_produce(b, (size_t)n);
		return n;
	}
	if (n == 0)
		return 0;
	return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : -2;
}

/* Write as much of b to fd as the socket takes, adding what went to *count. false on a write error. */
static bool session_write(int fd, struct buf *b, uint64_t *count)
{
	while (!buf_empty(b)) {
		ssize_t n = write(fd, buf_data(b), buf_len(b));

		if (n > 0) {
			buf_consume(b, (size_t)n);
			*count += (uint64_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
	return true;
}

/*
 * The relay moves each direction through its buffer or its pipe, never both at once: bytes go
 * into the pipe (splice, no copy through user space) only while the buffer is empty, and into the
 * buffer only while the pipe is empty, so their order is kept. The buffer carries the handshake's
 * leftovers (a request's pipelined bytes, our reply) and everything when splicing is off or no
 * pipe can be had.
 */
static bool session_splicing(const struct session *s)
{
	return s->state == S_RELAY && s->link == NULL && !s->w->srv->cfg.no_splice;
}

static bool session_dir_empty(struct buf *b, const struct pipe_buf *p)
{
	return buf_empty(b) && p->len == 0;
}

static bool session_dir_has_room(struct buf *b, const struct pipe_buf *p)
{
	if (p->len > 0)
		return p->len < p->cap;
	return session_buf_has_room(b);
}

/* Read from fd into a direction. session_read's return values. */
static ssize_t session_relay_read(struct session *s, int fd, struct buf *b, struct pipe_buf *p)
{
	if (p->len > 0 || (buf_empty(b) && session_splicing(s))) {
		if (p->fd[0] >= 0 || pipe_pool_get(&s->w->pipes, p) == ST_OK)
			return pipe_buf_fill(p, fd);
		/* No descriptor for a pipe (EMFILE): this read goes through the buffer. */
	}
	return session_read(fd, b, session_buf_cap(s, b));
}

/* Write a direction's pending bytes to fd. false on a write error. */
static bool session_relay_write(int fd, struct buf *b, struct pipe_buf *p, uint64_t *count)
{
	ssize_t n;

	if (!session_write(fd, b, count))
		return false;
	if (p->len == 0)
		return true;
	n = pipe_buf_drain(p, fd);
	if (n < 0)
		return false;
	*count += (uint64_t)n;
	return true;
}

/* Push pending bytes both ways and pass on half-closes once a direction is drained. */
static void session_flush(struct session *s)
{
	bool up_done, down_done;

	if (s->state == S_CLOSED)
		return;
	if (s->link != NULL) {
		session_link_flush(s);
		return;
	}
	if (!session_relay_write(s->cfd, &s->down, &s->down_pipe, &s->bytes_down)) {
		session_close(s);
		return;
	}
	if (s->state == S_LINGER) {
		if (buf_empty(&s->down) && !s->c_shut) {
			/* The reply is out: tell the client we are done, then drain what it still
			 * sends, so the close does not turn into a reset that eats the reply. */
			shutdown(s->cfd, SHUT_WR);
			s->c_shut = true;
		}
		return;
	}
	if (s->state != S_RELAY)
		return;
	if (!session_relay_write(s->tfd, &s->up, &s->up_pipe, &s->bytes_up)) {
		session_close(s);
		return;
	}
	up_done = s->c_eof && session_dir_empty(&s->up, &s->up_pipe);
	down_done = s->t_eof && session_dir_empty(&s->down, &s->down_pipe);
	if (up_done && down_done) {
		/* Both directions finished: close(2) sends whichever FIN is still owed. */
		session_close(s);
		return;
	}
	if (up_done && !s->t_shut) {
		shutdown(s->tfd, SHUT_WR); /* the client's FIN reaches the target */
		s->t_shut = true;
	}
	if (down_done && !s->c_shut) {
		shutdown(s->cfd, SHUT_WR);
		s->c_shut = true;
	}
}

/* The client's socket is readable (or, right after accept, may be). */
static void session_client_readable(struct session *s)
{
	ssize_t n;

	if (s->link != NULL) {
		session_link_readable(s);
		session_flush(s);
		session_settle(s);
		return;
	}
	if (s->state == S_LINGER || s->state == S_UDP) {
		/* Drain and drop until the client closes or the linger timer ends it. A UDP
		 * association's control connection carries nothing more; its close ends the
		 * association (RFC 1928 §7). */
		uint8_t sink[4096];

		n = read(s->cfd, sink, sizeof(sink));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			session_close(s);
		session_settle(s);
		return;
	}
	n = session_relay_read(s, s->cfd, &s->up, &s->up_pipe);
	if (n == 0) {
		/* In the handshake, a client that stops sending can never finish it. While its
		 * login is checked or its target resolved or connected, it may have pipelined the
		 * rest: that goes on, and the FIN is passed on after it. */
		s->c_eof = true;
		if (s->state == S_GREETING || s->state == S_AUTH || s->state == S_REQUEST)
			session_advance(s);
	} else if (n == -2) {
		session_close(s);
	} else if (n > 0) {
		s->last_active = ev_now(s->w->loop);
		/* Only the handshake parses; a relay's bytes may be in the pipe, `up` unallocated. */
		if (s->state == S_GREETING || s->state == S_AUTH || s->state == S_REQUEST)
			session_advance(s);
	}
	session_flush(s);
	session_settle(s);
}

static void session_client_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	UNUSED(loop);
	UNUSED(revents);
	session_client_readable(container_of(io, struct session, c_read));
}

static void session_client_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct session *s = container_of(io, struct session, c_write);

	UNUSED(loop);
	UNUSED(revents);
	s->last_active = ev_now(s->w->loop);
	session_flush(s);
	session_settle(s);
}

static void session_target_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct session *s = container_of(io, struct session, t_read);
	ssize_t n;

	UNUSED(loop);
	UNUSED(revents);
	if (s->state == S_BIND_WAIT) {
		session_bind_accept(s);
		session_flush(s);
		session_settle(s);
		return;
	}
	n = session_relay_read(s, s->tfd, &s->down, &s->down_pipe);
	if (n == 0)
		s->t_eof = true;
	else if (n == -2)
		session_close(s);
	else if (n > 0)
		s->last_active = ev_now(s->w->loop);
	session_flush(s);
	session_settle(s);
}

static void session_target_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct session *s = container_of(io, struct session, t_write);

	UNUSED(loop);
	UNUSED(revents);
	if (s->state == S_CONNECTING) {
		session_connect_done(s, egress_connect_result(s->tfd));
	} else {
		s->last_active = ev_now(s->w->loop);
	}
	session_flush(s);
	session_settle(s);
}

static void session_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct session *s = container_of(t, struct session, timer);
	uint8_t reply[2];

	UNUSED(revents);
	switch (s->state) {
	case S_RELAY: {
		double idle = ev_now(loop) - s->last_active;
		double limit = s->w->srv->cfg.idle_timeout;

		if (s->link != NULL && clock_mono() - s->link->started > LINK_SESSION_MAX) {
			log_debug("link: session older than %g s", LINK_SESSION_MAX);
			session_close(s);
		} else if (idle < limit) {
			/* Activity since the timer was set: sleep for the rest (cheaper than
			 * re-arming the timer on every read and write). */
			session_timer_set(s, limit - idle);
		} else {
			log_debug("idle timeout");
			session_close(s);
		}
		break;
	}
	case S_RESOLVING:
		resolve_cancel(s->query);
		s->query = NULL;
		log_debug("resolution timed out");
		session_reply_fail(s, SOCKS_REP_HOST_UNREACHABLE);
		break;
	case S_CONNECTING:
		log_debug("connect timed out");
		session_reply_fail(s, SOCKS_REP_TTL_EXPIRED);
		break;
	case S_BIND_WAIT:
		/* RFC 1928 §4: the second reply tells a failure too. */
		log_debug("BIND: no connection from the expected peer in time");
		session_reply_fail(s, SOCKS_REP_TTL_EXPIRED);
		break;
	case S_UDP: {
		double idle = ev_now(loop) - udp_assoc_last_active(s->udp);
		double limit = s->w->srv->cfg.idle_timeout;

		udp_assoc_flush(s->udp); /* a long association's counters reach the database too */
		if (idle < limit) {
			session_timer_set(s, MIN(limit - idle, UDP_FLUSH_INTERVAL));
		} else {
			log_debug("UDP association idle timeout");
			session_close(s);
		}
		break;
	}
	case S_FAIL_WAIT:
		socks_write_auth_status(reply, SOCKS_AUTH_FAILURE);
		session_fail(s, reply, sizeof(reply));
		break;
	case S_LINK_FIRST:
		/* No complete first flight by the deadline (a probe of under 128 bytes, or one that
		 * drips): a failure like any other, so such probes lead to the box too. */
		penalty_fail(s->w->srv->penalty, &s->client, clock_mono());
		session_close(s);
		break;
	default:
		/* Handshake deadline, or an error reply the client would not read: close. */
		log_debug("deadline passed in state %d", (int)s->state);
		session_close(s);
		break;
	}
	session_flush(s);
	session_settle(s);
}

/* ---- life cycle -------------------------------------------------------------------------------- */

static void session_free(struct session *s)
{
	struct worker *w = s->w;

	ev_io_stop(w->loop, &s->c_read);
	ev_io_stop(w->loop, &s->c_write);
	ev_io_stop(w->loop, &s->t_read);
	ev_io_stop(w->loop, &s->t_write);
	ev_timer_stop(w->loop, &s->timer);
	if (s->query != NULL)
		resolve_cancel(s->query);
	if (s->job != NULL) {
		/* Give up our place: the job is freed when it comes back. */
		for (unsigned i = 0; i < s->job->nowners; i++)
			if (s->job->owners[i] == s)
				s->job->owners[i] = NULL;
	}
	udp_assoc_free(s->udp);
	if (s->connect_started)
		usage_add(&w->usage, s->user, s->egress, s->bytes_up,
			  s->bytes_down > s->reply_bytes ? s->bytes_down - s->reply_bytes : 0,
			  !s->relayed);
	session_route_free(s);
	close(s->cfd);
	if (s->tfd >= 0)
		close(s->tfd);
	/* A login that never completed may have left part of a password in the buffer (a
	 * completed one was wiped as it was parsed). */
	if (s->up.base != NULL && s->method == SOCKS_METHOD_USERPASS && !s->relayed)
		explicit_bzero(s->up.base, s->up.cap);
	buf_free(&s->up);
	buf_free(&s->down);
	if (s->link != NULL) {
		session_link_handshake_end(s);
		link_session_wipe(&s->link->ls);
		/* rx holds records opened in place: the client's plaintext. */
		if (s->link->rx.base != NULL)
			explicit_bzero(s->link->rx.base, s->link->rx.cap);
		buf_free(&s->link->rx);
		buf_free(&s->link->tx);
		free(s->link);
	}
	pipe_pool_put(&w->pipes, &s->up_pipe); /* closed, if bytes are left in it */
	pipe_pool_put(&w->pipes, &s->down_pipe);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	free(s);
	worker_session_ended(w);
}

static void session_watch(struct ev_loop *loop, ev_io *io, bool want)
{
	if (want && !ev_is_active(io))
		ev_io_start(loop, io);
	else if (!want && ev_is_active(io))
		ev_io_stop(loop, io);
}

/* The one place that decides which watchers run, from the state and the buffers. */
static void session_settle(struct session *s)
{
	struct ev_loop *loop = s->w->loop;
	bool relay, linger;

	if (s->state == S_CLOSED) {
		session_free(s);
		return;
	}
	relay = s->state == S_RELAY;
	if (relay || s->state == S_UDP) {
		/* An idle relay holds no buffer: memory follows the bytes in flight, not the number of
		 * open connections. The next read allocates again. */
		if (s->up.base != NULL && buf_empty(&s->up))
			buf_free(&s->up);
		if (s->down.base != NULL && buf_empty(&s->down))
			buf_free(&s->down);
	}
	if (relay && s->link != NULL) {
		if (s->link->rx.base != NULL && buf_empty(&s->link->rx)) {
			explicit_bzero(s->link->rx.base, s->link->rx.cap);
			buf_free(&s->link->rx);
		}
		if (s->link->tx.base != NULL && buf_empty(&s->link->tx))
			buf_free(&s->link->tx);
	}
	/* Likewise pipes: back to the worker's pool as soon as they are empty. */
	if (s->up_pipe.fd[0] >= 0 && s->up_pipe.len == 0)
		pipe_pool_put(&s->w->pipes, &s->up_pipe);
	if (s->down_pipe.fd[0] >= 0 && s->down_pipe.len == 0)
		pipe_pool_put(&s->w->pipes, &s->down_pipe);
	linger = s->state == S_LINGER;
	/* The client is read in every state, also while its login is checked, its target
	 * connected or its BIND's peer awaited: what it pipelines waits in `up`, and its fd's epoll
	 * registration never goes away and comes back (each return costs libev a failed
	 * EPOLL_CTL_ADD and a MOD). A UDP association's connection is drained like a lingering one. */
	linger = linger || s->state == S_UDP;
	if (s->link != NULL) {
		/* The link is read in every state (RESET and truncation must be seen), as far as
		 * rx has room; opened records wait there while `up` is full. */
		session_watch(loop, &s->c_read,
			      s->state == S_LINK_SILENT || linger ||
				      (!s->link->fin && session_buf_has_room(&s->link->rx)));
		session_watch(loop, &s->c_write, !buf_empty(&s->link->tx));
	} else {
		session_watch(loop, &s->c_read,
			      linger || (!s->c_eof && session_dir_has_room(&s->up, &s->up_pipe)));
		session_watch(loop, &s->c_write, !session_dir_empty(&s->down, &s->down_pipe));
	}
	if (s->tfd >= 0) {
		session_watch(loop, &s->t_read,
			      (relay && !s->t_eof && session_dir_has_room(&s->down, &s->down_pipe)) ||
				      s->state == S_BIND_WAIT);
		session_watch(loop, &s->t_write,
			      s->state == S_CONNECTING ||
				      (relay && !session_dir_empty(&s->up, &s->up_pipe)));
	}
}

int session_start(struct worker *w, struct listener *l, int fd, const struct addr *peer)
{
	struct session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		close(fd);
		return ST_ENOMEM;
	}
	/* TCP_NODELAY came with the socket from the listener (socks/server.c). */
	s->w = w;
	s->cfd = fd;
	s->tfd = -1;
	pipe_buf_init(&s->up_pipe);
	pipe_buf_init(&s->down_pipe);
	s->state = S_GREETING;
	s->loopback_listener = l->loopback;
	s->client = *peer;
	ev_io_init(&s->c_read, session_client_read_cb, fd, EV_READ);
	ev_io_init(&s->c_write, session_client_write_cb, fd, EV_WRITE);
	ev_io_init(&s->t_read, session_target_read_cb, -1, EV_READ);
	ev_io_init(&s->t_write, session_target_write_cb, -1, EV_WRITE);
	ev_timer_init(&s->timer, session_timer_cb, w->srv->cfg.handshake_timeout, 0.);
	ev_timer_start(w->loop, &s->timer);
	s->next = w->sessions;
	if (w->sessions != NULL)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;
	if (l->link && (session_link_start(s) != ST_OK || s->state == S_CLOSED)) {
		session_abort(s); /* out of memory, or too many unauthenticated connections */
		return ST_OK;
	}
	/* A client writes its greeting right after connecting, so by the time the listener's
	 * readiness came round it has usually arrived: read it now rather than after a round
	 * through epoll. (Nothing there: EAGAIN, and the watcher waits as usual.) */
	session_client_readable(s);
	return ST_OK;
}

void session_abort(struct session *s)
{
	session_close(s);
	session_settle(s);
}
