/*
 * tests/bench/udprate.c - UDP ASSOCIATE round trips per second through a SOCKS5 proxy.
 *
 *   udprate PROXY_HOST PROXY_PORT [SECONDS [WINDOW [SIZE]]]
 *
 * Opens one association (no authentication), runs a UDP echo on 127.0.0.1 in a thread, and keeps
 * WINDOW datagrams of SIZE payload bytes in flight through the relay for SECONDS; prints round
 * trips per second and the median round-trip time of WINDOW 1. Loopback only. A lost datagram
 * (the rate limit, a full socket buffer) is counted and replaced after 100 ms.
 * Run by hand against a release build with --udp-rate 0; never a ctest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *echo_main(void *arg)
{
	int fd = *(int *)arg;
	uint8_t buf[65536];

	for (;;) {
		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &len);

		if (n < 0)
			return NULL;
		(void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, len);
	}
}

static void read_exact(int fd, uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			die("read from the proxy");
		p += r;
		n -= (size_t)r;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct sockaddr_in proxy = { .sin_family = AF_INET }, echo = { .sin_family = AF_INET };
	struct sockaddr_in relay = { .sin_family = AF_INET }, me = { .sin_family = AF_INET };
	double seconds = argc > 3 ? atof(argv[3]) : 5;
	int window = argc > 4 ? atoi(argv[4]) : 32;
	size_t size = argc > 5 ? (size_t)atoi(argv[5]) : 64;
	uint8_t req[10] = { 5, 3, 0, 1, 0, 0, 0, 0, 0, 0 }, rep[10], m[2];
	uint8_t out[65536], in[65536];
	socklen_t len = sizeof(echo);
	pthread_t th;
	int ctl, efd, ufd;
	size_t hlen = 10;
	uint64_t done = 0, lost = 0;
	double t0, *rtt;
	size_t nrtt = 0;

	if (argc < 3 || window < 1 || size + hlen > sizeof(out)) {
		fprintf(stderr, "usage: %s PROXY_HOST PROXY_PORT [SECONDS [WINDOW [SIZE]]]\n", argv[0]);
		return 2;
	}
	inet_pton(AF_INET, argv[1], &proxy.sin_addr);
	proxy.sin_port = htons((uint16_t)atoi(argv[2]));

	/* The echo target. */
	efd = socket(AF_INET, SOCK_DGRAM, 0);
	inet_pton(AF_INET, "127.0.0.1", &echo.sin_addr);
	if (bind(efd, (struct sockaddr *)&echo, sizeof(echo)) < 0 ||
	    getsockname(efd, (struct sockaddr *)&echo, &len) < 0)
		die("echo");
	pthread_create(&th, NULL, echo_main, &efd);

	/* RFC 1928: greeting (no auth), UDP ASSOCIATE 0.0.0.0:0. */
	ctl = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(ctl, (struct sockaddr *)&proxy, sizeof(proxy)) < 0)
		die("connect to the proxy");
	if (write(ctl, "\x05\x01\x00", 3) != 3)
		die("greeting");
	read_exact(ctl, m, 2);
	if (write(ctl, req, sizeof(req)) != (ssize_t)sizeof(req))
		die("request");
	read_exact(ctl, rep, sizeof(rep));
	if (rep[1] != 0 || rep[3] != 1) {
		fprintf(stderr, "UDP ASSOCIATE refused: REP %u ATYP %u\n", rep[1], rep[3]);
		return 1;
	}
	memcpy(&relay.sin_addr, rep + 4, 4);
	memcpy(&relay.sin_port, rep + 8, 2);

	ufd = socket(AF_INET, SOCK_DGRAM, 0);
	inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
	if (bind(ufd, (struct sockaddr *)&me, sizeof(me)) < 0)
		die("client socket");
	{
		int big = 1 << 22;

		(void)setsockopt(ufd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
		(void)setsockopt(efd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	/* RFC 1928 §7: RSV FRAG ATYP=1 DST.ADDR DST.PORT DATA */
	memset(out, 0xab, sizeof(out));
	out[0] = out[1] = out[2] = 0;
	out[3] = 1;
	memcpy(out + 4, &echo.sin_addr, 4);
	memcpy(out + 8, &echo.sin_port, 2);

	rtt = calloc(1u << 20, sizeof(*rtt));
	for (int pass = 0; pass < 2; pass++) {
		int w = pass == 0 ? 1 : window;
		int inflight = 0;
		double end;

		done = lost = 0;
		t0 = now_s();
		end = t0 + seconds / 2;
		while (now_s() < end) {
			struct pollfd p = { .fd = ufd, .events = POLLIN };

			while (inflight < w) {
				double t = now_s();

				memcpy(out + hlen, &t, sizeof(t));
				if (sendto(ufd, out, hlen + (size < sizeof(t) ? sizeof(t) : size), 0,
					   (struct sockaddr *)&relay, sizeof(relay)) < 0)
					die("sendto the relay");
				inflight++;
			}
			if (poll(&p, 1, 100) == 0) {
				/* Nothing for 100 ms: what is in flight is lost. */
				lost += (uint64_t)inflight;
				inflight = 0;
				continue;
			}
			ssize_t n = recv(ufd, in, sizeof(in), 0);
			if (n < (ssize_t)(hlen + sizeof(double)))
				continue;
			if (pass == 0 && nrtt < (1u << 20)) {
				double t;

				memcpy(&t, in + hlen, sizeof(t));
				rtt[nrtt++] = now_s() - t;
			}
			if (inflight > 0)
				inflight--; /* a late answer of one counted lost does not count twice */
			done++;
		}
		if (pass == 0) {
			qsort(rtt, nrtt, sizeof(*rtt), cmp_double);
			printf("window 1: %.0f round trips/s, median %.1f us, p99 %.1f us (%llu lost)\n",
			       (double)done / (now_s() - t0), nrtt ? rtt[nrtt / 2] * 1e6 : 0,
			       nrtt ? rtt[nrtt * 99 / 100] * 1e6 : 0, (unsigned long long)lost);
		} else {
			printf("window %d: %.0f round trips/s (%llu lost), %zu-byte payloads\n", w,
			       (double)done / (now_s() - t0), (unsigned long long)lost, size);
		}
	}
	free(rtt);
	close(ctl);
	return 0;
}
