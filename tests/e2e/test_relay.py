"""The relay: half-close, clean close, many connections at once, bulk data both ways, backpressure.

Proves: a client's half-close (SHUT_WR) reaches the target as EOF while the client still receives
everything the target sends back, then EOF; a close from either side reaches the other side and the
daemon releases both descriptors; 500 connections relay at the same time, each echoing its own 16 KiB
pattern byte-for-byte; 200 MB upload and 200 MB download arrive intact (SHA-256 on both ends); and when
the client stops reading, the proxy stops reading the target: its RSS grows by less than 16 MiB while
the target tries to push 64 MB, and every byte still arrives once the client reads again. All of it
twice: through splice pipes (the default) and through user-space buffers (--no-splice).
"""
import hashlib
import os
import selectors
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, echo_open, echo_check, socks_open  # noqa: E402

MB = 1000 * 1000
BULK = 200 * MB
CONCURRENT = 500
PATTERN_LEN = 16 * 1024
BACKPRESSURE_TOTAL = 64 * MB
RSS_GROWTH_LIMIT_KIB = 16 * 1024


def src_port(sock, server):
    """The source port the target saw for this relayed connection (its only accepted peer)."""
    peer = server.accepted.get(timeout=10)
    return peer[1]


class Relay(DaemonTestCase):

    SPLICE = True

    def daemon(self, args=()):
        d = self.start_daemon(args=list(args) + ([] if self.SPLICE else ["--no-splice"]))
        return d

    def warm_baseline(self, d, echo):
        """Descriptor count of an idle daemon after one full connection (lazy init done)."""
        harness.check_serves(d.addr(), echo)
        return d.settled_fd_count()

    # ---- close semantics

    def test_half_close_from_client(self):
        echo = self.echo_server()
        d = self.daemon()
        s, _, src = echo_open(d.addr(), echo.addr)
        self.closing(s)
        payload = os.urandom(300 * 1024)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        echo.wait_done(src[1])             # the target saw EOF after reading everything
        got = harness.recv_all(s, 20)      # ...and the client still receives all echoed bytes, then EOF
        self.assertEqual(len(got), len(payload))
        self.assertEqual(got, payload)

    def test_half_close_from_target(self):
        # The target sends and closes its side (SHUT_WR) but keeps reading: the client gets the data
        # and EOF, and can still send afterwards.
        src = self.start_server(harness.SourceServer(100 * 1024))
        d = self.daemon()
        s, _ = socks_open(d.addr(), *src.addr)
        self.closing(s)
        got = harness.recv_all(s, 10)
        self.assertEqual(hashlib.sha256(got).digest(), harness.pattern_digest(100 * 1024))
        try:
            s.sendall(b"still writable after the target's FIN\n")
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.fail("the relay was torn down after the target's FIN (no half-close): %r" % e)
        src.wait_done(src_port(s, src))    # the target saw our EOF
        self.assertEqual(src.errors, [])

    def test_clean_close_by_client(self):
        echo = self.echo_server()
        d = self.daemon()
        base = self.warm_baseline(d, echo)
        s, _, src = echo_open(d.addr(), echo.addr)
        echo_check(s, os.urandom(10000))
        self.assertGreater(d.fd_count(), base)
        s.close()
        echo.wait_done(src[1])             # the target saw the close
        d.wait_fds_at_most(base)

    def test_clean_close_by_target(self):
        echo = self.echo_server()
        src_srv = self.start_server(harness.SourceServer(1000))
        d = self.daemon()
        base = self.warm_baseline(d, echo)
        s, _ = socks_open(d.addr(), *src_srv.addr)
        got = harness.recv_all(s, 10)       # target sends 1000 bytes and FIN
        self.assertEqual(len(got), 1000)
        port = src_port(s, src_srv)
        s.close()                            # our close ends the target's wait for EOF
        src_srv.wait_done(port)
        d.wait_fds_at_most(base)

    def test_target_reset_reaches_client(self):
        # A target that aborts (RST): the client's connection must end too, not hang.
        def abort(conn, peer, server):
            conn.recv(100)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        srv = self.start_server(harness.TcpServer(abort))
        d = self.daemon()
        s, _ = socks_open(d.addr(), *srv.addr)
        self.closing(s)
        s.sendall(b"hello")
        how, took = harness.wait_closed(s, 10)
        harness.log("target RST reached the client as %s after %.2f s" % (how, took))

    # ---- many at once

    def test_500_concurrent_echo(self):
        echo = self.echo_server()
        d = self.daemon(["--max-conns", "2000"])
        base = self.warm_baseline(d, echo)
        proxy = d.addr()
        ehost, eport = echo.addr
        req = bytes.fromhex("05 01 00 01 7f 00 00 01") + eport.to_bytes(2, "big")
        sel = selectors.DefaultSelector()
        conns = []
        for i in range(CONCURRENT):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(proxy)
            c = {"i": i, "s": s, "stage": "connect", "in": bytearray(), "out": bytearray(),
                 "pattern": hashlib.shake_256(b"conn %d" % i).digest(PATTERN_LEN), "got": bytearray()}
            conns.append(c)
            sel.register(s, selectors.EVENT_WRITE, c)
        self.addCleanup(lambda: [c["s"].close() for c in conns])

        def want(c):
            ev = 0
            if c["stage"] == "connect" or c["out"]:
                ev |= selectors.EVENT_WRITE
            if c["stage"] not in ("connect", "ready", "done"):
                ev |= selectors.EVENT_READ
            if ev:
                sel.modify(c["s"], ev, c)
            else:
                sel.unregister(c["s"])

        def advance(c):
            b = c["in"]
            if c["stage"] == "method" and len(b) >= 2:
                self.assertEqual(bytes(b[:2]), b"\x05\x00", "conn %d method" % c["i"])
                del b[:2]
                c["out"] += req
                c["stage"] = "reply"
            if c["stage"] == "reply" and len(b) >= 4 and len(b) >= (10 if b[3] == 1 else 22):
                self.assertEqual(b[1], 0, "conn %d: reply %s" % (c["i"], bytes(b[:10]).hex(" ")))
                del b[:10 if b[3] == 1 else 22]
                c["stage"] = "src"
            if c["stage"] == "src" and b"\n" in b:
                line, _, rest = bytes(b).partition(b"\n")
                self.assertTrue(line.startswith(b"SRC 127.0.0.1 "), line)
                c["in"] = bytearray(rest)
                c["stage"] = "ready"
            if c["stage"] == "echo":
                if len(b) >= PATTERN_LEN:
                    self.assertEqual(bytes(b[:PATTERN_LEN]), c["pattern"], "conn %d echo differs" % c["i"])
                    self.assertEqual(len(b), PATTERN_LEN, "conn %d: extra bytes" % c["i"])
                    c["stage"] = "done"

        def pump(until_stage, deadline, what):
            pending = sum(1 for c in conns if c["stage"] != until_stage)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    stages = {}
                    for c in conns:
                        stages[c["stage"]] = stages.get(c["stage"], 0) + 1
                    raise AssertionError("%s: %d of %d connections not done in time; stages %r"
                                         % (what, pending, CONCURRENT, stages))
                for key, ev in sel.select(min(left, 1.0)):
                    c = key.data
                    s = c["s"]
                    if c["stage"] == "connect":
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        self.assertEqual(err, 0, "conn %d: connect error %s" % (c["i"], os.strerror(err)))
                        c["out"] += bytes.fromhex("05 01 00")  # VER NMETHODS=1 [00]
                        c["stage"] = "method"
                    if ev & selectors.EVENT_WRITE and c["out"]:
                        n = s.send(c["out"])
                        del c["out"][:n]
                    if ev & selectors.EVENT_READ:
                        data = s.recv(65536)
                        if not data:
                            raise AssertionError("conn %d: EOF in stage %s" % (c["i"], c["stage"]))
                        c["in"] += data
                        advance(c)
                    if c["stage"] == until_stage:
                        pending -= 1
                    want(c)

        t0 = time.monotonic()
        pump("ready", t0 + 30, "handshakes")
        t1 = time.monotonic()
        self.assertGreaterEqual(d.fd_count(), base + 2 * CONCURRENT - 10,
                                "all connections open at once (proxy side)")
        for c in conns:  # every connection is open and relaying; now all send at once
            c["stage"] = "echo"
            c["out"] += c["pattern"]
            sel.register(c["s"], selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        pump("done", time.monotonic() + 30, "echo")
        t2 = time.monotonic()
        harness.log("%d handshakes in %.2f s, %d x 16 KiB echoed in %.2f s"
                    % (CONCURRENT, t1 - t0, CONCURRENT, t2 - t1))
        # The 16 KiB echoes went through splice pipes (socks/pipes.h): taken while bytes flowed,
        # given back when empty, at most PIPES_KEEP (32) kept per worker (2 here, in ctest's
        # default of one per core: at most 2 x 32 whatever the machine's cores).
        if self.SPLICE:
            self.assertGreater(d.relay_pipes(), 0, "no pipe was kept: the relay did not splice")
        else:
            self.assertEqual(d.relay_pipes(), 0, "--no-splice, yet the daemon holds relay pipes")
        for c in conns:
            c["s"].close()
        d.wait_fds_at_most(base, timeout=15)
        self.assertLessEqual(d.relay_pipes(), 32 * os.cpu_count(), "more pipes kept than the pools hold")
        self.assertEqual(echo.errors, [])

    # ---- bulk

    def test_200mb_upload_sha256(self):
        sink = self.start_server(harness.SinkServer())
        d = self.daemon()
        s, _ = socks_open(d.addr(), *sink.addr, timeout=60)
        self.closing(s)
        harness.upload_checked(s, sink, BULK, "through the proxy")

    def test_200mb_download_sha256(self):
        src = self.start_server(harness.SourceServer(BULK))
        d = self.daemon()
        s, _ = socks_open(d.addr(), *src.addr, timeout=60)
        self.closing(s)
        harness.download_checked(s, BULK, "through the proxy")

    def test_backpressure_bounds_rss(self):
        src = self.start_server(harness.SourceServer(BACKPRESSURE_TOTAL, start=False))
        d = self.daemon()
        # A small receive buffer on the client so the kernel cannot absorb much on our side.
        s, _ = socks_open(d.addr(), *src.addr, rcvbuf=64 * 1024, timeout=30)
        self.closing(s)
        rss0 = d.rss_kib()
        src.go.set()
        # Wait until the target can push no more (its progress stalls for 1 s), bounded.
        last, since, t0 = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - t0 < 30:
            p = src.progress
            if p != last:
                last, since = p, time.monotonic()
            elif time.monotonic() - since > 1.0 or p >= BACKPRESSURE_TOTAL:
                break
            time.sleep(0.1)
        rss1 = d.rss_kib()
        harness.log("target pushed %.1f MB of %d MB before stalling; proxy RSS %d -> %d KiB (+%d)"
                    % (last / MB, BACKPRESSURE_TOTAL // MB, rss0, rss1, rss1 - rss0))
        self.assertLess(rss1 - rss0, RSS_GROWTH_LIMIT_KIB,
                        "the proxy buffered what the client did not read")
        self.assertLess(last, BACKPRESSURE_TOTAL, "the target could send everything: nothing pushed back")
        # Now read: everything arrives, in order.
        h = hashlib.sha256()
        n = 0
        s.settimeout(30)
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            h.update(data)
            n += len(data)
        self.assertEqual(n, BACKPRESSURE_TOTAL)
        self.assertEqual(h.digest(), harness.pattern_digest(BACKPRESSURE_TOTAL))
        rss2 = d.rss_kib()
        harness.log("RSS after draining: %d KiB" % rss2)


class RelayNoSplice(Relay):
    """The same relay through user-space buffers only (`--no-splice`: the path every relay takes
    when no pipe can be had, and the handshake's leftovers always take)."""
    SPLICE = False


if __name__ == "__main__":
    harness.main()
