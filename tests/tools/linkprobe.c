/*
 * tests/tools/linkprobe.c - a scriptable encrypted-link client for the end-to-end tests: it does
 * what `shroud link` must never do (a clock set off on purpose, a first flight saved for replay,
 * a chosen source address, records tampered with, reordered, cut short or out of order), and
 * reports what the server did, one line per event on stdout.
 *
 *   linkprobe --access-key-file F --server ADDR:PORT [--key F] [--bind ADDR] [--clock-offset S]
 *             [--save-first FILE] [--wait S]
 *             [--connect HOST:PORT [--params P] [--echo TEXT] [--send TEXT]
 *              [--second-connect] [--reorder] [--truncate K] [--tamper N] | [--bulk BYTES [--fin]]]
 *
 * Sends one valid first flight (timestamp = now + offset), optionally saving its bytes, then waits
 * up to --wait seconds (default 10) for the reply:
 *   "reply N"        a reply of N bytes decrypted: the handshake succeeded
 *   "badreply"       bytes came back that do not decrypt (a wrong PSK or server key)
 *   "silent T how"   nothing came back; how = eof|reset|timeout after T seconds
 * With --connect, then sends CONNECT (domain, or the address literal) with --params and prints
 * "rep R" when the CONNECT_REPLY comes. The records that follow:
 *   --echo TEXT      after "rep 0": DATA TEXT, and wait until TEXT came back in the DATA received
 *                    (an echo target): proof that it reached the target before what follows
 *   the tail         a second CONNECT (--second-connect), then DATA TEXT and EOF (--send TEXT);
 *                    without --echo it goes right behind the CONNECT, without waiting for "rep"
 *   --reorder        the tail's records are written in reverse order (it needs two)
 *   --truncate K     only the first K bytes of the tail are written, then the TCP half-close
 *   --tamper N       flip the lowest bit of byte N of the record stream, counted from the first
 *                    byte of the CONNECT record (CONNECT 578 bytes; DATA of n bytes 37 + n; EOF 37)
 *   --bulk BYTES     after "rep 0": BYTES of the pattern (byte i of a stream is i % 251) go up
 *                    in DATA records, then EOF, while the DATA coming down is checked against
 *                    the same pattern; both ways at once, sending first whenever both can go
 *                    (the upload ends while the download is still backed up in the server).
 *                    Prints "bulk sent S received R bad B seconds T" instead of "data" lines.
 *   --fin            with --bulk: the TCP half-close right behind the EOF record (a client that
 *                    ends cleanly and shuts its socket while the server still holds its records)
 * Every DATA byte received is printed as "data TEXT" (escaped, one line per record), and the end
 * of the link as "end eof" (an EOF record), "end reset" (a RESET record), "end closed" (a TCP close
 * without either), "end tcpreset" (a TCP reset), "end badrecord" (a record that does not open) or
 * "end timeout" (nothing for --wait seconds).
 * Exit 0 when it could run the scenario (whatever the server did), 2 on usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "base/compiler.h"
#include "base/status.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "crypto/link.h"
#include "crypto/noise.h"
#include "crypto/pwhash.h"
#include "socks/proto.h"

#define TAIL_RECORDS 3 /* second CONNECT, DATA, EOF */
#define GOT_MAX 65536  /* DATA received, kept to find --echo's text in */

/* The link after the handshake: the socket, the session, the server's bytes not opened yet, the
 * DATA received so far, and how many bytes of records went out (--tamper counts them). */
struct probe {
	int fd;
	struct link_session ls;
	uint8_t in[LINK_RECORD_MAX * 2];
	size_t in_len;
	uint8_t got[GOT_MAX];
	size_t got_len;
	double wait;
	unsigned long long sent;
	long long tamper; /* the stream byte to flip, or -1 */
};

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

/*
 * Write record bytes, flipping the --tamper byte if it is among them. A server that has closed
 * may make the write fail: that is left for the reads to report (MSG_NOSIGNAL: no SIGPIPE).
 */
