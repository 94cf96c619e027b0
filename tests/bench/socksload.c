/*
 * tests/bench/socksload.c - a SOCKS5 load generator with its own echo sink.
 *
 *   socksload sink [--bulk]     a sink on 127.0.0.1 and [::1] (same port); prints "sink PORT" and
 *                               serves until killed. One thread, non-blocking. By default an echo
 *                               with per-connection buffering (probe, rate, hold) that closes
 *                               after echoing a lone 'Q'; --bulk speaks the bulk protocol (below)
 *   socksload probe COMMON      retry one full exchange until it succeeds (readiness), --seconds max
 *   socksload rate  COMMON [--threads K | --concurrency C] [--seconds T]
 *                               each thread loops: connect, greet, (log in), CONNECT, echo 1 byte,
 *                               the sink closes, close; latency percentiles of the whole exchange.
 *                               --concurrency: one thread keeps C such exchanges in flight (epoll)
 *   socksload bulk  COMMON [--conns N] [--mbytes M] [--seconds LIMIT]
 *                               N connections, each sends M MiB to a `sink --bulk` and receives M
 *                               MiB from it at the same time; every byte is a deterministic
 *                               pattern checked on arrival, at both ends
 *   socksload hold  COMMON [--conns C] [--idle S] [--pid PID]... [--seconds LIMIT]
 *                               C connections opened and proven alive by an echo; the proxy's RSS
 *                               (VmRSS of each PID and its descendants) before and while held; each
 *                               proven alive again, then closed from the sink's end; C is sized
 *                               down to what RLIMIT_NOFILE allows
 *
 *   COMMON: --proxy ADDR:PORT | --no-proxy, --target ADDR:PORT, [--user U --pass P],
 *           [--name HOST] (ATYP 3 for that name; else ATYP 1 or 4 from --target, e.g. [::1]:P)
 *
 * Each mode prints one machine-readable line on stdout ("rate conns=... cps=... p50_ms=...",
 * "bulk ... mbps=...", "hold ... kib_per_conn=..."); notes go to stderr. Exit status 0 only when
 * the scenario ran without a failed exchange (rate tolerates errors and counts them).
 * Only loopback addresses are meant here; every loop is bounded in time.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000
#define MAX_THREADS 256
#define MAX_PIDS 8
#define IO_TIMEOUT_S 10
/* The bulk pattern: PAT_LEN pseudo-random bytes, followed by a copy of its first CHUNK bytes, so
 * that CHUNK contiguous bytes can be written or compared from any offset below PAT_LEN. */
#define PAT_LEN (1u << 20)
#define CHUNK (256u * 1024u)

struct config {
	struct sockaddr_storage proxy, target;
	socklen_t proxy_len, target_len;
	bool no_proxy;
	const char *user, *pass, *name;
	int threads;
	int concurrency; /* rate: exchanges in flight on one thread (0: the blocking threads) */
	double seconds;
	long conns;
	double mbytes;
	double idle;
	int pids[MAX_PIDS];
	int npids;
};

static struct config cfg;

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Soft RLIMIT_NOFILE up to the hard one: a held connection costs a descriptor here. */
static rlim_t nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur;
}

static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(text, ':');
	size_t hl;
	int port;

	if (colon == NULL)
		return -1;
	hl = (size_t)(colon - text);
	if (text[0] == '[') {
		if (hl < 2 || text[hl - 1] != ']')
			return -1;
		text++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, text, hl);
	host[hl] = '\0';
	port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
	return -1;
}

