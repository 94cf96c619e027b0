"""UDP ASSOCIATE (issue 6): the relay, its egress, what it drops, its life and its limits.

Targets are UDP echo servers on loopback that answer `SRC ip port\\n` + the datagram (the source they
saw); the pool is 127.0.0.2..127.0.0.21 plus ::1 unless a test says otherwise. Datagrams are raw
RFC 1928 §7 bytes built by harness.udp_frame.

Proves, through the real daemon:
- round trips to an IPv4 literal, an IPv6 literal and a name (`localhost`, resolved by the daemon),
  over an IPv4 and an IPv6 control connection; the reply's BND is the address the client connected
  to (never 0.0.0.0) and every answer's header names the target that sent it;
- the egress: UDP to a site leaves from the address a TCP CONNECT of the same (user, session, site)
  leaves from, for 10 sessions, 5 literal sites and a name; different sites and sessions spread;
  `ttl-0` draws a new address per association (>= 5 distinct of 20) and keeps it within one;
  an IPv6 target with an IPv4-only pool is dropped (never the default address); an entry that
  cannot be bound cools down and the next-ranked one carries the datagrams;
- what is dropped without ending the association: FRAG != 0, malformed headers (bad RSV, cut short,
  bad ATYP, empty domain), datagrams from another port than the client's (the first datagram, or
  the request's DST.PORT, fixes it) and from another address; datagrams to a name that does not
  resolve, without delaying others (and an association closed while it resolves); a datagram from a stranger to the
  egress socket is not relayed to the client (no open reflector); `--deny-private` drops datagrams
  to loopback as it refuses CONNECT;
- life: closing the TCP connection closes the relay (its port answers ICMP unreachable) and frees
  every descriptor; `--idle-timeout` ends a silent association and closes its TCP connection;
- limits: `--udp-per-user 2` refuses a third association with REP 0x02 (per user; by client address
  without a login) and allows it again after one closes; `--udp-rate 5` relays only a handful of a
  burst of 60;
- usage: usage_egress / usage_user count the datagrams and payload bytes, the database holds no
  destination, and the default log level names none.
"""
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, UdpAssociation, UdpEchoServer, add_user, pool_add,  # noqa: E402
                     egress_source, same_port_pair, udp_frame)

USER, PW = "alice", "alice-secret-pw"
USER2, PW2 = "bob", "bob-secret-pw"
POOL20 = ["127.0.0.%d" % i for i in range(2, 22)]
FLUSH_BOUND = 8.0      # usage is written every 2 s; a live association hands counters over at close


