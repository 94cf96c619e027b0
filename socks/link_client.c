/*
 * socks/link_client.c - `shroud link`: SOCKS5 on loopback, each stream carried to the server in a
 * Noise session of its own (LINK.md; the wire layer is crypto/link.h).
 *
 * One connection's states:
 *   GREETING -> [AUTH] -> REQUEST SOCKS5 with the application
 *   -> DIALING                     TCP connect to the server (LINK_REPLY_TIMEOUT)
 *   -> HANDSHAKE                   first flight sent, the reply awaited (LINK_REPLY_TIMEOUT)
 *   -> CONNECTING                  CONNECT sent, CONNECT_REPLY awaited
 *   -> RELAY                       DATA both ways, EOF, RESET, REKEY
 * with LINGER (a SOCKS error reply is flushed, the application's side half-closed and drained
 * before the close, so it reads the reply instead of a reset) and CLOSED (freed in lc_settle).
 * A probe (link_client_probe) is a connection without an application that ends after HANDSHAKE.
 *
 * Buffers, each of fixed capacity (the backpressure):
 *   ain   the application's SOCKS messages, and whatever it sends before the link is up
 *   sout  records for the server: built in place (the application is read straight into a DATA
 *         frame's data, the frame header written before it and sealed where it lies)
 *   sin   bytes from the server: the reply, then records
 *   aout  bytes for the application: SOCKS replies, then DATA; a record is opened straight into
 *         its free room (which always holds LINK_FRAME_MAX bytes before one is opened) and the
 *         data moved 3 bytes back over the frame header
 * The application is read only when sout has room for a whole record; the server only when sin
 * has room, and sin is opened only when aout has room for a whole frame.
 *
 * Every callback ends in lc_settle(), the one place that frees a closed connection or derives the
 * watchers from the state and the buffers (STYLE.md, "Buffers and the loop").
 */
#include "socks/link_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "crypto/link.h"
#include "egress/bind.h"
#include "egress/params.h"
#include "socks/proto.h"

#define LC_BACKLOG 1024
#define LC_SOCKS_TIMEOUT 30.0  /* accept -> a complete SOCKS request from the application */
#define LC_LINGER_TIMEOUT 2.0  /* an error reply may take this long to leave before the close */
#define LC_ACCEPT_RETRY 0.1    /* seconds before accepting again after EMFILE/ENFILE */
/* CONNECT -> CONNECT_REPLY: the server resolves and connects within LINK_TARGET_TIMEOUT. */
#define LC_CONNECT_REPLY_TIMEOUT (LINK_TARGET_TIMEOUT + LINK_REPLY_TIMEOUT)

#define LC_AIN_CAP 1024			       /* a greeting, credentials, a request, a bit more */
#define LC_SOUT_CAP (2 * LINK_RECORD_MAX + 64) /* two whole records and a REKEY */
#define LC_SIN_CAP (2 * LINK_RECORD_MAX)       /* two whole records */
#define LC_AOUT_CAP (2 * LINK_FRAME_MAX)       /* two frames' data */
#define LC_REKEY_RECORD (LINK_RECORD_OVERHEAD + LINK_FRAME_HDR)

#define LC_RESET_REASON 0x01 /* RESET's reason: the application's side aborted or failed */

enum lc_state {
	LC_GREETING,
	LC_AUTH,
	LC_REQUEST,
	LC_DIALING,
	LC_HANDSHAKE,
	LC_CONNECTING,
	LC_RELAY,
	LC_LINGER,
	LC_CLOSED,
};

/* Why the link failed before the relay: the cause that lc_link_failed names. */
enum lc_failure {
	LCF_CONNECT,	   /* TCP connect to the server failed (err) */
	LCF_NO_ANSWER,	   /* no reply within LINK_REPLY_TIMEOUT */
	LCF_BAD_REPLY,	   /* the reply did not decrypt */
	LCF_CLOSED,	   /* the server closed before replying */
	LCF_CONNECT_REPLY, /* after the handshake: no CONNECT_REPLY (closed, reset, timed out) */
	LCF_INTERNAL,	   /* out of memory, a sealing error */
};

struct link_client;

/*
 * What only the way to the relay needs: the request (from the application's login and CONNECT)
 * and the handshake with the server. Allocated with the connection, wiped and freed as soon as the
 * CONNECT is sealed or the link failed, so an open connection keeps none of it (the handshake's
 * secrets, what was asked for and how).
 */
struct lc_setup {
	uint8_t target[LINK_TARGET_MAX]; /* ATYP ADDR PORT, as the application sent it */
	size_t target_len;
	char params[LINK_PARAMS_MAX + 1]; /* the username's part after its first '-' */
	size_t params_len;
	struct link_client_hs hs;
};

struct lc_conn {
	struct link_client *c;
	struct lc_conn *prev, *next;
	enum lc_state state;
	bool probe;	  /* link_client_probe's: no application */
	bool has_session; /* ls is set up (the reply was read) */
	bool a_eof;	  /* read 0 from the application */
	bool a_shut;	  /* shutdown(SHUT_WR) sent to the application */
	bool s_eof;	  /* read 0 from the server */
	bool eof_sent;	  /* our EOF record is in sout */
	bool eof_recv;	  /* the server's EOF frame arrived */
	bool sin_blocked; /* records wait in sin for room in aout */
	uint8_t method;
	int afd, sfd;
	ev_io a_read, a_write, s_read, s_write;
	ev_timer timer;
	double relay_start, last_active;
	struct buf ain, aout, sin, sout;
	struct lc_setup *setup; /* until the CONNECT is sealed or the link failed; then NULL */
	struct link_session ls;
};

struct link_client {
	struct ev_loop *loop;
	struct link_client_key *key;
	int lfd;
	struct addr bound;
	ev_io accept_io;
	ev_timer accept_retry;
	ev_signal sigint, sigterm;
	bool accepting, stopping;
	struct addr servers[LINK_CLIENT_ADDRS_MAX];
	size_t nservers, server; /* the address in use */
	char server_text[ADDR_STRLEN];
	unsigned max_conns, nconns;
	struct lc_conn *conns;
	/* The probe's outcome. */
	bool probe_done;
	int probe_status, probe_errno;
};

static void lc_settle(struct lc_conn *k);
static void lc_pump(struct lc_conn *k);

/* ---- small helpers --------------------------------------------------------------------------- */

