"""BIND (issue 6, RFC 1928 §4): a listening socket on the chosen egress, one expected peer, a relay.

The pool is 127.0.0.2..127.0.0.21 plus ::1; the "peer" is a plain socket this test connects to the
address of the first reply, from a chosen loopback source address.

Proves, through the real daemon:
- the first reply names a listening socket on the egress a CONNECT of the same (user, session, site
  of DST.ADDR) leaves from (10 sessions), and ttl-0 rotates it (>= 5 distinct of 20);
- the second reply names the peer that connected (address and port); then bytes flow both ways
  (what the client sent before the peer came included), with half-closes passed on;
- a connection from another address than DST.ADDR is refused (reset) and does not use the BIND up:
  the expected peer still gets through; DST.ADDR 0.0.0.0 accepts any peer; a name as DST.ADDR
  accepts the addresses it resolves to; an IPv6 DST.ADDR listens on the IPv6 egress;
- `--bind-timeout 1` ends an unanswered BIND with a second reply REP 0x06 and closes the listener;
  a client that leaves while waiting closes the listener too; `--deny-private` refuses a BIND for a
  loopback peer with REP 0x02.
"""
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, add_user, pool_add, bind_request, egress_source,  # noqa: E402
                     read_reply, recv_exact, recv_all, assert_no_data, wait_closed)

USER, PW = "alice", "alice-secret-pw"
POOL20 = ["127.0.0.%d" % i for i in range(2, 22)]


class BindCase(DaemonTestCase):

    def pool_daemon(self, args=(), pool=POOL20 + ["::1"]):
        d = harness.Daemon(workdir=self.workdir(), args=args)
        add_user(d.db, USER, PW)
        pool_add(d.db, *pool)
        self.addCleanup(d.stop)
        d.start()
        return d

    def bind(self, d, host, user=USER, port=0):
        ctl, r = bind_request(d.addr(), host, port, user, PW)
        self.addCleanup(ctl.close)
        return ctl, r

    def peer(self, bnd, source):
        fam = socket.AF_INET6 if ":" in bnd.host else socket.AF_INET
        p = socket.socket(fam, socket.SOCK_STREAM)
        self.addCleanup(p.close)
        p.settimeout(harness.IO_TIMEOUT)
        p.bind((source, 0))
        p.connect((bnd.host, bnd.port))
        return p

    def refused_peer(self, bnd, source):
        """Connect from source and assert the proxy ends that connection (a reset, possibly
        before connect() even returns, or an EOF) without a byte. Returns how."""
        try:
            p = self.peer(bnd, source)
        except ConnectionResetError:
            return "reset during connect"
        how, _ = wait_closed(p, 5.0)
        return how

    def wait_listener_gone(self, bnd, timeout=5.0):
        """Poll until a connection to bnd is refused (a connection queued on a listener that then
        closed is reset instead: poll again)."""
        fam = socket.AF_INET6 if ":" in bnd.host else socket.AF_INET
        for _ in harness.deadline_loop(timeout, 0.05):
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.connect((bnd.host, bnd.port))
            except ConnectionRefusedError:
                return
            except ConnectionResetError:
                continue
            finally:
                s.close()
        self.fail("%s port %d still accepts connections" % (bnd.host, bnd.port))


