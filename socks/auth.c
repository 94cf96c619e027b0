/* socks/auth.c - the password verifier threads. */
#include "socks/auth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "crypto/pwhash.h"

struct auth_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct auth_job *head, *tail;
	size_t queued, max_queue;
	bool stopping;
	unsigned nthreads;
	pthread_t threads[];
};

struct auth_job *auth_job_new(struct auth_sink *sink)
{
	struct auth_job *job = calloc(1, sizeof(*job));

	if (job != NULL)
		job->sink = sink;
	return job;
}

bool auth_job_matches(const struct auth_job *job, const char *user, const char *hash,
		      const char *pass, size_t plen, bool decoy)
{
	return job->nowners < AUTH_JOB_OWNERS && job->decoy == decoy && job->plen == plen &&
	       strcmp(job->user, user) == 0 && strcmp(job->hash, hash) == 0 &&
	       pwhash_password_equal(job->pass, pass, plen);
}

void auth_job_free(struct auth_job *job)
{
	if (job == NULL)
		return;
	explicit_bzero(job->pass, sizeof(job->pass));
	free(job);
}

static void auth_sink_put(struct auth_sink *sink, struct auth_job *job)
{
	pthread_mutex_lock(&sink->lock);
	job->next = sink->done;
	sink->done = job;
	pthread_mutex_unlock(&sink->lock);
	ev_async_send(sink->loop, &sink->async);
}

static void *auth_thread_main(void *arg)
{
	struct auth_pool *pool = arg;

	for (;;) {
		struct auth_job *job;

		pthread_mutex_lock(&pool->lock);
		while (pool->head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->stopping) {
			pthread_mutex_unlock(&pool->lock);
			return NULL;
		}
		job = pool->head;
		pool->head = job->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pool->queued--;
		pthread_mutex_unlock(&pool->lock);

		job->result = pwhash_verify(job->hash, job->pass, job->plen) == ST_OK && !job->decoy
				      ? ST_OK
				      : ST_EAUTH;
		/* The worker still needs the password once, to key its cache; auth_job_free wipes it. */
		auth_sink_put(job->sink, job);
	}
}

int auth_pool_new(unsigned threads, size_t max_queue, struct auth_pool **out)
{
	struct auth_pool *pool;
	unsigned started;

	pool = calloc(1, sizeof(*pool) + threads * sizeof(pthread_t));
	if (pool == NULL)
		return ST_ENOMEM;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	pool->max_queue = max_queue;
	for (started = 0; started < threads; started++) {
		int rc = pthread_create(&pool->threads[started], NULL, auth_thread_main, pool);

		if (rc != 0) {
			errno = rc;
			break;
		}
	}
	pool->nthreads = started;
	if (started < threads) {
		auth_pool_free(pool);
		return ST_ESYS;
	}
	*out = pool;
	return ST_OK;
}

int auth_pool_submit(struct auth_pool *pool, struct auth_job *job)
{
	int rc = ST_OK;

	job->next = NULL;
	pthread_mutex_lock(&pool->lock);
	if (pool->queued >= pool->max_queue || pool->stopping) {
		rc = ST_EFULL;
	} else {
		if (pool->tail != NULL)
			pool->tail->next = job;
		else
			pool->head = job;
		pool->tail = job;
		pool->queued++;
		pthread_cond_signal(&pool->cond);
	}
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

void auth_pool_free(struct auth_pool *pool)
{
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	while (pool->head != NULL) {
		struct auth_job *job = pool->head;

		pool->head = job->next;
		auth_job_free(job);
	}
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

void auth_sink_init(struct auth_sink *sink, struct ev_loop *loop,
		    void (*cb)(struct ev_loop *, ev_async *, int))
{
	pthread_mutex_init(&sink->lock, NULL);
	sink->done = NULL;
	sink->loop = loop;
	ev_async_init(&sink->async, cb);
}

struct auth_job *auth_sink_take(struct auth_sink *sink)
{
	struct auth_job *list;

	pthread_mutex_lock(&sink->lock);
	list = sink->done;
	sink->done = NULL;
	pthread_mutex_unlock(&sink->lock);
	return list;
}

void auth_sink_destroy(struct auth_sink *sink)
{
	struct auth_job *job = auth_sink_take(sink);

	while (job != NULL) {
		struct auth_job *next = job->next;

		auth_job_free(job);
		job = next;
	}
	pthread_mutex_destroy(&sink->lock);
}