static void lc_timer_set(struct lc_conn *k, double after)
{
	ev_timer_stop(k->c->loop, &k->timer);
	ev_timer_set(&k->timer, after, 0.);
	ev_timer_start(k->c->loop, &k->timer);
}

/* Buffers are allocated when bytes first flow that way (buf_ready), and freed again when an idle
 * relay drains them (lc_settle): memory follows the bytes in flight. */
static bool lc_buf_has_room(const struct buf *b)
{
	return b->base == NULL || buf_len(b) < b->cap;
}

/* The request and the handshake are over, either way: wipe what they left and free it. */
static void lc_setup_free(struct lc_conn *k)
{
	if (k->setup == NULL)
		return;
	link_client_hs_wipe(&k->setup->hs);
	explicit_bzero(k->setup, sizeof(*k->setup)); /* the target and the parameters */
	free(k->setup);
	k->setup = NULL;
}

/* Mark closed; lc_settle frees it when the current callback unwinds. */
static void lc_close(struct lc_conn *k)
{
	k->state = LC_CLOSED;
}

static void lc_server_close(struct lc_conn *k)
{
	if (k->sfd < 0)
		return;
	ev_io_stop(k->c->loop, &k->s_read);
	ev_io_stop(k->c->loop, &k->s_write);
	close(k->sfd);
	k->sfd = -1;
}