static int read_exact(int fd, uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* RFC 1928 §3, RFC 1929 §2, RFC 1928 §4-6 on a connected blocking socket. 0 on success. */
/* RFC 1929 §2: VER ULEN UNAME PLEN PASSWD. Returns its length. */
static size_t socks_auth_msg(uint8_t *msg)
{
	size_t n = 0, ul = strlen(cfg.user), pl = strlen(cfg.pass);

	msg[n++] = 1;
	msg[n++] = (uint8_t)ul;
	memcpy(msg + n, cfg.user, ul);
	n += ul;
	msg[n++] = (uint8_t)pl;
	memcpy(msg + n, cfg.pass, pl);
	n += pl;
	return n;
}

/* RFC 1928 §4: VER CMD=CONNECT RSV ATYP DST.ADDR DST.PORT. Returns its length. */
static size_t socks_request_msg(uint8_t *msg)
{
	size_t n = 0;
	uint16_t port;

	msg[n++] = 5;
	msg[n++] = 1;
	msg[n++] = 0;
	if (cfg.target.ss_family == AF_INET)
		port = ((struct sockaddr_in *)&cfg.target)->sin_port;
	else
		port = ((struct sockaddr_in6 *)&cfg.target)->sin6_port;
	if (cfg.name != NULL) {
		size_t hl = strlen(cfg.name);

		msg[n++] = 3;
		msg[n++] = (uint8_t)hl;
		memcpy(msg + n, cfg.name, hl);
		n += hl;
	} else if (cfg.target.ss_family == AF_INET) {
		msg[n++] = 1;
		memcpy(msg + n, &((struct sockaddr_in *)&cfg.target)->sin_addr, 4);
		n += 4;
	} else {
		msg[n++] = 4;
		memcpy(msg + n, &((struct sockaddr_in6 *)&cfg.target)->sin6_addr, 16);
		n += 16;
	}
	memcpy(msg + n, &port, 2);
	return n + 2;
}

/* The length of a whole reply (RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT) from its first
 * 5 bytes, or 0 when it is malformed or not a success. */
static size_t socks_reply_len(const uint8_t r[static 5])
{
	if (r[0] != 5 || r[1] != 0)
		return 0;
	switch (r[3]) {
	case 1:
		return 4 + 4 + 2;
	case 4:
		return 4 + 16 + 2;
	case 3:
		return 4 + 1 + (size_t)r[4] + 2;
	default:
		return 0;
	}
}

static int socks_handshake(int fd)
{
	uint8_t msg[600], reply[4 + 1 + 255 + 2];
	size_t n;

	/* RFC 1928 §3: VER NMETHODS METHODS */
	msg[0] = 5;
	msg[1] = 1;
	msg[2] = cfg.user != NULL ? 2 : 0;
	if (write_all(fd, msg, 3) < 0 || read_exact(fd, reply, 2) < 0 || reply[0] != 5 ||
	    reply[1] != msg[2])
		return -1;
	if (cfg.user != NULL) {
		n = socks_auth_msg(msg);
		if (write_all(fd, msg, n) < 0 || read_exact(fd, reply, 2) < 0 || reply[1] != 0)
			return -1;
	}
	n = socks_request_msg(msg);
	if (write_all(fd, msg, n) < 0 || read_exact(fd, reply, 5) < 0)
		return -1;
	n = socks_reply_len(reply);
	if (n == 0 || read_exact(fd, reply + 5, n - 5) < 0)
		return -1;
	return 0;
}

/* A blocking socket connected to the target, through the proxy unless --no-proxy; -1 on failure.
 * Reads and writes time out, so a stuck peer cannot hold a run past its bounds. */
static int tunnel_open(void)
{
	const struct sockaddr_storage *to = cfg.no_proxy ? &cfg.target : &cfg.proxy;
	socklen_t to_len = cfg.no_proxy ? cfg.target_len : cfg.proxy_len;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int fd, one = 1;

	fd = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)to, to_len) < 0 ||
	    (!cfg.no_proxy && socks_handshake(fd) < 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One full exchange: open, echo one byte, close. 0 on success. The byte is 'Q', which the sink
 * echoes and then closes: the target closing first is the common case (a server done with its
 * answer), and it leaves TIME_WAIT at the sink's end, so no relay that binds its outgoing port
 * before connecting (dante) runs out of ephemeral ports in a long run. The proxy passing that
 * close on is part of the exchange. */
static int one_exchange(void)
{
	uint8_t c = 'Q';
	int fd = tunnel_open(), rc = -1;

	if (fd < 0)
		return -1;
	if (write_all(fd, &c, 1) == 0 && read_exact(fd, &c, 1) == 0 && c == 'Q' &&
	    read(fd, &c, 1) == 0)
		rc = 0;
	close(fd);
	return rc;
}

/* ---- rate ---------------------------------------------------------------------------------- */

static atomic_long nconns, nerrors;
static double *samples;
static atomic_long nsamples;

static void *rate_thread(void *arg)
{
	double end = *(double *)arg;

	while (now_mono() < end) {
		double t0 = now_mono();

		if (one_exchange() == 0) {
			long i = atomic_fetch_add(&nsamples, 1);

			if (i < MAX_SAMPLES)
				samples[i] = now_mono() - t0;
			atomic_fetch_add(&nconns, 1);
		} else {
			atomic_fetch_add(&nerrors, 1);
		}
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double percentile_ms(long n, double q)
{
	size_t i = (size_t)((double)n * q);

	if (n == 0)
		return 0.0;
	if (i >= (size_t)n)
		i = (size_t)n - 1;
	return samples[i] * 1e3;
}

static int run_rate(void)
{
	pthread_t th[MAX_THREADS];
	double start, end, elapsed;
	int started = 0;
	long n;

	samples = calloc(MAX_SAMPLES, sizeof(double));
	if (samples == NULL)
		return 1;
	start = now_mono();
	end = start + cfg.seconds;
	for (int i = 0; i < cfg.threads; i++) {
		if (pthread_create(&th[i], NULL, rate_thread, &end) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	elapsed = now_mono() - start;
	n = atomic_load(&nsamples);
	if (n > MAX_SAMPLES)
		n = MAX_SAMPLES;
	qsort(samples, (size_t)n, sizeof(double), cmp_double);
	printf("rate conns=%ld seconds=%.2f cps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
	       "max_ms=%.3f errors=%ld\n",
	       atomic_load(&nconns), elapsed, (double)atomic_load(&nconns) / elapsed,
	       percentile_ms(n, 0.50), percentile_ms(n, 0.90), percentile_ms(n, 0.99),
	       percentile_ms(n, 1.0), atomic_load(&nerrors));
	free(samples);
	return atomic_load(&nconns) > 0 ? 0 : 1;
}

/*
 * rate --concurrency C: one thread keeps C exchanges in flight on non-blocking sockets and epoll.
 * The same exchange as the threads' (connect, greeting, login, CONNECT, 1-byte echo, the sink's
 * close), without a thread switch at every step: on the generator's core, the proxy is what runs
 * out first, which is what a connections-per-second figure should measure.
 */
enum rate_stage { RS_CONNECT, RS_METHOD, RS_AUTH, RS_REPLY, RS_ECHO, RS_EOF };

struct rate_conn {
	int fd;
	enum rate_stage stage;
	double t0;
	uint8_t in[4 + 1 + 255 + 2];
	size_t got, need;
};

static uint8_t rate_auth[600], rate_req[300];
static size_t rate_auth_len, rate_req_len;

static void rate_conn_want(int ep, struct rate_conn *c, uint32_t events, int op)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	(void)epoll_ctl(ep, op, c->fd, &ev);
}

/* Start a new exchange in c. false when even the socket cannot be had. */
static bool rate_conn_open(int ep, struct rate_conn *c)
{
	const struct sockaddr_storage *to = cfg.no_proxy ? &cfg.target : &cfg.proxy;
	socklen_t to_len = cfg.no_proxy ? cfg.target_len : cfg.proxy_len;
	int one = 1;

	c->fd = socket(to->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return false;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->t0 = now_mono();
	c->stage = RS_CONNECT;
	c->got = 0;
	if (connect(c->fd, (const struct sockaddr *)to, to_len) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		return false;
	}
	rate_conn_want(ep, c, EPOLLOUT, EPOLL_CTL_ADD);
	return true;
}

/* Send a small message whole (the socket's buffer is empty at every step). */
static bool rate_send(int fd, const uint8_t *p, size_t n)
{
	return write(fd, p, n) == (ssize_t)n;
}

/* Move c on after an event. 1: the exchange finished, 0: going on, -1: failed. */
static int rate_conn_step(int ep, struct rate_conn *c)
{
	uint8_t q = 'Q';
	ssize_t r;

	if (c->stage == RS_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
			return -1;
		if (cfg.no_proxy) {
			if (!rate_send(c->fd, &q, 1))
				return -1;
			c->stage = RS_ECHO;
			c->need = 1;
		} else {
			uint8_t greeting[3] = { 5, 1, cfg.user != NULL ? 2 : 0 };

			if (!rate_send(c->fd, greeting, 3))
				return -1;
			c->stage = RS_METHOD;
			c->need = 2;
		}
		c->got = 0;
		rate_conn_want(ep, c, EPOLLIN, EPOLL_CTL_MOD);
		return 0;
	}
	r = read(c->fd, c->in + c->got, c->stage == RS_EOF ? 1 : c->need - c->got);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (c->stage == RS_EOF)
		return r == 0 ? 1 : -1;
	if (r <= 0)
		return -1;
	c->got += (size_t)r;
	if (c->stage == RS_REPLY && c->got == 5) {
		c->need = socks_reply_len(c->in);
		if (c->need == 0)
			return -1;
	}
	if (c->got < c->need)
		return 0;
	c->got = 0;
	switch (c->stage) {
	case RS_METHOD:
		if (c->in[0] != 5 || c->in[1] != (cfg.user != NULL ? 2 : 0))
			return -1;
		if (cfg.user != NULL) {
			c->stage = RS_AUTH;
			c->need = 2;
			return rate_send(c->fd, rate_auth, rate_auth_len) ? 0 : -1;
		}
		c->stage = RS_REPLY;
		c->need = 5;
		return rate_send(c->fd, rate_req, rate_req_len) ? 0 : -1;
	case RS_AUTH:
		if (c->in[1] != 0)
			return -1;
		c->stage = RS_REPLY;
		c->need = 5;
		return rate_send(c->fd, rate_req, rate_req_len) ? 0 : -1;
	case RS_REPLY:
		c->stage = RS_ECHO;
		c->need = 1;
		return rate_send(c->fd, &q, 1) ? 0 : -1;
	case RS_ECHO:
		if (c->in[0] != 'Q')
			return -1;
		c->stage = RS_EOF;
		return 0;
	default:
		return -1;
	}
}

static int run_rate_concurrent(void)
{
	struct rate_conn *conns = calloc((size_t)cfg.concurrency, sizeof(*conns));
	struct epoll_event evs[256];
	double start, end, elapsed;
	long n, done = 0, errors = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	samples = calloc(MAX_SAMPLES, sizeof(double));
	if (conns == NULL || samples == NULL || ep < 0)
		return 1;
	if (cfg.user != NULL)
		rate_auth_len = socks_auth_msg(rate_auth);
	rate_req_len = socks_request_msg(rate_req);
	start = now_mono();
	end = start + cfg.seconds;
	for (int i = 0; i < cfg.concurrency; i++)
		if (!rate_conn_open(ep, &conns[i]))
			conns[i].fd = -1;
	while (now_mono() < end) {
		int k = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 100);

		for (int i = 0; i < k; i++) {
			struct rate_conn *c = evs[i].data.ptr;
			int st = rate_conn_step(ep, c);

			if (st == 0)
				continue;
			if (st == 1) {
				if (done < MAX_SAMPLES)
					samples[done] = now_mono() - c->t0;
				done++;
			} else {
				errors++;
			}
			close(c->fd); /* also leaves the epoll set */
			if (!rate_conn_open(ep, c))
				c->fd = -1;
		}
	}
	elapsed = now_mono() - start;
	for (int i = 0; i < cfg.concurrency; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd); /* in flight at the end: not counted either way */
	close(ep);
	n = done < MAX_SAMPLES ? done : MAX_SAMPLES;
	qsort(samples, (size_t)n, sizeof(double), cmp_double);
	printf("rate conns=%ld seconds=%.2f cps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
	       "max_ms=%.3f errors=%ld concurrency=%d\n",
	       done, elapsed, (double)done / elapsed, percentile_ms(n, 0.50),
	       percentile_ms(n, 0.90), percentile_ms(n, 0.99), percentile_ms(n, 1.0), errors,
	       cfg.concurrency);
	free(samples);
	free(conns);
	return done > 0 ? 0 : 1;
}

static int run_probe(void)
{
	double start = now_mono(), end = start + cfg.seconds;
	struct timespec pause = { .tv_nsec = 50 * 1000 * 1000 };

	for (;;) {
		if (one_exchange() == 0) {
			printf("probe ok after %.0f ms\n", (now_mono() - start) * 1e3);
			return 0;
		}
		if (now_mono() >= end)
			break;
		/* A readiness poll, not a fixed wait: retried until the first success. */
		nanosleep(&pause, NULL);
	}
	fprintf(stderr, "probe: no echo through %s within %.0f s\n",
		cfg.no_proxy ? "the direct path" : "the proxy", cfg.seconds);
	return 1;
}

/* ---- bulk ---------------------------------------------------------------------------------- */

/*
 * The bulk protocol between this generator and `socksload sink --bulk`, inside the tunnel:
 *   client -> sink: "SLB1" INDEX (4 bytes) BYTES (8 bytes, big-endian), then BYTES pattern bytes
 *   sink -> client: BYTES pattern bytes, then one 'K' once every byte of the client's arrived intact
 * The two streams are independent, not an echo: a relay that copies one direction at a time with
 * blocking writes (microsocks) still moves both, where an echo with a bounded buffer would
 * deadlock it. Senders use sendfile from a memfd (no copy on our side); receivers compare every
 * byte against the pattern in memory.
 */
#define BULK_MAGIC "SLB1"
#define BULK_HDR 16

static uint8_t *pattern; /* PAT_LEN + CHUNK bytes, to compare against */
static int pattern_fd = -1; /* the same bytes in a memfd, to send from */

/* xorshift64*: fast and deterministic; the pattern must not repeat within a chunk. 0 or -1. */
static int pattern_make(void)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;

	pattern = malloc(PAT_LEN + CHUNK);
	if (pattern == NULL)
		return -1;
	for (size_t i = 0; i < PAT_LEN; i += 8) {
		uint64_t v;

		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		v = s * 0x2545f4914f6cdd1dull;
		memcpy(pattern + i, &v, 8);
	}
	memcpy(pattern + PAT_LEN, pattern, CHUNK);
	pattern_fd = memfd_create("socksload-pattern", MFD_CLOEXEC);
	if (pattern_fd < 0 || write_all(pattern_fd, pattern, PAT_LEN + CHUNK) < 0)
		return -1;
	return 0;
}

/* Where connection INDEX's stream starts in the pattern; the two directions differ. */
static size_t bulk_offset(uint32_t index, bool down)
{
	uint64_t off = (uint64_t)index * 7919u * 4099u + (down ? PAT_LEN / 2 : 0);

	return (size_t)(off % PAT_LEN);
}

/* Send the next piece of a pattern stream. Bytes sent (0 when the socket is full), -1 on error. */
static ssize_t pattern_send(int fd, size_t start, uint64_t *sent, uint64_t total)
{
	off_t pos = (off_t)((start + *sent) % PAT_LEN);
	uint64_t left = total - *sent;
	ssize_t w = sendfile(fd, pattern_fd, &pos, left < CHUNK ? (size_t)left : CHUNK);

	if (w < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	*sent += (uint64_t)w;
	return w;
}

/* Read and check what has arrived of a pattern stream, a few reads at most so the other direction
 * gets its turn. 0 to go on, -1 on an error or an early EOF, -2 on a wrong byte. */
static int pattern_recv(int fd, size_t start, uint64_t *got, uint64_t total, uint8_t *buf)
{
	for (int k = 0; k < 4 && *got < total; k++) {
		size_t pos = (size_t)((start + *got) % PAT_LEN);
		uint64_t left = total - *got;
		ssize_t r = read(fd, buf, left < CHUNK ? (size_t)left : CHUNK);

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (r <= 0)
			return -1;
		if (memcmp(buf, pattern + pos, (size_t)r) != 0)
			return -2;
		*got += (uint64_t)r;
	}
	return 0;
}

struct bulk_conn {
	int fd;
	uint32_t index;
	uint64_t up_sent, down_got;
	bool up_done;
};

/* Returns 1 when the connection finished and was confirmed, 0 to go on, -1 on a failure. */
static int bulk_step(struct bulk_conn *c, uint32_t events, uint64_t total, uint8_t *buf)
{
	int st;

	if ((events & (EPOLLOUT | EPOLLERR)) && c->up_sent < total &&
	    pattern_send(c->fd, bulk_offset(c->index, false), &c->up_sent, total) < 0)
		return -1;
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return 0;
	st = pattern_recv(c->fd, bulk_offset(c->index, true), &c->down_got, total, buf);
	if (st == -2)
		fprintf(stderr, "bulk: wrong byte from the sink at offset %llu\n",
			(unsigned long long)c->down_got);
	if (st < 0)
		return -1;
	if (c->down_got == total) {
		uint8_t k;
		ssize_t r = read(c->fd, &k, 1);

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (r == 1 && k == 'K')
			return 1;
		fprintf(stderr, "bulk: the sink did not confirm what it received\n");
		return -1;
	}
	return 0;
}

static int run_bulk(void)
{
	uint64_t total = (uint64_t)(cfg.mbytes * 1024.0 * 1024.0);
	struct bulk_conn *conns = calloc((size_t)cfg.conns, sizeof(*conns));
	struct epoll_event ev, evs[64];
	uint8_t *buf = malloc(CHUNK);
	double start, end, elapsed;
	long done = 0, failed = 0;
	int ep = -1, rc = 1;

	for (long i = 0; conns != NULL && i < cfg.conns; i++)
		conns[i].fd = -1;
	if (conns == NULL || buf == NULL || pattern_make() < 0 || total == 0)
		goto out;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		goto out;
	/* Handshakes and headers first, blocking: the clock measures the relay, not the setup. */
	for (long i = 0; i < cfg.conns; i++) {
		struct bulk_conn *c = &conns[i];
		uint8_t hdr[BULK_HDR];

		c->fd = tunnel_open();
		c->index = (uint32_t)i;
		memcpy(hdr, BULK_MAGIC, 4);
		for (int k = 0; k < 4; k++)
			hdr[4 + k] = (uint8_t)(c->index >> (24 - 8 * k));
		for (int k = 0; k < 8; k++)
			hdr[8 + k] = (uint8_t)(total >> (56 - 8 * k));
		if (c->fd < 0 || write_all(c->fd, hdr, sizeof(hdr)) < 0) {
			fprintf(stderr, "bulk: connection %ld could not be opened\n", i);
			goto out;
		}
		(void)fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
		ev.events = EPOLLIN | EPOLLOUT;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
			goto out;
	}
	start = now_mono();
	end = start + cfg.seconds;
	while (done + failed < cfg.conns) {
		int n = epoll_wait(ep, evs, 64, 1000);

		if (now_mono() > end) {
			fprintf(stderr, "bulk: not done within %.0f s\n", cfg.seconds);
			goto out;
		}
		for (int i = 0; i < n; i++) {
			struct bulk_conn *c = evs[i].data.ptr;
			int st = bulk_step(c, evs[i].events, total, buf);

			if (st == 0 && c->up_sent == total && !c->up_done) {
				/* All sent: wait for the rest only, or the loop would spin on EPOLLOUT. */
				ev.events = EPOLLIN;
				ev.data.ptr = c;
				(void)epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				c->up_done = true;
			}
			if (st != 0) {
				(void)epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = -1;
				if (st > 0)
					done++;
				else
					failed++;
			}
		}
	}
	elapsed = now_mono() - start;
	/* Both directions carry M per connection: the aggregate counts both. */
	printf("bulk conns=%ld mib_each_way=%g seconds=%.3f mbps=%.1f verified=%ld errors=%ld\n",
	       cfg.conns, cfg.mbytes, elapsed, (double)done * 2.0 * (double)total / elapsed / 1e6,
	       done, failed);
	rc = failed == 0 ? 0 : 1;
out:
	for (long i = 0; conns != NULL && i < cfg.conns; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	if (ep >= 0)
		close(ep);
	if (pattern_fd >= 0)
		close(pattern_fd);
	free(conns);
	free(buf);
	free(pattern);
	return rc;
}

/* ---- hold ---------------------------------------------------------------------------------- */

/* VmRSS (or, with pss, the Pss of smaps_rollup) of one process in KiB; -1 if it is gone. */
static long proc_mem_kib(int pid, bool pss)
{
	char path[64], line[256];
	const char *key = pss ? "Pss:" : "VmRSS:";
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), pss ? "/proc/%d/smaps_rollup" : "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, strlen(key)) == 0) {
			kib = atol(line + strlen(key));
			break;
		}
	}
	fclose(f);
	return kib;
}

static int proc_ppid(int pid)
{
	char path[64], line[512];
	const char *p;
	int ppid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	/* proc(5): "pid (comm) state ppid ...", comm may hold spaces and parentheses. */
	if (fgets(line, sizeof(line), f) != NULL && (p = strrchr(line, ')')) != NULL)
		(void)sscanf(p + 1, " %*c %d", &ppid);
	fclose(f);
	return ppid;
}

/* Memory of the --pid processes and all their descendants (dante forks its workers). */
static long proxy_mem_kib(bool pss, int *nproc)
{
	int *pids = NULL, *ppids = NULL, n = 0, cap = 0;
	bool *in = NULL;
	struct dirent *de;
	long total = 0;
	bool grew = true;
	DIR *d;

	*nproc = 0;
	d = opendir("/proc");
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		if (n == cap) {
			int *np, *npp;

			cap = cap ? cap * 2 : 1024;
			np = realloc(pids, (size_t)cap * sizeof(int));
			if (np == NULL)
				break;
			pids = np;
			npp = realloc(ppids, (size_t)cap * sizeof(int));
			if (npp == NULL)
				break;
			ppids = npp;
		}
		pids[n] = atoi(de->d_name);
		ppids[n] = proc_ppid(pids[n]);
		n++;
	}
	closedir(d);
	in = calloc((size_t)n + 1, sizeof(bool));
	if (in == NULL) {
		total = -1;
		goto out;
	}
	for (int i = 0; i < n; i++)
		for (int k = 0; k < cfg.npids; k++)
			if (pids[i] == cfg.pids[k])
				in[i] = true;
	while (grew) {
		grew = false;
		for (int i = 0; i < n; i++) {
			if (in[i])
				continue;
			for (int j = 0; j < n; j++) {
				if (in[j] && ppids[i] == pids[j]) {
					in[i] = grew = true;
					break;
				}
			}
		}
	}
	for (int i = 0; i < n; i++) {
		long kib;

		if (!in[i] || (kib = proc_mem_kib(pids[i], pss)) < 0)
			continue;
		total += kib;
		(*nproc)++;
	}
out:
	free(in);
	free(pids);
	free(ppids);
	return total;
}

/* "Max open files" soft limit of a process, from /proc/PID/limits; 0 if unknown. */
static long proc_nofile(int pid)
{
	char path[64], line[256];
	long soft = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/limits", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "Max open files", 14) == 0) {
			soft = atol(line + 14);
			break;
		}
	}
	fclose(f);
	return soft;
}

