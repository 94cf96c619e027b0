"""The encrypted link end to end (issue 4): applications -> `shroud link` (SOCKS5 on loopback) ->
Noise sessions -> `shroud serve --link-listen` -> targets on loopback.

Every daemon, client and target is started here, on loopback. The links are made with
`shroud link add` before the daemon starts (so its first snapshot has them); their access keys name
a placeholder port and are pointed at the port the daemon bound afterwards (the key's check is
recomputed: harness.access_key_with), or at a recording relay in front of it.

Proves:
- real clients: curl --socks5-hostname fetches a known body through the link from a name target
  (`localhost`, served on 127.0.0.1 and ::1 with one port), an IPv6 literal ([::1]) and an IPv4
  literal; the name reaches the daemon as a name (it resolves it: its debug log says so) and the
  client never resolves anything (under strace it opens no resolver file and connects nowhere but
  to the server); the client's log at the default level names no destination;
- the key and the server: from a 0600 file, from stdin with and without `--access-key-file -`;
  a server named by an IPv4 address, an IPv6 address (the ready line puts it in brackets) or a
  name (`localhost`, resolved at start) against a daemon serving the link alone (`--listen none`,
  a link listener per family); a client listening on [::1];
- the relay: 200 MB each way arrive intact (SHA-256 on both ends, throughput logged); a half-close
  from the application reaches the target as EOF while the echo still flows back, then EOF; a
  half-close from the target reaches the application, which can still send afterwards; when the
  application stops reading, the target is pushed back (it cannot send all of 64 MB) and the
  client's RSS grows by less than 16 MiB, and likewise when the target stops reading; every byte
  arrives once they read again;
- egress: the username's parameters given to the local port steer the source address exactly as
  on the plain port: for the same user, session and site the link and the plain port pick the same
  source; one session keeps one source; 30 sessions spread over >= 5 sources; `ttl-0` rotates;
  tag filters pick only tagged entries (and none matching -> REP 0x02); a malformed parameter fails
  the login locally (RFC 1929 status 0x01); BIND and UDP ASSOCIATE get REP 0x07;
- what the network sees (a relay in the test records every byte of every connection, both ways):
  not the target's name, not the payload, not the session id, not the SOCKS5 greeting or request
  bytes, not the client's or the server's static public key nor the PSK; the first flights are
  128..1028 bytes, the replies 52..952, and their sizes differ across connections; a connection
  cut without EOF (truncation) and a flipped byte in a record both reach the application as a
  reset, never as a clean end;
- errors at start, each with its message and exit status 1: a key edited to another server key
  (no answer in 10 s), a wrong PSK (the handshake failed), a closed port (cannot connect, names the
  address), a revoked key (no answer); key files readable by others and symbolic links are refused;
  a non-loopback --listen is refused; an access key without a private part works with --key FILE
  from `shroud keygen` (after `link allow`), and is refused without it;
- revocation: `shroud link revoke` closes that key's open connections within ~2 s (the daemon
  polls its database each second) while another key's connection keeps echoing; a new connection
  with the revoked key gets REP 0x01 after 10 s and the client's log names the likely causes, not
  the destination; when the daemon is gone, open streams end as resets and new ones get REP 0x01
  at once with a log line naming the server's address; SIGTERM stops the client with exit 0 and
  its open connections end as resets.
"""
import base64
import hashlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, LinkClient, access_key_with, add_user, cli, echo_check,  # noqa: E402
                     echo_open, egress_attempt, link_add, link_client_fail, parse_access_key,
                     pool_add, recv_all, recv_exact, socks_open)

USER, PW = "alice", "alice-secret-pw"
USER2, PW2 = "bob", "bob-secret-pw"
POOL20 = ["127.0.0.%d" % i for i in range(2, 22)]
MB = 1000 * 1000
BULK = 200 * MB
NO_ANSWER = "no answer from the server in 10 s: the server key or PSK is wrong, this key was " \
            "revoked, or this machine's clock is more than 60 s off"
