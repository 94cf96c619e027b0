"""The key management of the encrypted link (issue 4): `shroud link add|allow|list|revoke` and
`shroud keygen`, against a database, no daemon.

Proves: `link add` prints exactly one line on stdout, an access key that an independent parser
(this file: the format of README.md and crypto/access.h, BLAKE2b check included) reads back to the
--server host and port, the server's public key (= X25519 of the private key in
settings.link_server_key, computed here in pure Python), the PSK and the client's private key; the
database then holds the client's public key (= X25519 of that private key) and the PSK, never the
client's private key in any form. The server key is made once, by the first add, and reused.
`keygen FILE` writes the private key as one base64 line with mode 0600 whatever the umask, prints
its public key, and refuses an existing file, a symbolic link (dangling or not) and a missing
directory, leaving them as they were. `link allow` with that public key prints an access key with
no private part. `list` and `list --json` show the links; `revoke` deletes one, and its PSK is then
in neither the database file nor its WAL. Every bad argument (unknown user, bad name, bad public
key, low-order public key, bad --server, duplicate name or key, missing or extra arguments) exits
non-zero, names itself on stderr, prints nothing on stdout and leaves the database dump identical,
including on a database without a server key yet. A database others may read is refused for add.
The server's private key never appears on stdout or stderr of any command. `shroud link
--OPTION` runs the client mode: with a missing --access-key-file it exits 2 naming the file ("cannot
open") and prints nothing on stdout; `shroud link` alone exits 2 with an error and creates no
database; `--help` of link, link add, keygen and shroud exits 0 with a usage text.
"""
import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, add_user, db_dump, db_query  # noqa: E402

SERVER = "vpn.example.com:8443"

# --------------------------------------------------------------------------------------------
# RFC 7748 X25519, pure Python (only to check the binary's keys; slow and not constant-time)

_P = 2 ** 255 - 19


def x25519(k, u):
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    n = int.from_bytes(bytes(k), "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % _P, b * b % _P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % _P, c * b % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def x25519_public(priv):
    return x25519(priv, (9).to_bytes(32, "little"))


# RFC 7748 §6.1, so a broken helper cannot make the tests pass.
assert x25519_public(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")) \
    == bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")

# --------------------------------------------------------------------------------------------
# the access key, parsed independently of the C code

ACCESS_RE = re.compile(r"shroud-link1:(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]+):([1-9][0-9]{0,4})/([A-Za-z0-9_.-]+)")


def b64url(text):
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise AssertionError("not base64url: %r" % text)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_access(line):
    """-> dict(host, port, server, psk, client or None). Asserts the format in full."""
    m = ACCESS_RE.fullmatch(line)
    if m is None:
        raise AssertionError("not an access key: %r" % line)
    fields = m.group(3).split(".")
    if len(fields) not in (3, 4):
        raise AssertionError("want 3 or 4 key fields: %r" % line)
    keys = [f for f in fields[:-1]]
    for f in keys:
        if len(f) != 43:
            raise AssertionError("key field of %d characters: %r" % (len(f), line))
    if len(fields[-1]) != 8:
        raise AssertionError("check of %d characters: %r" % (len(fields[-1]), line))
    body = line[:line.rindex(".")]
    want = hashlib.blake2b(body.encode(), digest_size=32).digest()[:6]
    if b64url(fields[-1]) != want:
        raise AssertionError("check does not match: %r" % line)
    host = m.group(1)
    return {"host": host[1:-1] if host.startswith("[") else host, "port": int(m.group(2)),
            "server": b64url(keys[0]), "psk": b64url(keys[1]),
            "client": b64url(keys[2]) if len(keys) == 3 else None}


def forms(key):
    """The ways 32 bytes of key could be written: raw, hex, base64, base64url."""
    return [key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key),
            base64.urlsafe_b64encode(key).rstrip(b"=")]


