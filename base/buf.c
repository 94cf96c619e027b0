/* base/buf.c - fixed-capacity byte buffer. */
#include "base/buf.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

void buf_init(struct buf *b, uint8_t *storage, size_t cap)
{
	b->base = storage;
	b->cap = cap;
	b->head = 0;
	b->tail = 0;
}

int buf_alloc(struct buf *b, size_t cap)
{
	uint8_t *p = malloc(cap);

	buf_init(b, NULL, 0);
	if (p == NULL)
		return ST_ENOMEM;
	buf_init(b, p, cap);
	return ST_OK;
}

void buf_free(struct buf *b)
{
	free(b->base);
	buf_init(b, NULL, 0);
}

static void buf_compact(struct buf *b)
{
	memmove(b->base, b->base + b->head, b->tail - b->head);
	b->tail -= b->head;
	b->head = 0;
}

int buf_ready(struct buf *b, size_t cap)
{
	return b->base != NULL ? ST_OK : buf_alloc(b, cap);
}

size_t buf_room_for(struct buf *b, size_t want)
{
	if (b->cap - b->tail < want && b->head > 0)
		buf_compact(b);
	return b->cap - b->tail;
}

size_t buf_room(struct buf *b)
{
	/* Compact only when the end is reached: relay buffers usually drain to empty first. */
	if (b->head > 0 && b->tail == b->cap)
		buf_compact(b);
	return b->cap - b->tail;
}

void buf_produce(struct buf *b, size_t n)
{
	assert(n <= b->cap - b->tail);
	b->tail += n;
}

void buf_consume(struct buf *b, size_t n)
{
	assert(n <= b->tail - b->head);
	b->head += n;
	if (b->head == b->tail)
		b->head = b->tail = 0;
}

int buf_append(struct buf *b, const void *p, size_t len)
{
	if (len > b->cap - buf_len(b))
		return ST_EFULL;
	if (len > b->cap - b->tail)
		buf_compact(b);
	memcpy(buf_space(b), p, len);
	b->tail += len;
	return ST_OK;
}
