/*
 * socks/pipes.h - a worker's pool of pipes for the zero-copy relay (splice(2)).
 *
 * A relayed direction between two plain sockets moves its bytes socket -> pipe -> socket with
 * splice, so they never cross into user space. A pipe is taken from the pool when bytes start to
 * flow that way and given back as soon as it is empty again: like the relay's buffers, pipes
 * follow the bytes in flight, not the number of open connections (an idle connection holds no
 * pipe and no descriptor but its two sockets). The pool keeps a bounded number of empty pipes so
 * that a busy worker does not pay pipe2 + fcntl for each burst.
 *
 * One pool per worker thread: no locking. Never logs.
 */
#ifndef SHROUD_SOCKS_PIPES_H
#define SHROUD_SOCKS_PIPES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/compiler.h"

#define PIPES_KEEP 32		 /* empty pipes kept per worker */

/* One pipe in use by one direction of a session: fd[0] read end, fd[1] write end. */
struct pipe_buf {
	int fd[2];    /* -1, -1 while the direction has no pipe */
	uint32_t len; /* bytes in the pipe: spliced in and not yet out */
	uint32_t cap; /* what the kernel gave the pipe (F_GETPIPE_SZ): the relay's backpressure */
};

struct pipe_pool {
	struct pipe_buf free[PIPES_KEEP];
	size_t nfree;
	unsigned created; /* pipe2 calls so far, for tests and the benchmark */
};

/* An empty pool. */
void pipe_pool_init(struct pipe_pool *pool);

/* Close every pipe kept. */
void pipe_pool_destroy(struct pipe_pool *pool);

/* A direction without a pipe. */
void pipe_buf_init(struct pipe_buf *p);

/*
 * Give p (which holds none) an empty pipe, from the pool or new. ST_OK, or ST_ESYS (errno: EMFILE,
 * ENFILE, ...) with p unchanged: the caller relays through its buffer instead.
 */
NODISCARD int pipe_pool_get(struct pipe_pool *pool, struct pipe_buf *p);

/* Give p's pipe back: kept when it is empty and the pool has room, else closed. p has none after. */
void pipe_pool_put(struct pipe_pool *pool, struct pipe_buf *p);

/*
 * Move up to the pipe's free room from socket fd into p (splice, non-blocking). Returns the bytes
 * moved, 0 at the socket's end of stream, -1 when the socket has nothing now, -2 on an error.
 */
ssize_t pipe_buf_fill(struct pipe_buf *p, int fd);

/*
 * Move what p holds to socket fd until it is empty or the socket is full. Returns the bytes
 * moved (possibly 0), or -2 on an error (the peer reset, ...).
 */
ssize_t pipe_buf_drain(struct pipe_buf *p, int fd);

#endif
