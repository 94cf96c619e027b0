"""User management: the `shroud user` CLI, and a running daemon following its changes.

Proves: user add/list/rm/passwd/disable/enable do what they say with exit codes 0 (ok), 1 (failure:
exists / not found) and 2 (usage: unknown flag, missing argument, unknown subcommand); invalid names
("a-b", ".a", 65 characters, ...) are refused with exit 1 or 2 and a message on stderr, leaving the
user list unchanged, while every valid shape (1..64 of [A-Za-z0-9_.], first a letter or digit) is
accepted; --help on every command exits 0 and prints usage on stdout; --db, $SHROUD_DB and ./shroud.db
choose the database; the database is created mode 0600 whatever the umask, and so are its WAL files
while the daemon runs. A running daemon picks up each change within a bounded 5 s: the first user
makes authentication required (no-auth gets 05 FF), passwd retires the old password, disable and rm
refuse the user, enable restores it; a relayed connection opened before all that keeps working.
"""
import os
import stat
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, cli, add_user, list_users, tcp_connect, read_method,  # noqa: E402
                     read_auth_status, echo_open, echo_check)

HELP_TIMEOUT = 15


def help_cmds():
    return [["--help"], ["serve", "--help"], ["user", "--help"]] + [
        ["user", sub, "--help"] for sub in ("add", "rm", "passwd", "list", "disable", "enable")]