static int *hold_fds;
static atomic_long hold_next, hold_failed;

static void *hold_open_thread(void *arg)
{
	double end = *(const double *)arg;

	for (;;) {
		long i = atomic_fetch_add(&hold_next, 1);

		if (i >= cfg.conns)
			break;
		if (now_mono() > end) {
			/* --seconds bounds the opening: the rest count as failed */
			atomic_fetch_add(&hold_failed, 1);
			continue;
		}
		hold_fds[i] = tunnel_open();
		if (hold_fds[i] < 0)
			atomic_fetch_add(&hold_failed, 1);
	}
	return NULL;
}

/* Send each open connection 8 bytes naming it and this round, then collect every echo, polling
 * all of them under one deadline: quick for thousands, and a hung one cannot stall the rest.
 * A connection that fails is closed and no longer counted. Round 0 is the release: a single 'Q',
 * which the sink echoes and then closes, so that the proxies see the target close first (as in
 * the rate scenario); what is counted is an echo followed by the proxy passing the close on. */
static long hold_check(uint32_t round)
{
	struct pollfd *pf = calloc((size_t)cfg.conns, sizeof(*pf));
	long *idx = calloc((size_t)cfg.conns, sizeof(long));
	bool *echoed = calloc((size_t)cfg.conns, sizeof(bool));
	double end = now_mono() + IO_TIMEOUT_S;
	long alive = 0, waiting = 0;

	if (pf == NULL || idx == NULL || echoed == NULL)
		goto out;
	for (long i = 0; i < cfg.conns; i++) {
		/* round first: 1 or 2, so a message never begins with the sink's 'Q' */
		uint32_t msg[2] = { round, (uint32_t)i };
		uint8_t q = 'Q';

		if (hold_fds[i] < 0)
			continue;
		if ((round > 0 ? write_all(hold_fds[i], (const uint8_t *)msg, 8)
			       : write_all(hold_fds[i], &q, 1)) < 0) {
			close(hold_fds[i]);
			hold_fds[i] = -1;
			continue;
		}
		pf[waiting].fd = hold_fds[i];
		pf[waiting].events = POLLIN;
		idx[waiting++] = i;
	}
	while (waiting > 0) {
		double left = end - now_mono();
		long kept = 0;
		int n;

		if (left <= 0)
			break;
		n = poll(pf, (nfds_t)waiting, (int)(left * 1e3) + 1);
		if (n < 0 && errno != EINTR)
			break;
		for (long k = 0; k < waiting; k++) {
			long i = idx[k];
			uint32_t msg[2];
			uint8_t q;

			if (pf[k].revents == 0) {
				pf[kept] = pf[k];
				idx[kept++] = i;
				continue;
			}
			/* Readable: the bytes are one segment; SO_RCVTIMEO bounds a straggler. */
			if (round > 0 && read_exact(hold_fds[i], (uint8_t *)msg, 8) == 0 &&
			    msg[0] == round && msg[1] == (uint32_t)i) {
				alive++;
				continue;
			}
			if (round == 0 && !echoed[i] && read_exact(hold_fds[i], &q, 1) == 0 && q == 'Q') {
				echoed[i] = true; /* now the close */
				pf[kept] = pf[k];
				idx[kept++] = i;
				continue;
			}
			if (round == 0 && echoed[i] && read(hold_fds[i], &q, 1) == 0)
				alive++;
			close(hold_fds[i]);
			hold_fds[i] = -1;
		}
		waiting = kept;
	}
	for (long k = 0; k < waiting; k++) {
		close(hold_fds[idx[k]]);
		hold_fds[idx[k]] = -1;
	}
out:
	free(pf);
	free(idx);
	free(echoed);
	return alive;
}