/* Send as much of b as the socket takes. false on a write error (errno kept). */
static bool lc_flush(int fd, struct buf *b)
{
	while (!buf_empty(b)) {
		ssize_t n = send(fd, buf_data(b), buf_len(b), MSG_NOSIGNAL);

		if (n > 0) {
			buf_consume(b, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
	return true;
}

/* Queue bytes for the application. SOCKS replies are small and aout is empty before the relay. */
static void lc_app_send(struct lc_conn *k, const uint8_t *p, size_t len)
{
	if (buf_ready(&k->aout, LC_AOUT_CAP) != ST_OK || buf_append(&k->aout, p, len) != ST_OK)
		lc_close(k);
}

/* A final SOCKS reply (method refusal, failed login, failed request): flush it, then linger. */
static void lc_app_fail(struct lc_conn *k, const uint8_t *p, size_t len)
{
	lc_server_close(k);
	lc_setup_free(k);
	lc_app_send(k, p, len);
	if (k->state == LC_CLOSED)
		return;
	k->state = LC_LINGER;
	lc_timer_set(k, LC_LINGER_TIMEOUT);
}

static void lc_reply_fail(struct lc_conn *k, uint8_t rep)
{
	uint8_t reply[SOCKS_REPLY_MAX];

	lc_app_fail(k, reply, socks_write_reply(reply, rep, NULL));
}

/*
 * End the connection at once, both ways (LINK.md: RESET aborts, a TCP close without EOF/RESET is
 * truncation). The server gets a RESET record where the session can still seal one and the socket
 * takes it now; the application a TCP reset, never a FIN that would pass for the end of a stream.
 */
static void lc_abort(struct lc_conn *k)
{
	static const struct linger rst = { .l_onoff = 1, .l_linger = 0 };

	if (k->sfd >= 0 && k->has_session && !k->ls.dead &&
	    buf_ready(&k->sout, LC_SOUT_CAP) == ST_OK &&
	    buf_room_for(&k->sout, LINK_RECORD_OVERHEAD + 4) >= LINK_RECORD_OVERHEAD + 4) {
		uint8_t *p = buf_space(&k->sout);
		size_t flen = link_frame_reset(p + LINK_RECORD_HDR, LINK_FRAME_HDR + 1,
					       LC_RESET_REASON);
		int n = flen > 0 ? link_record_seal(&k->ls, p + LINK_RECORD_HDR, flen, p,
						    k->sout.cap - k->sout.tail)
				 : ST_EINVAL;

		if (n > 0) {
			buf_produce(&k->sout, (size_t)n);
			(void)lc_flush(k->sfd, &k->sout);
		}
	}
	if (k->afd >= 0)
		(void)setsockopt(k->afd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
	lc_close(k);
}

/* "name:port" or "1.2.3.4:80" of the target, for debug logs only. */
static void lc_target_text(const struct lc_setup *u, char *out, size_t size)
{
	struct socks_target t;
	struct addr a;

	if (socks_parse_target(u->target, u->target_len, &t) <= 0) {
		snprintf(out, size, "?");
		return;
	}
	if (t.atyp == SOCKS_ATYP_DOMAIN) {
		snprintf(out, size, "%s:%u", t.u.domain.name, (unsigned)t.port);
		return;
	}
	if (t.atyp == SOCKS_ATYP_IPV4)
		addr_from_ipv4(&a, t.u.ipv4, t.port);
	else
		addr_from_ipv6(&a, t.u.ipv6, t.port);
	addr_format(&a, out, size);
}

/* ---- the link's failures --------------------------------------------------------------------- */

static int lc_failure_status(enum lc_failure why)
{
	switch (why) {
	case LCF_CONNECT:
		return ST_ESYS;
	case LCF_NO_ANSWER:
		return ST_ETIMEDOUT;
	case LCF_BAD_REPLY:
		return ST_ECRYPTO;
	case LCF_CLOSED:
	case LCF_CONNECT_REPLY:
		return ST_EPROTO;
	default:
		return ST_ENOMEM;
	}
}

static void lc_probe_finish(struct link_client *c, int status, int err)
{
	c->probe_done = true;
	c->probe_status = status;
	c->probe_errno = err;
	ev_break(c->loop, EVBREAK_ALL);
}

/*
 * The link could not carry this connection. A probe reports to link_client_probe; an application
 * gets REP 0x01 and the log one line on the likely cause, never the destination.
 */
static void lc_link_failed(struct lc_conn *k, enum lc_failure why, int err)
{
	struct link_client *c = k->c;

	lc_setup_free(k);
	lc_server_close(k);
	if (k->probe) {
		lc_probe_finish(c, lc_failure_status(why), err);
		lc_close(k);
		return;
	}
	switch (why) {
	case LCF_CONNECT:
		log_warn("cannot connect to the link server %s: %s", c->server_text, strerror(err));
		break;
	case LCF_NO_ANSWER:
		log_warn("no answer from the link server %s in %.0f s: the server key or PSK is "
			 "wrong, this key was revoked, or this machine's clock is more than %d s off",
			 c->server_text, LINK_REPLY_TIMEOUT, LINK_CLOCK_SKEW);
		break;
	case LCF_BAD_REPLY:
		log_warn("the link server %s answered but the handshake failed: wrong PSK or server "
			 "key",
			 c->server_text);
		break;
	case LCF_CLOSED:
		log_warn("the link server %s closed the connection without answering: is it the "
			 "server's link port (serve --link-listen)?",
			 c->server_text);
		break;
	case LCF_CONNECT_REPLY:
		log_warn("the link server %s did not answer a CONNECT (it closed the link or took "
			 "longer than %.0f s)",
			 c->server_text, LC_CONNECT_REPLY_TIMEOUT);
		break;
	default:
		log_warn("a link connection failed: %s", status_str(lc_failure_status(why)));
		break;
	}
	lc_reply_fail(k, SOCKS_REP_GENERAL_FAILURE);
}

/* ---- records out ----------------------------------------------------------------------------- */

/* Seal the frame built at buf_space(sout) + LINK_RECORD_HDR (frame_len bytes) where it lies. */
static bool lc_seal_in_place(struct lc_conn *k, size_t frame_len)
{
	uint8_t *p = buf_space(&k->sout);
	int n = link_record_seal(&k->ls, p + LINK_RECORD_HDR, frame_len, p,
				 k->sout.cap - k->sout.tail);

	if (n <= 0) {
		log_debug("sealing a record failed: %s", status_str(n));
		return false;
	}
	buf_produce(&k->sout, (size_t)n);
	return true;
}

/* Before a record goes out: REKEY first when it is due (LINK.md: every 2^20 records or 120 s of
 * traffic per direction). The caller made room for LC_REKEY_RECORD more bytes. */
static bool lc_rekey_if_due(struct lc_conn *k)
{
	int n;

	/* The session's epochs run on the monotonic clock (link_client_read_reply was given it);
	 * ev_now is libev's wall-clock time. */
	double now = clock_mono();

	if (!link_rekey_due(&k->ls, now))
		return true;
	n = link_record_seal_rekey(&k->ls, now, buf_space(&k->sout), k->sout.cap - k->sout.tail);
	if (n <= 0) {
		log_debug("sealing a REKEY failed: %s", status_str(n));
		return false;
	}
	buf_produce(&k->sout, (size_t)n);
	log_debug("rekeyed the send direction");
	return true;
}

/* Seal len bytes of application data (copied from p) as DATA records, room permitting.
 * Returns the bytes taken, or -1 on a sealing error. */
static ssize_t lc_seal_data(struct lc_conn *k, const uint8_t *p, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t want = LC_REKEY_RECORD + LINK_RECORD_MAX, room, n, flen;
		uint8_t *frame;

		if (buf_ready(&k->sout, LC_SOUT_CAP) != ST_OK)
			return -1;
		room = buf_room_for(&k->sout, want);
		if (room < want)
			break;
		if (!lc_rekey_if_due(k))
			return -1;
		n = MIN(len - done, (size_t)LINK_DATA_MAX);
		frame = buf_space(&k->sout) + LINK_RECORD_HDR;
		flen = link_frame_data(frame, LINK_FRAME_MAX, p + done, n);
		if (flen == 0 || !lc_seal_in_place(k, flen))
			return -1;
		done += n;
	}
	return (ssize_t)done;
}

/* The application's half-close as an EOF record: ST_OK, ST_AGAIN (no room in sout yet: its next
 * drain makes some), or another error (the connection must end). */
static int lc_seal_eof(struct lc_conn *k)
{
	size_t want = LC_REKEY_RECORD + LINK_RECORD_OVERHEAD + LINK_FRAME_HDR;

	if (buf_ready(&k->sout, LC_SOUT_CAP) != ST_OK)
		return ST_ENOMEM;
	if (buf_room_for(&k->sout, want) < want)
		return ST_AGAIN;
	if (!lc_rekey_if_due(k) ||
	    !lc_seal_in_place(
		    k, link_frame_eof(buf_space(&k->sout) + LINK_RECORD_HDR, LINK_FRAME_HDR)))
		return ST_ECRYPTO;
	return ST_OK;
}

/* ---- the handshake with the server ----------------------------------------------------------- */

static void lc_dial_next(struct lc_conn *k);

/* The TCP connect finished with err (0: connected): send the first flight, in one write. */
static void lc_dialed(struct lc_conn *k, int err)
{
	struct link_client *c = k->c;
	size_t len = 0;
	ssize_t n;

	if (err != 0) {
		lc_server_close(k);
		if (k->probe && c->server + 1 < c->nservers) {
			/* The probe tries every address of the name in turn. */
			log_debug("link server address %s: %s", c->server_text, strerror(err));
			c->server++;
			addr_format(&c->servers[c->server], c->server_text, sizeof(c->server_text));
			lc_dial_next(k);
			return;
		}
		lc_link_failed(k, LCF_CONNECT, err);
		return;
	}
	if (buf_ready(&k->sout, LC_SOUT_CAP) != ST_OK ||
	    link_client_first(&k->setup->hs, c->key, clock_unix(), buf_space(&k->sout), &len) !=
		    ST_OK) {
		lc_link_failed(k, LCF_INTERNAL, 0);
		return;
	}
	buf_produce(&k->sout, len);
	/* One write (LINK.md): a fresh socket's buffer takes the whole first flight. */
	n = send(k->sfd, buf_data(&k->sout), len, MSG_NOSIGNAL);
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		lc_link_failed(k, LCF_CONNECT, errno);
		return;
	}
	if (n > 0)
		buf_consume(&k->sout, (size_t)n);
	k->state = LC_HANDSHAKE;
	lc_timer_set(k, LINK_REPLY_TIMEOUT);
}

/* Start the TCP connect to the server address in use. */
static void lc_dial_next(struct lc_conn *k)
{
	struct link_client *c = k->c;
	int fd, bind_failed;

	k->state = LC_DIALING;
	lc_timer_set(k, LINK_REPLY_TIMEOUT);
	if (egress_connect(NULL, &c->servers[c->server], 0, &fd, &bind_failed) != ST_OK) {
		lc_dialed(k, errno);
		return;
	}
	k->sfd = fd;
	ev_io_set(&k->s_read, fd, EV_READ);
	ev_io_set(&k->s_write, fd, EV_WRITE);
}

/* The request is complete: from here the link. */
static void lc_request(struct lc_conn *k, const struct socks_request *req)
{
	char text[SOCKS_DOMAIN_MAX + 16];

	if (req->cmd != SOCKS_CMD_CONNECT) {
		/* The link carries streams only (LINK.md, version 1). */
		lc_reply_fail(k, SOCKS_REP_CMD_UNSUPPORTED);
		return;
	}
	/* ATYP ADDR PORT exactly as sent: a name stays a name, the server resolves it. */
	k->setup->target_len =
		socks_write_target(k->setup->target, sizeof(k->setup->target), &req->dst);
	if (k->setup->target_len == 0) {
		lc_reply_fail(k, SOCKS_REP_GENERAL_FAILURE);
		return;
	}
	if (log_threshold >= LOG_DEBUG) {
		lc_target_text(k->setup, text, sizeof(text));
		log_debug("CONNECT %s through the link", text);
	}
	lc_dial_next(k);
}

/* The reply arrived whole: CONNECT, in one record (its frame always 544 bytes). The request is
 * then on its way and the setup is freed. */
static void lc_send_connect(struct lc_conn *k)
{
	const struct lc_setup *u = k->setup;
	size_t flen;

	k->has_session = true;
	if (buf_ready(&k->sout, LC_SOUT_CAP) != ST_OK ||
	    buf_room_for(&k->sout, LINK_RECORD_MAX) < LINK_RECORD_MAX) {
		lc_link_failed(k, LCF_INTERNAL, 0);
		return;
	}
	flen = link_frame_connect(buf_space(&k->sout) + LINK_RECORD_HDR, u->target, u->target_len,
				  (const uint8_t *)u->params, u->params_len);
	if (flen == 0 || !lc_seal_in_place(k, flen)) {
		lc_link_failed(k, LCF_INTERNAL, 0);
		return;
	}
	lc_setup_free(k);
	k->state = LC_CONNECTING;
	lc_timer_set(k, LC_CONNECT_REPLY_TIMEOUT);
}

/* HANDSHAKE: is the reply in sin yet? */
static void lc_read_reply(struct lc_conn *k)
{
	int n = link_client_read_reply(&k->setup->hs, buf_data(&k->sin), buf_len(&k->sin),
				       clock_mono(), &k->ls);

	if (n == ST_NEED_MORE) {
		if (k->s_eof)
			lc_link_failed(k, LCF_CLOSED, 0);
		return;
	}
	if (n < 0) {
		lc_link_failed(k, LCF_BAD_REPLY, 0);
		return;
	}
	buf_consume(&k->sin, (size_t)n);
	if (k->probe) {
		/* Keys and clock are right. Close without a CONNECT: the server sees a session that
		 * never asks for anything and lets it go. */
		link_session_wipe(&k->ls);
		lc_setup_free(k);
		lc_server_close(k);
		lc_probe_finish(k->c, ST_OK, 0);
		lc_close(k);
		return;
	}
	lc_send_connect(k);
}

/* ---- records in ------------------------------------------------------------------------------ */

/* CONNECT_REPLY: its REP and BND become the application's SOCKS reply. */
static void lc_connect_reply(struct lc_conn *k, const struct link_frame *f)
{
	uint8_t reply[3 + LINK_TARGET_MAX];
	size_t len = 3 + f->target_len;

	/* RFC 1928 §6: VER REP RSV BND.ATYP BND.ADDR BND.PORT */
	reply[0] = SOCKS_VERSION;
	reply[1] = f->rep;
	reply[2] = 0x00;
	if (f->target_len > LINK_TARGET_MAX) {
		lc_abort(k);
		return;
	}
	memcpy(reply + 3, f->target, f->target_len);
	if (f->rep != SOCKS_REP_SUCCEEDED) {
		log_debug("the server answered the CONNECT with REP %#04x", f->rep);
		lc_app_fail(k, reply, len);
		return;
	}
	lc_app_send(k, reply, len);
	if (k->state == LC_CLOSED)
		return;
	k->state = LC_RELAY;
	k->relay_start = k->last_active = ev_now(k->c->loop);
	lc_timer_set(k, LINK_IDLE_TIMEOUT);
	/* What the application sent before the reply (pipelined after its request), then its
	 * half-close if it came already. */
	if (k->ain.base != NULL && !buf_empty(&k->ain)) {
		ssize_t n = lc_seal_data(k, buf_data(&k->ain), buf_len(&k->ain));

		if (n < 0 || (size_t)n != buf_len(&k->ain)) {
			lc_abort(k);
			return;
		}
		buf_consume(&k->ain, (size_t)n);
	}
	buf_free(&k->ain);
}

/*
 * Open the records waiting in sin, as far as aout has room for their frames. A broken record
 * (forged, out of order, a rule of LINK.md broken) ends the connection as a truncation.
 */
static void lc_open_records(struct lc_conn *k)
{
	k->sin_blocked = false;
	while (k->state == LC_CONNECTING || k->state == LC_RELAY) {
		struct link_frame f;
		uint8_t *space;
		int n;

		if (k->sin.base == NULL || buf_empty(&k->sin))
			return;
		if (buf_ready(&k->aout, LC_AOUT_CAP) != ST_OK) {
			lc_abort(k);
			return;
		}
		if (buf_room_for(&k->aout, LINK_FRAME_MAX) < LINK_FRAME_MAX) {
			k->sin_blocked = true;
			return;
		}
		space = buf_space(&k->aout);
		n = link_record_open(&k->ls, buf_data(&k->sin), buf_len(&k->sin), space, &f);
		if (n == ST_NEED_MORE)
			return;
		if (n < 0) {
			log_debug("a record from the server failed: %s", status_str(n));
			if (k->state == LC_CONNECTING)
				lc_link_failed(k, LCF_CONNECT_REPLY, 0);
			else
				lc_abort(k);
			return;
		}
		buf_consume(&k->sin, (size_t)n);
		k->last_active = ev_now(k->c->loop);
		switch (f.type) {
		case LINK_FRAME_CONNECT_REPLY:
			lc_connect_reply(k, &f);
			break;
		case LINK_FRAME_DATA:
			/* The data sits 3 bytes into the free room: move it over the header. */
			memmove(space, f.data, f.data_len);
			buf_produce(&k->aout, f.data_len);
			break;
		case LINK_FRAME_EOF:
			k->eof_recv = true;
			break;
		case LINK_FRAME_RESET:
			log_debug("the server reset the stream (reason %u)", (unsigned)f.reason);
			if (k->state == LC_CONNECTING)
				lc_link_failed(k, LCF_CONNECT_REPLY, 0);
			else
				lc_abort(k);
			return;
		default:
			/* PADDING; REKEY (the receive state was rekeyed by link_record_open). */
			break;
		}
	}
}

/* ---- SOCKS5 with the application ------------------------------------------------------------- */

/* RFC 1928 §3: username/password when offered (its parameters ride along), else none. */
static uint8_t lc_choose_method(const struct socks_greeting *g)
{
	if (g->offers_userpass)
		return SOCKS_METHOD_USERPASS;
	if (g->offers_none)
		return SOCKS_METHOD_NONE;
	return SOCKS_METHOD_UNACCEPTABLE;
}

/* RFC 1929: the password is ignored; the username's part after its first '-' is the parameters,
 * checked against egress/params.h's grammar as the server's plain port checks them. */
static bool lc_auth(struct lc_conn *k, const struct socks_auth *a)
{
	struct egress_params params;
	const char *dash, *why;

	if (strlen(a->user) != a->ulen)
		return false; /* a NUL inside the name */
	dash = strchr(a->user, '-');
	if (dash == NULL) {
		k->setup->params_len = 0;
		k->setup->params[0] = '\0';
		return true;
	}
	if (egress_params_parse_tail(dash + 1, &params, &why) != ST_OK) {
		log_debug("username parameters refused: %s", why);
		return false;
	}
	k->setup->params_len = strlen(dash + 1);
	memcpy(k->setup->params, dash + 1, k->setup->params_len + 1);
	return true;
}

/* The handshake needs more bytes: if the application closed its side, they never come. */
static void lc_starved(struct lc_conn *k)
{
	if (k->a_eof)
		lc_close(k);
}

/* Parse the complete messages at the head of ain, as far as the state allows. */
static void lc_advance(struct lc_conn *k)
{
	for (;;) {
		const uint8_t *p = buf_data(&k->ain);
		size_t len = buf_len(&k->ain);
		uint8_t reply[2];
		int n;

		switch (k->state) {
		case LC_GREETING: {
			struct socks_greeting g;

			n = socks_parse_greeting(p, len, &g);
			if (n == ST_NEED_MORE) {
				lc_starved(k);
				return;
			}
			if (n < 0) {
				log_debug("bad greeting: %s", status_str(n));
				lc_close(k);
				return;
			}
			buf_consume(&k->ain, (size_t)n);
			k->method = lc_choose_method(&g);
			socks_write_method(reply, k->method);
			if (k->method == SOCKS_METHOD_UNACCEPTABLE) {
				lc_app_fail(k, reply, sizeof(reply));
				return;
			}
			lc_app_send(k, reply, sizeof(reply));
			if (k->state == LC_CLOSED)
				return;
			k->state = k->method == SOCKS_METHOD_USERPASS ? LC_AUTH : LC_REQUEST;
			break;
		}
		case LC_AUTH: {
			struct socks_auth a;
			bool ok;

			n = socks_parse_auth(p, len, &a);
			if (n == ST_NEED_MORE) {
				lc_starved(k);
				return;
			}
			if (n > 0) {
				/* The password is not used, but it is one: wipe it at once. */
				explicit_bzero(k->ain.base + k->ain.head, (size_t)n);
				buf_consume(&k->ain, (size_t)n);
			}
			ok = n > 0 && lc_auth(k, &a);
			explicit_bzero(&a, sizeof(a));
			socks_write_auth_status(reply,
						ok ? SOCKS_AUTH_SUCCESS : SOCKS_AUTH_FAILURE);
			if (!ok) {
				lc_app_fail(k, reply, sizeof(reply));
				return;
			}
			lc_app_send(k, reply, sizeof(reply));
			if (k->state == LC_CLOSED)
				return;
			k->state = LC_REQUEST;
			break;
		}
		case LC_REQUEST: {
			struct socks_request req;

			n = socks_parse_request(p, len, &req);
			if (n == ST_NEED_MORE) {
				lc_starved(k);
				return;
			}
			if (n < 0) {
				log_debug("bad request: %s", status_str(n));
				lc_reply_fail(k, socks_request_error_rep(n));
				return;
			}
			buf_consume(&k->ain, (size_t)n);
			lc_request(k, &req);
			return;
		}
		default:
			return;
		}
	}
}

/* ---- I/O ------------------------------------------------------------------------------------- */

/* Read from fd into b (allocated with cap when needed). Bytes read, 0 at EOF, -1 with nothing to
 * read now, -2 on an error (errno kept). */
static ssize_t lc_read(int fd, struct buf *b, size_t cap)
{
	size_t room;
	ssize_t n;

	if (buf_ready(b, cap) != ST_OK)
		return -2;
	/* buf_room may move the pending bytes to the front: ask it before taking buf_space (in
	 * one argument list the order of the two calls would be the compiler's choice). */
	room = buf_room(b);
	n = recv(fd, buf_space(b), room, 0);
	if (n > 0) {
		buf_produce(b, (size_t)n);
		return n;
	}
	if (n == 0)
		return 0;
	return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : -2;
}

/* RELAY: read the application straight into DATA frames in sout, as long as a whole record fits.
 * 0 on EOF, -1 when nothing more can be read now, -2 on an error. */
static int lc_read_app_into_records(struct lc_conn *k)
{
	for (;;) {
		size_t want = LC_REKEY_RECORD + LINK_RECORD_MAX;
		uint8_t *frame;
		ssize_t n;
		size_t flen;

		if (buf_ready(&k->sout, LC_SOUT_CAP) != ST_OK)
			return -2;
		if (buf_room_for(&k->sout, want) < want)
			return -1;
		if (!lc_rekey_if_due(k))
			return -2;
		/* The data lands where the frame wants it: after the record and frame headers. */
		frame = buf_space(&k->sout) + LINK_RECORD_HDR;
		n = recv(k->afd, frame + LINK_FRAME_HDR, LINK_DATA_MAX, 0);
		if (n == 0)
			return 0;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return -1;
		if (n < 0)
			return -2;
		k->last_active = ev_now(k->c->loop);
		flen = link_frame_data(frame, LINK_FRAME_MAX, frame + LINK_FRAME_HDR, (size_t)n);
		if (flen == 0 || !lc_seal_in_place(k, flen))
			return -2;
		if ((size_t)n < LINK_DATA_MAX)
			return -1; /* the socket is drained: no extra recv just to see EAGAIN */
	}
}

static void lc_app_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct lc_conn *k = container_of(io, struct lc_conn, a_read);
	ssize_t n;

	UNUSED(loop);
	UNUSED(revents);
	if (k->state == LC_LINGER) {
		/* Drain and drop until the application closes or the linger timer ends it. */
		uint8_t sink[4096];

		n = recv(k->afd, sink, sizeof(sink), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			lc_close(k);
		lc_settle(k);
		return;
	}
	if (k->state == LC_RELAY) {
		n = lc_read_app_into_records(k);
	} else {
		/* SOCKS messages, and whatever comes before the link is up: held in ain. */
		n = lc_read(k->afd, &k->ain, LC_AIN_CAP);
		if (n > 0 && k->state <= LC_REQUEST)
			lc_advance(k);
	}
	if (n == 0) {
		k->a_eof = true;
		if (k->state <= LC_REQUEST)
			lc_advance(k);
	} else if (n == -2) {
		log_debug("application connection: %s", strerror(errno));
		lc_abort(k);
	}
	lc_pump(k);
	lc_settle(k);
}

static void lc_app_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct lc_conn *k = container_of(io, struct lc_conn, a_write);

	UNUSED(loop);
	UNUSED(revents);
	lc_pump(k);
	lc_settle(k);
}

static void lc_server_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct lc_conn *k = container_of(io, struct lc_conn, s_read);
	ssize_t n;

	UNUSED(loop);
	UNUSED(revents);
	/* One read as large as sin allows (level-triggered: more is reported again); records are
	 * opened from it as aout has room. */
	n = lc_read(k->sfd, &k->sin, LC_SIN_CAP);
	if (n == 0) {
		k->s_eof = true;
	} else if (n == -2) {
		/* A reset from the server, or worse: what arrived before it still counts. */
		log_debug("link connection: %s", strerror(errno));
		k->s_eof = true;
	}
	if (n != -1) {
		if (k->state == LC_HANDSHAKE)
			lc_read_reply(k);
		else
			lc_open_records(k);
	}
	lc_pump(k);
	lc_settle(k);
}