class UserCli(DaemonTestCase):

    def setUp(self):
        self.dir = self.workdir()
        self.db = os.path.join(self.dir, "users.db")

    def run_cli(self, *args, **kw):
        try:
            return cli(*args, cwd=self.dir, **kw)
        except subprocess.TimeoutExpired:
            self.fail("shroud %s did not finish within %s s" % (" ".join(map(str, args)), kw.get("timeout")))

    def assert_rc(self, r, want):
        if isinstance(want, tuple):
            self.assertIn(r.rc, want, r)
        else:
            self.assertEqual(r.rc, want, r)

    def test_add_list_rm(self):
        self.assertEqual(add_user(self.db, "alice", "pw-alice").rc, 0)
        add_user(self.db, "bob", "pw-bob")
        self.assertEqual(sorted(list_users(self.db)), ["alice", "bob"])
        r = self.run_cli("user", "add", "alice", "--db", self.db, "--password-stdin", input="other\n")
        self.assert_rc(r, 1)
        self.assertTrue(r.err.strip(), "no message for a duplicate user")
        self.assertEqual(sorted(list_users(self.db)), ["alice", "bob"])
        self.assert_rc(self.run_cli("user", "rm", "alice", "--db", self.db), 0)
        self.assertEqual(list_users(self.db), ["bob"])
        r = self.run_cli("user", "rm", "alice", "--db", self.db)
        self.assert_rc(r, 1)
        self.assertTrue(r.err.strip(), "no message for removing a missing user")
        self.assertEqual(list_users(self.db), ["bob"])

    def test_passwd_disable_enable_exit_codes(self):
        add_user(self.db, "carol", "one")
        r = self.run_cli("user", "passwd", "carol", "--db", self.db, "--password-stdin", input="two\n")
        self.assert_rc(r, 0)
        r = self.run_cli("user", "passwd", "nobody", "--db", self.db, "--password-stdin", input="x\n")
        self.assert_rc(r, 1)
        self.assert_rc(self.run_cli("user", "disable", "carol", "--db", self.db), 0)
        self.assertEqual(list_users(self.db), ["carol"], "a disabled user is still listed")
        self.assert_rc(self.run_cli("user", "enable", "carol", "--db", self.db), 0)
        self.assert_rc(self.run_cli("user", "disable", "nobody", "--db", self.db), 1)
        self.assert_rc(self.run_cli("user", "enable", "nobody", "--db", self.db), 1)
        self.assertEqual(list_users(self.db), ["carol"])

    def test_invalid_names_refused_db_unchanged(self):
        add_user(self.db, "keeper", "pw")
        before = list_users(self.db)
        bad = ["a-b", "", ".a", "_a", "a b", "a/b", "a:b", "a@b", "\u00e9t\u00e9", "x" * 65, "a\tb",
               "a;b", "alice-session-s1"]
        for name in bad:
            with self.subTest(name=name):
                r = self.run_cli("user", "add", name, "--db", self.db, "--password-stdin", input="pw\n")
                self.assert_rc(r, (1, 2))
                self.assertTrue(r.err.strip(), "no message on stderr for %r" % name)
                self.assertIn("name", r.err.lower(), "the message should say the name is the problem: %r" % r)
                self.assertEqual(list_users(self.db), before)
        # A leading '-' reads as an option: refused either way, and nothing is added.
        r = self.run_cli("user", "add", "-x", "--db", self.db, "--password-stdin", input="pw\n")
        self.assert_rc(r, (1, 2))
        self.assertEqual(list_users(self.db), before)

    def test_valid_name_shapes_accepted(self):
        good = ["a", "Z", "9", "9lives", "a.b_c", "A_", "x.", "a" * 64, "Mixed.Case_09"]
        for name in good:
            with self.subTest(name=name):
                r = self.run_cli("user", "add", name, "--db", self.db, "--password-stdin", input="pw\n")
                self.assert_rc(r, 0)
        self.assertEqual(sorted(list_users(self.db)), sorted(good))

    def test_help_everywhere(self):
        for args in help_cmds():
            with self.subTest(args=args):
                r = self.run_cli(*args, timeout=HELP_TIMEOUT)
                self.assert_rc(r, 0)
                self.assertIn("usage", r.out.lower(), "no usage text on stdout: %r" % r)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "shroud.db")), "--help created a database")

    def test_usage_errors_exit_2(self):
        add_user(self.db, "dave", "pw")
        cases = [
            ["--bogus"],
            ["frobnicate"],
            ["serve", "--bogus", "--db", self.db],
            ["serve", "--db", self.db, "--listen"],              # missing value
            ["user"],
            ["user", "frobnicate"],
            ["user", "list", "--bogus", "--db", self.db],
            ["user", "add", "--db", self.db, "--password-stdin"],  # missing NAME
            ["user", "add", "x", "--bogus", "--db", self.db, "--password-stdin"],
            ["user", "rm", "--db", self.db],
            ["user", "rm", "dave", "--bogus", "--db", self.db],
            ["user", "passwd", "--db", self.db, "--password-stdin"],
            ["user", "disable", "--db", self.db],
            ["user", "enable", "--db", self.db],
        ]
        for args in cases:
            with self.subTest(args=args):
                r = self.run_cli(*args, input="pw\n", timeout=HELP_TIMEOUT)
                self.assert_rc(r, 2)
                self.assertTrue(r.err.strip(), "a usage error must say something on stderr: %r" % r)
        self.assertEqual(list_users(self.db), ["dave"])

    def test_database_choice(self):
        # --db
        add_user(self.db, "viaflag", "pw")
        self.assertTrue(os.path.exists(self.db))
        # $SHROUD_DB
        envdb = os.path.join(self.dir, "env.db")
        r = self.run_cli("user", "add", "viaenv", "--password-stdin", input="pw\n", env={"SHROUD_DB": envdb})
        self.assert_rc(r, 0)
        self.assertTrue(os.path.exists(envdb))
        r = self.run_cli("user", "list", env={"SHROUD_DB": envdb})
        self.assertEqual([l.split()[0] for l in r.out.splitlines() if l.strip()], ["viaenv"])
        # ./shroud.db
        r = self.run_cli("user", "add", "viacwd", "--password-stdin", input="pw\n")
        self.assert_rc(r, 0)
        cwd_db = os.path.join(self.dir, "shroud.db")
        self.assertTrue(os.path.exists(cwd_db))
        self.assertEqual(list_users(cwd_db), ["viacwd"])
        self.assertEqual(list_users(self.db), ["viaflag"])

    def test_database_mode_0600_whatever_the_umask(self):
        for umask in ("000", "022", "077"):
            with self.subTest(umask=umask):
                db = os.path.join(self.dir, "umask%s.db" % umask)
                p = subprocess.run(["/bin/sh", "-c", 'umask %s && exec "$0" "$@"' % umask, harness.BINARY,
                                    "user", "add", "erin", "--db", db, "--password-stdin"],
                                   input=b"pw\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=self.dir, env=harness.clean_env(), timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                mode = stat.S_IMODE(os.stat(db).st_mode)
                self.assertEqual(mode, 0o600, "database mode %o with umask %s" % (mode, umask))


class DaemonFollowsCli(DaemonTestCase):

    _next_source = 10

    def attempt(self, d, user=None, password=None, patience=harness.IO_TIMEOUT, source=None):
        """One login attempt. Returns 'ok' (authenticated and relayed), 'no-method' (05 FF),
        'refused' (01 01) or 'pending' (no auth status within `patience` seconds: the daemon
        throttles failures by answering them late, so a poll that waits for success must not sit
        through each delayed refusal)."""
        s = tcp_connect(d.addr(), timeout=10, source=source)
        try:
            if user is None:
                s.sendall(bytes.fromhex("05 01 00"))       # VER NMETHODS=1 [00 no-auth]
                m = read_method(s)
                if m == 0xFF:
                    return "no-method"
                self.assertEqual(m, 0x00)
            else:
                s.sendall(bytes.fromhex("05 01 02"))       # VER NMETHODS=1 [02 user/pass]
                m = read_method(s)
                if m == 0xFF:
                    return "no-method"
                self.assertEqual(m, 0x02)
                s.sendall(harness.userpass(user, password))
                try:
                    st = read_auth_status(s, timeout=patience)
                except harness.socket.timeout:
                    return "pending"
                if st != 0:
                    self.assertEqual(st, 0x01, "RFC 1929 failure status")
                    return "refused"
            s.sendall(harness.connect_request(*self.echo.addr))
            r = harness.read_reply(s)
            self.assertEqual(r.rep, 0, r)
            harness.recv_line(s)
            echo_check(s, b"ping\n")
            return "ok"
        finally:
            s.close()

    def until(self, d, want, user=None, password=None, what="", bound=5.0):
        """Poll logins after a change until the outcome is `want`, within `bound` seconds of the
        change. Waiting for 'ok': each attempt gives up after 1 s without an auth answer (a late
        refusal is still a refusal). Waiting for a refusal: the first attempt that is not 'ok' must
        start within the bound and end in `want`, however late the daemon answers it.
        Every attempt is kept for the failure message.
        Each poll comes from its own source address (127.0.0.10, .11, ...): the daemon throttles
        authentication failures per client address (socks/throttle.h), and the failures this poll
        provokes on purpose must not slow down or lock out the next step's poll."""
        source = "127.0.0.%d" % DaemonFollowsCli._next_source
        DaemonFollowsCli._next_source += 1
        t0 = time.monotonic()
        seen = []
        while True:
            start = time.monotonic() - t0
            got = self.attempt(d, user, password, source=source,
                               patience=1.0 if want == "ok" else harness.IO_TIMEOUT)
            end = time.monotonic() - t0
            seen.append("%s@%.2f-%.2f" % (got, start, end))
            if want == "ok":
                if got == "ok" and end <= bound:
                    break
            elif got != "ok":
                self.assertEqual(got, want, "%s: attempts %s" % (what, " ".join(seen)))
                break
            if end > bound:
                self.fail("%s: %s login never became %r within %.0f s of the change; attempts "
                          "(outcome@start-end seconds): %s"
                          % (what, user or "no-auth", want, bound, " ".join(seen)))
            time.sleep(0.1)
        harness.log("%s: %s from %s (attempts: %s)" % (what, want, source, " ".join(seen)))

    def change(self, *args, **kw):
        r = cli(*args, **kw)
        self.assertEqual(r.rc, 0, r)
        harness.log("changed: shroud %s" % " ".join(args[:3]))
        return r

    def test_changes_apply_to_running_daemon(self):
        self.echo = self.echo_server()
        d = self.start_daemon()
        self.assertEqual(d.fields.get("auth"), "none", d.banner)
        self.assertEqual(self.attempt(d), "ok")
        early, _, _ = echo_open(d.addr(), self.echo.addr)      # opened before any change
        self.closing(early)
        echo_check(early, b"before\n")

        add_user(d.db, "alice", "first-pw")
        harness.log("changed: user add alice")
        self.until(d, "no-method", what="user add: no-auth refused")
        self.assertEqual(self.attempt(d, "alice", "first-pw"), "ok")
        echo_check(early, b"after add\n")

        add_user(d.db, "keeper", "keeper-pw")
        harness.log("changed: user add keeper")
        self.until(d, "ok", "keeper", "keeper-pw", what="second user add")

        self.change("user", "passwd", "alice", "--db", d.db, "--password-stdin", input="second-pw\n")
        self.until(d, "refused", "alice", "first-pw", what="passwd: old password refused")
        self.assertEqual(self.attempt(d, "alice", "second-pw"), "ok")
        echo_check(early, b"after passwd\n")

        self.change("user", "disable", "alice", "--db", d.db)
        self.until(d, "refused", "alice", "second-pw", what="disable")
        self.assertEqual(self.attempt(d, "keeper", "keeper-pw"), "ok")
        echo_check(early, b"after disable\n")

        self.change("user", "enable", "alice", "--db", d.db)
        self.until(d, "ok", "alice", "second-pw", what="enable")
        echo_check(early, b"after enable\n")

        self.change("user", "rm", "alice", "--db", d.db)
        self.until(d, "refused", "alice", "second-pw", what="rm")
        self.assertEqual(self.attempt(d, "keeper", "keeper-pw"), "ok")
        self.assertEqual(self.attempt(d), "no-method", "users remain: no-auth still refused")
        echo_check(early, os.urandom(8192))

    def test_database_files_mode_0600_while_serving(self):
        self.echo = self.echo_server()
        d = self.start_daemon(users=[("frank", "pw")])
        self.assertEqual(d.fields.get("auth"), "password", d.banner)
        self.assertEqual(self.attempt(d, "frank", "pw"), "ok")
        add_user(d.db, "grace", "pw2")        # a write while the daemon has the database open
        self.until(d, "ok", "grace", "pw2", what="add while serving")
        found = []
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = d.db + suffix
            if os.path.exists(p):
                found.append(suffix or "db")
                mode = stat.S_IMODE(os.stat(p).st_mode)
                self.assertEqual(mode, 0o600, "%s has mode %o" % (p, mode))
        harness.log("checked: %s" % ", ".join(found))

    def test_serve_creates_database_0600(self):
        self.echo = self.echo_server()
        wd = self.workdir()
        db = os.path.join(wd, "fresh.db")
        d = harness.Daemon(workdir=wd, db=db)
        self.addCleanup(d.stop)
        d.start()
        self.assertTrue(os.path.exists(db))
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)
        self.assertEqual(self.attempt(d), "ok")


if __name__ == "__main__":
    harness.main()
