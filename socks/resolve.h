/*
 * socks/resolve.h - asynchronous name resolution (A and AAAA) with c-ares on a libev loop.
 *
 * One resolver per worker loop; never blocks the loop (no getaddrinfo). /etc/hosts is honoured
 * (c-ares' "files" lookup), so "localhost" resolves without a DNS server.
 *
 * A query's callback runs on the loop exactly once, unless the query was cancelled first; a
 * cancelled query's late answer is dropped here, so a session that closed is never called back.
 */
#ifndef SHROUD_SOCKS_RESOLVE_H
#define SHROUD_SOCKS_RESOLVE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"

#define RESOLVE_MAX_ADDRS 8

struct resolver;
struct resolve_query;

/*
 * status: ST_OK with 1..n addresses (IPv4 and IPv6 mixed, in c-ares' RFC 6724 order, port set);
 * ST_ENOTFOUND (no such name, or no address), ST_ETIMEDOUT (no answer), ST_EINVAL (not a valid
 * host name), or another negative status. The addresses live only during the call.
 */
typedef void resolve_fn(void *arg, int status, const struct addr *addrs, size_t n);

/* A resolver on loop. ST_OK, ST_ENOMEM, or ST_ESYS when c-ares could not start. */
NODISCARD int resolver_new(struct ev_loop *loop, double timeout, struct resolver **out);

/* Cancel every pending query (callbacks are not called) and free. */
void resolver_free(struct resolver *r);

/*
 * Resolve name (NUL-terminated) for port. On ST_OK, either the callback already ran (an answer
 * from /etc/hosts or a numeric name) and *out is NULL, or *out is a handle valid until the
 * callback runs or resolve_cancel is called. ST_EINVAL (not a host name: callback not called).
 * Allocates one small struct; never blocks, never logs.
 */
NODISCARD int resolver_query(struct resolver *r, const char *name, uint16_t port, resolve_fn *fn,
			     void *arg, struct resolve_query **out);

/* The callback of q will not be called; its memory is reclaimed when c-ares finishes with it. */
void resolve_cancel(struct resolve_query *q);

#endif
