/*
 * socks/throttle.h - slowing down clients that keep failing to authenticate.
 *
 * Per client address (IPv4 address, or IPv6 /64), failures are counted until THROTTLE_WINDOW
 * seconds pass without one.
 * From the (THROTTLE_FREE + 1)th failure on, each failure's reply is delayed, doubling up to
 * THROTTLE_DELAY_MAX; from THROTTLE_BLOCK failures on, a password that is not already in the
 * verified-credential cache is not even hashed (Argon2id costs tens of milliseconds: an attacker
 * must not be able to spend the server's CPU). A success does not reset the count: one valid
 * account must not let its holder wash away the failures of a guessing run.
 *
 * The table has a fixed number of slots; when full, the entry whose window is oldest is reused.
 * Thread-safe (a mutex): it is touched only when a login is not answered from the cache, which is
 * never the hot path.
 */
#ifndef SHROUD_SOCKS_THROTTLE_H
#define SHROUD_SOCKS_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/addr.h"
#include "base/compiler.h"

#define THROTTLE_WINDOW 60.0    /* seconds a failure is remembered */
#define THROTTLE_FREE 3	        /* failures in the window that cost nothing */
#define THROTTLE_DELAY_MAX 8.0  /* seconds, the longest delay before a failure reply */
#define THROTTLE_BLOCK 10       /* failures in the window after which misses are not hashed */

struct throttle;

/* ST_OK or ST_ENOMEM. */
NODISCARD int throttle_new(size_t slots, struct throttle **out);
void throttle_free(struct throttle *t);

/* Record a failure from client at `now` (monotonic seconds). Returns how long to wait before
 * sending the failure reply. */
double throttle_fail(struct throttle *t, const struct addr *client, double now);

/* True when client has THROTTLE_BLOCK or more failures in the window at `now`. */
bool throttle_blocked(struct throttle *t, const struct addr *client, double now);

#endif