BAD_HANDSHAKE = "the server answered but the handshake failed: wrong PSK or server key"
REVOKE_BOUND = 3.5   # "within ~2 s": a 1 s database poll, with room for ASan


# --------------------------------------------------------------------------------------------
# a relay that records what the network between the client and the server carries


class RecordingRelay:
    """Listens on 127.0.0.1; each connection is forwarded to `upstream` (set before the first one
    arrives) and every byte is kept, per connection: `up` (client -> server) and `down`, plus the
    size of the first chunk each way. Half-closes are passed on. cut() ends every live connection
    with a FIN both ways (no RST); flip_next_down(i) flips one bit of the next chunk from the
    server on connection i."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = self.sock.getsockname()
        self.upstream = None
        self.conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(self.upstream, timeout=10)
            rec = {"up": bytearray(), "down": bytearray(), "first_up": None, "first_down": None,
                   "socks": (a, b), "flip": False, "done": threading.Event()}
            with self._lock:
                self.conns.append(rec)
            threading.Thread(target=self._pump, args=(rec,), daemon=True).start()

    def _pump(self, rec):
        a, b = rec["socks"]
        open_ = {a: True, b: True}
        try:
            while any(open_.values()) and not self._stop.is_set():
                r, _, _ = select.select([s for s in (a, b) if open_[s]], [], [], 0.1)
                for s in r:
                    other = b if s is a else a
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = None
                    if not data:
                        open_[s] = False
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    if s is a:
                        rec["up"] += data
                        rec["first_up"] = rec["first_up"] or len(data)
                    else:
                        if rec["flip"]:
                            rec["flip"] = False
                            data = bytes([data[0] ^ 0x01]) + data[1:]
                        rec["down"] += data
                        rec["first_down"] = rec["first_down"] or len(data)
                    try:
                        other.sendall(data)
                    except OSError:
                        open_[s] = open_[other] = False
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            rec["done"].set()

    def flip_next_down(self, i):
        self.conns[i]["flip"] = True

    def cut(self):
        """FIN both ways on every live connection, then close: a truncation, not a reset."""
        with self._lock:
            conns = list(self.conns)
        for rec in conns:
            for s in rec["socks"]:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self.sock.close()


# --------------------------------------------------------------------------------------------


class LinkCase(DaemonTestCase):

    def link_daemon(self, links=(("k1", USER),), users=((USER, PW),), pool=(), args=(),
                    listen=("127.0.0.1:0",), relay=None, revoke=(), log_level="debug",
                    link_listen=("127.0.0.1:0",)):
        """Users, pool entries and links made through the CLI (and the links named in `revoke`
        revoked again), then `shroud serve` with a link listener. Returns (daemon, {link name:
        access key pointed at the link port, or at the relay, whose upstream becomes the link
        port})."""
        ll = [x for spec in link_listen for x in ("--link-listen", spec)]
        d = harness.Daemon(workdir=self.workdir(), listen=listen, args=ll + list(args),
                           log_level=log_level)
        for name, pw in users:
            add_user(d.db, name, pw)
        for a in pool:
            pool_add(d.db, *a)
        keys = {name: link_add(d.db, name, user) for name, user in links}
        for name in revoke:
            harness.link_revoke(d.db, name)
        self.addCleanup(d.stop)
        d.start()
        host, port = d.link_addr()
        if relay is not None:
            relay.upstream = (host, port)
            host, port = relay.addr
        return d, {n: access_key_with(k, host=host, port=port) for n, k in keys.items()}

    def start_link(self, key, **kw):
        c = LinkClient(key, workdir=self.workdir(), **kw)
        self.addCleanup(c.stop)
        c.start()
        return c

    def curl(self, proxy, url, user=None):
        cmd = ["curl", "--silent", "--show-error", "--verbose", "--max-time", "20", "--noproxy", "",
               "--socks5-hostname", "%s:%d" % proxy]
        if user:
            cmd += ["--proxy-user", user]
        p = subprocess.run(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=40, env=harness.clean_env())
        return p


# --------------------------------------------------------------------------------------------


class Clients(LinkCase):

    def test_curl_name_ipv6_ipv4_and_no_local_resolution(self):
        body = b"through the link " + os.urandom(16).hex().encode() + b"\n"
        http4, http6 = [self.start_server(s) for s in harness.same_port_pair(
            lambda h, p: harness.HttpServer(h, p, body=body))]
        d, keys = self.link_daemon()
        trace = os.path.join(self.workdir(), "strace.out")
        # The client under strace: every file it opens, every connect and send, after its start.
        # (LeakSanitizer cannot run under ptrace: off for this one process.)
        c = self.start_link(keys["k1"], wrap=["strace", "-qq", "-e",
                                              "trace=openat,open,connect,sendto,sendmsg",
                                              "-o", trace],
                            env={"ASAN_OPTIONS": "detect_leaks=0"})
        with open(trace) as f:
            mark = len(f.read())
        log0 = d.log_size()
        port = http4.port
        for url, user in (("http://localhost:%d/" % port, None),
                          ("http://[::1]:%d/" % port, "anything-session-c1:pw"),
                          ("http://127.0.0.1:%d/" % port, "anything:pw")):
            with self.subTest(url=url):
                p = self.curl(c.addr(), url, user)
                err = p.stderr.decode("utf-8", "replace")
                self.assertEqual(p.returncode, 0, "curl %s through the link: exit %d\n%s"
                                 % (url, p.returncode, err))
                self.assertIn("SOCKS5", err)
                self.assertEqual(p.stdout, body)
        self.assertGreaterEqual(len(http4.peers) + len(http6.peers), 3)
        # The daemon got the name, not an address, and resolved it itself.
        self.assertIn("resolving localhost", d.log_text(log0),
                      "the name did not reach the server as a name")
        c.stop()
        with open(trace) as f:
            calls = f.read()[mark:]
        for needle in ("/etc/hosts", "resolv.conf", "nsswitch", "host.conf", "gai.conf",
                       "htons(53)", "AF_UNIX"):
            self.assertNotIn(needle, calls, "the client resolved something: %s" % needle)
        link_port = d.link_addr()[1]
        connects = re.findall(r"connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\)",
                              calls)
        harness.log("client connects after start: %d, all to port %s" % (len(connects), set(connects)))
        self.assertGreaterEqual(len(connects), 3)
        self.assertEqual(set(connects), {str(link_port)},
                         "the client connected somewhere else than the server")
        log = c.log_text()
        for word in ("localhost", "127.0.0.1:%d" % port, "::1", "session-c1"):
            self.assertNotIn(word, log, "the client's log names %r at the default level" % word)

    def test_key_sources_server_names_listeners_and_commands(self):
        echo = self.echo_server()
        # A link listener on each family, one port number each; `localhost` names both, so a
        # client that gets ::1 first from the resolver but finds nothing there tries 127.0.0.1.
        d, keys = self.link_daemon(link_listen=("127.0.0.1:0", "[::1]:0"), listen=("none",))
        self.assertEqual(d.addrs, [])
        v4, v6 = d.link_addr(socket.AF_INET), d.link_addr(socket.AF_INET6)
        cases = (
            ("file", "127.0.0.1:0", keys["k1"], "127.0.0.1:%d" % v4[1]),
            ("dash", "[::1]:0", keys["k1"], "127.0.0.1:%d" % v4[1]),
            ("stdin", "127.0.0.1:0", access_key_with(keys["k1"], host="::1", port=v6[1]),
             "[::1]:%d" % v6[1]),
            ("stdin", "127.0.0.1:0", access_key_with(keys["k1"], host="localhost", port=v4[1]),
             "localhost:%d" % v4[1]),
        )
        for via, listen, key, server in cases:
            with self.subTest(via=via, server=server):
                c = self.start_link(key, via=via, listen=listen)
                self.assertEqual(c.server_text, server)
                s, r, src = echo_open(c.addr(socket.AF_INET6 if "::" in listen else socket.AF_INET),
                                      echo.addr)
                with s:
                    self.assertEqual((r.host, r.port), src, "BND is the source the target saw")
                    echo_check(s, os.urandom(5000))
                c.stop()
        c = self.start_link(keys["k1"])
        for cmd in (2, 3):     # BIND, UDP ASSOCIATE: streams only
            s = harness.tcp_connect(c.addr())
            with s:
                r = harness.socks_handshake(s, "127.0.0.1", 9, cmd=cmd)
                self.assertEqual(r.rep, 0x07, r)
                self.assertEqual(recv_all(s, 5), b"")

    def test_allow_with_own_key_pair(self):
        echo = self.echo_server()
        d = harness.Daemon(workdir=self.workdir(), args=["--link-listen", "127.0.0.1:0"])
        add_user(d.db, USER, PW)
        keyfile = os.path.join(d.workdir, "client.key")
        r = cli("keygen", keyfile)
        self.assertEqual(r.rc, 0, r)
        r = cli("link", "allow", "own", r.out.strip(), "--user", USER, "--server", "127.0.0.1:1",
                "--db", d.db)
        self.assertEqual(r.rc, 0, r)
        key = r.out.strip()
        self.assertIsNone(parse_access_key(key)["client_private"])
        self.addCleanup(d.stop)
        d.start()
        key = access_key_with(key, port=d.link_addr()[1])
        run = link_client_fail(key)
        self.assertEqual(run.rc, 2, run)
        self.assertIn("--key FILE", run.err)
        c = self.start_link(key, key_file=keyfile)
        s, _, _ = echo_open(c.addr(), echo.addr)
        with s:
            echo_check(s, os.urandom(3000))


# --------------------------------------------------------------------------------------------


class Relay(LinkCase):

    def test_half_close_both_ways(self):
        echo = self.echo_server()
        src = self.start_server(harness.SourceServer(100 * 1024))
        d, keys = self.link_daemon()
        c = self.start_link(keys["k1"])
        # The application half-closes: the target sees EOF after everything, the echo still
        # comes back, then EOF.
        s, _, peer = echo_open(c.addr(), echo.addr)
        self.closing(s)
        payload = os.urandom(300 * 1024)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        echo.wait_done(peer[1])
        self.assertEqual(recv_all(s, 20), payload)
        # The target half-closes: the application gets everything and EOF, and can still send.
        s, _ = socks_open(c.addr(), *src.addr)
        self.closing(s)
        got = recv_all(s, 20)
        self.assertEqual(hashlib.sha256(got).digest(), harness.pattern_digest(100 * 1024))
        s.sendall(b"still writable after the target's FIN\n")
        s.shutdown(socket.SHUT_WR)
        src.wait_done(src.accepted.get(timeout=10)[1])
        self.assertEqual(src.errors, [])

    def test_200mb_each_way_sha256(self):
        sink = self.start_server(harness.SinkServer())
        src = self.start_server(harness.SourceServer(BULK))
        d, keys = self.link_daemon()
        c = self.start_link(keys["k1"])

        s, _ = socks_open(c.addr(), *sink.addr, timeout=60)
        self.closing(s)
        harness.upload_checked(s, sink, BULK, "through the link")
        s, _ = socks_open(c.addr(), *src.addr, timeout=60)
        self.closing(s)
        harness.download_checked(s, BULK, "through the link")


    def wait_stall(self, progress, total, what):
        """Poll progress() until it stops moving for 1 s (or reaches total); bounded."""
        last, since = -1, time.monotonic()
        for _ in harness.deadline_loop(30, 0.1):
            p = progress()
            if p != last:
                last, since = p, time.monotonic()
            elif time.monotonic() - since > 1.0 or p >= total:
                return p
        self.fail("%s never stalled" % what)

    def test_backpressure_bounds_the_clients_memory(self):
        total = 64 * MB
        src = self.start_server(harness.SourceServer(total, start=False))
        release = threading.Event()
        sink_digest = {}

        def lazy_sink(conn, peer, server):
            release.wait(60)
            h = hashlib.sha256()
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                h.update(data)
            sink_digest["up"] = h.digest()
            conn.sendall(b"done")
            conn.shutdown(socket.SHUT_WR)
        sink = self.start_server(harness.TcpServer(lazy_sink))
        d, keys = self.link_daemon()
        # Under ASan, freed buffers wait in a quarantine that RSS counts: none here, so RSS is
        # what the client holds (no effect on other builds).
        c = self.start_link(keys["k1"], env={"ASAN_OPTIONS": "quarantine_size_mb=0"})
        # Down: the application does not read; the target pushes 64 MB.
        s, _ = socks_open(c.addr(), *src.addr, rcvbuf=64 * 1024, timeout=30)
        self.closing(s)
        rss0 = c.rss_kib()
        src.go.set()
        pushed = self.wait_stall(lambda: src.progress, total, "the target's sending")
        rss1 = c.rss_kib()
        harness.log("down: the target pushed %.1f MB of 64 before stalling; client RSS %d -> %d KiB"
                    % (pushed / MB, rss0, rss1))
        self.assertLess(pushed, total, "nothing pushed back on the target")
        self.assertLess(rss1 - rss0, 16 * 1024, "the client buffered what the application left")
        harness.download_checked(s, total, "once the stalled application reads")
        # Up: the target does not read; the application pushes 64 MB.
        s, _ = socks_open(c.addr(), *sink.addr, timeout=30)
        self.closing(s)
        sent = [0]
        h = hashlib.sha256()

        def push():
            for chunk in harness.pattern_chunks(total, 64 * 1024):
                s.sendall(chunk)
                h.update(chunk)
                sent[0] += len(chunk)
            s.shutdown(socket.SHUT_WR)
        rss0 = c.rss_kib()
        t = threading.Thread(target=push, daemon=True)
        t.start()
        pushed = self.wait_stall(lambda: sent[0], total, "the application's sending")
        rss1 = c.rss_kib()
        harness.log("up: the application pushed %.1f MB of 64 before stalling; client RSS %d -> %d KiB"
                    % (pushed / MB, rss0, rss1))
        self.assertLess(pushed, total, "nothing pushed back on the application")
        self.assertLess(rss1 - rss0, 16 * 1024, "the client buffered what the target left")
        release.set()
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(recv_exact(s, 4, 30), b"done")
        self.assertEqual(sink_digest.get("up"), h.digest())


# --------------------------------------------------------------------------------------------


class Egress(LinkCase):

    def test_username_parameters_steer_egress_as_on_the_plain_port(self):
        echo = self.echo_server()
        res = {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        d, keys = self.link_daemon(pool=(["127.0.0.2", "127.0.0.3", "127.0.0.4", "--tag",
                                          "kind=residential"], POOL20[3:]))
        c = self.start_link(keys["k1"])

        def via_link(user):
            return harness.egress_source(c.addr(), echo.addr, user, "ignored-password")

        def via_plain(user):
            return harness.egress_source(d.addr(), echo.addr, user, PW)

        # The link's user is the key's (alice): the same (user, session, site) as on the plain
        # port, so the same source.
        for sid in ("s1", "s2", "s3", "s4", "s5"):
            a = via_link("anything-session-%s-ttl-86400" % sid)
            b = via_plain("%s-session-%s-ttl-86400" % (USER, sid))
            self.assertEqual(a, b, "session %s: link %s, plain port %s" % (sid, a, b))
        seq = [via_link("anything-session-s1-ttl-86400") for _ in range(10)]
        self.assertEqual(len(set(seq)), 1, "one session, one source: %s" % seq)
        spread = harness.run_parallel(via_link, ["x-session-m%d-ttl-86400" % i for i in range(30)])
        again = harness.run_parallel(via_link, ["y-session-m%d-ttl-86400" % i for i in range(30)])
        harness.log("30 sessions over %d sources" % len(set(spread)))
        self.assertEqual(spread, again, "the part before the first '-' must not matter")
        self.assertGreaterEqual(len(set(spread)), 5, spread)
        self.assertTrue(set(spread) <= set(POOL20), spread)
        rot = [via_link("anything-session-s1-ttl-0") for _ in range(30)]
        harness.log("ttl-0: %d distinct of 30" % len(set(rot)))
        self.assertGreaterEqual(len(set(rot)), 8, rot)
        tagged = harness.run_parallel(via_link, ["a-tag-residential-session-t%d" % i for i in range(15)])
        self.assertTrue(set(tagged) <= res, "tag filter: %s outside %s" % (set(tagged) - res, res))
        self.assertGreaterEqual(len(set(tagged)), 2, tagged)
        # A filter nothing matches: the server refuses (REP 0x02), the target sees nothing.
        before = echo.accepted.qsize()
        a = egress_attempt(c.addr(), *echo.addr, "a-tag-nothing", "x")
        self.assertEqual((a.stage, a.reply.rep if a.reply else None), ("reply", 0x02), a)
        # Malformed parameters fail the login locally, as on the plain port.
        for user in ("a-bogus-1", "a-ttl-x", "a-session", "a-ttl-1-ttl-2"):
            a = egress_attempt(c.addr(), *echo.addr, user, "x")
            self.assertEqual((a.stage, a.auth), ("auth", 0x01), "%s: %r" % (user, a))
        self.assertEqual(echo.accepted.qsize(), before, "a refused request reached the target")
        # No username at all: the key's user with no parameters.
        s, r = socks_open(c.addr(), *echo.addr)
        with s:
            self.assertIn(r.host, POOL20)


# --------------------------------------------------------------------------------------------


class Network(LinkCase):

    def test_what_the_network_sees(self):
        echo = self.echo_server()
        pair = [self.start_server(s) for s in harness.same_port_pair(
            lambda h, p: harness.EchoServer(h, p))]
        relay = self.start_server(RecordingRelay())
        d, keys = self.link_daemon(relay=relay)
        c = self.start_link(keys["k1"])
        marker = b"PAYLOAD-MARKER-" + os.urandom(8).hex().encode()
        session = "sid" + os.urandom(4).hex()
        for i in range(8):
            user = "anything-session-%s-ttl-0" % session if i % 2 else None
            host = "localhost" if i % 2 == 0 else "127.0.0.1"
            port = pair[0].port if host == "localhost" else echo.port
            s, _, _ = echo_open(c.addr(), (host, port), user, "pw" if user else None)
            with s:
                echo_check(s, marker + b" %d" % i)
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(recv_all(s, 10), b"")
        for i, rec in enumerate(relay.conns):
            self.assertTrue(rec["done"].wait(10), "relay connection %d never ended" % i)
        conns = list(relay.conns)
        self.assertEqual(len(conns), 9, "the probe and 8 connections")
        key = parse_access_key(keys["k1"])
        r = cli("link", "list", "--json", "--db", d.db)
        self.assertEqual(r.rc, 0, r)
        client_pub = base64.b64decode(json.loads(r.out)[0]["public_key"])
        secrets = {
            "the target's name": b"localhost",
            "the payload": marker,
            "the session id": session.encode(),
            "the username": b"anything",
            "a SOCKS5 request": harness.connect_request("localhost", pair[0].port),
            "a SOCKS5 request (IPv4)": harness.connect_request("127.0.0.1", echo.port)[3:],
            "the greeting with username/password": b"\x05\x02\x00\x02",
            "the client's static public key": client_pub,
            "the server's static public key": key["server_public"],
            "the PSK": key["psk"],
        }
        for i, rec in enumerate(conns):
            for way in ("up", "down"):
                data = bytes(rec[way])
                for what, needle in secrets.items():
                    self.assertNotIn(needle, data, "connection %d %s carries %s in clear"
                                     % (i, way, what))
                # A greeting is 3 bytes: found at random in ~1 of 2^24 positions, so looked for
                # where a SOCKS5 stream would carry it, the start.
                for greet in (b"\x05\x01\x00", b"\x05\x02\x00\x02", b"\x05\x01\x02"):
                    self.assertFalse(data.startswith(greet), "connection %d %s starts with %r"
                                     % (i, way, greet))
        firsts = [rec["first_up"] for rec in conns]
        replies = [rec["first_down"] for rec in conns]
        harness.log("first flights: %s; replies: %s" % (firsts, replies))
        for n in firsts:
            self.assertTrue(128 <= n <= 1028, firsts)
        for n in replies:
            self.assertTrue(52 <= n <= 952, replies)
        # Uniform padding over 901 sizes: 9 draws collide rarely; all equal would be a constant.
        self.assertGreaterEqual(len(set(firsts)), len(firsts) - 3, firsts)
        self.assertGreaterEqual(len(set(replies)), len(replies) - 3, replies)
        log = c.log_text()
        for word in (session, "localhost", marker.decode()):
            self.assertNotIn(word, log)

    def test_truncation_and_a_flipped_byte_reset_the_application(self):
        echo = self.echo_server()
        relay = self.start_server(RecordingRelay())
        d, keys = self.link_daemon(relay=relay)
        c = self.start_link(keys["k1"])
        # A flipped bit in a record from the server.
        s, _, _ = echo_open(c.addr(), echo.addr)
        self.closing(s)
        echo_check(s, b"before")
        relay.flip_next_down(len(relay.conns) - 1)
        s.sendall(b"this comes back in a record the relay breaks")
        how, took = harness.wait_closed(s, 10)
        harness.log("a flipped bit: the application saw %s after %.2f s" % (how, took))
        self.assertEqual(how, "reset")
        # A TCP close without EOF or RESET, in the middle of a stream.
        s, _, _ = echo_open(c.addr(), echo.addr)
        self.closing(s)
        echo_check(s, b"before the cut")
        relay.cut()
        how, took = harness.wait_closed(s, 10)
        harness.log("a cut link: the application saw %s after %.2f s" % (how, took))
        self.assertEqual(how, "reset", "a truncated stream must not end cleanly")
        # The client still serves new connections.
        s, _, _ = echo_open(c.addr(), echo.addr)
        with s:
            echo_check(s, b"after")


# --------------------------------------------------------------------------------------------


class Errors(LinkCase):

    def test_start_errors(self):
        d, keys = self.link_daemon(links=(("k1", USER), ("gone", USER)), revoke=("gone",))
        closed = harness.free_port()
        other_key = bytes(range(1, 33))
        cases = {
            "wrong server key": (access_key_with(keys["k1"], server_public=other_key), NO_ANSWER),
            "wrong PSK": (access_key_with(keys["k1"], psk=os.urandom(32)), BAD_HANDSHAKE),
            "closed port": (access_key_with(keys["k1"], port=closed),
                            "cannot connect to the server 127.0.0.1:%d: Connection refused" % closed),
            "revoked key": (keys["gone"], NO_ANSWER),
        }

        def run(name):
            return name, link_client_fail(cases[name][0], timeout=30)

        for name, res in harness.run_parallel(run, list(cases), workers=4):
            with self.subTest(case=name):
                harness.log("%s: exit %s after %.1f s: %s" % (name, res.rc, res.elapsed,
                                                              res.err.strip()))
                self.assertEqual(res.rc, 1, res)
                self.assertEqual(res.out, "", "no ready line: %r" % res)
                self.assertIn(cases[name][1], res.err)
                if cases[name][1] == NO_ANSWER:
                    self.assertTrue(9.5 <= res.elapsed <= 13.0, res)
                else:
                    self.assertLess(res.elapsed, 5.0, res)
        # The right key still works.
        echo = self.echo_server()
        c = self.start_link(keys["k1"])
        s, _, _ = echo_open(c.addr(), echo.addr)
        with s:
            echo_check(s)

    def test_refusals_before_any_connection(self):
        d, keys = self.link_daemon()
        key = keys["k1"]
        wd = self.workdir()
        loose = os.path.join(wd, "loose.key")
        with open(loose, "w") as f:
            f.write(key + "\n")
        os.chmod(loose, 0o644)
        tight = os.path.join(wd, "tight.key")
        harness.write_secret(tight, key)
        link = os.path.join(wd, "link.key")
        os.symlink(tight, link)
        cases = [
            (["--access-key-file", loose], None, "mode 0644"),
            (["--access-key-file", link], None, "symbolic link"),
            (["--access-key-file", os.path.join(wd, "missing")], None, "cannot open"),
            ([key], None, "never from the command line"),
            ([], "not-a-key", "not a valid access key"),
            ([], "", "empty"),
            (["--access-key-file", tight, "--key", tight], None, "carries the private key"),
        ]
        for args, stdin, want in cases:
            with self.subTest(args=args[:1], want=want):
                run = link_client_fail(stdin if stdin is not None else key, args=args, timeout=20)
                self.assertEqual(run.rc, 2, run)
                self.assertIn(want, run.err)
                self.assertEqual(run.out, "")
                self.assertNotIn(key, run.err, "the access key must never be printed")
        for listen in ("0.0.0.0:0", "192.0.2.1:1080", "[::]:0"):
            with self.subTest(listen=listen):
                run = link_client_fail(key, listen=listen, timeout=20)
                self.assertEqual(run.rc, 2, run)
                self.assertIn("not a loopback address", run.err)


# --------------------------------------------------------------------------------------------


class Lifecycle(LinkCase):

    def test_revoke_closes_only_that_keys_connections(self):
        echo = self.echo_server()
        d, keys = self.link_daemon(links=(("k1", USER), ("k2", USER2)),
                                   users=((USER, PW), (USER2, PW2)))
        c1 = self.start_link(keys["k1"])
        c2 = self.start_link(keys["k2"])
        s1, _, _ = echo_open(c1.addr(), echo.addr)
        s2, _, _ = echo_open(c2.addr(), echo.addr)
        self.closing(s1)
        self.closing(s2)
        echo_check(s1)
        echo_check(s2)
        harness.link_revoke(d.db, "k1")
        how, took = harness.wait_closed(s1, 10)
        harness.log("revoked: the application's connection ended (%s) after %.2f s" % (how, took))
        self.assertLessEqual(took, REVOKE_BOUND)
        self.assertEqual(how, "reset", "a revoked link must not end its streams cleanly")
        for _ in range(3):
            echo_check(s2, os.urandom(2000))
        # A new connection with the revoked key: the server stays silent, the application gets
        # REP 0x01 after the client's 10 s, and the client's log says why, not where to.
        t0 = time.monotonic()
        s = harness.tcp_connect(c1.addr(), timeout=20)
        with s:
            r = harness.socks_handshake(s, "127.0.0.1", echo.port, timeout=20)
        took = time.monotonic() - t0
        self.assertEqual(r.rep, 0x01, r)
        self.assertTrue(9.5 <= took <= 13.0, took)
        log = c1.log_text()
        self.assertIn("no answer from the link server", log)
        self.assertIn("this key was revoked", log)
        self.assertNotIn(str(echo.port), log, "the log names the destination")
        echo_check(s2, os.urandom(2000))

    def test_server_gone_answers_rep_01(self):
        echo = self.echo_server()
        d, keys = self.link_daemon(args=("--grace", "1"))
        c = self.start_link(keys["k1"])
        s, _, _ = echo_open(c.addr(), echo.addr)
        self.closing(s)
        d.stop()
        how, _ = harness.wait_closed(s, 15)
        self.assertEqual(how, "reset", "the daemon's exit must not end the stream cleanly")
        s = harness.tcp_connect(c.addr())
        with s:
            r = harness.socks_handshake(s, "127.0.0.1", echo.port)
            self.assertEqual(r.rep, 0x01, r)
            self.assertEqual(recv_all(s, 5), b"")
        self.assertIn("cannot connect to the link server 127.0.0.1:%d" % d.link_addr()[1],
                      c.log_text())

    def test_sigterm_resets_open_connections(self):
        echo = self.echo_server()
        d, keys = self.link_daemon()
        c = self.start_link(keys["k1"])
        s, _, _ = echo_open(c.addr(), echo.addr)
        self.closing(s)
        echo_check(s)
        rc, took = c.stop()
        harness.log("SIGTERM: the client exited %s after %.2f s" % (rc, took))
        how, _ = harness.wait_closed(s, 5)
        self.assertEqual(how, "reset")


if __name__ == "__main__":
    harness.main()
