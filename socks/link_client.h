/*
 * socks/link_client.h - the client side of the encrypted link (LINK.md): `shroud link`.
 *
 * SOCKS5 for the applications of this machine, on loopback only (a local open proxy would hand the
 * link to anyone who can reach the port). Each CONNECT becomes one TCP connection to the link
 * server carrying one Noise session: the first flight in one write, the server's reply within
 * LINK_REPLY_TIMEOUT, a CONNECT record with the target exactly as the application sent it (a
 * domain name is resolved by the server, never here: no DNS query names a destination) and the
 * username's parameter part, then CONNECT_REPLY, whose REP and BND become the SOCKS reply. Then
 * DATA records both ways, EOF for a half-close (shutdown(SHUT_WR) on the far side), RESET or a TCP
 * close without EOF/RESET as a reset (SO_LINGER 0) of the application's connection, REKEY when
 * link_rekey_due says so. Every buffer has a fixed capacity per direction: a full one stops
 * reading its source, so a slow application slows the server down and the reverse.
 *
 * SOCKS5 towards the applications (RFC 1928, RFC 1929): method 0x02 when offered (the password is
 * ignored: the link's keys are the credentials; the username's part after its first '-', e.g.
 * "session-s1-ttl-0" of "anything-session-s1-ttl-0", must follow egress/params.h's grammar and
 * travels in CONNECT's params, so egress selection works as on the server's plain port), else
 * 0x00. BIND and UDP ASSOCIATE are refused with REP 0x07.
 *
 * When the link fails for one application connection (the server cannot be reached, does not
 * answer, answers with a reply that does not decrypt, closes), the application gets REP 0x01 and
 * one log line at warn level names the likely cause (keys, PSK, revocation, clock). No log line
 * at info level or above names a destination or a username parameter.
 *
 * One thread and one libev loop (the default loop: it owns SIGINT and SIGTERM, which stop
 * link_client_probe and link_client_run). Module code: it logs through base/log, never prints.
 */
#ifndef SHROUD_SOCKS_LINK_CLIENT_H
#define SHROUD_SOCKS_LINK_CLIENT_H

#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"

struct link_client_key;

#define LINK_CLIENT_CONNS_DEFAULT 1024 /* open application connections at most, by default */
#define LINK_CLIENT_ADDRS_MAX 8	       /* server addresses kept from a name's resolution */
#define LINK_CLIENT_WHY_MAX 256	       /* room for link_client_new's message */

struct link_client_config {
	struct addr listen;	 /* where applications connect: loopback only; port 0 picks one */
	const char *server_host; /* the access key's HOST: a name, or an address (no brackets) */
	uint16_t server_port;
	unsigned max_conns; /* open application connections at most; 0: LINK_CLIENT_CONNS_DEFAULT.
			     * At the cap the listener pauses until one ends. */
};

struct link_client;

/*
 * Resolve the server's host (an address literal directly; a name with getaddrinfo, which blocks:
 * call this before anything else waits on the loop), bind and listen on cfg->listen, and set up
 * the loop and its signal watchers. On success the client owns key (freed by link_client_free);
 * on failure the caller still does, and why (NUL-terminated) says what failed:
 *   ST_EPERM      cfg->listen is not a loopback address
 *   ST_ENOTFOUND  the server's name does not resolve
 *   ST_ESYS       the listener could not be created or bound (errno kept)
 *   ST_ENOMEM     out of memory; ST_EINVAL: a bad argument (no host, port 0)
 */
NODISCARD int link_client_new(const struct link_client_config *cfg, struct link_client_key *key,
			      struct link_client **out, char why[static LINK_CLIENT_WHY_MAX]);

/* The bound listening address (port 0 resolved). */
const struct addr *link_client_bound(const struct link_client *c);

/*
 * One probe handshake, the whole of it, before applications are served: connect to the server
 * (each resolved address in turn until one accepts, LINK_REPLY_TIMEOUT each), send the first
 * flight, read and check the reply, then close the connection without a CONNECT. Runs the loop
 * until done; later connections use the address that accepted. addr receives the server address
 * tried last ("1.2.3.4:443"). Returns:
 *   ST_OK          the server answered and the reply decrypted: the keys and the clock are right
 *   ST_ESYS        no address accepted a TCP connection (errno: the last error, ETIMEDOUT when a
 *                  connect took longer than LINK_REPLY_TIMEOUT)
 *   ST_ETIMEDOUT   connected, but no reply within LINK_REPLY_TIMEOUT: the server stays silent for
 *                  a wrong server key or PSK, a revoked or unknown client key, a clock more than
 *                  LINK_CLOCK_SKEW seconds off (or a penalized source address)
 *   ST_ECRYPTO     a reply came and did not decrypt: the wrong PSK or server key
 *   ST_EPROTO      the server closed the connection without a reply (not a link port?)
 *   ST_AGAIN       SIGINT or SIGTERM arrived first
 */
NODISCARD int link_client_probe(struct link_client *c, char addr[static ADDR_STRLEN]);

/*
 * Serve applications until SIGINT or SIGTERM. Then every open connection is aborted: its
 * application sees a reset (never a clean end of a stream that did not end), the server a RESET
 * record where the socket takes it. ST_OK.
 */
NODISCARD int link_client_run(struct link_client *c);

/* Close everything, wipe and free the keys and every session's state. NULL is a no-op. */
void link_client_free(struct link_client *c);

#endif
