/*
 * tests/tools/linkprobe.c - a scriptable encrypted-link client for the end-to-end tests: it does
 * what `shroud link` must never do (a clock set off on purpose, a first flight saved for replay,
 * a chosen source address), and reports what the server did, one line on stdout.
 *
 *   linkprobe --access-key-file F --server ADDR:PORT [--key F] [--bind ADDR] [--clock-offset S]
 *             [--save-first FILE] [--wait S] [--connect HOST:PORT [--params P] [--send TEXT]]
 *
 * Sends one valid first flight (timestamp = now + offset), optionally saving its bytes, then waits
 * up to --wait seconds (default 10) for the reply:
 *   "reply N"        a reply of N bytes decrypted: the handshake succeeded
 *   "badreply"       bytes came back that do not decrypt (a wrong PSK or server key)
 *   "silent T how"   nothing came back; how = eof|reset|timeout after T seconds
 * With --connect, then sends CONNECT (domain, or the address literal) with --params, prints
 * "rep R", and with --send writes TEXT, half-closes (EOF record) and prints every DATA byte
 * received as "data TEXT" (escaped) and "end eof|reset|closed" when the link ends.
 * Exit 0 when it could run the scenario (whatever the server did), 2 on usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "base/status.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "crypto/link.h"
#include "crypto/pwhash.h"
#include "socks/proto.h"

static void die(const char *msg)
{
	fprintf(stderr, "linkprobe: %s\n", msg);
	exit(2);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		die("cannot open a file");
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		die("cannot read a file");
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	return (size_t)n;
}

/* Read what is there within `wait` seconds into buf (appending at *len). 1 data, 0 eof, -1 reset,
 * -2 timeout. */
static int recv_some(int fd, uint8_t *buf, size_t cap, size_t *len, double wait)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, (int)(wait * 1000));
	ssize_t n;

	if (r == 0)
		return -2;
	n = read(fd, buf + *len, cap - *len);
	if (n > 0) {
		*len += (size_t)n;
		return 1;
	}
	if (n == 0)
		return 0;
	return -1;
}

