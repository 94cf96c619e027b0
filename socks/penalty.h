/*
 * socks/penalty.h - the encrypted link's penalty box and its caps on unauthenticated connections
 * (LINK.md, server step 1).
 *
 * Per source (IPv4 address, or IPv6 /64, as socks/throttle.h counts them): PENALTY_FAILURES silent
 * failures within PENALTY_WINDOW seconds put the source in the box for PENALTY_BOX_MIN seconds,
 * doubling each time it is boxed again while its record lasts, up to PENALTY_BOX_MAX. A boxed
 * source is served nothing: its connections go silent at once, without a hash or a DH.
 *
 * Unauthenticated connections (accepted, handshake not finished) are counted per source and in
 * total. Beyond PENALTY_UNAUTH_PER_SOURCE a source's newcomers go silent (no crypto spent on
 * them); beyond the total cap a connection is closed at once: the server is flooded and keeps its
 * descriptors for clients that finish their handshake.
 *
 * A bounded table (the stalest slot is reused when full); thread-safe behind one mutex, touched
 * only by link handshakes, never by the plain SOCKS path. Times are monotonic seconds.
 */
#ifndef SHROUD_SOCKS_PENALTY_H
#define SHROUD_SOCKS_PENALTY_H

#include <stdbool.h>
#include <stddef.h>

#include "base/addr.h"
#include "base/compiler.h"

#define PENALTY_WINDOW 60.0
#define PENALTY_FAILURES 5
#define PENALTY_BOX_MIN 15.0
#define PENALTY_BOX_MAX 600.0
#define PENALTY_UNAUTH_PER_SOURCE 64
#define PENALTY_UNAUTH_TOTAL 4096

struct penalty;

/* ST_OK or ST_ENOMEM. */
NODISCARD int penalty_new(size_t slots, struct penalty **out);
void penalty_free(struct penalty *p);

enum penalty_verdict {
	PENALTY_SERVE,	/* go on with the handshake */
	PENALTY_SILENT, /* boxed, or too many of its own unauthenticated: silent until the deadline */
	PENALTY_CLOSE,	/* too many unauthenticated connections in all: close now */
};

/*
 * A connection from source was accepted: count it as unauthenticated (every verdict counts it;
 * the caller calls penalty_unauth_done once when its handshake ends, whatever the end).
 */
enum penalty_verdict penalty_admit(struct penalty *p, const struct addr *source, double now);

/* The connection penalty_admit counted finished its handshake or closed. */
void penalty_unauth_done(struct penalty *p, const struct addr *source);

/* A silent failure from source (bad mac1, unknown key, replay, clock, ...). */
void penalty_fail(struct penalty *p, const struct addr *source, double now);

/* True while source is in the box. */
bool penalty_boxed(struct penalty *p, const struct addr *source, double now);

#endif