static void lc_server_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct lc_conn *k = container_of(io, struct lc_conn, s_write);

	UNUSED(loop);
	UNUSED(revents);
	if (k->state == LC_DIALING)
		lc_dialed(k, egress_connect_result(k->sfd));
	lc_pump(k);
	lc_settle(k);
}

/*
 * After any event: open what sin holds, push both ways, pass half-closes on once a direction is
 * drained, and finish a connection whose both directions ended.
 */
static void lc_pump(struct lc_conn *k)
{
	if (k->state == LC_CLOSED)
		return;
	if (k->afd >= 0 && k->aout.base != NULL && !lc_flush(k->afd, &k->aout)) {
		log_debug("application connection: %s", strerror(errno));
		lc_abort(k);
		return;
	}
	if (k->state == LC_LINGER) {
		if (buf_empty(&k->aout) && !k->a_shut) {
			/* The reply is out: say we are done, then drain what the application still
			 * sends, so the close does not turn into a reset that eats the reply. */
			shutdown(k->afd, SHUT_WR);
			k->a_shut = true;
		}
		return;
	}
	if (k->state == LC_CONNECTING || k->state == LC_RELAY) {
		lc_open_records(k);
		if (k->state == LC_CLOSED || k->state == LC_LINGER)
			return;
		if (k->aout.base != NULL && !lc_flush(k->afd, &k->aout)) {
			lc_abort(k);
			return;
		}
	}
	if (k->state == LC_RELAY && k->a_eof && !k->eof_sent) {
		int st = lc_seal_eof(k);

		if (st == ST_OK)
			k->eof_sent = true;
		else if (st != ST_AGAIN)
			lc_abort(k);
	}
	if (k->state == LC_CLOSED)
		return;
	if (k->sfd >= 0 && k->state >= LC_HANDSHAKE && k->sout.base != NULL &&
	    !lc_flush(k->sfd, &k->sout)) {
		log_debug("link connection: %s", strerror(errno));
		if (k->state == LC_RELAY)
			lc_abort(k);
		else if (k->state == LC_HANDSHAKE)
			lc_link_failed(k, LCF_CLOSED, 0);
		else
			lc_link_failed(k, LCF_CONNECT_REPLY, 0);
		return;
	}
	if (k->state == LC_CONNECTING && k->s_eof && !k->sin_blocked) {
		/* Closed (or reset) after the handshake, before answering the CONNECT. */
		lc_link_failed(k, LCF_CONNECT_REPLY, 0);
		return;
	}
	if (k->state != LC_RELAY)
		return;
	if (k->eof_recv && buf_empty(&k->aout) && !k->a_shut) {
		shutdown(k->afd, SHUT_WR); /* the target's FIN reaches the application */
		k->a_shut = true;
	}
	if (k->s_eof && !k->eof_recv && !k->sin_blocked) {
		/* A TCP close without EOF or RESET: truncation, never a clean end (LINK.md). */
		log_debug("the link closed without EOF: resetting the application's connection");
		lc_abort(k);
		return;
	}
	if (k->eof_sent && k->eof_recv && k->a_shut && buf_empty(&k->sout) &&
	    buf_empty(&k->aout) && (k->sin.base == NULL || buf_empty(&k->sin))) {
		/* Both directions ended cleanly: close(2) sends whichever FIN is still owed. */
		lc_close(k);
	}
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void lc_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct lc_conn *k = container_of(t, struct lc_conn, timer);

	UNUSED(revents);
	switch (k->state) {
	case LC_DIALING:
		lc_dialed(k, ETIMEDOUT); /* like a refused connect: the probe tries the next address */
		break;
	case LC_HANDSHAKE:
		lc_link_failed(k, LCF_NO_ANSWER, 0);
		break;
	case LC_CONNECTING:
		lc_link_failed(k, LCF_CONNECT_REPLY, 0);
		break;
	case LC_RELAY: {
		double now = ev_now(loop), idle = now - k->last_active;

		if (now - k->relay_start >= LINK_SESSION_MAX) {
			log_debug("the link session reached its maximal age");
			lc_abort(k);
		} else if (idle >= LINK_IDLE_TIMEOUT) {
			log_debug("idle timeout");
			lc_abort(k);
		} else {
			/* Activity since the timer was set: sleep for the rest (cheaper than
			 * re-arming the timer on every read and write). */
			lc_timer_set(k, MIN(LINK_IDLE_TIMEOUT - idle,
					    LINK_SESSION_MAX - (now - k->relay_start)));
		}
		break;
	}
	default:
		/* The application's SOCKS deadline, or a linger that ran out: close. */
		lc_close(k);
		break;
	}
	lc_pump(k);
	lc_settle(k);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void lc_accept_start(struct link_client *c);

static void lc_free(struct lc_conn *k)
{
	struct link_client *c = k->c;

	ev_io_stop(c->loop, &k->a_read);
	ev_io_stop(c->loop, &k->a_write);
	ev_timer_stop(c->loop, &k->timer);
	lc_server_close(k);
	if (k->afd >= 0)
		close(k->afd);
	/* A login that never completed may have left part of a password in ain. */
	if (k->ain.base != NULL)
		explicit_bzero(k->ain.base, k->ain.cap);
	buf_free(&k->ain);
	buf_free(&k->aout);
	buf_free(&k->sin);
	buf_free(&k->sout);
	lc_setup_free(k);
	link_session_wipe(&k->ls);
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		c->conns = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	free(k);
	if (c->nconns-- == c->max_conns)
		lc_accept_start(c);
}

static void lc_watch(struct ev_loop *loop, ev_io *io, bool want)
{
	if (want && !ev_is_active(io))
		ev_io_start(loop, io);
	else if (!want && ev_is_active(io))
		ev_io_stop(loop, io);
}

/* The one place that decides which watchers run, from the state and the buffers. */
static void lc_settle(struct lc_conn *k)
{
	struct ev_loop *loop = k->c->loop;
	bool relay = k->state == LC_RELAY, linger = k->state == LC_LINGER, app_read;

	if (k->state == LC_CLOSED) {
		lc_free(k);
		return;
	}
	if (relay) {
		/* An idle relay holds no buffer; the next bytes allocate again. */
		if (k->sin.base != NULL && buf_empty(&k->sin))
			buf_free(&k->sin);
		if (k->sout.base != NULL && buf_empty(&k->sout))
			buf_free(&k->sout);
		if (k->aout.base != NULL && buf_empty(&k->aout))
			buf_free(&k->aout);
	}
	if (k->afd >= 0) {
		if (relay)
			app_read = !k->a_eof && (k->sout.base == NULL ||
						 k->sout.cap - buf_len(&k->sout) >=
							 LC_REKEY_RECORD + LINK_RECORD_MAX);
		else
			app_read = linger || (!k->a_eof && lc_buf_has_room(&k->ain));
		lc_watch(loop, &k->a_read, app_read);
		lc_watch(loop, &k->a_write, k->aout.base != NULL && !buf_empty(&k->aout));
	}
	if (k->sfd >= 0) {
		bool linked = k->state == LC_HANDSHAKE || k->state == LC_CONNECTING || relay;

		lc_watch(loop, &k->s_read, linked && !k->s_eof && lc_buf_has_room(&k->sin));
		lc_watch(loop, &k->s_write,
			 k->state == LC_DIALING ||
				 (linked && k->sout.base != NULL && !buf_empty(&k->sout)));
	}
}

static struct lc_conn *lc_new(struct link_client *c, int afd)
{
	struct lc_conn *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return NULL;
	k->setup = calloc(1, sizeof(*k->setup));
	if (k->setup == NULL) {
		free(k);
		return NULL;
	}
	k->c = c;
	k->afd = afd;
	k->sfd = -1;
	k->state = LC_GREETING;
	ev_io_init(&k->a_read, lc_app_read_cb, afd, EV_READ);
	ev_io_init(&k->a_write, lc_app_write_cb, afd, EV_WRITE);
	ev_io_init(&k->s_read, lc_server_read_cb, -1, EV_READ);
	ev_io_init(&k->s_write, lc_server_write_cb, -1, EV_WRITE);
	ev_timer_init(&k->timer, lc_timer_cb, LC_SOCKS_TIMEOUT, 0.);
	ev_timer_start(c->loop, &k->timer);
	k->next = c->conns;
	if (c->conns != NULL)
		c->conns->prev = k;
	c->conns = k;
	c->nconns++;
	return k;
}

/* ---- the listener ---------------------------------------------------------------------------- */

static void lc_accept_start(struct link_client *c)
{
	if (c->accepting || c->stopping || c->lfd < 0 || c->nconns >= c->max_conns)
		return;
	ev_io_start(c->loop, &c->accept_io);
	c->accepting = true;
}

static void lc_accept_stop(struct link_client *c)
{
	if (!c->accepting)
		return;
	ev_io_stop(c->loop, &c->accept_io);
	c->accepting = false;
}

static void lc_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct link_client *c = container_of(io, struct link_client, accept_io);
	struct lc_conn *k;
	int one = 1, fd;

	UNUSED(revents);
	fd = accept4(c->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* No busy loop on a ready listener: wait for a connection to end or for
			 * the retry timer. */
			log_warn("accept: %s; pausing new connections", strerror(errno));
			lc_accept_stop(c);
			ev_timer_stop(loop, &c->accept_retry);
			ev_timer_set(&c->accept_retry, LC_ACCEPT_RETRY, 0.);
			ev_timer_start(loop, &c->accept_retry);
		}
		return;
	}
	/* Replies and small writes of interactive applications go out at once. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	k = lc_new(c, fd);
	if (k == NULL) {
		log_warn("out of memory for a new connection");
		close(fd);
		return;
	}
	if (c->nconns >= c->max_conns)
		lc_accept_stop(c);
	lc_settle(k);
}

static void lc_accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct link_client *c = container_of(t, struct link_client, accept_retry);

	UNUSED(loop);
	UNUSED(revents);
	lc_accept_start(c);
}

static void lc_signal_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct link_client *c = sig->data;

	UNUSED(revents);
	log_info("signal %d: stopping", sig->signum);
	c->stopping = true;
	lc_accept_stop(c);
	ev_break(loop, EVBREAK_ALL);
}

/* The listening socket on a loopback address. ST_OK or ST_ESYS (errno kept). */
static int lc_listen(struct link_client *c, const struct addr *a)
{
	int one = 1, fd, saved;

	fd = socket(addr_family(a), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return ST_ESYS;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (addr_family(a) == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, &a->u.sa, a->len) < 0 || listen(fd, LC_BACKLOG) < 0)
		goto fail;
	c->bound.len = sizeof(c->bound.u);
	if (getsockname(fd, &c->bound.u.sa, &c->bound.len) < 0)
		goto fail;
	c->lfd = fd;
	return ST_OK;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return ST_ESYS;
}