static int seal_send(int fd, struct link_session *ls, const uint8_t *frame, size_t n)
{
	uint8_t rec[LINK_RECORD_MAX];
	int m = link_record_seal(ls, frame, n, rec, sizeof(rec));

	if (m < 0 || write(fd, rec, (size_t)m) != m)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	const char *akf = NULL, *server = NULL, *keyf = NULL, *bind_to = NULL, *save = NULL;
	const char *connect_to = NULL, *params = "", *send_text = NULL, *why;
	double offset = 0, wait = 10;
	char text[LINK_ACCESS_MAX + 1];
	struct link_access acc;
	struct link_client_key *key = NULL;
	struct link_client_hs hs;
	struct link_session ls;
	struct keys_secret *priv = NULL;
	uint8_t first[LINK_FIRST_MAX], in[LINK_RECORD_MAX * 2];
	size_t first_len, in_len = 0;
	struct addr srv, src;
	double t0;
	int fd, r;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--access-key-file") == 0)
			akf = argv[i + 1];
		else if (strcmp(argv[i], "--server") == 0)
			server = argv[i + 1];
		else if (strcmp(argv[i], "--key") == 0)
			keyf = argv[i + 1];
		else if (strcmp(argv[i], "--bind") == 0)
			bind_to = argv[i + 1];
		else if (strcmp(argv[i], "--clock-offset") == 0)
			offset = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--save-first") == 0)
			save = argv[i + 1];
		else if (strcmp(argv[i], "--wait") == 0)
			wait = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--connect") == 0)
			connect_to = argv[i + 1];
		else if (strcmp(argv[i], "--params") == 0)
			params = argv[i + 1];
		else if (strcmp(argv[i], "--send") == 0)
			send_text = argv[i + 1];
		else
			die("unknown option (see the comment at the top of linkprobe.c)");
	}
	if (akf == NULL || server == NULL || addr_parse_hostport(server, &srv) != ST_OK)
		die("--access-key-file and --server ADDR:PORT are required");
	if (pwhash_init() != ST_OK)
		die("libsodium");
	if (link_access_parse(text, read_file(akf, text, sizeof(text)), &acc, &why) != ST_OK)
		die(why);
	if (acc.client_private == NULL) {
		char k[256];

		if (keyf == NULL)
			die("the access key has no private key: give --key");
		if (keys_private_parse(k, read_file(keyf, k, sizeof(k)), &priv) != ST_OK)
			die("bad --key file");
	}
	if (link_client_key_new(keys_secret_bytes(priv != NULL ? priv : acc.client_private),
				acc.server_public, keys_secret_bytes(acc.psk), &key) != ST_OK)
		die("bad keys");
	memset(&hs, 0, sizeof(hs));
	if (link_client_first(&hs, key, clock_unix() + (int64_t)offset, first, &first_len) != ST_OK)
		die("cannot build the first flight");
	if (save != NULL) {
		int sfd = open(save, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (sfd < 0 || write(sfd, first, first_len) != (ssize_t)first_len)
			die("cannot save the first flight");
		close(sfd);
	}
	fd = socket(addr_family(&srv), SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (bind_to != NULL) {
		if (addr_parse_ip(bind_to, 0, &src) != ST_OK || bind(fd, &src.u.sa, src.len) < 0)
			die("cannot bind --bind");
	}
	if (connect(fd, &srv.u.sa, srv.len) < 0) {
		printf("unreachable %s\n", strerror(errno));
		return 0;
	}
	t0 = clock_mono();
	if (write(fd, first, first_len) != (ssize_t)first_len)
		die("write");
	/* The reply: bytes that decrypt, bytes that do not, or silence. */
	for (;;) {
		double left = wait - (clock_mono() - t0);

		r = left > 0 ? recv_some(fd, in, sizeof(in), &in_len, left) : -2;
		if (r != 1) {
			if (in_len > 0) {
				printf("badreply\n");
				return 0;
			}
			printf("silent %.3f %s\n", clock_mono() - t0,
			       r == 0 ? "eof" : r == -1 ? "reset" : "timeout");
			return 0;
		}
		r = link_client_read_reply(&hs, in, in_len, clock_mono(), &ls);
		if (r == ST_NEED_MORE)
			continue;
		if (r < 0) {
			printf("badreply\n");
			return 0;
		}
		printf("reply %d\n", r);
		memmove(in, in + r, in_len - (size_t)r);
		in_len -= (size_t)r;
		break;
	}
	fflush(stdout);
	if (connect_to == NULL) {
		close(fd);
		return 0;
	}
	{
		uint8_t frame[LINK_FRAME_MAX], target[LINK_TARGET_MAX];
		struct socks_target t;
		struct addr a;
		size_t tlen, n;
		char host[256];
		const char *colon = strrchr(connect_to, ':');

		if (colon == NULL)
			die("--connect HOST:PORT");
		memset(&t, 0, sizeof(t));
		if (addr_parse_hostport(connect_to, &a) == ST_OK) {
			t.atyp = addr_family(&a) == AF_INET6 ? SOCKS_ATYP_IPV6 : SOCKS_ATYP_IPV4;
			if (t.atyp == SOCKS_ATYP_IPV4)
				memcpy(t.u.ipv4, &a.u.sin.sin_addr, 4);
			else
				memcpy(t.u.ipv6, &a.u.sin6.sin6_addr, 16);
		} else {
			snprintf(host, sizeof(host), "%.*s", (int)(colon - connect_to), connect_to);
			t.atyp = SOCKS_ATYP_DOMAIN;
			t.u.domain.len = (uint8_t)strlen(host);
			memcpy(t.u.domain.name, host, t.u.domain.len + 1);
		}
		t.port = (uint16_t)atoi(colon + 1);
		tlen = socks_write_target(target, sizeof(target), &t);
		n = link_frame_connect(frame, target, tlen, (const uint8_t *)params, strlen(params));
		if (tlen == 0 || n == 0 || seal_send(fd, &ls, frame, n) < 0)
			die("cannot send CONNECT");
		if (send_text != NULL) {
			n = link_frame_data(frame, sizeof(frame), (const uint8_t *)send_text,
					    strlen(send_text));
			if (n == 0 || seal_send(fd, &ls, frame, n) < 0)
				die("cannot send DATA");
			n = link_frame_eof(frame, sizeof(frame));
			if (seal_send(fd, &ls, frame, n) < 0)
				die("cannot send EOF");
		}
		for (;;) {
			struct link_frame f;
			uint8_t buf[LINK_FRAME_MAX];

			r = link_record_open(&ls, in, in_len, buf, &f);
			if (r == ST_NEED_MORE) {
				r = recv_some(fd, in, sizeof(in), &in_len, wait);
				if (r != 1) {
					printf("end %s\n", r == 0 ? "closed" : r == -1 ? "reset" : "timeout");
					break;
				}
				continue;
			}
			if (r < 0) {
				printf("end badrecord\n");
				break;
			}
			memmove(in, in + r, in_len - (size_t)r);
			in_len -= (size_t)r;
			if (f.type == LINK_FRAME_CONNECT_REPLY) {
				printf("rep %u\n", f.rep);
				if (f.rep != 0 || send_text == NULL)
					break;
			} else if (f.type == LINK_FRAME_DATA) {
				printf("data ");
				for (size_t i = 0; i < f.data_len; i++) {
					uint8_t c = f.data[i];

					if (c >= 0x20 && c < 0x7f && c != '\\')
						putchar(c);
					else
						printf("\\x%02x", c);
				}
				printf("\n");
			} else if (f.type == LINK_FRAME_EOF) {
				printf("end eof\n");
				break;
			} else if (f.type == LINK_FRAME_RESET) {
				printf("end reset\n");
				break;
			}
			fflush(stdout);
		}
	}
	close(fd);
	link_client_key_free(key);
	keys_secret_free(priv);
	link_access_clear(&acc);
	return 0;
}
