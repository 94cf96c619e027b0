"""Encrypted-link connections that end half-way through their handshake, on both ends. What only
the handshake needs (the server's Noise state and the client's PSK, the client's Noise state, its
target and its username parameters) is allocated apart from the connection and freed when the
handshake ends; these are the ends that come before that. Under the sanitizer build a leaked or
twice-freed handshake makes the process exit non-zero at its SIGTERM, which stop() fails on.

Server (`shroud serve --listen none --link-listen 127.0.0.1:0 --link-handshake-timeout 2`), with
valid first flights whose padding is at least 2 bytes, saved by tests/tools/linkprobe from a
listener that never answers (so the daemon has never seen them): message 1 and one padding byte,
then the client's close; message 1 and one padding byte, then nothing until the deadline closes it
(a FIN, no byte back); 200 random bytes (mac1 fails: SILENT). A valid client is served before and
after, and the daemon exits 0.

Client (`shroud link`, its server reached through a forwarder that passes its start-up probe on and
then swallows every first flight without answering): an application that logged in with
parameters and sent CONNECT closes while the reply is awaited; another is still waiting when the
client gets SIGTERM; a third has only greeted (the AUTH step). The client exits 0.
"""
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, linkprobe, tcp_connect, wait_closed  # noqa: E402

USER, PASSWORD = "alice", "al1ce-pa55"
DEADLINE = 2.0                     # --link-handshake-timeout
JITTER = min(3.0, DEADLINE / 10)   # the server adds up to this much, per connection
FIXED = 128                        # a first flight's fixed part: message 1 and mac1 (LINK.md)
EARLY = 0.05                       # an event loop's cached "now" may lag the accept by a few ms
LATE = 0.5                         # scheduling slack (sanitizers, a shared two-core machine)