/* The server's addresses: a literal as is, a name through getaddrinfo (blocking). */
static int lc_resolve(struct link_client *c, const char *host, uint16_t port, char *why,
		      size_t size)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	if (addr_parse_ip(host, port, &c->servers[0]) == ST_OK) {
		c->nservers = 1;
		return ST_OK;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(why, size, "cannot resolve the server's name %s: %s", host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return ST_ENOTFOUND;
	}
	c->nservers = 0;
	for (struct addrinfo *ai = res; ai != NULL && c->nservers < LINK_CLIENT_ADDRS_MAX;
	     ai = ai->ai_next) {
		struct addr a;
		bool dup = false;

		if (addr_from_sockaddr(&a, ai->ai_addr, ai->ai_addrlen) != ST_OK)
			continue;
		addr_set_port(&a, port);
		for (size_t i = 0; i < c->nservers; i++)
			dup = dup || addr_equal(&a, &c->servers[i]);
		if (!dup)
			c->servers[c->nservers++] = a;
	}
	freeaddrinfo(res);
	if (c->nservers == 0) {
		snprintf(why, size, "the server's name %s has no IPv4 or IPv6 address", host);
		return ST_ENOTFOUND;
	}
	return ST_OK;
}

int link_client_new(const struct link_client_config *cfg, struct link_client_key *key,
		    struct link_client **out, char why[static LINK_CLIENT_WHY_MAX])
{
	char text[ADDR_STRLEN];
	struct link_client *c;
	int rc;