class Bind(BindCase):

    def test_relay_both_ways(self):
        d = self.pool_daemon()
        ctl, r1 = self.bind(d, "127.0.0.1", USER + "-session-b1")
        self.assertEqual(r1.rep, 0, r1)
        self.assertIn(r1.host, POOL20)
        self.assertNotEqual(r1.port, 0)
        early = os.urandom(3000)
        ctl.sendall(early)                       # before the peer came: kept for it
        p = self.peer(r1, "127.0.0.1")
        r2 = read_reply(ctl)
        self.assertEqual(r2.rep, 0, r2)
        self.assertEqual((r2.host, r2.port), p.getsockname()[:2])
        self.assertEqual(recv_exact(p, len(early)), early)
        up, down = os.urandom(200000), os.urandom(300000)
        ctl.sendall(up)
        self.assertEqual(recv_exact(p, len(up)), up)
        p.sendall(down)
        self.assertEqual(recv_exact(ctl, len(down)), down)
        ctl.shutdown(socket.SHUT_WR)             # the client's FIN reaches the peer
        self.assertEqual(recv_all(p), b"")
        p.sendall(b"last words")
        p.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(ctl), b"last words")

    def test_same_egress_as_connect_and_ttl0_rotates(self):
        echo = self.echo_server("127.0.0.1")
        d = self.pool_daemon()
        got = []
        for i in range(10):
            user = "%s-session-s%d-ttl-86400" % (USER, i)
            t = egress_source(d.addr(), echo.addr, user, PW)
            ctl, r = self.bind(d, "127.0.0.1", user)
            self.assertEqual(r.rep, 0, r)
            self.assertEqual(r.host, t, "session %d: CONNECT from %s, BIND on %s" % (i, t, r.host))
            got.append(t)
            ctl.close()
        harness.log("10 sessions, CONNECT = BIND each: %s" % got)
        self.assertGreaterEqual(len(set(got)), 4, got)
        hosts = []
        for _ in range(20):
            ctl, r = self.bind(d, "127.0.0.1", USER + "-ttl-0")
            self.assertEqual(r.rep, 0, r)
            hosts.append(r.host)
            ctl.close()
        harness.log("ttl-0: %d distinct of 20" % len(set(hosts)))
        self.assertGreaterEqual(len(set(hosts)), 5, hosts)

    def test_wrong_peer_is_refused_and_the_bind_waits_on(self):
        d = self.pool_daemon()
        ctl, r1 = self.bind(d, "127.0.0.1")
        self.assertEqual(r1.rep, 0, r1)
        harness.log("a peer from another address: %s" % self.refused_peer(r1, "127.0.0.50"))
        assert_no_data(ctl, 0.3)                 # no second reply for it
        p = self.peer(r1, "127.0.0.1")
        r2 = read_reply(ctl)
        self.assertEqual((r2.rep, r2.host, r2.port), (0,) + p.getsockname()[:2])
        p.sendall(b"hello")
        self.assertEqual(recv_exact(ctl, 5), b"hello")

    def test_zero_address_accepts_any_peer(self):
        d = self.pool_daemon()
        ctl, r1 = self.bind(d, "0.0.0.0")
        self.assertEqual(r1.rep, 0, r1)
        self.assertIn(r1.host, POOL20)
        p = self.peer(r1, "127.0.0.50")
        r2 = read_reply(ctl)
        self.assertEqual((r2.rep, r2.host), (0, "127.0.0.50"))
        ctl.sendall(b"x")
        self.assertEqual(recv_exact(p, 1), b"x")

    def test_name_as_the_expected_peer(self):
        d = self.pool_daemon()
        ctl, r1 = self.bind(d, "localhost")
        self.assertEqual(r1.rep, 0, r1)
        fam_source = "::1" if ":" in r1.host else "127.0.0.1"
        if fam_source == "127.0.0.1":
            self.refused_peer(r1, "127.0.0.50")
        p = self.peer(r1, fam_source)
        r2 = read_reply(ctl)
        self.assertEqual((r2.rep, r2.host), (0, fam_source))
        p.sendall(b"y")
        self.assertEqual(recv_exact(ctl, 1), b"y")

    def test_ipv6_peer(self):
        d = self.pool_daemon()
        ctl, r1 = self.bind(d, "::1")
        self.assertEqual((r1.rep, r1.host), (0, "::1"), r1)
        p = self.peer(r1, "::1")
        r2 = read_reply(ctl)
        self.assertEqual((r2.rep, r2.host, r2.port), (0, "::1", p.getsockname()[1]))

    def test_deadline(self):
        limit = 1.0
        d = self.pool_daemon(args=("--bind-timeout", "%g" % limit))
        ctl, r1 = self.bind(d, "127.0.0.1")
        self.assertEqual(r1.rep, 0, r1)
        t0 = time.monotonic()   # the deadline is set when the first reply is sent
        r2 = read_reply(ctl, timeout=limit + 5.0)
        took = time.monotonic() - t0
        harness.log("unanswered BIND: REP 0x%02x after %.2f s" % (r2.rep, took))
        self.assertEqual(r2.rep, 0x06, "an unanswered BIND: %r" % r2)
        self.assertGreaterEqual(took, limit - 0.2, "the second reply came before --bind-timeout")
        wait_closed(ctl, 5.0)
        self.wait_listener_gone(r1)

    def test_client_leaving_closes_the_listener(self):
        d = self.pool_daemon()
        base = d.settled_fd_count()
        ctl, r1 = self.bind(d, "127.0.0.1")
        self.assertEqual(r1.rep, 0, r1)
        ctl.close()
        self.wait_listener_gone(r1)
        d.wait_fds_at_most(base)

    def test_deny_private(self):
        d = self.pool_daemon(args=("--deny-private",))
        ctl, r1 = self.bind(d, "127.0.0.1")
        self.assertEqual(r1.rep, 0x02, r1)


if __name__ == "__main__":
    harness.main()
