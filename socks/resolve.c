/*
 * socks/resolve.c - c-ares driven by libev.
 *
 * c-ares tells us which sockets it wants watched through sock_state_cb; each gets an ev_io. One
 * ev_timer follows ares_timeout() so retries and timeouts happen without any socket activity.
 */
#include "socks/resolve.h"

#include <ares.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"

struct resolver_io {
	ev_io io;
	struct resolver *r;
	struct resolver_io *next;
};

struct resolver {
	struct ev_loop *loop;
	ares_channel channel;
	ev_timer timer;
	struct resolver_io *ios;
};

struct resolve_query {
	resolve_fn *fn; /* NULL once cancelled */
	void *arg;
	bool *completed; /* set while inside resolver_query, to detect a synchronous answer */
	uint16_t port;
};

static void resolver_reschedule(struct resolver *r)
{
	struct timeval tv, *tvp;

	ev_timer_stop(r->loop, &r->timer);
	tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp == NULL)
		return;
	ev_timer_set(&r->timer, (double)tvp->tv_sec + (double)tvp->tv_usec * 1e-6, 0.);
	ev_timer_start(r->loop, &r->timer);
}

static void resolver_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct resolver_io *rio = container_of(w, struct resolver_io, io);
	struct resolver *r = rio->r;

	UNUSED(loop);
	ares_process_fd(r->channel, (revents & EV_READ) ? w->fd : ARES_SOCKET_BAD,
			(revents & EV_WRITE) ? w->fd : ARES_SOCKET_BAD);
	resolver_reschedule(r);
}

static void resolver_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct resolver *r = container_of(w, struct resolver, timer);

	UNUSED(loop);
	UNUSED(revents);
	/* No socket is ready: let c-ares run its timeouts and retries. */
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_reschedule(r);
}

/* c-ares: start, change or stop watching fd. */
static void resolver_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolver *r = data;
	struct resolver_io **pp, *rio;

	for (pp = &r->ios; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->io.fd == fd)
			break;
	rio = *pp;
	if (!readable && !writable) {
		if (rio != NULL) {
			ev_io_stop(r->loop, &rio->io);
			*pp = rio->next;
			free(rio);
		}
		return;
	}
	if (rio == NULL) {
		rio = calloc(1, sizeof(*rio));
		if (rio == NULL) {
			/* The query on this socket then times out: a failure, never a hang. */
			log_error("out of memory watching a resolver socket");
			return;
		}
		rio->r = r;
		rio->next = r->ios;
		r->ios = rio;
		ev_io_init(&rio->io, resolver_io_cb, fd, 0);
	}
	ev_io_stop(r->loop, &rio->io);
	ev_io_set(&rio->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(r->loop, &rio->io);
}

int resolver_new(struct ev_loop *loop, double timeout, struct resolver **out)
{
	struct ares_options opts;
	struct resolver *r;
	int rc;

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ST_ENOMEM;
	r->loop = loop;
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = resolver_sock_state_cb;
	opts.sock_state_cb_data = r;
	/* Each try waits timeout/2; two tries fit the caller's deadline. */
	opts.timeout = (int)(timeout * 1000 / 2);
	if (opts.timeout < 100)
		opts.timeout = 100;
	opts.tries = 2;
	/* Files first, then DNS: "localhost" and other /etc/hosts names never leave the machine. */
	opts.lookups = (char *)(uintptr_t) "fb";
	rc = ares_init_options(&r->channel, &opts,
			       ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
				       ARES_OPT_LOOKUPS);
	if (rc != ARES_SUCCESS) {
		log_error("c-ares: %s", ares_strerror(rc));
		free(r);
		return ST_ESYS;
	}
	ev_timer_init(&r->timer, resolver_timer_cb, 0., 0.);
	*out = r;
	return ST_OK;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	/* Pending callbacks run with ARES_EDESTRUCTION and free their queries. */
	ares_destroy(r->channel);
	ev_timer_stop(r->loop, &r->timer);
	while (r->ios != NULL) {
		struct resolver_io *rio = r->ios;

		r->ios = rio->next;
		ev_io_stop(r->loop, &rio->io);
		free(rio);
	}
	free(r);
}

static int resolve_status(int ares_status)
{
	switch (ares_status) {
	case ARES_SUCCESS:
		return ST_OK;
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
	case ARES_ENONAME:
		return ST_ENOTFOUND;
	case ARES_ETIMEOUT:
	case ARES_ECONNREFUSED:
	case ARES_ESERVFAIL:
		return ST_ETIMEDOUT;
	case ARES_EBADNAME:
	case ARES_EBADFLAGS:
		return ST_EINVAL;
	case ARES_ENOMEM:
		return ST_ENOMEM;
	default:
		return ST_ENOTFOUND;
	}
}

static void resolve_done_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct resolve_query *q = arg;
	struct addr addrs[RESOLVE_MAX_ADDRS];
	size_t n = 0;
	int st;

	UNUSED(timeouts);
	if (q->completed != NULL)
		*q->completed = true;
	if (q->fn == NULL)
		goto out; /* cancelled: the session is gone */
	st = resolve_status(status);
	if (st == ST_OK && res != NULL) {
		for (struct ares_addrinfo_node *ai = res->nodes; ai != NULL && n < RESOLVE_MAX_ADDRS;
		     ai = ai->ai_next) {
			if (addr_from_sockaddr(&addrs[n], ai->ai_addr, (socklen_t)ai->ai_addrlen) != ST_OK)
				continue;
			addr_set_port(&addrs[n], q->port);
			n++;
		}
	}
	if (st == ST_OK && n == 0)
		st = ST_ENOTFOUND;
	q->fn(q->arg, st, addrs, n);
out:
	if (res != NULL)
		ares_freeaddrinfo(res);
	free(q);
}

/* RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1, plus '_' which real names use: anything else is
 * rejected here rather than sent to a DNS server. Numeric IPv4/IPv6 literals are accepted too. */
static bool resolve_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 253 + 1)
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_' || c == ':'))
			return false;
	}
	return true;
}

int resolver_query(struct resolver *r, const char *name, uint16_t port, resolve_fn *fn, void *arg,
		   struct resolve_query **out)
{
	struct ares_addrinfo_hints hints;
	struct resolve_query *q;
	bool completed = false;

	if (!resolve_name_ok(name))
		return ST_EINVAL;
	q = malloc(sizeof(*q));
	if (q == NULL)
		return ST_ENOMEM;
	q->fn = fn;
	q->arg = arg;
	q->port = port;
	q->completed = &completed;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC; /* A and AAAA */
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* c-ares may answer at once (numeric names, /etc/hosts), calling fn and freeing q. */
	ares_getaddrinfo(r->channel, name, NULL, &hints, resolve_done_cb, q);
	if (completed) {
		*out = NULL;
	} else {
		q->completed = NULL;
		*out = q;
	}
	resolver_reschedule(r);
	return ST_OK;
}

void resolve_cancel(struct resolve_query *q)
{
	q->fn = NULL;
}