	why[0] = '\0';
	if (cfg->server_host == NULL || cfg->server_host[0] == '\0' || cfg->server_port == 0 ||
	    key == NULL) {
		snprintf(why, LINK_CLIENT_WHY_MAX, "no server address");
		return ST_EINVAL;
	}
	if (!addr_is_loopback(&cfg->listen)) {
		snprintf(why, LINK_CLIENT_WHY_MAX,
			 "refusing to listen on %s: the local side of the link serves this machine "
			 "only (a loopback address, e.g. 127.0.0.1:1080), or anyone who reaches the "
			 "port would use the link",
			 addr_format(&cfg->listen, text, sizeof(text)));
		return ST_EPERM;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		snprintf(why, LINK_CLIENT_WHY_MAX, "out of memory");
		return ST_ENOMEM;
	}
	c->lfd = -1;
	c->max_conns = cfg->max_conns != 0 ? cfg->max_conns : LINK_CLIENT_CONNS_DEFAULT;
	rc = lc_resolve(c, cfg->server_host, cfg->server_port, why, LINK_CLIENT_WHY_MAX);
	if (rc != ST_OK)
		goto fail;
	addr_format(&c->servers[0], c->server_text, sizeof(c->server_text));
	rc = lc_listen(c, &cfg->listen);
	if (rc != ST_OK) {
		snprintf(why, LINK_CLIENT_WHY_MAX, "cannot listen on %s: %s",
			 addr_format(&cfg->listen, text, sizeof(text)), strerror(errno));
		goto fail;
	}
	c->loop = ev_default_loop(EVFLAG_AUTO);
	if (c->loop == NULL) {
		snprintf(why, LINK_CLIENT_WHY_MAX, "cannot create the event loop");
		rc = ST_ENOMEM;
		goto fail;
	}
	/* Signals are caught from here on: the probe and the run stop on them. */
	ev_signal_init(&c->sigint, lc_signal_cb, SIGINT);
	ev_signal_init(&c->sigterm, lc_signal_cb, SIGTERM);
	c->sigint.data = c->sigterm.data = c;
	ev_signal_start(c->loop, &c->sigint);
	ev_signal_start(c->loop, &c->sigterm);
	ev_io_init(&c->accept_io, lc_accept_cb, c->lfd, EV_READ);
	ev_timer_init(&c->accept_retry, lc_accept_retry_cb, 0., 0.);
	c->key = key; /* transferred */
	*out = c;
	return ST_OK;
fail:
	if (c->lfd >= 0)
		close(c->lfd);
	free(c);
	return rc;
}

