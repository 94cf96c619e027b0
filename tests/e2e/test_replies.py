"""Every SOCKS5 reply code shroud promises, each provoked by a raw-socket client on loopback.

Proves: REP 0x00 carries the real local address/port of the proxy's outgoing socket (checked against the
source address the echo target saw) for IPv4, IPv6 and a resolved name; 0x01 for a request with VER != 5;
0x03 for a destination the kernel refuses to route (a multicast address: Linux fails a TCP connect to it
with ENETUNREACH before sending anything); 0x04 for a name under .invalid; 0x05 for a closed loopback
port; 0x06 for a connect that exceeds --connect-timeout (a loopback listener whose accept queue is full
drops SYNs); 0x07 for an unknown command; 0x08 for ATYP 0x05; `05 FF` when no
offered method is acceptable; `01 01` for a wrong password and an unknown user. After every error the
connection is closed and the daemon still serves a normal client. Also: the banner lists every listener
(IPv4 and IPv6), and --no-auth with users accepts both no-auth and passwords. BIND and UDP ASSOCIATE
answer 0x00 naming a loopback address and a real port (their behaviour: test_bind.py, test_udp.py).
"""
import os
import select
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, rep_name, read_method, read_auth_status, read_reply,  # noqa: E402
                     recv_line, tcp_connect, wait_closed, echo_check, check_serves)

USER, PASSWORD = "alice", "correct horse battery"


def port_bytes(port):
    return port.to_bytes(2, "big")


