"""Real SOCKS5 clients through shroud: curl and Python's `socks` module (Debian's python3-socks).

Proves: curl --socks5 (client resolves) and --socks5-hostname (proxy resolves) fetch a known body from
an HTTP server on 127.0.0.1, on [::1] and by the name `localhost`, without users (no-auth on loopback);
with a user, --proxy-user with the right password works and a wrong password or an unknown user makes
curl fail (non-zero exit, no body); curl reaches the proxy itself over IPv6 when it listens on [::1];
socks.socksocket with rdns=True and credentials does an HTTP GET.
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase  # noqa: E402

USER, PASSWORD = "carol", "s3cret-Pass_word"


def proxy_hostport(addr):
    host, port = addr
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class Curl(DaemonTestCase):

    def setUp(self):
        # One HTTP service on 127.0.0.1 and ::1 with the same port, so `localhost` reaches it
        # whichever family the resolver returns.
        self.http4, self.http6 = [self.start_server(s) for s in harness.same_port_pair(
            lambda h, p: harness.HttpServer(h, p, body=BODY))]

    def curl(self, proxy, mode, url, user=None):
        cmd = ["curl", "--silent", "--show-error", "--verbose", "--max-time", "20",
               "--noproxy", "", "--%s" % mode, proxy_hostport(proxy)]
        if user:
            cmd += ["--proxy-user", user]
        cmd.append(url)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40,
                           env=harness.clean_env())
        return p

    def assert_fetch(self, proxy, mode, url, user=None):
        p = self.curl(proxy, mode, url, user)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "curl --%s %s failed: exit %d\n%s" % (mode, url, p.returncode, err))
        self.assertIn("SOCKS5", err, "curl did not go through the SOCKS5 proxy:\n" + err)
        self.assertEqual(p.stdout, BODY, "body differs for %s via --%s" % (url, mode))

    def urls(self):
        port = self.http4.port
        return ["http://127.0.0.1:%d/" % port, "http://[::1]:%d/" % port, "http://localhost:%d/" % port]

    def test_no_auth_socks5(self):
        d = self.start_daemon()
        self.assertEqual(d.fields.get("auth"), "none", d.banner)
        for url in self.urls():
            with self.subTest(url=url):
                self.assert_fetch(d.addr(), "socks5", url)

    def test_no_auth_socks5_hostname(self):
        d = self.start_daemon()
        for url in self.urls():
            with self.subTest(url=url):
                self.assert_fetch(d.addr(), "socks5-hostname", url)
        self.assertTrue(self.http4.peers or self.http6.peers)

    def test_proxy_over_ipv6_listener(self):
        d = self.start_daemon(listen=("[::1]:0",))
        self.assertEqual(d.addrs[0][0], "::1", d.banner)
        self.assert_fetch(d.addr(harness.socket.AF_INET6), "socks5-hostname",
                          "http://localhost:%d/" % self.http4.port)
        self.assert_fetch(d.addr(harness.socket.AF_INET6), "socks5", "http://127.0.0.1:%d/" % self.http4.port)

    def test_password_right_and_wrong(self):
        d = self.start_daemon(users=[(USER, PASSWORD)])
        self.assertEqual(d.fields.get("auth"), "password", d.banner)
        for mode in ("socks5", "socks5-hostname"):
            for url in self.urls():
                with self.subTest(mode=mode, url=url):
                    self.assert_fetch(d.addr(), mode, url, user="%s:%s" % (USER, PASSWORD))
        for label, cred in (("wrong password", "%s:%s" % (USER, PASSWORD + "x")),
                            ("unknown user", "nobody:%s" % PASSWORD),
                            ("no credentials", None)):
            with self.subTest(case=label):
                p = self.curl(d.addr(), "socks5-hostname", self.urls()[0], user=cred)
                harness.log("%s: curl exit %d" % (label, p.returncode))
                self.assertNotEqual(p.returncode, 0, "curl succeeded with %s" % label)
                self.assertNotIn(BODY, p.stdout)
        # and the right password still works afterwards
        self.assert_fetch(d.addr(), "socks5", self.urls()[0], user="%s:%s" % (USER, PASSWORD))

    def test_python_socks_module(self):
        import socks  # Debian's python3-socks
        d = self.start_daemon(users=[(USER, PASSWORD)])
        host, port = d.addr()
        for target in ("localhost", "127.0.0.1", "::1"):
            with self.subTest(target=target):
                s = socks.socksocket()
                s.settimeout(20)
                s.set_proxy(socks.SOCKS5, host, port, rdns=True, username=USER, password=PASSWORD)
                try:
                    s.connect((target, self.http4.port))
                    s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    raw = harness.recv_all(s, 20)
                finally:
                    s.close()
                head, _, body = raw.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.0 200"), head[:200])
                self.assertEqual(body, BODY)
        s = socks.socksocket()
        s.settimeout(20)
        s.set_proxy(socks.SOCKS5, host, port, rdns=True, username=USER, password="wrong")
        with self.assertRaises(socks.ProxyError):
            s.connect(("localhost", self.http4.port))
        s.close()


BODY = b"".join(b"line %04d of the shroud e2e body\n" % i for i in range(2000))

if __name__ == "__main__":
    harness.main()
