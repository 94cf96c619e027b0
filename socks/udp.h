/*
 * socks/udp.h - one UDP ASSOCIATE (RFC 1928 §4, §7): the relay between a client's datagrams and
 * the targets they name, owned by the session of its TCP control connection.
 *
 * Sockets of an association, all read by ev_io watchers on the session's worker loop:
 * - the relay socket, bound to the address the client reached the control connection on (port 0:
 *   the kernel picks one), named in the reply. Only datagrams from the client's address are taken;
 *   the client's port is fixed by the request's DST.PORT when it is not zero (and DST.ADDR is zero
 *   or the client's own address), else by the first datagram.
 * - one outgoing socket per (family, egress address), bound to the egress address chosen exactly as
 *   for a TCP CONNECT (socks/route.h: the key of (user, session, site), the same TTL and rotation;
 *   IP_FREEBIND/IPV6_FREEBIND for prefix entries); with an empty pool, one per family bound to the
 *   wildcard address (the system's default source). At most UDP_SOCKS_MAX; the one used least
 *   recently closes to make room for another.
 *
 * What is dropped, never ending the association: a datagram from another address or port than the
 * client's; a malformed header; FRAG != 0 (fragmentation is not supported); a target refused by
 * server_target_denied; a target of no family the pool has; a datagram over the rate; a reply
 * from a peer the client never sent to (no open reflector: UDP_PEERS_MAX permitted peers, the least
 * recently used one forgotten first); anything that would not fit a bounded table or queue.
 *
 * Sticky keys: with a TTL the egress follows the key as a new TCP connection would at that moment
 * (it moves when the key's window ends). With TTL 0, where TCP draws a new address per connection,
 * an association draws one per site and keeps it for its life: a flow to one site never changes its
 * source under the client, and the next association rotates.
 *
 * Names: domain targets are resolved with the worker's c-ares resolver (never blocking) and the
 * answer is kept for the association's life (UDP_NAMES_MAX names, the least recently used one
 * forgotten first; a failure is remembered UDP_NAME_RETRY seconds). Datagrams waiting for an answer
 * are held, at most UDP_HELD_MAX of them and UDP_HELD_BYTES in all; more are dropped.
 *
 * Counters: payload bytes and datagrams per outgoing socket go to the worker's usage (user and
 * egress); each outgoing socket counts as one association on its egress. Handed over by
 * udp_assoc_flush (the session calls it every UDP_FLUSH_INTERVAL) and when a socket or the
 * association closes.
 *
 * Privacy: destinations appear in log_debug lines only.
 */
#ifndef SHROUD_SOCKS_UDP_H
#define SHROUD_SOCKS_UDP_H

#include "base/addr.h"
#include "base/compiler.h"
#include "egress/params.h"
#include "socks/proto.h"

#define UDP_SOCKS_MAX 32      /* outgoing sockets per association */
#define UDP_NAMES_MAX 16      /* resolved names kept per association */
#define UDP_NAME_RETRY 5.0    /* seconds a failed resolution is remembered */
#define UDP_HELD_MAX 16	      /* datagrams held for pending names, per association */
#define UDP_HELD_BYTES 65536  /* payload bytes held for pending names, per association */
#define UDP_ROTATIONS_MAX 64  /* TTL 0: sites that keep their drawn key, per association */
#define UDP_BATCH 64	      /* datagrams read per callback: fairness between sockets */
#define UDP_FLUSH_INTERVAL 10.0 /* seconds between two hand-overs of a live association's counters */

struct worker;
struct udp_assoc;

/*
 * Open an association for the client of a control connection on worker w.
 * ctl_fd: the control connection (the relay socket is bound to its local address); client: its
 * peer; expect: DST.ADDR/DST.PORT of the request; params: the login's user and parameters (copied).
 * Takes one of the user's --udp-per-user places (the key is the user name, or without a login the
 * client's IPv4 address or IPv6 /64). On ST_OK, *out is the association and *relay the address for the reply.
 * ST_EFULL: the user holds its limit already. ST_ESYS (errno set) or ST_ENOMEM. Never logs at the
 * default level.
 */
NODISCARD int udp_assoc_new(struct worker *w, int ctl_fd, const struct addr *client,
			    const struct socks_target *expect, const struct egress_params *params,
			    struct udp_assoc **out, struct addr *relay);

/* When a datagram was last relayed either way (ev_now of the worker's loop), or the association
 * opened. The session ends an idle association. */
double udp_assoc_last_active(const struct udp_assoc *a);

/* Hand the counters so far to the worker's usage. */
void udp_assoc_flush(struct udp_assoc *a);

/* Close every socket, cancel pending resolutions, hand the counters over, give the user's place
 * back, free. NULL is fine. */
void udp_assoc_free(struct udp_assoc *a);

#endif