def file_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class LinkCli(DaemonTestCase):

    def setUp(self):
        self.dir = self.workdir()
        self.db = os.path.join(self.dir, "link.db")
        self.outputs = []   # every stdout and stderr, for the check that no server key leaks
        self.addCleanup(self.assert_server_key_never_printed)

    def run_cli(self, *args, **kw):
        try:
            r = harness.cli(*args, cwd=self.dir, **kw)
        except subprocess.TimeoutExpired:
            self.fail("shroud %s did not finish in time" % " ".join(map(str, args)))
        self.outputs.append(r.out + r.err)
        return r

    def link(self, *args):
        return self.run_cli("link", *args, "--db", self.db)

    def server_private(self):
        rows = db_query(self.db, "SELECT value FROM settings WHERE key = 'link_server_key'")
        return bytes.fromhex(rows[0]["value"]) if rows else None

    def assert_server_key_never_printed(self):
        if not os.path.exists(self.db):
            return
        priv = self.server_private()
        if priv is None:
            return
        for text in self.outputs:
            for form in forms(priv):
                self.assertNotIn(form.decode("latin-1"), text, "the server's private key was printed")

    def add_ok(self, name, user="alice", server=SERVER):
        r = self.link("add", name, "--user", user, "--server", server)
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out, r"\A[^\n]+\n\Z", "stdout must be exactly one line: %r" % r)
        self.assertIn(name, r.err, "stderr should say which link was added: %r" % r)
        return parse_access(r.out[:-1])

    def keygen(self, path):
        r = self.run_cli("keygen", path)
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out, r"\A[A-Za-z0-9+/]{43}=\n\Z", "stdout: one base64 public key: %r" % r)
        return base64.b64decode(r.out.strip())

    def link_rows(self):
        rows = db_query(self.db, "SELECT name, user, public_key, psk, enabled, created FROM links")
        return {r["name"]: (r["user"], r["public_key"], r["psk"], r["enabled"], r["created"])
                for r in rows}

    # ---- add

    def test_add_prints_one_access_key(self):
        add_user(self.db, "alice", "pw")
        self.assertIsNone(self.server_private(), "no server key before the first link")
        a = self.add_ok("laptop")
        self.assertEqual((a["host"], a["port"]), ("vpn.example.com", 8443))
        self.assertIsNotNone(a["client"], "link add's access key carries the client's private key")
        priv = self.server_private()
        self.assertIsNotNone(priv, "the first add makes the server key")
        self.assertEqual(len(priv), 32)
        self.assertEqual(a["server"], x25519_public(priv),
                         "the access key's server key is the public half of link_server_key")
        rows = self.link_rows()
        self.assertEqual(set(rows), {"laptop"})
        user, pub, psk, enabled, created = rows["laptop"]
        self.assertEqual(user, "alice")
        self.assertEqual(pub, x25519_public(a["client"]), "the stored key is the client's public key")
        self.assertEqual(psk, a["psk"])
        self.assertEqual(enabled, 1)
        self.assertNotEqual(a["psk"], bytes(32))
        data = file_bytes(self.db) + file_bytes(self.db + "-wal") + db_dump(self.db).encode()
        for form in forms(a["client"]):
            self.assertNotIn(form, data, "the client's private key is in the database")
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o600)

        # The second link: the same server key, its own keys.
        b = self.add_ok("phone", server="[2001:DB8::1]:443")
        self.assertEqual((b["host"], b["port"]), ("2001:db8::1", 443))
        self.assertEqual(b["server"], a["server"])
        self.assertEqual(self.server_private(), priv, "the server key is made once")
        self.assertNotEqual(b["psk"], a["psk"])
        self.assertNotEqual(b["client"], a["client"])
        c = self.add_ok("desktop", server="192.0.2.7:1")
        self.assertEqual((c["host"], c["port"]), ("192.0.2.7", 1))
        self.assertEqual(set(self.link_rows()), {"laptop", "phone", "desktop"})

    def test_add_into_a_shared_database_refused(self):
        add_user(self.db, "alice", "pw")
        os.chmod(self.db, 0o644)
        before = db_dump(self.db)
        r = self.link("add", "laptop", "--user", "alice", "--server", SERVER)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("chmod 600", r.err)
        self.assertEqual(r.out, "")
        self.assertEqual(db_dump(self.db), before)

    def test_missing_database_not_created(self):
        r = self.link("add", "laptop", "--user", "alice", "--server", SERVER)
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.out, "")
        self.assertFalse(os.path.exists(self.db), "link add created a database")

    # ---- keygen and allow

    def test_keygen_file(self):
        for umask in ("000", "022", "077"):
            with self.subTest(umask=umask):
                path = os.path.join(self.dir, "client%s.key" % umask)
                p = subprocess.run(["/bin/sh", "-c", 'umask %s && exec "$0" "$@"' % umask,
                                    harness.BINARY, "keygen", path],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir,
                                   env=harness.clean_env(), timeout=60)
                out, err = p.stdout.decode(), p.stderr.decode()
                self.outputs.append(out + err)
                self.assertEqual(p.returncode, 0, err)
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
                text = file_bytes(path)
                self.assertRegex(text.decode(), r"\A[A-Za-z0-9+/]{43}=\n\Z", "one base64 line")
                priv = base64.b64decode(text)
                self.assertRegex(out, r"\A[A-Za-z0-9+/]{43}=\n\Z")
                self.assertEqual(base64.b64decode(out), x25519_public(priv))
                for form in forms(priv):
                    self.assertNotIn(form.decode("latin-1"), out + err,
                                     "keygen printed the private key")

    def test_keygen_refuses_what_exists(self):
        path = os.path.join(self.dir, "mine.key")
        self.keygen(path)
        before = file_bytes(path)
        r = self.run_cli("keygen", path)
        self.assertEqual(r.rc, 1, r)
        self.assertIn(path, r.err)
        self.assertEqual(r.out, "")
        self.assertEqual(file_bytes(path), before, "keygen overwrote a key")

        # A symbolic link to an existing file, and one to nowhere.
        target = os.path.join(self.dir, "target")
        with open(target, "w") as f:
            f.write("keep\n")
        for name, dest in (("to-file.key", target), ("dangling.key", os.path.join(self.dir, "nowhere"))):
            with self.subTest(link=name):
                link = os.path.join(self.dir, name)
                os.symlink(dest, link)
                r = self.run_cli("keygen", link)
                self.assertEqual(r.rc, 1, r)
                self.assertIn("symbolic link", r.err)
                self.assertEqual(r.out, "")
                self.assertTrue(os.path.islink(link))
        self.assertEqual(file_bytes(target), b"keep\n")
        self.assertFalse(os.path.exists(os.path.join(self.dir, "nowhere")))

        r = self.run_cli("keygen", os.path.join(self.dir, "no", "such", "dir.key"))
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.out, "")
        for args in (["keygen"], ["keygen", "a.key", "b.key"], ["keygen", "--bogus", "a.key"]):
            with self.subTest(args=args):
                r = self.run_cli(*args)
                self.assertEqual(r.rc, 2, r)
                self.assertTrue(r.err.strip())
                self.assertEqual(r.out, "")
        self.assertFalse(os.path.exists(os.path.join(self.dir, "a.key")))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "b.key")))

    def test_allow_own_key_pair(self):
        add_user(self.db, "alice", "pw")
        path = os.path.join(self.dir, "phone.key")
        pub = self.keygen(path)
        priv = base64.b64decode(file_bytes(path))
        r = self.link("allow", "phone", base64.b64encode(pub).decode(), "--user", "alice",
                      "--server", "[::1]:9000")
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out, r"\A[^\n]+\n\Z", "stdout must be exactly one line: %r" % r)
        a = parse_access(r.out[:-1])
        self.assertIsNone(a["client"], "allow's access key has no private part")
        self.assertEqual(len(r.out[:-1].split("/")[1].split(".")), 3)
        self.assertEqual((a["host"], a["port"]), ("::1", 9000))
        self.assertEqual(a["server"], x25519_public(self.server_private()))
        user, stored_pub, psk, enabled, _ = self.link_rows()["phone"]
        self.assertEqual((user, stored_pub, psk, enabled), ("alice", pub, a["psk"], 1))
        data = file_bytes(self.db) + file_bytes(self.db + "-wal") + db_dump(self.db).encode()
        for form in forms(priv):
            self.assertNotIn(form, data)
        # The same key again, under another name: refused, naming the link that has it.
        before = db_dump(self.db)
        r = self.link("allow", "tablet", base64.b64encode(pub).decode(), "--user", "alice",
                      "--server", SERVER)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("phone", r.err)
        self.assertIn(base64.b64encode(pub).decode(), r.err)
        self.assertEqual(r.out, "")
        self.assertEqual(db_dump(self.db), before)

    # ---- list and revoke

    def test_list_json_revoke(self):
        add_user(self.db, "alice", "pw")
        add_user(self.db, "bob", "pw")
        r = self.link("list")
        self.assertEqual((r.rc, r.out), (0, ""), r)
        r = self.link("list", "--json")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(json.loads(r.out), [])
        a = self.add_ok("laptop")
        self.add_ok("work.pc", user="bob")
        pub = base64.b64encode(self.keygen(os.path.join(self.dir, "k"))).decode()
        self.assertEqual(self.link("allow", "Phone_2", pub, "--user", "alice", "--server",
                                   SERVER).rc, 0)

        r = self.link("list")
        self.assertEqual(r.rc, 0, r)
        lines = r.out.splitlines()
        self.assertEqual([l.split()[0] for l in lines], ["Phone_2", "laptop", "work.pc"])
        by = {l.split()[0]: l.split() for l in lines}
        self.assertEqual(by["laptop"][1:3], ["alice", "enabled"])
        self.assertEqual(by["laptop"][4], base64.b64encode(x25519_public(a["client"])).decode())
        self.assertEqual(by["Phone_2"][4], pub)
        self.assertRegex(by["work.pc"][3], r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
        self.assertNotIn(base64.b64encode(a["psk"]).decode(), r.out, "list shows no PSK")

        r = self.link("list", "--json")
        self.assertEqual(r.rc, 0, r)
        entries = json.loads(r.out)
        self.assertEqual([e["name"] for e in entries], ["Phone_2", "laptop", "work.pc"])
        for e in entries:
            self.assertEqual(set(e), {"name", "user", "public_key", "enabled", "created"}, e)
            self.assertIs(e["enabled"], True)
            self.assertIs(type(e["created"]), int)
            self.assertEqual(len(base64.b64decode(e["public_key"])), 32)
        self.assertEqual(entries[0]["public_key"], pub)
        self.assertEqual(entries[2]["user"], "bob")

        # Revoke: gone from the listing, its PSK from the files.
        r = self.link("revoke", "laptop")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.out, "")
        self.assertIn("laptop", r.err)
        self.assertEqual([e["name"] for e in json.loads(self.link("list", "--json").out)],
                         ["Phone_2", "work.pc"])
        for path in (self.db, self.db + "-wal"):
            self.assertNotIn(a["psk"], file_bytes(path), "the revoked PSK is still in %s" % path)
        before = db_dump(self.db)
        r = self.link("revoke", "laptop")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("laptop", r.err)
        self.assertEqual(db_dump(self.db), before)

        # Removing the user removes its links.
        self.assertEqual(self.run_cli("user", "rm", "bob", "--db", self.db).rc, 0)
        self.assertEqual([e["name"] for e in json.loads(self.link("list", "--json").out)],
                         ["Phone_2"])

    # ---- refusals

    def refusals(self, existing_key):
        """(args, exit code, text stderr must contain) for every bad argument."""
        low_order = base64.b64encode(bytes(32)).decode()
        short = base64.b64encode(bytes(range(1, 32))).decode()
        urlsafe = base64.urlsafe_b64encode(bytes([0xfb] * 32)).decode()
        fresh = base64.b64encode(x25519_public(bytes([7] * 32))).decode()
        cases = [
            (["add", "x1", "--user", "nobody", "--server", SERVER], 1, "nobody"),
            (["allow", "x1", fresh, "--user", "nobody", "--server", SERVER], 1, "nobody"),
            (["add", "bad-name", "--user", "alice", "--server", SERVER], 2, "bad-name"),
            (["add", "x" * 65, "--user", "alice", "--server", SERVER], 2, "x" * 65),
            (["add", ".dot", "--user", "alice", "--server", SERVER], 2, ".dot"),
            (["add", "x1", "--user", "al-ice", "--server", SERVER], 2, "al-ice"),
            (["add", "x1", "--user", "alice", "--server", "vpn.example.com"], 2, "vpn.example.com"),
            (["add", "x1", "--user", "alice", "--server", "vpn.example.com:0"], 2, "vpn.example.com:0"),
            (["add", "x1", "--user", "alice", "--server", "vpn.example.com:65536"], 2, "65536"),
            (["add", "x1", "--user", "alice", "--server", "2001:db8::1:443"], 2, "2001:db8::1:443"),
            (["add", "x1", "--user", "alice", "--server", "[2001:db8::1"], 2, "[2001:db8::1"),
            (["add", "x1", "--user", "alice", "--server", "bad_host:443"], 2, "bad_host:443"),
            (["add", "x1", "--user", "alice", "--server", "[fe80::1%lo]:443"], 2, "fe80::1%lo"),
            (["allow", "x1", "notakey", "--user", "alice", "--server", SERVER], 2, "notakey"),
            (["allow", "x1", low_order, "--user", "alice", "--server", SERVER], 2, low_order),
            (["allow", "x1", short, "--user", "alice", "--server", SERVER], 2, short),
            (["allow", "x1", urlsafe, "--user", "alice", "--server", SERVER], 2, urlsafe),
            (["allow", "x1", fresh[:-1], "--user", "alice", "--server", SERVER], 2, fresh[:-1]),
            (["allow", "x1", "--user", "alice", "--server", SERVER], 2, "PUBKEY"),
            (["add", "--user", "alice", "--server", SERVER], 2, "NAME"),
            (["add", "x1", "--server", SERVER], 2, "--user"),
            (["add", "x1", "--user", "alice"], 2, "--server"),
            (["add", "x1", "x2", "--user", "alice", "--server", SERVER], 2, "x2"),
            (["add", "x1", "--user", "alice", "--user", "bob", "--server", SERVER], 2, "--user"),
            (["add", "x1", "--user", "alice", "--server", SERVER, "--json"], 2, "--json"),
            (["add", "x1", "--user", "alice", "--server", SERVER, "--bogus"], 2, "--bogus"),
            (["add", "x1", "--user"], 2, "--user"),
            (["list", "--user", "alice"], 2, "--user"),
            (["list", "extra"], 2, "extra"),
            (["revoke"], 2, "NAME"),
            (["revoke", "no.such.link"], 1, "no.such.link"),
            (["revoke", "bad-name"], 2, "bad-name"),
            (["frobnicate"], 2, "frobnicate"),
        ]
        if existing_key is not None:
            cases += [
                (["add", "laptop", "--user", "alice", "--server", SERVER], 1, "laptop"),
                (["allow", "laptop", fresh, "--user", "alice", "--server", SERVER], 1, "laptop"),
                (["allow", "x1", existing_key, "--user", "alice", "--server", SERVER], 1,
                 existing_key),
            ]
        return cases

    def check_refusals(self, existing_key):
        before = db_dump(self.db)
        for args, rc, named in self.refusals(existing_key):
            with self.subTest(args=args):
                r = self.link(*args)
                self.assertEqual(r.rc, rc, r)
                self.assertIn(named, r.err, "the message should name %r: %r" % (named, r))
                self.assertEqual(r.out, "", "nothing on stdout for a refusal: %r" % r)
                self.assertEqual(db_dump(self.db), before, "the database changed: %r" % r)

    def test_bad_arguments_change_nothing(self):
        add_user(self.db, "alice", "pw")
        add_user(self.db, "bob", "pw")
        # Before any link: a refused add must not make the server key either.
        self.check_refusals(None)
        self.assertIsNone(self.server_private())
        # With a link (and so a server key): the duplicates too.
        path = os.path.join(self.dir, "own.key")
        pub = base64.b64encode(self.keygen(path)).decode()
        r = self.link("allow", "laptop", pub, "--user", "alice", "--server", SERVER)
        self.assertEqual(r.rc, 0, r)
        self.check_refusals(pub)

    # ---- the client mode's dispatch, help

    def test_client_mode_dispatch_and_help(self):
        # An option first is the client: a missing key file is its error, not the operator's.
        r = self.run_cli("link", "--access-key-file", os.path.join(self.dir, "key"))
        self.assertEqual(r.rc, 2, r)
        self.assertIn("cannot open", r.err)
        self.assertEqual(r.out, "")
        for args in (["link", "--help"], ["link", "add", "--help"], ["keygen", "--help"], ["--help"]):
            with self.subTest(args=args):
                r = self.run_cli(*args)
                self.assertEqual(r.rc, 0, r)
                self.assertIn("usage", r.out.lower())
        self.assertIn("link", self.run_cli("--help").out)
        self.assertIn("keygen", self.run_cli("--help").out)
        r = self.run_cli("link")
        self.assertEqual(r.rc, 2, r)
        self.assertTrue(r.err.strip())
        self.assertFalse(os.path.exists(os.path.join(self.dir, "shroud.db")))


if __name__ == "__main__":
    harness.main()