class UdpCase(DaemonTestCase):

    def pool_daemon(self, pool=POOL20 + ["::1"], users=((USER, PW),), args=(),
                    listen=("127.0.0.1:0",), log_level="debug"):
        d = harness.Daemon(workdir=self.workdir(), args=args, listen=listen, log_level=log_level)
        for name, pw in users:
            add_user(d.db, name, pw)
        if pool:
            pool_add(d.db, *pool)
        self.addCleanup(d.stop)
        d.start()
        return d

    def udp_echo(self, host="127.0.0.1", port=0):
        return self.start_server(UdpEchoServer(host, port))

    def assoc(self, d, user=USER, pw=PW, family=socket.AF_INET, **kw):
        a = UdpAssociation(d.addr(family), user, pw, **kw)
        self.addCleanup(a.close)
        return a

    def wait_refused(self, relay, timeout=5.0):
        """Poll until a datagram to relay draws ICMP port unreachable: nothing listens there."""
        fam = socket.AF_INET6 if ":" in relay[0] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect(relay)
            for _ in harness.deadline_loop(timeout, 0.05):
                try:
                    s.send(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x07x")
                    s.settimeout(0.2)
                    s.recv(100)
                except ConnectionRefusedError:
                    return
                except socket.timeout:
                    continue
            self.fail("the relay %s:%d still takes datagrams %.0f s after the TCP close"
                      % (relay[0], relay[1], timeout))
        finally:
            s.close()


class RoundTrips(UdpCase):

    def test_ipv4_ipv6_and_name_targets(self):
        e4 = self.udp_echo("127.0.0.1")
        e6 = self.udp_echo("::1")
        pair = [self.start_server(x) for x in same_port_pair(lambda h, p: UdpEchoServer(h, p))]
        d = self.pool_daemon(listen=("127.0.0.1:0", "[::1]:0"))
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            a = self.assoc(d, family=fam)
            # RFC 1928 §6: BND names where to send; it must be reachable, never the wildcard.
            self.assertEqual(a.reply.host, host, a.reply)
            self.assertNotEqual(a.reply.port, 0, a.reply)
            src4 = {a.echo("127.0.0.1", e4.port)[0] for _ in range(3)}
            src6 = {a.echo("::1", e6.port)[0] for _ in range(3)}
            srcn = {a.echo("localhost", pair[0].port)[0] for _ in range(3)}
            harness.log("control over %s: IPv4 target from %s, IPv6 from %s, localhost from %s"
                        % (host, src4, src6, srcn))
            self.assertEqual(len(src4), 1, src4)
            self.assertLessEqual(src4, set(POOL20))
            self.assertEqual(src6, {"::1"})
            self.assertEqual(len(srcn), 1, srcn)
            self.assertLessEqual(srcn, set(POOL20 + ["::1"]))
            # Sizes: empty, and a large datagram (no fragmentation on loopback).
            for size in (0, 1, 1400, 60000):
                payload = os.urandom(size)
                a.send("127.0.0.1", e4.port, payload)
                host_, port_, data = a.recv()
                self.assertEqual((host_, port_), ("127.0.0.1", e4.port))
                self.assertTrue(data.endswith(payload) and data.startswith(b"SRC "), (size, data[:40]))

    def test_answer_header_names_the_target(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        a = self.assoc(d)
        a.send("127.0.0.1", e.port, b"x")
        host, port, data = a.recv()
        # RFC 1928 §7: the reply's DST is the source of the datagram: the target, not the proxy.
        self.assertEqual((host, port), ("127.0.0.1", e.port))
        self.assertTrue(data.endswith(b"x"))

    def test_ipv6_target_with_an_ipv4_pool_is_dropped(self):
        e4 = self.udp_echo("127.0.0.1")
        e6 = self.udp_echo("::1")
        d = self.pool_daemon(pool=POOL20)
        a = self.assoc(d)
        a.send("::1", e6.port, b"lost")
        # Datagrams on one socket are handled in order: the next answer is the IPv4 one.
        self.assertIn(a.echo("127.0.0.1", e4.port)[0], POOL20)
        self.assertTrue(e6.seen.empty(), "an IPv6 target was reached without an IPv6 egress")

    def test_empty_pool_uses_the_default_address(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon(pool=(), users=())
        self.assertIn("egress system default address", d.banner)
        a = UdpAssociation(d.addr())
        self.addCleanup(a.close)
        self.assertEqual(a.echo("127.0.0.1", e.port)[0], "127.0.0.1")


class Egress(UdpCase):

    def test_same_egress_as_tcp(self):
        tcp = self.echo_server("127.0.0.1")
        udp = self.udp_echo("127.0.0.1")
        sites = [(self.echo_server("127.0.0.%d" % i), self.udp_echo("127.0.0.%d" % i))
                 for i in range(101, 106)]
        tpair = [self.start_server(x) for x in same_port_pair(lambda h, p: harness.EchoServer(h, p))]
        upair = [self.start_server(x) for x in same_port_pair(lambda h, p: UdpEchoServer(h, p))]
        d = self.pool_daemon(users=((USER, PW), (USER2, PW2)))
        per_session = []
        for i in range(10):
            user = "%s-session-s%d-ttl-86400" % (USER, i)
            t = egress_source(d.addr(), tcp.addr, user, PW)
            a = self.assoc(d, user)
            u = [a.echo("127.0.0.1", udp.port)[0] for _ in range(3)]
            self.assertEqual(u, [t] * 3, "session %d: TCP from %s, UDP from %s" % (i, t, u))
            per_session.append(t)
            a.close()
        harness.log("10 sessions, TCP = UDP each: %s" % per_session)
        self.assertGreaterEqual(len(set(per_session)), 4, per_session)

        user = "%s-session-sites-ttl-86400" % USER
        a = self.assoc(d, user)
        per_site = []
        for tcp_s, udp_s in sites:
            t = egress_source(d.addr(), tcp_s.addr, user, PW)
            u = a.echo(udp_s.host, udp_s.port)[0]
            self.assertEqual(u, t, "site %s: TCP from %s, UDP from %s" % (udp_s.host, t, u))
            per_site.append(u)
        t = egress_source(d.addr(), tpair[0].addr, user, PW, target_host="localhost")
        self.assertEqual(a.echo("localhost", upair[0].port)[0], t, "name site: localhost")
        harness.log("one session over 5 sites: %s" % per_site)
        self.assertGreaterEqual(len(set(per_site)), 2, "the site must be part of the key: %s" % per_site)

        # Another user with the same session: its own key (the user is part of it).
        b = [self.assoc(d, "%s-session-s%d-ttl-86400" % (USER2, i), PW2).echo("127.0.0.1", udp.port)[0]
             for i in range(10)]
        self.assertNotEqual(b, per_session)

    def test_ttl0_rotates_per_association(self):
        udp = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        seen = []
        for _ in range(20):
            a = self.assoc(d, USER + "-session-r-ttl-0")
            srcs = [a.echo("127.0.0.1", udp.port)[0] for _ in range(3)]
            self.assertEqual(len(set(srcs)), 1, "one association keeps its draw: %s" % srcs)
            seen.append(srcs[0])
            a.close()
        harness.log("ttl-0: %d distinct of 20 associations" % len(set(seen)))
        self.assertLessEqual(set(seen), set(POOL20))
        self.assertGreaterEqual(len(set(seen)), 5, seen)


    def test_unbindable_entry_cools_down(self):
        bad = "192.0.2.77"      # TEST-NET-1: never on this host; only a bind is tried, never a packet
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((bad, 0))
            self.skipTest("binding %s does not fail here (ip_nonlocal_bind?)" % bad)
        except OSError:
            pass
        finally:
            s.close()
        udp = self.udp_echo("127.0.0.1")
        d = harness.Daemon(workdir=self.workdir())
        add_user(d.db, USER, PW)
        pool_add(d.db, "127.0.0.2")
        pool_add(d.db, bad, "--weight", "50")
        self.addCleanup(d.stop)
        d.start()
        seen = [self.assoc(d, "%s-session-h%d" % (USER, i)).echo("127.0.0.1", udp.port)[0]
                for i in range(20)]
        self.assertEqual(set(seen), {"127.0.0.2"}, seen)
        entry = None
        for _ in harness.deadline_loop(FLUSH_BOUND, 0.2):
            entry = harness.pool_entries(d.db)[bad]
            if entry["cooling_until"] is not None and entry["failures"] >= 1:
                break
        else:
            self.fail("the unbindable entry never cooled down: %r" % entry)
        harness.log("%s after failed UDP binds: %r" % (bad, entry))


class Drops(UdpCase):

    def test_fragments_and_malformed_headers_are_dropped(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        a = self.assoc(d)
        a.echo("127.0.0.1", e.port, b"first")
        self.assertEqual(e.seen.get(timeout=5)[1], b"first")
        bad = [
            udp_frame("127.0.0.1", e.port, b"frag1", frag=1),           # FRAG 1
            udp_frame("127.0.0.1", e.port, b"frag80", frag=0x80),       # FRAG 0x80 (last fragment)
            b"\x00\x01\x00" + udp_frame("127.0.0.1", e.port, b"rsv")[3:],  # RSV != 0
            b"\x00\x00\x00\x01\x7f\x00",                                # cut inside DST.ADDR
            b"\x00\x00\x00\x05\x7f\x00\x00\x01\x00\x07x",               # ATYP 5
            b"\x00\x00\x00\x03\x00\x00\x07x",                           # empty domain
            b"",                                                        # nothing at all
        ]
        for datagram in bad:
            a.send_raw(datagram)
        # FRAG 0 keeps flowing, and it is the next thing the target sees: nothing bad got through.
        a.echo("127.0.0.1", e.port, b"after")
        self.assertEqual(e.seen.get(timeout=5)[1], b"after")
        self.assertTrue(e.seen.empty())

    def test_client_port_and_address_are_enforced(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        a = self.assoc(d)
        a.echo("127.0.0.1", e.port, b"fixes-the-port")
        e.seen.get(timeout=5)
        for src in ("127.0.0.1", "127.0.0.99"):     # another port; another address
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.bind((src, 0))
            other.sendto(udp_frame("127.0.0.1", e.port, b"intruder"), a.relay)
            other.close()
        a.echo("127.0.0.1", e.port, b"still-mine")
        self.assertEqual(e.seen.get(timeout=5)[1], b"still-mine")
        self.assertTrue(e.seen.empty())

    def test_request_port_fixes_the_client_port(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mine.bind(("127.0.0.1", 0))
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        self.addCleanup(other.close)
        a = self.assoc(d, expect=mine.getsockname(), sock=mine)
        # The first datagram comes from another port: DST.PORT already named ours, so it is dropped.
        other.sendto(udp_frame("127.0.0.1", e.port, b"not-announced"), a.relay)
        a.echo("127.0.0.1", e.port, b"announced")
        self.assertEqual(e.seen.get(timeout=5)[1], b"announced")
        self.assertTrue(e.seen.empty())

    def test_unresolvable_name(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        a = self.assoc(d)
        # A name that never resolves (.invalid, RFC 6761; one query to the system's resolver, as
        # test_replies.py makes): its datagrams are held (16 at most) then dropped, and nothing
        # else waits for it.
        for _ in range(40):
            a.send("shroud-e2e-udp.invalid", e.port, b"nowhere")
        a.echo("127.0.0.1", e.port, b"meanwhile")
        self.assertEqual(e.seen.get(timeout=5)[1], b"meanwhile")
        # Closing while the resolution may still be pending cancels it; the daemon (ASan in
        # `make test`) goes on serving.
        a.close()
        b = self.assoc(d)
        b.echo("127.0.0.1", e.port, b"next")
        self.assertEqual(e.seen.get(timeout=5)[1], b"next")
        self.assertTrue(e.seen.empty(), "a datagram for an unresolvable name reached the echo")

    def test_no_open_reflector(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon()
        a = self.assoc(d)
        egress = a.echo("127.0.0.1", e.port)
        # A stranger (an address and port the client never sent to) writes to the egress socket.
        for src in ("127.0.0.1", "127.0.0.77"):
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            stranger.bind((src, 0))
            stranger.sendto(b"spoofed answer", egress)
            stranger.close()
        # The echo's answer arrives at the egress socket after the strangers' datagrams: if they
        # had been relayed they would reach the client first.
        a.send("127.0.0.1", e.port, b"genuine")
        host, port, data = a.recv()
        self.assertEqual((host, port), ("127.0.0.1", e.port), data)
        self.assertTrue(data.endswith(b"genuine"), data)
        a.assert_silent(0.3)

    def test_deny_private_applies_to_datagrams(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon(args=("--deny-private",))
        a = self.assoc(d)
        a.send("127.0.0.1", e.port, b"internal")
        a.send("localhost", e.port, b"internal-by-name")
        a.assert_silent(1.0)
        self.assertTrue(e.seen.empty(), "a loopback target was reached with --deny-private")
        self.assertIn("private destinations refused", d.banner)


class LifeAndLimits(UdpCase):

    def test_closing_tcp_ends_the_association(self):
        e = self.udp_echo("127.0.0.1")
        e6 = self.udp_echo("::1")
        d = self.pool_daemon()
        base = d.settled_fd_count()
        assocs = [self.assoc(d) for _ in range(5)]
        for a in assocs:
            a.echo("127.0.0.1", e.port)
            a.echo("::1", e6.port)
        # The control connection, the relay and an egress socket per family, each.
        self.assertGreaterEqual(d.fd_count(), base + 20)
        relays = [a.relay for a in assocs]
        for a in assocs:
            a.close()
        for r in relays:
            self.wait_refused(r)
        d.wait_fds_at_most(base)

    def test_idle_timeout_ends_the_association(self):
        idle = 1.0
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon(args=("--idle-timeout", "%g" % idle))
        a = self.assoc(d)
        # Traffic every half timeout keeps it alive for twice the timeout: activity, not age,
        # is what counts.
        t0 = time.monotonic()
        a.echo("127.0.0.1", e.port)
        for _ in range(4):
            harness.assert_no_data(a.ctl, idle / 2)   # still open, and nothing on it
            a.echo("127.0.0.1", e.port)
        last = time.monotonic()
        self.assertGreater(last - t0, 1.5 * idle, "the traffic did not outlast the timeout")
        # Then silence: it ends one timeout after the last datagram, not before.
        how, _ = harness.wait_closed(a.ctl, idle + 5.0)
        elapsed = time.monotonic() - last
        harness.log("idle association closed (%s) %.2f s after the last datagram" % (how, elapsed))
        self.assertGreaterEqual(elapsed, idle - 0.1, "closed before the idle timeout")
        self.assertLessEqual(elapsed, idle + 1.5, "closed long after the idle timeout")
        self.wait_refused(a.relay)

    def test_associations_per_user(self):
        d = self.pool_daemon(users=((USER, PW), (USER2, PW2)), args=("--udp-per-user", "2"))
        a1 = self.assoc(d, USER + "-session-x")
        self.assoc(d, USER)
        with self.assertRaises(harness.SocksFailure) as cm:
            UdpAssociation(d.addr(), USER + "-session-y", PW)
        self.assertEqual(cm.exception.reply.rep, 0x02, cm.exception)
        self.assoc(d, USER2, PW2)       # another user has places of its own
        a1.close()
        for _ in harness.deadline_loop(5.0, 0.05):
            try:
                self.assoc(d, USER)
                break
            except harness.SocksFailure as e:
                self.assertEqual(e.reply.rep, 0x02, e)
        else:
            self.fail("the place of a closed association was never given back")

    def test_associations_per_address_without_login(self):
        d = self.pool_daemon(users=(), args=("--udp-per-user", "1"))
        a = UdpAssociation(d.addr())
        self.addCleanup(a.close)
        with self.assertRaises(harness.SocksFailure) as cm:
            UdpAssociation(d.addr())
        self.assertEqual(cm.exception.reply.rep, 0x02, cm.exception)
        # Another client address has its own place (the proxy listens on 127.0.0.1 only).
        ctl = harness.tcp_connect(d.addr(), source="127.0.0.2")
        self.addCleanup(ctl.close)
        r = harness.socks_handshake(ctl, "0.0.0.0", 0, cmd=3)
        self.assertEqual(r.rep, 0, r)

    def test_rate_limit(self):
        e = self.udp_echo("127.0.0.1")
        d = self.pool_daemon(args=("--udp-rate", "5"))
        a = self.assoc(d)
        for i in range(60):
            a.send("127.0.0.1", e.port, b"burst %d" % i)
        got = 0
        try:
            while True:
                a.recv(1.0)
                got += 1
        except socket.timeout:
            pass
        relayed = e.seen.qsize()
        harness.log("burst of 60 at --udp-rate 5: %d reached the target, %d answers came back"
                    % (relayed, got))
        self.assertGreaterEqual(relayed, 1)
        self.assertLessEqual(relayed + got, 12, "the bucket holds 5, refilled at 5/s")

    def test_usage_and_privacy(self):
        e = self.udp_echo("127.0.0.103")
        d = self.pool_daemon(pool=["127.0.0.%d" % i for i in range(2, 6)], log_level="info")
        sent = {}
        total = [0, 0, 0]     # datagrams, bytes up, bytes down
        for k in range(6):
            a = UdpAssociation(d.addr(), "%s-session-Zq9Udp%d" % (USER, k), PW)
            for j in range(3):
                payload = os.urandom(100 + 17 * k + j)
                src = a.echo("127.0.0.103", e.port, payload)
                line = len(("SRC %s %d\n" % src).encode())
                acc = sent.setdefault(src[0], [0, 0, 0])
                for t in (acc, total):
                    t[0] += 2
                    t[1] += len(payload)
                    t[2] += len(payload) + line
            a.close()
        rows = []
        for _ in harness.deadline_loop(FLUSH_BOUND, 0.2):
            rows = harness.db_query(d.db, "SELECT * FROM usage_egress")
            if sum(r["datagrams"] for r in rows) >= total[0]:
                break
        urows = harness.db_query(d.db, "SELECT * FROM usage_user")
        harness.log("usage_egress: %s" % rows)
        harness.log("usage_user: %s" % urows)
        for addr, (dg, up, down) in sent.items():
            r = [x for x in rows if x["address"] == addr]
            self.assertEqual(len(r), 1, (addr, rows))
            self.assertEqual((r[0]["datagrams"], r[0]["bytes_up"], r[0]["bytes_down"]), (dg, up, down))
            self.assertGreaterEqual(r[0]["connections"], 1)
        u = [x for x in urows if x["user"] == USER]
        self.assertEqual(len(u), 1, urows)
        self.assertEqual((u[0]["datagrams"], u[0]["bytes_up"], u[0]["bytes_down"]), tuple(total))
        dump = harness.db_dump(d.db)
        for secret in ("127.0.0.103", "Zq9Udp"):
            self.assertNotIn(secret, dump, "the database names %s" % secret)
        d.stop()
        log = d.log_text()
        for secret in ("127.0.0.103", "Zq9Udp"):
            self.assertNotIn(secret, log.split("\n", 1)[1], "the default log level names %s" % secret)


if __name__ == "__main__":
    harness.main()