static int run_hold(void)
{
	rlim_t own = nofile_raise();
	long want = cfg.conns, cap, proxy_nofile = 0, opened, alive_start, alive_end, released;
	long rss_before = -1, rss_held = -1, pss_before = -1, pss_held = -1;
	struct timespec idle = { .tv_sec = (time_t)cfg.idle,
				 .tv_nsec = (long)((cfg.idle - (double)(time_t)cfg.idle) * 1e9) };
	pthread_t th[8];
	int nproc = 0, started = 0;
	double open_end;

	/* Descriptors per held connection: 1 here and 1 in the sink, which runs under the same
	 * limit; 2 in a proxy (client side and target side), hence (limit - reserve) / 2. */
	cap = (long)own - 64;
	for (int k = 0; k < cfg.npids; k++) {
		long l = proc_nofile(cfg.pids[k]);

		if (l > 0 && (proxy_nofile == 0 || l < proxy_nofile))
			proxy_nofile = l;
	}
	if (!cfg.no_proxy) {
		long lim = proxy_nofile > 0 ? proxy_nofile : (long)own;

		if ((lim - 64) / 2 < cap)
			cap = (lim - 64) / 2;
	}
	if (cap < 1)
		cap = 1;
	if (cfg.no_proxy)
		fprintf(stderr, "hold: RLIMIT_NOFILE %llu here; no proxy: 1 descriptor per connection "
				"here and 1 in the sink",
			(unsigned long long)own);
	else
		fprintf(stderr, "hold: RLIMIT_NOFILE %llu here, %ld in the proxy; a relayed connection "
				"takes 2 descriptors in the proxy, 1 here and 1 in the sink",
			(unsigned long long)own, proxy_nofile > 0 ? proxy_nofile : (long)own);
	if (want > cap)
		fprintf(stderr, ": holding %ld of the %ld asked\n", cap, want);
	else
		fprintf(stderr, ": holding %ld (at most %ld)\n", want, cap);
	if (want > cap)
		cfg.conns = cap;
	hold_fds = malloc((size_t)cfg.conns * sizeof(int));
	if (hold_fds == NULL)
		return 1;
	for (long i = 0; i < cfg.conns; i++)
		hold_fds[i] = -1;

	if (cfg.npids > 0) {
		rss_before = proxy_mem_kib(false, &nproc);
		pss_before = proxy_mem_kib(true, &nproc);
	}
	open_end = now_mono() + cfg.seconds;
	for (int i = 0; i < 8; i++) {
		if (pthread_create(&th[i], NULL, hold_open_thread, &open_end) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	opened = cfg.conns - atomic_load(&hold_failed);
	alive_start = hold_check(1);
	/* Idle: nothing moves, so what the proxy keeps is what an idle connection costs. */
	nanosleep(&idle, NULL);
	if (cfg.npids > 0) {
		rss_held = proxy_mem_kib(false, &nproc);
		pss_held = proxy_mem_kib(true, &nproc);
	}
	alive_end = hold_check(2);
	released = hold_check(0);
	for (long i = 0; i < cfg.conns; i++)
		if (hold_fds[i] >= 0)
			close(hold_fds[i]);
	free(hold_fds);
	printf("hold conns=%ld asked=%ld nofile=%llu opened=%ld alive_start=%ld alive_end=%ld "
	       "closed_clean=%ld",
	       cfg.conns, want, (unsigned long long)own, opened, alive_start, alive_end, released);
	if (cfg.npids > 0 && rss_before >= 0 && rss_held >= 0 && alive_start > 0)
		printf(" procs=%d rss_before_kib=%ld rss_held_kib=%ld kib_per_conn=%.2f "
		       "pss_kib_per_conn=%.2f",
		       nproc, rss_before, rss_held, (double)(rss_held - rss_before) / (double)alive_start,
		       (double)(pss_held - pss_before) / (double)alive_start);
	printf("\n");
	return alive_start == cfg.conns && alive_end == cfg.conns ? 0 : 1;
}

/* ---- sink ---------------------------------------------------------------------------------- */

struct sink_conn {
	int fd;
	bool eof;
	/* echo: what a short write left, allocated only then */
	uint8_t *buf;
	size_t buf_off, pending;
	/* bulk: the header, then both streams' progress */
	uint8_t hdr[BULK_HDR];
	size_t hdr_got;
	uint32_t index;
	uint64_t total, up_got, down_sent;
};

static bool sink_bulk;
static int sink_ep;
static uint8_t sink_buf[CHUNK];

static void sink_close(struct sink_conn *c)
{
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Which events a connection waits for, derived from its state: the only place that sets them. */
static void sink_arm(struct sink_conn *c)
{
	struct epoll_event ev = { .data.ptr = c };

	if (sink_bulk) {
		if (c->hdr_got < BULK_HDR || c->up_got < c->total)
			ev.events |= EPOLLIN;
		/* down_sent == total with up_got == total: the confirmation still to write */
		if (c->hdr_got == BULK_HDR && (c->down_sent < c->total || c->up_got == c->total))
			ev.events |= EPOLLOUT;
	} else {
		if (!c->eof && c->pending == 0)
			ev.events |= EPOLLIN;
		if (c->pending > 0)
			ev.events |= EPOLLOUT;
	}
	(void)epoll_ctl(sink_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Bulk: read and check the client's stream, send ours, then confirm with 'K' and close.
 * 0 to go on, -1 to close. */
static int sink_step_bulk(struct sink_conn *c)
{
	int st;

	if (c->hdr_got < BULK_HDR) {
		ssize_t r = read(c->fd, c->hdr + c->hdr_got, BULK_HDR - c->hdr_got);

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (r <= 0)
			return -1;
		c->hdr_got += (size_t)r;
		if (c->hdr_got < BULK_HDR)
			return 0;
		if (memcmp(c->hdr, BULK_MAGIC, 4) != 0)
			return -1;
		for (int k = 0; k < 4; k++)
			c->index = c->index << 8 | c->hdr[4 + k];
		for (int k = 0; k < 8; k++)
			c->total = c->total << 8 | c->hdr[8 + k];
	}
	st = pattern_recv(c->fd, bulk_offset(c->index, false), &c->up_got, c->total, sink_buf);
	if (st == -2)
		fprintf(stderr, "sink: wrong byte from a client at offset %llu\n",
			(unsigned long long)c->up_got);
	if (st < 0)
		return -1;
	for (int k = 0; k < 4 && c->down_sent < c->total; k++) {
		ssize_t w = pattern_send(c->fd, bulk_offset(c->index, true), &c->down_sent, c->total);

		if (w < 0)
			return -1;
		if (w == 0)
			break;
	}
	if (c->up_got == c->total && c->down_sent == c->total) {
		uint8_t k = 'K';
		ssize_t w = write(c->fd, &k, 1);

		/* The stream just sent may have filled the socket: then 'K' waits for room. The
		 * close that follows it sends FIN after it. */
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		return -1;
	}
	return 0;
}

/* Echo: write back what was read; a short write keeps the rest and stops reading until it
 * drains (backpressure, never an unbounded queue). 0 to go on, -1 to close. */
static int sink_step_echo(struct sink_conn *c)
{
	if (c->pending > 0) {
		ssize_t w = write(c->fd, c->buf + c->buf_off, c->pending);

		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (w > 0) {
			c->pending -= (size_t)w;
			c->buf_off += (size_t)w;
		}
		if (c->pending > 0)
			return 0;
		free(c->buf);
		c->buf = NULL;
	}
	while (!c->eof && c->pending == 0) {
		ssize_t r = read(c->fd, sink_buf, 65536), w;

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (r < 0)
			return -1;
		if (r == 0) {
			c->eof = true;
			break;
		}
		w = write(c->fd, sink_buf, (size_t)r);
		if (r == 1 && sink_buf[0] == 'Q')
			return -1; /* echo and close first: see one_exchange */
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (w < 0)
			w = 0;
		if (w < r) {
			c->buf = malloc((size_t)(r - w));
			if (c->buf == NULL)
				return -1;
			memcpy(c->buf, sink_buf + w, (size_t)(r - w));
			c->buf_off = 0;
			c->pending = (size_t)(r - w);
		}
		if (r < 65536)
			break;
	}
	return c->eof && c->pending == 0 ? -1 : 0;
}

static int sink_listen(int family, uint16_t port, uint16_t *bound)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int fd, one = 1;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		close(fd);
		return -1;
	}
	*bound = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					 : ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static void sink_accept(int lfd)
{
	int fd, one = 1;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct sink_conn *c = calloc(1, sizeof(*c));
		struct epoll_event ev = { .events = EPOLLIN };

		if (c == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev.data.ptr = c;
		if (epoll_ctl(sink_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			sink_close(c);
	}
}

/* One thread, epoll, non-blocking: the sink must cost less than what it measures. */
static int run_sink(void)
{
	struct epoll_event ev, evs[256];
	/* The listeners are told apart from connections by these two addresses. */
	static int l4_tag, l6_tag;
	uint16_t port = 0, port6 = 0;
	int l4 = -1, l6 = -1;

	(void)nofile_raise();
	if (sink_bulk && pattern_make() < 0)
		return 1;
	/* The same port on [::1], for ATYP 4 and for names that resolve to ::1; a taken port on
	 * ::1 means another try with a fresh IPv4 port. */
	for (int attempt = 0; attempt < 20 && l6 < 0; attempt++) {
		if (l4 >= 0)
			close(l4);
		l4 = sink_listen(AF_INET, 0, &port);
		if (l4 < 0)
			return 1;
		l6 = sink_listen(AF_INET6, port, &port6);
	}
	if (l6 < 0)
		fprintf(stderr, "sink: no [::1] listener (IPv6 off?): IPv4 only\n");
	printf("sink %u\n", port);
	fflush(stdout);
	sink_ep = epoll_create1(EPOLL_CLOEXEC);
	if (sink_ep < 0)
		return 1;
	ev.events = EPOLLIN;
	ev.data.ptr = &l4_tag;
	(void)epoll_ctl(sink_ep, EPOLL_CTL_ADD, l4, &ev);
	if (l6 >= 0) {
		ev.data.ptr = &l6_tag;
		(void)epoll_ctl(sink_ep, EPOLL_CTL_ADD, l6, &ev);
	}
	for (;;) {
		int n = epoll_wait(sink_ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			struct sink_conn *c = evs[i].data.ptr;
			int st;

			if (evs[i].data.ptr == &l4_tag) {
				sink_accept(l4);
				continue;
			}
			if (evs[i].data.ptr == &l6_tag) {
				sink_accept(l6);
				continue;
			}
			st = sink_bulk ? sink_step_bulk(c) : sink_step_echo(c);
			if (st < 0)
				sink_close(c);
			else
				sink_arm(c);
		}
	}
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: socksload sink [--bulk]\n"
		"       socksload probe|rate|bulk|hold (--proxy ADDR:PORT | --no-proxy) --target ADDR:PORT\n"
		"                 [--user U --pass P] [--name HOST]\n"
		"                 rate: [--threads K | --concurrency C] [--seconds T]\n"
		"                 bulk: [--conns N] [--mbytes M] [--seconds LIMIT]\n"
		"                 hold: [--conns C] [--idle S] [--pid PID]... [--seconds LIMIT]\n"
		"                 probe: [--seconds LIMIT]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool have_proxy = false, have_target = false;
	const char *mode;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		usage();
	mode = argv[1];
	if (strcmp(mode, "sink") == 0) {
		if (argc == 3 && strcmp(argv[2], "--bulk") == 0)
			sink_bulk = true;
		else if (argc != 2)
			usage();
		return run_sink();
	}
	if (strcmp(mode, "rate") != 0 && strcmp(mode, "bulk") != 0 && strcmp(mode, "hold") != 0 &&
	    strcmp(mode, "probe") != 0)
		usage();
	cfg.threads = 1;
	/* rate: the run's length; probe, bulk, hold: a bound on it */
	cfg.seconds = strcmp(mode, "rate") == 0 ? 3 : strcmp(mode, "probe") == 0 ? 10 : 120;
	cfg.conns = strcmp(mode, "hold") == 0 ? 1000 : 4;
	cfg.mbytes = 64;
	cfg.idle = 1;
	for (int i = 2; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--no-proxy") == 0) {
			cfg.no_proxy = true;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(argv[i - 1], "--proxy") == 0)
			have_proxy = parse_addr(v, &cfg.proxy, &cfg.proxy_len) == 0;
		else if (strcmp(argv[i - 1], "--target") == 0)
			have_target = parse_addr(v, &cfg.target, &cfg.target_len) == 0;
		else if (strcmp(argv[i - 1], "--user") == 0 && strlen(v) <= 255)
			cfg.user = v;
		else if (strcmp(argv[i - 1], "--pass") == 0 && strlen(v) <= 255)
			cfg.pass = v;
		else if (strcmp(argv[i - 1], "--name") == 0 && strlen(v) <= 255)
			cfg.name = v;
		else if (strcmp(argv[i - 1], "--threads") == 0 && atoi(v) > 0 && atoi(v) <= MAX_THREADS)
			cfg.threads = atoi(v);
		else if (strcmp(argv[i - 1], "--concurrency") == 0 && atoi(v) > 0 && atoi(v) <= 4096)
			cfg.concurrency = atoi(v);
		else if (strcmp(argv[i - 1], "--seconds") == 0 && atof(v) > 0 && atof(v) <= 3600)
			cfg.seconds = atof(v);
		else if (strcmp(argv[i - 1], "--conns") == 0 && atol(v) > 0 && atol(v) <= 1000000)
			cfg.conns = atol(v);
		else if (strcmp(argv[i - 1], "--mbytes") == 0 && atof(v) > 0 && atof(v) <= 65536)
			cfg.mbytes = atof(v);
		else if (strcmp(argv[i - 1], "--idle") == 0 && atof(v) >= 0 && atof(v) <= 3600)
			cfg.idle = atof(v);
		else if (strcmp(argv[i - 1], "--pid") == 0 && atoi(v) > 0 && cfg.npids < MAX_PIDS)
			cfg.pids[cfg.npids++] = atoi(v);
		else
			usage();
	}
	if (have_proxy == cfg.no_proxy || !have_target || (cfg.user != NULL) != (cfg.pass != NULL))
		usage();
	if (strcmp(mode, "rate") == 0)
		return cfg.concurrency > 0 ? run_rate_concurrent() : run_rate();
	if (strcmp(mode, "bulk") == 0)
		return run_bulk();
	if (strcmp(mode, "hold") == 0)
		return run_hold();
	return run_probe();
}
