/*
 * socks/auth.h - password verification off the event loops.
 *
 * Argon2id verification takes tens of milliseconds by design, so no loop may run it. A worker fills
 * an auth_job and submits it to the pool; one of the pool's threads verifies it and hands it back to
 * the worker's auth_sink, which wakes the worker's loop (ev_async). The worker then takes the
 * finished jobs and resumes their sessions on its own thread.
 *
 * Ownership: a submitted job belongs to the pool until it reaches the sink, then to the worker, which
 * frees it with auth_job_free (this wipes the password). The sessions waiting for a job are its
 * owners: a login that brings the same credentials as a job still out joins it (auth_job_matches)
 * instead of hashing them again, so a client that opens a hundred connections at once with a
 * password not yet cached costs one Argon2id, not a hundred in a row. A session that closes while
 * its job is out clears its slot; the worker drops jobs nobody waits for when they come back.
 */
#ifndef SHROUD_SOCKS_AUTH_H
#define SHROUD_SOCKS_AUTH_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/compiler.h"
#include "socks/proto.h"
#include "store/snapshot.h"

struct auth_sink;

/* Sessions one verification may answer at most; a login past that starts another. */
#define AUTH_JOB_OWNERS 64

struct auth_job {
	/* in */
	char user[SOCKS_USER_MAX + 1]; /* for the worker's cache once verified */
	char hash[SNAPSHOT_HASH_MAX];
	char pass[SOCKS_PASS_MAX + 1];
	size_t plen;
	bool decoy; /* verified against a dummy hash for an unknown user: fails whatever the result */
	struct auth_sink *sink;
	/* Touched by the worker only: the waiting sessions (a slot is NULL once its session went
	 * away) and the worker's list of its jobs still out. */
	void *owners[AUTH_JOB_OWNERS];
	unsigned nowners;
	struct auth_job *out_next;
	/* out */
	int result; /* ST_OK or ST_EAUTH */
	struct auth_job *next;
};

/* Where finished jobs wait for their worker. Embedded in the worker. */
struct auth_sink {
	pthread_mutex_t lock;
	struct auth_job *done;
	struct ev_loop *loop;
	ev_async async; /* started by the worker with its own callback */
};

struct auth_pool;

/* Allocate a job for sink (zeroed). NULL when out of memory. */
struct auth_job *auth_job_new(struct auth_sink *sink);

/*
 * True when job verifies exactly these credentials (user name, hash, password, decoy or not) and
 * has room for one more owner. The password is compared in constant time. Worker thread only,
 * while the job is out (the pool only reads what is compared).
 */
bool auth_job_matches(const struct auth_job *job, const char *user, const char *hash,
		      const char *pass, size_t plen, bool decoy);

/* Wipe the password and free. NULL is a no-op. */
void auth_job_free(struct auth_job *job);

/* Start `threads` verifier threads with room for `max_queue` waiting jobs. ST_OK, ST_ENOMEM, ST_ESYS. */
NODISCARD int auth_pool_new(unsigned threads, size_t max_queue, struct auth_pool **out);

/* Queue a job. ST_OK (the pool owns it), or ST_EFULL (the queue is full; the caller keeps it). */
NODISCARD int auth_pool_submit(struct auth_pool *pool, struct auth_job *job);

/* Stop and join the threads; jobs still queued are freed. Jobs already finished are in their sinks. */
void auth_pool_free(struct auth_pool *pool);

/* Initialise a sink for loop; cb runs on the loop when jobs are done. Does not start the watcher. */
void auth_sink_init(struct auth_sink *sink, struct ev_loop *loop,
		    void (*cb)(struct ev_loop *, ev_async *, int));

/* Take every finished job (a list through ->next), or NULL. Called by the worker. */
struct auth_job *auth_sink_take(struct auth_sink *sink);

/* Free every job still in the sink and release the lock; the watcher must be stopped already. */
void auth_sink_destroy(struct auth_sink *sink);

#endif
