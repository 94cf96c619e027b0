"""IPv6 prefix rotation (issue 3), inside a network namespace this file creates for itself.

The file re-executes itself under `unshare -n` (falling back to `unshare -r -n`, a user namespace, when
not privileged); inside, `lo` is brought up and `ip -6 route add local 2001:db8:77::/64 dev lo` makes
the whole documentation prefix local, so the daemon can bind any address in it (IPV6_FREEBIND) and
the echo target on [::1] sees it. Nothing leaves the namespace, which disappears with the process.
If namespaces are not available here, the file prints `skipped: <reason>` and exits 0.

Proves, with a pool of the single entry 2001:db8:77::/64 (the banner says `egress pool of 1`):
`ttl-0` connections come from >= 8 distinct addresses of 30, all inside the prefix and never its
all-zero host; the same session with the default TTL keeps one address over 20 connections (one
change allowed: a window may end during the run), different sessions get different addresses; an
IPv4 target gets REP 0x04 and is never reached; the reply's BND is always the address the target saw.
"""
import ipaddress
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, add_user, pool_add, egress_attempt, egress_source  # noqa: E402

PREFIX = "2001:db8:77::/64"
NET = ipaddress.ip_network(PREFIX)
USER, PW = "alice", "alice-secret-pw"


def setUpModule():
    harness.namespace_lo(local_prefixes=[PREFIX])


class PrefixRotation(DaemonTestCase):

    def setUp(self):
        self.echo6 = self.echo_server("::1")

    def daemon(self):
        d = harness.Daemon(workdir=self.workdir())
        add_user(d.db, USER, PW)
        self.assertEqual(pool_add(d.db, PREFIX), 1)
        self.addCleanup(d.stop)
        d.start()
        self.assertIn("egress pool of 1", d.banner)
        return d

    def src(self, d, user, echo=None, host=None):
        s = egress_source(d.addr(), (echo or self.echo6).addr, user, PW, target_host=host)
        a = ipaddress.ip_address(s)
        self.assertIn(a, NET, "source %s is outside %s" % (s, PREFIX))
        self.assertNotEqual(a, NET.network_address, "the all-zero host of the prefix was used")
        return s

    def test_ttl0_rotates_inside_the_prefix(self):
        d = self.daemon()
        seq = [self.src(d, USER + "-session-r-ttl-0") for _ in range(30)]
        harness.log("ttl-0: %d distinct of 30, e.g. %s" % (len(set(seq)), seq[:3]))
        self.assertGreaterEqual(len(set(seq)), 8, seq)
        seq = [self.src(d, USER + "-ttl-0") for _ in range(10)]
        self.assertGreaterEqual(len(set(seq)), 5, seq)

    def test_session_keeps_its_address(self):
        d = self.daemon()
        seq = [self.src(d, USER + "-session-keep") for _ in range(20)]
        changes = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
        self.assertLessEqual(changes, 1, "default TTL: one address per session: %s" % seq)
        seq = [self.src(d, USER + "-session-keep-ttl-86400") for _ in range(10)]
        self.assertEqual(len(set(seq)), 1, seq)
        others = [self.src(d, USER + "-session-o%d-ttl-86400" % i) for i in range(10)]
        harness.log("10 sessions: %d distinct addresses" % len(set(others)))
        self.assertGreaterEqual(len(set(others)), 8, "sessions must get their own addresses: %s" % others)
        self.assertEqual(others, [self.src(d, USER + "-session-o%d-ttl-86400" % i) for i in range(10)])

    def test_ipv4_target_with_a_prefix_pool(self):
        d = self.daemon()
        echo4 = self.echo_server("127.0.0.1")
        for user in (USER, USER + "-ttl-0", USER + "-session-v4"):
            a = egress_attempt(d.addr(), "127.0.0.1", echo4.port, user, PW)
            self.assertEqual(a.stage, "reply", a)
            self.assertEqual(a.reply.rep, 0x04, "IPv6-only pool, IPv4 target: %r" % a)
        self.assertEqual(echo4.accepted.qsize(), 0, "the IPv4 target was reached (from the default address?)")
        self.src(d, USER + "-session-v4")     # and the pool still serves an IPv6 target

if __name__ == "__main__":
    harness.reexec_in_namespace(__file__)
    harness.main()
