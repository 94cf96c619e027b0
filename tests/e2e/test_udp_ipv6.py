"""UDP ASSOCIATE from an IPv6 prefix (issue 6), inside a network namespace this file creates.

As test_egress_ipv6.py: the file re-executes itself under `unshare -n` (or `unshare -r -n`); inside,
`lo` comes up and `ip -6 route add local 2001:db8:78::/64 dev lo` makes the documentation prefix
local, so the daemon can bind any address in it (IPV6_FREEBIND on the UDP sockets too) and the UDP
echo on [::1] sees it. Nothing leaves the namespace. Without namespaces the file is skipped.

Proves, with a pool of the single entry 2001:db8:78::/64: datagrams to an IPv6 target leave from an
address inside the prefix (never its all-zero host), the one a TCP CONNECT of the same (user,
session, site) leaves from (10 sessions, >= 8 distinct addresses); `ttl-0` draws a new address per
association (>= 8 of 20) and keeps it within one; a datagram to an IPv4 target is dropped (no
IPv4 egress) while the association goes on.
"""
import ipaddress
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, UdpAssociation, UdpEchoServer, add_user, pool_add, egress_source  # noqa: E402

PREFIX = "2001:db8:78::/64"
NET = ipaddress.ip_network(PREFIX)
USER, PW = "alice", "alice-secret-pw"


def setUpModule():
    harness.namespace_lo(local_prefixes=[PREFIX])


class PrefixUdp(DaemonTestCase):

    def setUp(self):
        self.udp6 = self.start_server(UdpEchoServer("::1"))
        d = harness.Daemon(workdir=self.workdir())
        add_user(d.db, USER, PW)
        self.assertEqual(pool_add(d.db, PREFIX), 1)
        self.addCleanup(d.stop)
        d.start()
        self.assertIn("egress pool of 1", d.banner)
        self.d = d

    def assoc(self, user):
        a = UdpAssociation(self.d.addr(), user, PW)
        self.addCleanup(a.close)
        return a

    def in_prefix(self, src):
        a = ipaddress.ip_address(src)
        self.assertIn(a, NET, "source %s is outside %s" % (src, PREFIX))
        self.assertNotEqual(a, NET.network_address, "the all-zero host of the prefix was used")
        return src

    def test_same_address_as_tcp(self):
        tcp6 = self.echo_server("::1")
        seen = []
        for i in range(10):
            user = "%s-session-p%d-ttl-86400" % (USER, i)
            t = egress_source(self.d.addr(), tcp6.addr, user, PW)
            a = self.assoc(user)
            u = [self.in_prefix(a.echo("::1", self.udp6.port)[0]) for _ in range(2)]
            self.assertEqual(u, [t, t], "session %d: TCP from %s, UDP from %s" % (i, t, u))
            seen.append(t)
            a.close()
        harness.log("10 sessions: %d distinct addresses, e.g. %s" % (len(set(seen)), seen[:2]))
        self.assertGreaterEqual(len(set(seen)), 8, seen)

    def test_ttl0_rotates_per_association(self):
        seen = []
        for _ in range(20):
            a = self.assoc(USER + "-ttl-0")
            u = [self.in_prefix(a.echo("::1", self.udp6.port)[0]) for _ in range(2)]
            self.assertEqual(u[0], u[1], "one association keeps its draw")
            seen.append(u[0])
            a.close()
        harness.log("ttl-0: %d distinct of 20" % len(set(seen)))
        self.assertGreaterEqual(len(set(seen)), 8, seen)

    def test_ipv4_target_dropped(self):
        udp4 = self.start_server(UdpEchoServer("127.0.0.1"))
        a = self.assoc(USER)
        a.send("127.0.0.1", udp4.port, b"no IPv4 egress")
        self.in_prefix(a.echo("::1", self.udp6.port)[0])   # handled in order: the IPv4 one is gone
        self.assertTrue(udp4.seen.empty(), "the IPv4 target was reached (from the default address?)")


if __name__ == "__main__":
    harness.reexec_in_namespace(__file__)
    harness.main()