static void probe_write(struct probe *p, uint8_t *bytes, size_t n)
{
	size_t off = 0;

	if (p->tamper >= 0 && (unsigned long long)p->tamper >= p->sent &&
	    (unsigned long long)p->tamper < p->sent + n)
		bytes[p->tamper - (long long)p->sent] ^= 0x01;
	p->sent += n;
	while (off < n) {
		ssize_t w = send(p->fd, bytes + off, n - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* Seal one frame (link_record_seal's rules) into out; its length. */
static size_t probe_seal(struct probe *p, const uint8_t *frame, size_t n, uint8_t *out, size_t cap)
{
	int m = link_record_seal(&p->ls, frame, n, out, cap);

	if (m < 0)
		die("cannot seal a record");
	return (size_t)m;
}

/*
 * Seal a frame whatever the order rules say (link_record_seal refuses a second CONNECT from a
 * client): what a broken or hostile client could send. The layout of crypto/link.h: enc(u16 BE L)
 * with nonce n, then enc(frame) with nonce n + 1, L = the frame's length + the tag's.
 */
static size_t probe_seal_raw(struct probe *p, const uint8_t *frame, size_t n, uint8_t *out,
			     size_t cap)
{
	size_t l = n + NOISE_TAG_LEN;
	uint8_t hdr[2] = { (uint8_t)(l >> 8), (uint8_t)l };

	if (cap < LINK_RECORD_HDR + l ||
	    noise_cipher_encrypt(&p->ls.send, NULL, 0, hdr, sizeof(hdr), out) != ST_OK ||
	    noise_cipher_encrypt(&p->ls.send, NULL, 0, frame, n, out + LINK_RECORD_HDR) != ST_OK)
		die("cannot seal a raw record");
	return LINK_RECORD_HDR + l;
}

static void print_data(const uint8_t *d, size_t n)
{
	printf("data ");
	for (size_t i = 0; i < n; i++) {
		uint8_t c = d[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	printf("\n");
}

enum probe_until {
	UNTIL_REPLY, /* the CONNECT_REPLY */
	UNTIL_ECHO,  /* `text` among the DATA received */
	UNTIL_END,   /* the end of the link */
};

/*
 * Read and print the server's records until what is awaited comes (true; *rep set by a
 * CONNECT_REPLY) or the link ends first (false, "end ..." printed). UNTIL_END always ends false.
 */
static bool probe_read(struct probe *p, enum probe_until until, const char *text, int *rep)
{
	for (;;) {
		struct link_frame f;
		uint8_t buf[LINK_FRAME_MAX];
		int r = link_record_open(&p->ls, p->in, p->in_len, buf, &f);

		if (r == ST_NEED_MORE) {
			r = recv_some(p->fd, p->in, sizeof(p->in), &p->in_len, p->wait);
			if (r != 1) {
				printf("end %s\n",
				       r == 0 ? "closed" : r == -1 ? "tcpreset" : "timeout");
				return false;
			}
			continue;
		}
		if (r < 0) {
			printf("end badrecord\n");
			return false;
		}
		memmove(p->in, p->in + r, p->in_len - (size_t)r);
		p->in_len -= (size_t)r;
		if (f.type == LINK_FRAME_CONNECT_REPLY) {
			printf("rep %u\n", f.rep);
			*rep = f.rep;
			if (until == UNTIL_REPLY)
				return true;
		} else if (f.type == LINK_FRAME_DATA) {
			size_t keep = MIN(f.data_len, GOT_MAX - p->got_len);

			print_data(f.data, f.data_len);
			memcpy(p->got + p->got_len, f.data, keep);
			p->got_len += keep;
			if (until == UNTIL_ECHO &&
			    memmem(p->got, p->got_len, text, strlen(text)) != NULL)
				return true;
		} else if (f.type == LINK_FRAME_EOF) {
			printf("end eof\n");
			return false;
		} else if (f.type == LINK_FRAME_RESET) {
			printf("end reset\n");
			return false;
		}
		fflush(stdout);
	}
}

static uint8_t pattern(unsigned long long i)
{
	return (uint8_t)(i % 251);
}

/* Open the records in p->in: DATA checked against the pattern. NULL, or how the link ended. */
static const char *bulk_open(struct probe *p, unsigned long long *received, unsigned long long *bad)
{
	for (;;) {
		struct link_frame f;
		uint8_t buf[LINK_FRAME_MAX];
		int m = link_record_open(&p->ls, p->in, p->in_len, buf, &f);

		if (m == ST_NEED_MORE)
			return NULL;
		if (m < 0)
			return "badrecord";
		memmove(p->in, p->in + m, p->in_len - (size_t)m);
		p->in_len -= (size_t)m;
		if (f.type == LINK_FRAME_DATA) {
			for (size_t i = 0; i < f.data_len; i++)
				*bad += f.data[i] != pattern(*received + i);
			*received += f.data_len;
		} else if (f.type == LINK_FRAME_EOF) {
			return "eof";
		} else if (f.type == LINK_FRAME_RESET) {
			return "reset";
		}
	}
}

/* --bulk (see the top of this file). */
static void probe_bulk(struct probe *p, unsigned long long total, bool fin)
{
	static uint8_t out[LINK_RECORD_MAX];
	uint8_t frame[LINK_FRAME_MAX];
	size_t out_len = 0, out_off = 0;
	unsigned long long sent = 0, received = 0, bad = 0;
	bool eof_sent = false, fin_sent = false;
	const char *end = NULL;
	double t0 = clock_mono();

	if (fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK) < 0)
		die("fcntl");
	/* Until the server's EOF came and ours went, or the link ended otherwise. */
	while (end == NULL || (strcmp(end, "eof") == 0 && (!eof_sent || out_off < out_len))) {
		bool sending = !eof_sent || out_off < out_len;
		struct pollfd pf = { .fd = p->fd, .events = POLLIN };
		ssize_t n;

		if (sending)
			pf.events |= POLLOUT;
		if (poll(&pf, 1, (int)(p->wait * 1000)) == 0) {
			end = "timeout";
			break;
		}
		if (sending && (pf.revents & POLLOUT)) {
			if (out_off == out_len) {
				size_t fl;

				if (sent < total) {
					size_t take = (size_t)MIN(total - sent, LINK_DATA_MAX);
					uint8_t *d = frame + LINK_FRAME_HDR;

					for (size_t i = 0; i < take; i++)
						d[i] = pattern(sent + i);
					fl = link_frame_data(frame, sizeof(frame), d, take);
					sent += take;
				} else {
					fl = link_frame_eof(frame, sizeof(frame));
					eof_sent = true;
				}
				out_len = probe_seal(p, frame, fl, out, sizeof(out));
				out_off = 0;
			}
			n = send(p->fd, out + out_off, out_len - out_off, MSG_NOSIGNAL);
			if (n > 0)
				out_off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				break; /* the read below says how the link ended */
			if (fin && eof_sent && out_off == out_len && !fin_sent) {
				shutdown(p->fd, SHUT_WR);
				fin_sent = true;
			}
			if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)) || sent < total)
				continue; /* sending first: reads wait until the socket is full */
		}
		if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(p->fd, p->in + p->in_len, sizeof(p->in) - p->in_len);
		if (n > 0)
			p->in_len += (size_t)n;
		if (end == NULL)
			end = bulk_open(p, &received, &bad);
		if (end == NULL && n == 0)
			end = "closed";
		if (end == NULL && n < 0 && errno != EAGAIN && errno != EINTR)
			end = "tcpreset";
	}
	if (end == NULL) {
		uint8_t b;
		ssize_t n = recv(p->fd, &b, 1, 0);

		end = n == 0 ? "closed" : "tcpreset";
	}
	printf("bulk sent %llu received %llu bad %llu seconds %.3f\n", sent, received, bad,
	       clock_mono() - t0);
	printf("end %s\n", end);
}

/* The CONNECT frame for HOST:PORT (an address literal, or a domain) with params. */
static size_t connect_frame(const char *connect_to, const char *params,
			    uint8_t frame[static LINK_CONNECT_FRAME_LEN])
{
	uint8_t target[LINK_TARGET_MAX];
	struct socks_target t;
	struct addr a;
	size_t tlen, n;
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
		size_t hl = (size_t)(colon - connect_to);

		if (hl == 0 || hl > 255)
			die("--connect HOST:PORT");
		t.atyp = SOCKS_ATYP_DOMAIN;
		t.u.domain.len = (uint8_t)hl;
		memcpy(t.u.domain.name, connect_to, hl);
		t.u.domain.name[hl] = '\0';
	}
	t.port = (uint16_t)atoi(colon + 1);
	tlen = socks_write_target(target, sizeof(target), &t);
	n = link_frame_connect(frame, target, tlen, (const uint8_t *)params, strlen(params));
	if (tlen == 0 || n == 0)
		die("cannot build CONNECT");
	return n;
}

int main(int argc, char **argv)
{
	const char *akf = NULL, *server = NULL, *keyf = NULL, *bind_to = NULL, *save = NULL;
	const char *connect_to = NULL, *params = "", *send_text = NULL, *echo_text = NULL, *why;
	double offset = 0;
	long truncate_at = -1;
	long long bulk = -1;
	bool second_connect = false, reorder = false, fin = false;
	char text[LINK_ACCESS_MAX + 1];
	struct link_access acc;
	struct link_client_key *key = NULL;
	struct link_client_hs hs;
	struct keys_secret *priv = NULL;
	static struct probe p = { .fd = -1, .wait = 10, .tamper = -1 };
	uint8_t first[LINK_FIRST_MAX];
	size_t first_len;
	struct addr srv, src;
	double t0;
	int r;

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		/* The flags without a value first. */
		if (strcmp(argv[i], "--second-connect") == 0) {
			second_connect = true;
			continue;
		}
		if (strcmp(argv[i], "--reorder") == 0) {
			reorder = true;
			continue;
		}
		if (strcmp(argv[i], "--fin") == 0) {
			fin = true;
			continue;
		}
		if (v == NULL)
			die("an option without its value (see the top of linkprobe.c)");
		i++;
		if (strcmp(argv[i - 1], "--access-key-file") == 0)
			akf = v;
		else if (strcmp(argv[i - 1], "--server") == 0)
			server = v;
		else if (strcmp(argv[i - 1], "--key") == 0)
			keyf = v;
		else if (strcmp(argv[i - 1], "--bind") == 0)
			bind_to = v;
		else if (strcmp(argv[i - 1], "--clock-offset") == 0)
			offset = atof(v);
		else if (strcmp(argv[i - 1], "--save-first") == 0)
			save = v;
		else if (strcmp(argv[i - 1], "--wait") == 0)
			p.wait = atof(v);
		else if (strcmp(argv[i - 1], "--connect") == 0)
			connect_to = v;
		else if (strcmp(argv[i - 1], "--params") == 0)
			params = v;
		else if (strcmp(argv[i - 1], "--send") == 0)
			send_text = v;
		else if (strcmp(argv[i - 1], "--echo") == 0)
			echo_text = v;
		else if (strcmp(argv[i - 1], "--truncate") == 0)
			truncate_at = atol(v);
		else if (strcmp(argv[i - 1], "--tamper") == 0)
			p.tamper = atoll(v);
		else if (strcmp(argv[i - 1], "--bulk") == 0)
			bulk = atoll(v);
		else
			die("unknown option (see the comment at the top of linkprobe.c)");
	}
	if (akf == NULL || server == NULL || addr_parse_hostport(server, &srv) != ST_OK)
		die("--access-key-file and --server ADDR:PORT are required");
	if (connect_to == NULL && (echo_text != NULL || send_text != NULL || second_connect ||
				   reorder || truncate_at >= 0 || p.tamper >= 0 || bulk >= 0))
		die("the record options need --connect");
	if (bulk >= 0 && (echo_text != NULL || send_text != NULL || second_connect || reorder ||
			  truncate_at >= 0 || p.tamper >= 0))
		die("--bulk goes alone");
	if (fin && bulk < 0)
		die("--fin needs --bulk");
	if (echo_text != NULL && (echo_text[0] == '\0' || strlen(echo_text) > LINK_DATA_MAX))
		die("--echo needs 1..16381 bytes");
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
	p.fd = socket(addr_family(&srv), SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p.fd < 0)
		die("socket");
	if (bind_to != NULL) {
		if (addr_parse_ip(bind_to, 0, &src) != ST_OK || bind(p.fd, &src.u.sa, src.len) < 0)
			die("cannot bind --bind");
	}
	if (connect(p.fd, &srv.u.sa, srv.len) < 0) {
		printf("unreachable %s\n", strerror(errno));
		goto done;
	}
	t0 = clock_mono();
	if (write(p.fd, first, first_len) != (ssize_t)first_len)
		die("write");
	/* The reply: bytes that decrypt, bytes that do not, or silence. */
	for (;;) {
		double left = p.wait - (clock_mono() - t0);

		r = left > 0 ? recv_some(p.fd, p.in, sizeof(p.in), &p.in_len, left) : -2;
		if (r != 1) {
			if (p.in_len > 0)
				printf("badreply\n");
			else
				printf("silent %.3f %s\n", clock_mono() - t0,
				       r == 0 ? "eof" : r == -1 ? "reset" : "timeout");
			goto done;
		}
		r = link_client_read_reply(&hs, p.in, p.in_len, clock_mono(), &p.ls);
		if (r == ST_NEED_MORE)
			continue;
		if (r < 0) {
			printf("badreply\n");
			goto done;
		}
		printf("reply %d\n", r);
		memmove(p.in, p.in + r, p.in_len - (size_t)r);
		p.in_len -= (size_t)r;
		break;
	}
	fflush(stdout);
	if (connect_to != NULL) {
		static uint8_t tail[TAIL_RECORDS * LINK_RECORD_MAX];
		static uint8_t recs[TAIL_RECORDS][LINK_RECORD_MAX];
		uint8_t frame[LINK_FRAME_MAX], rec[LINK_RECORD_MAX];
		size_t cn = connect_frame(connect_to, params, frame), lens[TAIL_RECORDS], k = 0, n;
		size_t tail_len = 0;
		int rep = -1;

		n = probe_seal(&p, frame, cn, rec, sizeof(rec));
		probe_write(&p, rec, n);
		if (bulk >= 0) {
			if (probe_read(&p, UNTIL_REPLY, NULL, &rep) && rep == 0)
				probe_bulk(&p, (unsigned long long)bulk, fin);
			goto done;
		}
		if (echo_text != NULL) {
			if (!probe_read(&p, UNTIL_REPLY, NULL, &rep) || rep != 0)
				goto done;
			n = link_frame_data(frame, sizeof(frame), (const uint8_t *)echo_text,
					    strlen(echo_text));
			n = probe_seal(&p, frame, n, rec, sizeof(rec));
			probe_write(&p, rec, n);
			fflush(stdout);
			if (!probe_read(&p, UNTIL_ECHO, echo_text, &rep))
				goto done;
		}
		/* The tail, sealed in order (the nonces), then maybe reordered and cut. */
		if (second_connect) {
			n = connect_frame(connect_to, params, frame);
			lens[k] = probe_seal_raw(&p, frame, n, recs[k], sizeof(recs[k]));
			k++;
		}
		if (send_text != NULL) {
			n = link_frame_data(frame, sizeof(frame), (const uint8_t *)send_text,
					    strlen(send_text));
			if (n == 0)
				die("--send needs 1..16381 bytes");
			lens[k] = probe_seal(&p, frame, n, recs[k], sizeof(recs[k]));
			k++;
			n = link_frame_eof(frame, sizeof(frame));
			lens[k] = probe_seal(&p, frame, n, recs[k], sizeof(recs[k]));
			k++;
		}
		if (reorder && k < 2)
			die("--reorder needs two records in the tail (--send or --second-connect)");
		for (size_t i = 0; i < k; i++) {
			size_t j = reorder ? k - 1 - i : i;

			memcpy(tail + tail_len, recs[j], lens[j]);
			tail_len += lens[j];
		}
		if (truncate_at >= 0 && (size_t)truncate_at < tail_len)
			tail_len = (size_t)truncate_at;
		probe_write(&p, tail, tail_len);
		if (truncate_at >= 0)
			shutdown(p.fd, SHUT_WR);
		fflush(stdout);
		if (k > 0 || truncate_at >= 0)
			(void)probe_read(&p, UNTIL_END, NULL, &rep);
		else if (echo_text == NULL)
			(void)probe_read(&p, UNTIL_REPLY, NULL, &rep);
	}
done:
	/* Every secret freed, so that the sanitizer build's leak check passes on every path. */
	fflush(stdout);
	close(p.fd);
	link_client_hs_wipe(&hs);
	link_session_wipe(&p.ls);
	link_client_key_free(key);
	keys_secret_free(priv);
	link_access_clear(&acc);
	return 0;
}
