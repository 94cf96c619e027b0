/*
 * tests/bench/socksload.c - a SOCKS5 load generator with its own echo sink.
 *
 *   socksload sink                      run an echo sink on 127.0.0.1, print "sink PORT", serve
 *                                       until killed
 *   socksload rate --proxy ADDR:PORT --target ADDR:PORT [--user U --pass P] [--threads N]
 *                  [--seconds S] [--atyp ipv4|ipv6|domain] [--name HOST]
 *                                       each thread loops: connect, greet, (log in), CONNECT,
 *                                       echo 1 byte, close; prints one line of results
 *
 * The output line is machine-readable: "rate conns=N seconds=S cps=X p50_ms=A p99_ms=B errors=E".
 * Blocking sockets on purpose: a client thread per core measures the proxy, not the generator.
 * Only loopback addresses are meant here; every loop is bounded by --seconds.
 */
#include <arpa/inet.h>
#include <errno.h>
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000

struct config {
	struct sockaddr_storage proxy, target;
	socklen_t proxy_len;
	const char *user, *pass, *name;
	int atyp; /* 1 ipv4, 3 domain, 4 ipv6 */
	int threads;
	double seconds;
};

static struct config cfg;
static atomic_long nconns, nerrors;
static double *samples;
static atomic_long nsamples;

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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
		text++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, text, hl);
	host[hl] = '\0';
	port = atoi(colon + 1);
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

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One full exchange. 0 on success. */
static int one_exchange(void)
{
	uint8_t msg[600], reply[32];
	size_t n = 0;
	int fd, one = 1, rc = -1;
	uint16_t port;

	fd = socket(cfg.proxy.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&cfg.proxy, cfg.proxy_len) < 0)
		goto out;
	/* RFC 1928 §3: VER NMETHODS METHODS */
	msg[0] = 5;
	msg[1] = 1;
	msg[2] = cfg.user != NULL ? 2 : 0;
	if (write_all(fd, msg, 3) < 0 || read_exact(fd, reply, 2) < 0 || reply[1] != msg[2])
		goto out;
	if (cfg.user != NULL) {
		/* RFC 1929: VER ULEN UNAME PLEN PASSWD */
		size_t ul = strlen(cfg.user), pl = strlen(cfg.pass);

		n = 0;
		msg[n++] = 1;
		msg[n++] = (uint8_t)ul;
		memcpy(msg + n, cfg.user, ul);
		n += ul;
		msg[n++] = (uint8_t)pl;
		memcpy(msg + n, cfg.pass, pl);
		n += pl;
		if (write_all(fd, msg, n) < 0 || read_exact(fd, reply, 2) < 0 || reply[1] != 0)
			goto out;
	}
	/* RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT */
	n = 0;
	msg[n++] = 5;
	msg[n++] = 1;
	msg[n++] = 0;
	if (cfg.atyp == 3) {
		size_t hl = strlen(cfg.name);

		msg[n++] = 3;
		msg[n++] = (uint8_t)hl;
		memcpy(msg + n, cfg.name, hl);
		n += hl;
		port = ((struct sockaddr_in *)&cfg.target)->sin_port;
	} else if (cfg.target.ss_family == AF_INET) {
		msg[n++] = 1;
		memcpy(msg + n, &((struct sockaddr_in *)&cfg.target)->sin_addr, 4);
		n += 4;
		port = ((struct sockaddr_in *)&cfg.target)->sin_port;
	} else {
		msg[n++] = 4;
		memcpy(msg + n, &((struct sockaddr_in6 *)&cfg.target)->sin6_addr, 16);
		n += 16;
		port = ((struct sockaddr_in6 *)&cfg.target)->sin6_port;
	}
	memcpy(msg + n, &port, 2);
	n += 2;
	if (write_all(fd, msg, n) < 0 || read_exact(fd, reply, 4) < 0 || reply[1] != 0)
		goto out;
	if (read_exact(fd, reply + 4, reply[3] == 4 ? 18 : 6) < 0)
		goto out;
	msg[0] = 'x';
	if (write_all(fd, msg, 1) < 0 || read_exact(fd, reply, 1) < 0 || reply[0] != 'x')
		goto out;
	rc = 0;
out:
	close(fd);
	return rc;
}

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

static int run_rate(void)
{
	pthread_t th[256];
	double start, end, elapsed;
	long n;

	samples = calloc(MAX_SAMPLES, sizeof(double));
	if (samples == NULL)
		return 1;
	start = now_mono();
	end = start + cfg.seconds;
	for (int i = 0; i < cfg.threads; i++)
		pthread_create(&th[i], NULL, rate_thread, &end);
	for (int i = 0; i < cfg.threads; i++)
		pthread_join(th[i], NULL);
	elapsed = now_mono() - start;
	n = atomic_load(&nsamples);
	if (n > MAX_SAMPLES)
		n = MAX_SAMPLES;
	qsort(samples, (size_t)n, sizeof(double), cmp_double);
	printf("rate conns=%ld seconds=%.2f cps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%ld\n",
	       atomic_load(&nconns), elapsed, (double)atomic_load(&nconns) / elapsed,
	       n ? samples[n / 2] * 1e3 : 0.0, n ? samples[(size_t)((double)n * 0.99)] * 1e3 : 0.0,
	       atomic_load(&nerrors));
	free(samples);
	return atomic_load(&nconns) > 0 ? 0 : 1;
}

/* An epoll echo server: enough for the rate scenario's one-byte exchanges. */
static int run_sink(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct epoll_event ev, evs[256];
	int lfd, ep, one = 1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 4096) < 0)
		return 1;
	getsockname(lfd, (struct sockaddr *)&sin, &len);
	printf("sink %u\n", ntohs(sin.sin_port));
	fflush(stdout);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == lfd) {
				int c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
			} else {
				char buf[65536];
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					/* Small echoes fit the socket buffer; a short write is a bench
					 * misuse, so drop the connection rather than queue. */
					if (write(fd, buf, (size_t)r) != r)
						close(fd);
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					close(fd);
				}
			}
		}
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: socksload sink\n"
			"       socksload rate --proxy ADDR:PORT --target ADDR:PORT [--user U --pass P]\n"
			"                      [--threads N] [--seconds S] [--name HOST]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool have_proxy = false, have_target = false;
	socklen_t tlen;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "sink") == 0)
		return run_sink();
	if (strcmp(argv[1], "rate") != 0)
		usage();
	cfg.threads = 1;
	cfg.seconds = 3;
	cfg.atyp = 1;
	for (int i = 2; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			usage();
		if (strcmp(argv[i], "--proxy") == 0)
			have_proxy = parse_addr(v, &cfg.proxy, &cfg.proxy_len) == 0;
		else if (strcmp(argv[i], "--target") == 0)
			have_target = parse_addr(v, &cfg.target, &tlen) == 0;
		else if (strcmp(argv[i], "--user") == 0)
			cfg.user = v;
		else if (strcmp(argv[i], "--pass") == 0)
			cfg.pass = v;
		else if (strcmp(argv[i], "--name") == 0) {
			cfg.name = v;
			cfg.atyp = 3;
		} else if (strcmp(argv[i], "--threads") == 0)
			cfg.threads = atoi(v) > 0 && atoi(v) <= 256 ? atoi(v) : 1;
		else if (strcmp(argv[i], "--seconds") == 0)
			cfg.seconds = atof(v) > 0 && atof(v) <= 600 ? atof(v) : 3;
		else
			usage();
	}
	if (!have_proxy || !have_target || (cfg.user != NULL) != (cfg.pass != NULL))
		usage();
	return run_rate();
}
