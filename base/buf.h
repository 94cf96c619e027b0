/*
 * base/buf.h - a fixed-capacity byte buffer: base, capacity, head, tail.
 *
 * Readable bytes are [head, tail); free room for producers is [tail, cap). When the buffer becomes
 * empty, head and tail go back to 0, so a relay buffer that keeps up never needs compaction.
 * The buffer never grows: fixed capacity per direction is what gives the relay its backpressure.
 *
 * Storage is owned by whoever called buf_alloc (freed by buf_free) or lent to buf_init (never freed
 * here). No function in this file logs, blocks or allocates, except buf_alloc.
 */
#ifndef SHROUD_BASE_BUF_H
#define SHROUD_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

struct buf {
	uint8_t *base;
	size_t cap;
	size_t head;
	size_t tail;
};

/* Lend existing storage to b (not owned). */
void buf_init(struct buf *b, uint8_t *storage, size_t cap);

/* Allocate cap bytes of storage. ST_OK, or ST_ENOMEM leaving b empty with no storage. */
NODISCARD int buf_alloc(struct buf *b, size_t cap);

/* Free storage obtained by buf_alloc; b becomes empty with no storage. Safe on an empty struct. */
void buf_free(struct buf *b);

/* Storage when bytes first flow: buf_alloc(b, cap) unless b already has some. ST_OK or ST_ENOMEM. */
NODISCARD int buf_ready(struct buf *b, size_t cap);

static inline size_t buf_len(const struct buf *b) { return b->tail - b->head; }
static inline const uint8_t *buf_data(const struct buf *b) { return b->base + b->head; }
static inline int buf_empty(const struct buf *b) { return b->head == b->tail; }

/* Room at the end for producers, after moving pending data to the front if that makes room. */
size_t buf_room(struct buf *b);
static inline uint8_t *buf_space(struct buf *b) { return b->base + b->tail; }

/* Room at the end, after moving pending data to the front when the end has less than `want` and
 * that gives more: for a producer that needs `want` contiguous bytes (a whole record). */
size_t buf_room_for(struct buf *b, size_t want);

/* Record that n bytes were written at buf_space(); n must be <= buf_room(). */
void buf_produce(struct buf *b, size_t n);

/* Drop n readable bytes from the front; n must be <= buf_len(). Resets to 0 when empty. */
void buf_consume(struct buf *b, size_t n);

/* Append len bytes, compacting first if that makes them fit. ST_OK, or ST_EFULL (nothing
 * written) when they do not fit. */
NODISCARD int buf_append(struct buf *b, const void *p, size_t len);

#endif
