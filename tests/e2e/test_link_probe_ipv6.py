"""The encrypted link's penalty box counts an IPv6 client by its /64 (issue 4, LINK.md server step 1),
inside a network namespace this file creates (harness.reexec_in_namespace).

Inside: `lo` up and three addresses of the documentation prefix on it, two in one /64
(2001:db8:79:1::a and ::b) and one in another (2001:db8:79:2::a); the daemon's link listens on
[::1]. Proves: five silent failures from 2001:db8:79:1::a box the whole /64, so a valid first flight
from 2001:db8:79:1::b gets zero bytes and the close at the deadline, while 2001:db8:79:2::a, in
another /64, is served. Without namespaces the file is skipped.
"""
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, linkprobe, tcp_connect, wait_closed  # noqa: E402

USER, PASSWORD = "alice", "al1ce-pa55"
DEADLINE = 2.0                    # --link-handshake-timeout
JITTER = min(3.0, DEADLINE / 10)
FAILER, NEIGHBOUR, OTHER = "2001:db8:79:1::a", "2001:db8:79:1::b", "2001:db8:79:2::a"


def setUpModule():
    harness.namespace_lo(addrs=[FAILER, NEIGHBOUR, OTHER])


class LinkProbeIpv6(DaemonTestCase):

    def test_penalty_box_covers_the_slash_64(self):
        _, (host, port), keys = harness.link_only_daemon(self, USER, PASSWORD, DEADLINE,
                                                          link_listen="[::1]:0",
                                                          family=socket.AF_INET6)
        key = keys["k1"]
        server = ("[%s]" % host, port)
        self.assertTrue(linkprobe(key, server, "--bind", NEIGHBOUR).first.startswith("reply "),
                        "before any failure the /64 is served")
        for _ in range(5):
            # A random flight (mac1 fails), then our FIN: the silent server closes when we do,
            # and the failure is counted by then.
            s = tcp_connect((host, port), source=FAILER)
            try:
                s.sendall(os.urandom(128))
                s.shutdown(socket.SHUT_WR)
                how, _ = wait_closed(s, DEADLINE + JITTER + 5)
            finally:
                s.close()
        t0 = time.monotonic()
        r = linkprobe(key, server, "--bind", NEIGHBOUR, "--wait", DEADLINE + JITTER + 5)
        self.assertIsNotNone(r.silent, "another address of the boxed /64 was served: %r" % r)
        took, how = r.silent
        harness.log("valid flight from %s: no byte, %s after %.3f s" % (NEIGHBOUR, how, took))
        self.assertEqual(how, "eof")
        self.assertGreaterEqual(took, DEADLINE - 0.05)
        self.assertLessEqual(took, DEADLINE + JITTER + 0.5)
        self.assertLess(time.monotonic() - t0, 15, "still inside the first box")
        r = linkprobe(key, server, "--bind", OTHER)
        self.assertTrue(r.first.startswith("reply "), "another /64 must be served: %r" % r)


if __name__ == "__main__":
    harness.reexec_in_namespace(__file__)
    harness.main()