class Swallower:
    """Listens on 127.0.0.1. The first `forward` connections are passed to `upstream` both ways;
    every later one is accepted, its first bytes read (then `swallowed` is set) and never
    answered."""

    def __init__(self, upstream=None, forward=0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = self.sock.getsockname()
        self.upstream, self.forward = upstream, forward
        self.held = []
        self.swallowed = threading.Semaphore(0)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            if self.forward > 0:
                self.forward -= 1
                b = socket.create_connection(self.upstream, timeout=10)
                self.held += [a, b]
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
                threading.Thread(target=self._pipe, args=(b, a), daemon=True).start()
                continue
            self.held.append(a)
            try:
                a.recv(65536)
            except OSError:
                pass
            self.swallowed.release()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        for s in [self.sock] + self.held:
            try:
                s.close()
            except OSError:
                pass


class LinkTeardown(DaemonTestCase):

    def link_daemon(self):
        """A daemon with only a link listener and one link, k1. Returns it, the link address and
        the path of k1's access-key file, pointed there."""
        d, addr, keys = harness.link_only_daemon(self, USER, PASSWORD, DEADLINE,
                                                 log_level="debug")
        return d, addr, keys["k1"]

    def swallower(self, **kw):
        s = Swallower(**kw)
        self.addCleanup(s.close)
        return s

    def padded_first_flight(self, key_file, sink):
        """A valid first flight with at least 2 padding bytes, as linkprobe sends it, saved from a
        listener that never answers: the daemon's replay cache has not seen it."""
        for i in range(50):
            path = os.path.join(self.workdir(), "first-%d" % i)
            linkprobe(key_file, sink.addr, "--save-first", path, "--wait", 0.2)
            with open(path, "rb") as f:
                first = f.read()
            if len(first) >= FIXED + 2:
                return first
        self.fail("50 first flights in a row had less than 2 bytes of padding")

    def assert_deadline(self, label, how, took):
        """A connection the server must end with a FIN at its handshake deadline, not before."""
        harness.log("%-40s %s after %.3f s" % (label, how, took))
        self.assertEqual(how, "eof", "%s: a handshake left half-way must end with a FIN" % label)
        self.assertGreaterEqual(took, DEADLINE - EARLY, "%s: closed before the deadline" % label)
        self.assertLessEqual(took, DEADLINE + JITTER + LATE,
                             "%s: closed after the deadline" % label)

    def assert_served(self, key_file, addr, source):
        r = linkprobe(key_file, addr, "--bind", source)
        self.assertTrue(r.first.startswith("reply "), "a valid client must be served: %r" % r)

    def test_server_handshake_ends_early(self):
        d, addr, key = self.link_daemon()
        sink = self.swallower()
        self.assert_served(key, addr, "127.0.0.11")

        # Message 1 is accepted (TCP delivers it before the FIN), its padding is being dropped:
        # the client closes.
        first = self.padded_first_flight(key, sink)
        s = tcp_connect(addr, source="127.0.0.12")
        s.sendall(first[:FIXED + 1])
        s.close()

        # The same, but the rest of the padding never comes: the deadline ends it.
        first = self.padded_first_flight(key, sink)
        s = tcp_connect(addr, source="127.0.0.13")
        t0 = time.monotonic()   # the deadline is set at accept; wait_closed times only its wait
        try:
            s.sendall(first[:FIXED + 1])
            how, _ = wait_closed(s, DEADLINE + JITTER + 5)
        finally:
            s.close()
        self.assert_deadline("message 1 and one padding byte", how, time.monotonic() - t0)

        # Random bytes: mac1 fails, SILENT until the deadline.
        s = tcp_connect(addr, source="127.0.0.14")
        t0 = time.monotonic()
        try:
            s.sendall(os.urandom(200))
            how, _ = wait_closed(s, DEADLINE + JITTER + 5)
        finally:
            s.close()
        self.assert_deadline("200 random bytes", how, time.monotonic() - t0)

        self.assert_served(key, addr, "127.0.0.15")
        d.stop()  # asserts exit 0: under the sanitizers, no leak and no bad free

    def test_client_handshake_ends_early(self):
        d, addr, key = self.link_daemon()
        with open(key) as f:
            line = f.read().strip()
        # The client's start-up probe reaches the daemon; every later first flight is swallowed.
        fwd = self.swallower(upstream=addr, forward=1)
        c = harness.LinkClient(harness.access_key_with(line, port=fwd.addr[1]),
                               workdir=self.workdir(), log_level="debug")
        self.addCleanup(c.stop)
        c.start()
        proxy = c.addrs[0]

        # Logged in with parameters, CONNECT sent, the first flight gone out: the application
        # closes while the reply is awaited.
        s1 = tcp_connect(proxy)
        self.addCleanup(s1.close)
        s1.sendall(harness.greeting(0x02))
        self.assertEqual(harness.read_method(s1), 0x02)
        s1.sendall(harness.userpass(USER + "-session-abc", "ignored"))
        self.assertEqual(harness.read_auth_status(s1), 0x00)
        s1.sendall(harness.connect_request("example.com", 80))
        self.assertTrue(fwd.swallowed.acquire(timeout=10), "no first flight reached the server")
        s1.close()

        # Still awaiting the reply when the client is stopped.
        s2 = tcp_connect(proxy)
        self.addCleanup(s2.close)
        s2.sendall(harness.greeting(0x00))
        self.assertEqual(harness.read_method(s2), 0x00)
        s2.sendall(harness.connect_request("example.org", 443))
        self.assertTrue(fwd.swallowed.acquire(timeout=10), "no first flight reached the server")

        # Greeted only: the client waits for the login.
        s3 = tcp_connect(proxy)
        self.addCleanup(s3.close)
        s3.sendall(harness.greeting(0x02))
        self.assertEqual(harness.read_method(s3), 0x02)

        c.stop()  # asserts exit 0: under the sanitizers, no leak and no bad free


if __name__ == "__main__":
    harness.main()
