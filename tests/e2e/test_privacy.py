"""The privacy rule for logs (DESIGN.md): at the default log level the daemon's log never names a
destination or a client's password.

Proves: after successful relays to an IP literal and to a name, a failed name resolution, a refused
connect, a wrong password and a successful login, the stderr log of a daemon started without
--log-level contains none of: the destination names, the destination ports, the passwords.
"""
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, echo_open, echo_check, socks_open, SocksFailure  # noqa: E402

USER, PASSWORD = "henry", "Pr1vacy-Probe-Secret"
WRONG = "Wr0ng-Probe-Secret"
NXNAME = "privacy-probe-zz.invalid"


class Privacy(DaemonTestCase):

    def test_default_log_level_names_no_destination_or_password(self):
        echo = self.echo_server()
        closed = harness.free_port()
        d = self.start_daemon(users=[(USER, PASSWORD)], log_level=None)
        s, _, _ = echo_open(d.addr(), echo.addr, USER, PASSWORD)
        echo_check(s)
        s.close()
        s, _, _ = echo_open(d.addr(), echo.addr, USER, PASSWORD, target_host="localhost")
        echo_check(s)
        s.close()
        for host, port in ((NXNAME, 80), ("127.0.0.1", closed)):
            with self.assertRaises(SocksFailure):
                socks_open(d.addr(), host, port, USER, PASSWORD)
        with self.assertRaises(SocksFailure):
            socks_open(d.addr(), "127.0.0.1", echo.port, USER, WRONG)
        with self.assertRaises(SocksFailure):
            socks_open(d.addr(), "127.0.0.1", echo.port, "nobody-probe", WRONG)
        d.stop()
        text = d.log_text()
        cmdline, _, log = text.partition("\n")   # the first line is the harness's own "$ command"
        harness.log("default-level log: %d lines" % len(log.splitlines()))
        leaks = []
        for needle in (PASSWORD, WRONG, NXNAME, "privacy-probe", "localhost"):
            if needle in log:
                leaks.append(needle)
        for port in (echo.port, closed):
            if re.search(r"(?<![\d.])%d(?!\d)" % port, log):
                leaks.append("destination port %d" % port)
        self.assertEqual(leaks, [], "the default-level log names these:\n%s" % harness.Daemon.log_tail(d))


if __name__ == "__main__":
    harness.main()