const struct addr *link_client_bound(const struct link_client *c)
{
	return &c->bound;
}

int link_client_probe(struct link_client *c, char addr[static ADDR_STRLEN])
{
	struct lc_conn *k;

	c->probe_done = false;
	c->server = 0;
	addr_format(&c->servers[0], c->server_text, sizeof(c->server_text));
	if (c->stopping)
		return ST_AGAIN;
	k = lc_new(c, -1);
	if (k == NULL)
		return ST_ENOMEM;
	k->probe = true;
	lc_dial_next(k);
	lc_settle(k);
	if (!c->probe_done)
		ev_run(c->loop, 0);
	snprintf(addr, ADDR_STRLEN, "%s", c->server_text);
	if (!c->probe_done) {
		/* A signal broke the loop first: the probe is abandoned. */
		for (k = c->conns; k != NULL; k = k->next)
			if (k->probe) {
				lc_close(k);
				lc_settle(k);
				break;
			}
		return ST_AGAIN;
	}
	errno = c->probe_errno;
	return c->probe_status;
}

int link_client_run(struct link_client *c)
{
	char text[ADDR_STRLEN];

	if (!c->stopping) {
		log_info("serving SOCKS5 on %s through the link server %s",
			 addr_format(&c->bound, text, sizeof(text)), c->server_text);
		lc_accept_start(c);
		ev_run(c->loop, 0);
	}
	lc_accept_stop(c);
	/* Every open stream ends as a reset: none of them ended, so none may look as if it had. */
	while (c->conns != NULL) {
		struct lc_conn *k = c->conns;

		if (k->state == LC_LINGER)
			lc_close(k);
		else
			lc_abort(k);
		lc_settle(k);
	}
	return ST_OK;
}

void link_client_free(struct link_client *c)
{
	if (c == NULL)
		return;
	while (c->conns != NULL) {
		struct lc_conn *k = c->conns;

		lc_close(k);
		lc_settle(k);
	}
	if (c->loop != NULL) {
		ev_signal_stop(c->loop, &c->sigint);
		ev_signal_stop(c->loop, &c->sigterm);
		ev_io_stop(c->loop, &c->accept_io);
		ev_timer_stop(c->loop, &c->accept_retry);
	}
	if (c->lfd >= 0)
		close(c->lfd);
	link_client_key_free(c->key);
	free(c);
}
