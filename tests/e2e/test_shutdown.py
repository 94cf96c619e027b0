"""Graceful shutdown on SIGTERM / SIGINT.

Proves: after SIGTERM with a relayed connection open, the listener stops accepting (a new connect is
refused or reset, never left hanging or served) while the open connection still relays both ways;
when that client closes, the daemon exits 0 at once, well before the grace period; with --grace 2 and
a connection that never closes, the daemon exits 0 after about 2 s and the held connection is closed;
an idle daemon exits 0 promptly on SIGTERM and on SIGINT, even when signalled the instant it
printed its readiness line; a connection still in its handshake does not
hold the daemon for the whole grace period.
"""
import errno
import os
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, echo_open, echo_check  # noqa: E402


class Shutdown(DaemonTestCase):

    def new_connect_outcome(self, addr):
        """Try a new client: 'refused', 'reset', 'eof' (closed without a byte), 'served' (got a
        method reply) or 'hanging' (connected but no answer within 1 s)."""
        try:
            s = harness.tcp_connect(addr, timeout=3)
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.ECONNREFUSED):
                return "refused"
            raise
        try:
            try:
                s.sendall(bytes.fromhex("05 01 00"))   # VER NMETHODS=1 [00]
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            s.settimeout(1.0)
            try:
                data = s.recv(2)
            except ConnectionResetError:
                return "reset"
            except socket.timeout:
                return "hanging"
            return "served" if data else "eof"
        finally:
            s.close()

    def wait_not_accepting(self, addr, timeout=3.0):
        """Poll new connects until one is refused/reset/closed unserved; fail with the last outcome."""
        seen = []
        for _ in harness.deadline_loop(timeout, 0.05):
            o = self.new_connect_outcome(addr)
            seen.append(o)
            if o in ("refused", "reset", "eof"):
                return o
        self.fail("%s still accepting after SIGTERM: outcomes %s" % (addr, seen))

    def test_sigterm_drains_open_connection(self):
        echo = self.echo_server()
        d = self.start_daemon(args=["--grace", "30"])
        addr = d.addr()
        s, _, _ = echo_open(addr, echo.addr)
        self.closing(s)
        echo_check(s, b"before SIGTERM\n")
        d.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        # The listener stops accepting (bounded: allow the signal to be handled).
        outcome = self.wait_not_accepting(addr)
        harness.log("new connection after SIGTERM: %s" % outcome)
        # The open connection still relays, both ways, and stays up past a short while.
        for i in range(5):
            echo_check(s, os.urandom(1000 * (i + 1)))
        self.assertTrue(d.running(), "exited while a connection was open and the grace period running")
        echo_check(s, b"after SIGTERM\n")
        s.close()
        t_close = time.monotonic()
        rc, _ = d.wait_exit(10)
        took = time.monotonic() - t_close
        self.assertIsNotNone(rc, "did not exit within 10 s of the last client closing (grace 30 s)")
        harness.log("exit %s %.2f s after the client closed (%.2f s after SIGTERM)"
                    % (rc, took, time.monotonic() - t_term))
        self.assertLess(took, 5.0)
        d.stop()  # asserts exit code 0 and clean stdout

    def test_grace_expires_with_connection_held(self):
        echo = self.echo_server()
        d = self.start_daemon(args=["--grace", "2"])
        s, _, _ = echo_open(d.addr(), echo.addr)
        self.closing(s)
        echo_check(s)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc, took = d.wait_exit(10)
        self.assertIsNotNone(rc, "still running 10 s after SIGTERM with --grace 2")
        harness.log("exit %s after %.2f s with a connection held (--grace 2)" % (rc, time.monotonic() - t0))
        self.assertGreaterEqual(took, 1.5, "exited before the grace period, cutting a live connection")
        self.assertLessEqual(took, 6.0)
        how, _ = harness.wait_closed(s, 5)
        harness.log("held connection: %s" % how)
        d.stop()

    def test_sigterm_idle_exits_promptly(self):
        d = self.start_daemon()
        d.send_signal(signal.SIGTERM)
        rc, took = d.wait_exit(10)
        harness.log("idle SIGTERM: exit %s after %.2f s" % (rc, took))
        self.assertIsNotNone(rc)
        self.assertLess(took, 3.0)
        d.stop()

    def test_sigint_idle_exits_promptly(self):
        d = self.start_daemon()
        d.send_signal(signal.SIGINT)
        rc, took = d.wait_exit(10)
        harness.log("idle SIGINT: exit %s after %.2f s" % (rc, took))
        self.assertIsNotNone(rc)
        self.assertLess(took, 3.0)
        d.stop()

    def test_signal_right_after_readiness_line(self):
        # A supervisor may stop the daemon the moment it reports ready: the signal handling must be
        # in place before the banner is printed, or the default action kills the process. Repeated
        # because it is a race.
        results = []
        for i in range(20):
            sig = signal.SIGTERM if i % 2 == 0 else signal.SIGINT
            d = harness.Daemon(workdir=self.workdir())
            self.addCleanup(d.kill)
            d.start()
            d.send_signal(sig)
            rc, took = d.wait_exit(10)
            results.append("%s->%s" % (sig.name, rc))
            self.assertIsNotNone(rc, "still running 10 s after %s" % sig.name)
        harness.log("signal right after the banner: %s" % " ".join(results))
        bad = [r for r in results if not r.endswith("->0")]
        self.assertEqual(bad, [], "exit codes must be 0 (negative = killed by the signal itself)")

    def test_sigterm_with_stalled_handshake(self):
        # A client that never finishes its handshake is not a connection to drain: it must not keep
        # the daemon alive for the whole grace period (it is closed by then at the latest).
        d = self.start_daemon(args=["--grace", "30", "--handshake-timeout", "2"])
        s = self.closing(harness.tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05"))                  # half a greeting
        d.send_signal(signal.SIGTERM)
        rc, took = d.wait_exit(10)
        self.assertIsNotNone(rc, "a stalled handshake kept the daemon alive > 10 s (grace 30)")
        harness.log("exit with a stalled handshake after %.2f s" % took)
        self.assertLess(took, 4.5, "held past the 2 s handshake deadline of the only client")
        harness.wait_closed(s, 5)
        d.stop()

    def test_second_listener_also_stops(self):
        echo = self.echo_server()
        d = self.start_daemon(listen=("127.0.0.1:0", "[::1]:0"), args=["--grace", "30"])
        s, _, _ = echo_open(d.addrs[0], echo.addr)
        self.closing(s)
        d.send_signal(signal.SIGTERM)
        for addr in d.addrs:
            outcome = self.wait_not_accepting(addr)
            harness.log("%s after SIGTERM: %s" % (addr, outcome))
        echo_check(s)
        s.close()
        rc, _ = d.wait_exit(10)
        self.assertIsNotNone(rc)
        d.stop()


if __name__ == "__main__":
    harness.main()