class Blackhole:
    """A loopback TCP port where connects hang: a listener with backlog 0 that never accepts, whose
    single accept-queue slot is taken by one established connection. Linux then drops further SYNs
    (tcp_conn_request: sk_acceptq_is_full -> drop), so a connect there neither succeeds nor is
    refused until the client gives up. Nothing leaves loopback."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.addr = self.listener.getsockname()
        self.fillers = []
        filler = socket.create_connection(self.addr, timeout=5)
        self.fillers.append(filler)
        # Self-check: a fresh connect must hang (not connect, not be refused) for 0.5 s.
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(self.addr)
        _, w, _ = select.select([], [probe], [], 0.5)
        err = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        probe.close()
        self.works = not w
        self.why = "probe connect finished (SO_ERROR %d) instead of hanging" % err

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()


def resolver_answers_nxdomain(name, bound=3.0):
    """True when this host's resolver answers NXDOMAIN for `name` within `bound` seconds; False when
    it times out or fails otherwise (no reachable DNS server)."""
    box = {}

    def run():
        try:
            socket.getaddrinfo(name, 80)
            box["r"] = "resolved"
        except socket.gaierror as e:
            box["r"] = e.errno
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(bound)
    return box.get("r") == socket.EAI_NONAME, box.get("r", "timeout")


class Replies(DaemonTestCase):

    def setUp(self):
        self.echo = self.echo_server("127.0.0.1")

    def daemon(self, users=(), args=()):
        return self.start_daemon(users=users, args=args)

    def noauth_request(self, d, req, timeout=10):
        """Greeting with no-auth, then the raw request bytes; returns (sock, Reply)."""
        s = self.closing(tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05 01 00"))        # VER=5 NMETHODS=1 METHODS=[00 no-auth]
        self.assertEqual(read_method(s), 0x00, "no-auth must be chosen when there are no users")
        s.sendall(req)
        return s, read_reply(s, timeout)

    def assert_error_then_close(self, d, s, reply, want):
        self.assertEqual(reply.rep, want, "got %r, want %s" % (reply, rep_name(want)))
        how, _ = wait_closed(s, 5)
        harness.log("%s, then %s" % (rep_name(reply.rep), how))
        check_serves(d.addr(), self.echo)

    # ---- 0x00 with the real bound address

    def test_success_ipv4_bnd_is_outgoing_socket(self):
        d = self.daemon()
        port = self.echo.port
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 01 7f 00 00 01") + port_bytes(port))
        #                                          VER CMD=CONNECT RSV ATYP=IPv4 127.0.0.1 PORT
        self.assertEqual(r.rep, 0x00, r)
        self.assertEqual(r.atyp, 0x01, "BND for an IPv4 target must be IPv4: %r" % r)
        src = recv_line(s).decode().split()
        self.assertEqual(src[0], "SRC")
        self.assertEqual((r.host, r.port), (src[1], int(src[2])),
                         "BND must be the proxy's outgoing socket as the target saw it")
        echo_check(s, os.urandom(4096))
        s.close()
        check_serves(d.addr(), self.echo)

    def test_success_ipv6_bnd_is_outgoing_socket(self):
        echo6 = self.echo_server("::1")
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 04" + "00" * 15 + "01") + port_bytes(echo6.port))
        #                                          VER CMD RSV ATYP=IPv6 ::1 PORT
        self.assertEqual(r.rep, 0x00, r)
        self.assertEqual(r.atyp, 0x04, "BND for an IPv6 target must be IPv6: %r" % r)
        src = recv_line(s).decode().split()
        self.assertEqual((r.host, r.port), ("::1", int(src[2])))
        self.assertEqual(src[1], "::1")
        echo_check(s)
        s.close()

    def test_success_domain_localhost(self):
        servers = [self.start_server(x) for x in
                   harness.same_port_pair(lambda h, p: harness.EchoServer(h, p))]
        d = self.daemon()
        name = b"localhost"
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 03") + bytes([len(name)]) + name
                                   + port_bytes(servers[0].port))
        #                                          VER CMD RSV ATYP=DOMAIN LEN "localhost" PORT
        self.assertEqual(r.rep, 0x00, r)
        src = recv_line(s).decode().split()
        self.assertIn(src[1], ("127.0.0.1", "::1"))
        self.assertEqual((r.host, r.port), (src[1], int(src[2])))
        echo_check(s)
        s.close()

    # ---- failures

    def test_general_failure_for_request_version_4(self):
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("04 01 00 01 7f 00 00 01") + port_bytes(self.echo.port))
        #                                          VER=4 (wrong) CMD RSV ATYP 127.0.0.1 PORT
        self.assert_error_then_close(d, s, r, 0x01)

    def _net_unreachable(self, host, family):
        # Self-check: the kernel refuses this destination without sending a packet.
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect((host, 9))
            probe.close()
            self.skipTest("connect to %s succeeded here; no loopback-only way to get ENETUNREACH" % host)
        except OSError as e:
            probe.close()
            if e.errno != 101:  # ENETUNREACH
                self.skipTest("connect to %s fails with %r here, not ENETUNREACH" % (host, e))
        d = self.daemon()
        s, r = self.noauth_request(d, bytes([5, 1, 0]) + harness.encode_target(host, 9))
        #                                 VER CMD=CONNECT RSV ATYP ADDR PORT=9
        self.assert_error_then_close(d, s, r, 0x03)

    def test_net_unreachable_ipv4_multicast(self):
        self._net_unreachable("224.0.0.1", socket.AF_INET)

    def test_net_unreachable_ipv6_multicast(self):
        self._net_unreachable("ff0e::1", socket.AF_INET6)

    def test_host_unreachable_for_invalid_name(self):
        nx, what = resolver_answers_nxdomain("nonexistent.invalid")
        d = self.daemon(args=["--handshake-timeout", "10"])
        name = b"nonexistent.invalid"
        t0 = time.monotonic()
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 03") + bytes([len(name)]) + name
                                   + port_bytes(80), timeout=12)
        #                                          VER CMD RSV ATYP=DOMAIN LEN NAME PORT=80
        took = time.monotonic() - t0
        harness.log("nonexistent.invalid -> %s after %.2f s (system resolver: %s)"
                    % (rep_name(r.rep), took, "NXDOMAIN" if nx else what))
        if nx:
            # The resolver answers here, so the only right answer is "host unreachable".
            self.assertEqual(r.rep, 0x04, r)
        else:
            self.assertIn(r.rep, (0x01, 0x04), r)
        self.assert_error_then_close(d, s, r, r.rep)

    def test_connection_refused(self):
        port = harness.free_port()
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 01 7f 00 00 01") + port_bytes(port))
        #                                          VER CMD RSV ATYP 127.0.0.1 PORT(closed)
        self.assert_error_then_close(d, s, r, 0x05)

    def test_ttl_expired_on_connect_timeout(self):
        hole = Blackhole()
        self.addCleanup(hole.close)
        if not hole.works:
            self.skipTest("cannot make a hanging loopback port: " + hole.why)
        d = self.daemon(args=["--connect-timeout", "1"])
        t0 = time.monotonic()
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 01 7f 00 00 01") + port_bytes(hole.addr[1]),
                                   timeout=10)
        #                                          VER CMD RSV ATYP 127.0.0.1 PORT(hangs)
        took = time.monotonic() - t0
        harness.log("blackholed connect answered %s after %.2f s" % (rep_name(r.rep), took))
        self.assertGreaterEqual(took, 0.9, "answered before the 1 s connect timeout could expire")
        self.assertLess(took, 5.0)
        self.assert_error_then_close(d, s, r, 0x06)

    def test_bind_first_reply(self):
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 02 00 01 7f 00 00 01") + port_bytes(self.echo.port))
        #                                          VER CMD=BIND RSV ATYP 127.0.0.1 PORT
        # RFC 1928 §4: the first reply names where the proxy listens; an empty pool listens where
        # the client reached it.
        self.assertEqual((r.rep, r.atyp, r.host), (0x00, 0x01, "127.0.0.1"), r)
        self.assertNotEqual(r.port, 0, r)

    def test_udp_associate_reply(self):
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 03 00 01 00 00 00 00 00 00"))
        #                                          VER CMD=UDP ASSOCIATE RSV ATYP 0.0.0.0 PORT 0
        # The relay is where the client reached the proxy, never 0.0.0.0.
        self.assertEqual((r.rep, r.atyp, r.host), (0x00, 0x01, "127.0.0.1"), r)
        self.assertNotEqual(r.port, 0, r)

    def test_command_not_supported_unknown(self):
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 09 00 01 7f 00 00 01") + port_bytes(self.echo.port))
        #                                          VER CMD=09 (unknown) RSV ATYP 127.0.0.1 PORT
        self.assert_error_then_close(d, s, r, 0x07)

    def test_address_type_not_supported(self):
        d = self.daemon()
        s, r = self.noauth_request(d, bytes.fromhex("05 01 00 05 7f 00 00 01 00 50"))
        #                                          VER CMD RSV ATYP=05 (unknown) + 6 bytes that are not parsed
        self.assert_error_then_close(d, s, r, 0x08)

    # ---- method negotiation and authentication

    def test_no_acceptable_method_without_users(self):
        d = self.daemon()
        s = self.closing(tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05 01 01"))        # VER NMETHODS=1 METHODS=[01 GSSAPI]
        self.assertEqual(read_method(s), 0xFF)       # 05 FF: no acceptable methods
        wait_closed(s, 5)
        check_serves(d.addr(), self.echo)

    def test_no_acceptable_method_with_users(self):
        d = self.daemon(users=[(USER, PASSWORD)])
        s = self.closing(tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05 01 01"))        # VER NMETHODS=1 METHODS=[01 GSSAPI]
        self.assertEqual(read_method(s), 0xFF)
        wait_closed(s, 5)
        s = self.closing(tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05 01 00"))        # only no-auth, but users exist
        self.assertEqual(read_method(s), 0xFF, "no-auth must be refused once users exist")
        wait_closed(s, 5)
        check_serves(d.addr(), self.echo, USER, PASSWORD)

    def _bad_login(self, user, password):
        d = self.daemon(users=[(USER, PASSWORD)])
        self.assertEqual(d.fields.get("auth"), "password", d.banner)
        s = self.closing(tcp_connect(d.addr()))
        s.sendall(bytes.fromhex("05 01 02"))        # VER NMETHODS=1 METHODS=[02 username/password]
        self.assertEqual(read_method(s), 0x02)
        s.sendall(harness.userpass(user, password))  # 01 ULEN UNAME PLEN PASSWD
        self.assertEqual(read_auth_status(s), 0x01)  # 01 01: failure
        wait_closed(s, 5)
        t0 = time.monotonic()
        check_serves(d.addr(), self.echo, USER, PASSWORD)
        harness.log("the right password worked %.2f s after the failure" % (time.monotonic() - t0))

    def test_wrong_password(self):
        self._bad_login(USER, "wrong horse")

    def test_unknown_user(self):
        self._bad_login("mallory", PASSWORD)

    def test_no_auth_flag_with_users(self):
        d = self.daemon(users=[(USER, PASSWORD)], args=["--no-auth"])
        self.assertEqual(d.fields.get("auth"), "none+password", d.banner)
        check_serves(d.addr(), self.echo)                   # offers only 00
        check_serves(d.addr(), self.echo, USER, PASSWORD)   # offers only 02

    # ---- listeners and banner

    def test_banner_and_two_listeners(self):
        d = self.start_daemon(listen=("127.0.0.1:0", "[::1]:0"), args=["--workers", "2"])
        self.assertEqual(len(d.addrs), 2, d.banner)
        self.assertEqual(d.addrs[0][0], "127.0.0.1", d.banner)
        self.assertEqual(d.addrs[1][0], "::1", d.banner)
        self.assertEqual(os.path.realpath(d.fields.get("database", "")), os.path.realpath(d.db), d.banner)
        self.assertEqual(d.fields.get("auth"), "none", d.banner)
        self.assertEqual(d.fields.get("workers"), "2", d.banner)
        for addr in d.addrs:
            check_serves(addr, self.echo)
        self.assertEqual(os.stat(d.db).st_mode & 0o777, 0o600, "the database serve created")


if __name__ == "__main__":
    harness.main()
