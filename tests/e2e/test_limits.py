"""Limits: stalled clients do not starve others; the connection cap holds without burning CPU.

Proves: with 200 connections open that never finish the handshake (100 silent, 100 that sent half a
greeting), a normal client still completes CONNECT + echo in under 2 s; with --max-conns 20 and 20
connections relaying, a 21st connection gets no method reply (it waits in the kernel backlog), the
daemon uses less than 0.2 s of CPU over 2 s while at the cap (no accept busy loop), and the 21st is
served as soon as one of the 20 closes — the 20 keep relaying throughout.
"""
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, echo_open, echo_check, read_method, read_reply, recv_line,  # noqa: E402
                     tcp_connect)

IDLE = 200
CAP = 20
CPU_WINDOW = 2.0
CPU_LIMIT = 0.2


class Limits(DaemonTestCase):

    def test_idle_handshakes_do_not_delay_a_normal_client(self):
        echo = self.echo_server()
        # A long handshake deadline, so the stalled clients stay for the whole test.
        d = self.start_daemon(args=["--handshake-timeout", "60"])
        idle = []
        self.addCleanup(lambda: [s.close() for s in idle])
        for i in range(IDLE):
            s = tcp_connect(d.addr(), timeout=10)
            if i % 2:
                s.sendall(bytes.fromhex("05 03 00"))   # VER NMETHODS=3, only 1 of 3 methods
            idle.append(s)
        # Let the daemon accept them all (it must hold them, not refuse or close them).
        fds = None
        for _ in harness.deadline_loop(10, 0.05):
            fds = d.fd_count()
            if fds >= IDLE:
                break
        harness.log("daemon holds %d descriptors with %d stalled clients" % (fds, IDLE))
        for attempt in range(3):
            t0 = time.monotonic()
            s, r, src = echo_open(d.addr(), echo.addr, timeout=5)
            echo_check(s, os.urandom(2048), timeout=5)
            s.close()
            took = time.monotonic() - t0
            harness.log("normal client %d: CONNECT + echo in %.3f s" % (attempt, took))
            self.assertLess(took, 2.0, "a normal client was delayed by stalled handshakes")
        # The stalled clients are still open (not dropped to make room) and got no answer (the
        # half greetings are incomplete, the silent ones said nothing).
        closed, answered = 0, []
        for i, s in enumerate(idle):
            r, _, _ = harness.select.select([s], [], [], 0)
            if not r:
                continue
            s.settimeout(0.5)
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if data:
                answered.append((i, data))
            else:
                closed += 1
        self.assertEqual(answered, [], "incomplete greetings were answered")
        self.assertEqual(closed, 0, "stalled clients were closed before their deadline")

    def test_max_conns_cap_blocks_then_serves_without_spinning(self):
        echo = self.echo_server()
        d = self.start_daemon(args=["--max-conns", str(CAP), "--workers", "2"])
        relays = []
        self.addCleanup(lambda: [s.close() for s in relays])
        for i in range(CAP):
            s, _, _ = echo_open(d.addr(), echo.addr, timeout=10)
            echo_check(s, b"relay %d\n" % i)
            relays.append(s)

        extra = self.closing(tcp_connect(d.addr(), timeout=10))   # accepted by the kernel backlog
        extra.sendall(bytes.fromhex("05 01 00"))                   # VER NMETHODS=1 [00]
        cpu0 = d.cpu_seconds()
        t0 = time.monotonic()
        harness.assert_no_data(extra, CPU_WINDOW)                  # no method reply while at the cap
        cpu1 = d.cpu_seconds()
        used = cpu1 - cpu0
        harness.log("at the cap: %.3f s CPU over %.2f s" % (used, time.monotonic() - t0))
        self.assertLess(used, CPU_LIMIT, "the daemon spins while at the connection cap")
        for i, s in enumerate(relays):                             # the 20 still relay
            echo_check(s, b"still %d\n" % i)

        relays.pop(0).close()
        t1 = time.monotonic()
        self.assertEqual(read_method(extra, timeout=5), 0x00, "the 21st was not served after a slot freed")
        harness.log("21st connection served %.3f s after a slot freed" % (time.monotonic() - t1))
        extra.sendall(bytes.fromhex("05 01 00 01 7f 00 00 01") + echo.port.to_bytes(2, "big"))
        #                            VER CMD=CONNECT RSV ATYP 127.0.0.1 PORT
        self.assertEqual(read_reply(extra).rep, 0x00)
        self.assertTrue(recv_line(extra).startswith(b"SRC "))
        echo_check(extra)

        # Back at the cap: the next one waits again.
        another = self.closing(tcp_connect(d.addr(), timeout=10))
        another.sendall(bytes.fromhex("05 01 00"))
        harness.assert_no_data(another, 1.0)
        extra.close()
        self.assertEqual(read_method(another, timeout=5), 0x00)

    def test_cap_recovers_when_handshake_deadline_frees_slots(self):
        # Fill the cap with clients that never handshake: whether or not they count against the cap,
        # a waiting client must be served once their deadline has closed them.
        echo = self.echo_server()
        d = self.start_daemon(args=["--max-conns", str(CAP), "--handshake-timeout", "2"])
        stalled = [self.closing(tcp_connect(d.addr(), timeout=10)) for _ in range(CAP)]
        waiting = self.closing(tcp_connect(d.addr(), timeout=10))
        waiting.sendall(bytes.fromhex("05 01 00"))
        # The stalled ones are closed by the handshake deadline, then the waiting one is served.
        self.assertEqual(read_method(waiting, timeout=10), 0x00)
        for s in stalled:
            harness.wait_closed(s, 5)
        harness.check_serves(d.addr(), echo)


if __name__ == "__main__":
    harness.main()
