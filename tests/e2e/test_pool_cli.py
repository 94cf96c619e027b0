"""The `shroud pool` CLI (issue 3): add, list, rm, enable, disable, against a database, no daemon.

Proves: `pool add` takes an IPv4 address (one entry, prefix 32), an IPv4 CIDR /20../32 (each address,
network and broadcast skipped except for /31 and /32), an IPv6 address (kept as /128, canonical text)
and an IPv6 prefix /32../127 (ONE entry "net/len"), several at once with --tag k=v (repeatable),
--weight N and --note TEXT applied to every entry of the line, and prints exactly `added N`.
`pool list --json` is an array of {address, family, prefix, weight, enabled, cooling_until, failures,
tags, note, added} with the right JSON types (note with quotes, backslash and non-ASCII survives).
Refusals exit 1 (weight 0 and an unusable weight may be 2: usage), name the offending argument on
stderr and write nothing, even when the other arguments of the line were fine: not an address, a
prefix out of range, host bits set, a duplicate in the pool or twice on the line (also through an
overlapping CIDR), a bad tag. rm/enable/disable are all-or-nothing and an address not in the pool is
named with exit 1; rm takes a CIDR as the README shows. --help exits 0 everywhere, usage errors exit
2. The database stays mode 0600 whatever the umask. No daemon runs and no address is ever bound.
"""
import ipaddress
import os
import stat
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, add_user, pool_list, pool_entries  # noqa: E402

HELP_TIMEOUT = 15
ENTRY_KEYS = {"address", "family", "prefix", "weight", "enabled", "cooling_until", "failures", "tags",
              "note", "added"}


class PoolCli(DaemonTestCase):

    def setUp(self):
        self.dir = self.workdir()
        self.db = os.path.join(self.dir, "pool.db")

    def run_pool(self, *args, **kw):
        """`shroud pool ARGS... --db self.db` (cwd = the test's directory)."""
        try:
            return harness.pool_cli(self.db, *args, cwd=self.dir, **kw)
        except subprocess.TimeoutExpired:
            self.fail("shroud pool %s did not finish in time" % " ".join(map(str, args)))

    def add(self, *args):
        """pool add that must succeed; returns N from `added N` (exact stdout checked)."""
        r = self.run_pool("add", *args)
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out, r"\Aadded \d+\n?\Z", "stdout must be exactly 'added N': %r" % r)
        return int(r.out.split()[1])

    def assert_refused(self, r, arg, rcs=(1,)):
        """Exit code in rcs and a message on stderr that names `arg`."""
        self.assertIn(r.rc, rcs, r)
        self.assertTrue(r.err.strip(), "no message on stderr: %r" % r)
        self.assertIn(arg, r.err, "the message should name %r: %r" % (arg, r))
        self.assertNotRegex(r.out, r"added [1-9]", "a refused add must not claim it added: %r" % r)

    def check_entry_shape(self, e):
        self.assertEqual(set(e), ENTRY_KEYS, "keys of a pool list --json entry: %r" % e)
        self.assertIsInstance(e["address"], str)
        self.assertIn(e["family"], (4, 6), e)
        self.assertIs(type(e["prefix"]), int, e)
        self.assertIs(type(e["weight"]), int, e)
        self.assertIs(type(e["enabled"]), bool, "enabled must be a JSON boolean: %r" % e)
        self.assertTrue(e["cooling_until"] is None or type(e["cooling_until"]) is int, e)
        self.assertIs(type(e["failures"]), int, e)
        self.assertIsInstance(e["tags"], dict, e)
        self.assertIsInstance(e["note"], str, e)
        self.assertIs(type(e["added"]), int, e)

    # ---- add, one of each form

    def test_add_one_ipv4_defaults(self):
        add_user(self.db, "keeper", "pw")
        self.assertEqual(pool_list(self.db), [], "an empty pool lists as []")
        t0 = int(time.time())
        self.assertEqual(self.add("192.0.2.10"), 1)
        t1 = int(time.time())
        entries = pool_list(self.db)
        self.assertEqual(len(entries), 1, entries)
        e = entries[0]
        self.check_entry_shape(e)
        self.assertEqual((e["address"], e["family"], e["prefix"], e["weight"], e["enabled"],
                          e["cooling_until"], e["failures"], e["tags"], e["note"]),
                         ("192.0.2.10", 4, 32, 1, True, None, 0, {}, ""), e)
        self.assertTrue(t0 - 1 <= e["added"] <= t1 + 1, "added %r is not the time of the add (%d..%d)"
                        % (e["added"], t0, t1))
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o600)

    def test_add_with_tags_weight_note(self):
        note = 'rack "4" \\ west \u00e9t\u00e9'
        n = self.add("192.0.2.20", "192.0.2.21", "--tag", "country=de", "--tag", "kind=residential",
                     "--weight", "7", "--note", note)
        self.assertEqual(n, 2)
        by = pool_entries(self.db)
        self.assertEqual(sorted(by), ["192.0.2.20", "192.0.2.21"])
        for e in by.values():
            self.check_entry_shape(e)
            self.assertEqual(e["tags"], {"country": "de", "kind": "residential"}, e)
            self.assertEqual(e["weight"], 7, e)
            self.assertEqual(e["note"], note, e)
            self.assertIs(e["enabled"], True, e)
        # Edge values that are valid: 32-character key and value, the largest weight.
        k, v = "k" * 32, "V.a_9" + "v" * 27
        self.assertEqual(self.add("192.0.2.22", "--tag", "%s=%s" % (k, v), "--weight", "1000000"), 1)
        e = pool_entries(self.db)["192.0.2.22"]
        self.assertEqual((e["tags"], e["weight"]), ({k: v}, 1000000), e)

    def test_add_ipv4_cidr_forms(self):
        self.assertEqual(self.add("198.51.100.0/30"), 2)    # .0 network and .3 broadcast skipped
        self.assertEqual(self.add("198.51.100.8/31"), 2)    # RFC 3021: both addresses
        self.assertEqual(self.add("198.51.100.20/32"), 1)
        self.assertEqual(self.add("198.51.100.128/25", "--weight", "3", "--tag", "rack=r4"), 126)
        by = pool_entries(self.db)
        want = {"198.51.100.1", "198.51.100.2", "198.51.100.8", "198.51.100.9", "198.51.100.20"}
        want |= {"198.51.100.%d" % i for i in range(129, 255)}
        self.assertEqual(set(by), want)
        for a, e in by.items():
            self.check_entry_shape(e)
            self.assertEqual((e["family"], e["prefix"]), (4, 32), e)
            if int(a.rsplit(".", 1)[1]) >= 128:
                self.assertEqual((e["weight"], e["tags"]), (3, {"rack": "r4"}), e)
            else:
                self.assertEqual((e["weight"], e["tags"]), (1, {}), e)

    def test_add_ipv4_cidr_20_is_the_largest(self):
        self.assertEqual(self.add("10.20.0.0/20"), 4094)
        by = pool_entries(self.db)
        self.assertEqual(len(by), 4094)
        net = ipaddress.ip_network("10.20.0.0/20")
        self.assertEqual(set(by), {str(h) for h in net.hosts()})
        r = self.run_pool("add", "10.32.0.0/19")
        self.assert_refused(r, "10.32.0.0/19")
        self.assertEqual(len(pool_list(self.db)), 4094)

    def test_add_ipv6_address_and_prefixes(self):
        self.assertEqual(self.add("2001:DB8:0:0:0:0:0:1"), 1)
        self.assertEqual(self.add("2001:db8:1::/64", "--tag", "country=us", "--weight", "4"), 1)
        self.assertEqual(self.add("2001:db9::/32"), 1)
        self.assertEqual(self.add("2001:db8:3::/127"), 1)
        self.assertEqual(self.add("2001:DB8:4:0::/48"), 1)
        by = pool_entries(self.db)
        self.assertEqual(set(by), {"2001:db8::1", "2001:db8:1::/64", "2001:db9::/32", "2001:db8:3::/127",
                                   "2001:db8:4::/48"}, "canonical text (inet_ntop, lower case) expected")
        for e in by.values():
            self.check_entry_shape(e)
            self.assertEqual(e["family"], 6, e)
        self.assertEqual(by["2001:db8::1"]["prefix"], 128)
        self.assertEqual(by["2001:db8:1::/64"]["prefix"], 64)
        self.assertEqual(by["2001:db8:1::/64"]["tags"], {"country": "us"})
        self.assertEqual(by["2001:db8:1::/64"]["weight"], 4)
        self.assertEqual(by["2001:db9::/32"]["prefix"], 32)
        self.assertEqual(by["2001:db8:3::/127"]["prefix"], 127)
        self.assertEqual(by["2001:db8:4::/48"]["prefix"], 48)

    def test_add_mixed_families_one_line(self):
        self.assertEqual(self.add("192.0.2.30", "2001:db8:30::7", "198.51.100.40/30", "2001:db8:31::/56"), 5)
        self.assertEqual(set(pool_entries(self.db)),
                         {"192.0.2.30", "2001:db8:30::7", "198.51.100.41", "198.51.100.42", "2001:db8:31::/56"})

    # ---- refusals: exit 1, the argument named, nothing written

    def test_refusals_write_nothing(self):
        self.add("192.0.2.1", "2001:db8:aa::/64", "--tag", "country=de")
        before = pool_list(self.db)
        cases = [
            # (arguments after 'add', the text the message must name, allowed exit codes)
            (["not-an-address"], "not-an-address", (1,)),
            (["256.1.2.3"], "256.1.2.3", (1,)),
            (["192.0.2"], "192.0.2", (1,)),
            (["192.0.2.5/"], "192.0.2.5/", (1,)),
            (["192.0.2.0/19"], "192.0.2.0/19", (1,)),          # prefix out of range (too big)
            (["192.0.2.0/33"], "192.0.2.0/33", (1,)),
            (["192.0.2.0/-1"], "192.0.2.0/-1", (1, 2)),
            (["192.0.2.7/24"], "192.0.2.7/24", (1,)),          # host bits set
            (["2001:db8::/31"], "2001:db8::/31", (1,)),        # IPv6 prefix too big
            (["2001:db8::/129"], "2001:db8::/129", (1,)),
            (["2001:db8::1/64"], "2001:db8::1/64", (1,)),      # host bits set
            (["2001:db8:::1"], "2001:db8:::1", (1,)),
            (["192.0.2.1"], "192.0.2.1", (1,)),                # already in the pool
            (["2001:db8:aa::/64"], "2001:db8:aa::/64", (1,)),  # already in the pool
            (["192.0.2.9", "192.0.2.9"], "192.0.2.9", (1,)),   # twice on the line
            (["198.51.100.8/30", "198.51.100.9"], "198.51.100.9", (1,)),  # twice through a CIDR
            (["192.0.2.2", "--weight", "0"], "weight", (1, 2)),
            (["192.0.2.2", "--weight", "-3"], "weight", (1, 2)),
            (["192.0.2.2", "--weight", "x"], "weight", (1, 2)),
            (["192.0.2.2", "--weight", "1000001"], "weight", (1, 2)),
        ]
        bad_tags = ["country", "=de", "country=", "coun-try=de", "country=d-e", "country=de=x", "a b=c",
                    "k" * 33 + "=v", "k=" + "v" * 33]
        for tag in bad_tags:
            cases.append((["192.0.2.2", "--tag", tag], tag, (1, 2)))
        cases.append((["192.0.2.2", "--tag", "a=1", "--tag", "a=2"], "a=", (1, 2)))  # one value per key
        for args, named, rcs in cases:
            with self.subTest(args=args):
                r = self.run_pool("add", *args)
                self.assert_refused(r, named, rcs)
                self.assertEqual(pool_list(self.db), before, "a refused add changed the pool: %r" % r)

    def test_refused_multi_address_add_is_all_or_nothing(self):
        self.add("192.0.2.1")
        before = pool_list(self.db)
        for args, named in [
                (["192.0.2.50", "192.0.2.51", "bogus"], "bogus"),
                (["bogus", "192.0.2.50", "192.0.2.51"], "bogus"),
                (["192.0.2.50", "198.51.100.0/30", "192.0.2.1"], "192.0.2.1"),     # last one a duplicate
                (["192.0.2.50", "2001:db8::/64", "2001:db8::1/64"], "2001:db8::1/64"),
                (["192.0.2.48/29", "192.0.2.40/24"], "192.0.2.40/24")]:
            with self.subTest(args=args):
                r = self.run_pool("add", *args)
                self.assert_refused(r, named)
                self.assertEqual(pool_list(self.db), before)

    # ---- rm, enable, disable

    def test_rm_enable_disable(self):
        self.add("192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:5::/64", "--tag", "kind=dc")
        self.assertEqual(self.run_pool("disable", "192.0.2.1", "2001:db8:5::/64").rc, 0)
        by = pool_entries(self.db)
        self.assertEqual({a: e["enabled"] for a, e in by.items()},
                         {"192.0.2.1": False, "192.0.2.2": True, "192.0.2.3": True, "2001:db8:5::/64": False})
        self.assertEqual(by["192.0.2.1"]["tags"], {"kind": "dc"}, "disable keeps the tags")
        self.assertEqual(self.run_pool("enable", "192.0.2.1").rc, 0)
        by = pool_entries(self.db)
        self.assertIs(by["192.0.2.1"]["enabled"], True)
        self.assertIs(by["2001:db8:5::/64"]["enabled"], False)

        r = self.run_pool("rm", "192.0.2.2", "2001:db8:5::/64")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(set(pool_entries(self.db)), {"192.0.2.1", "192.0.2.3"})
        # Removed means gone with its tags: adding it again starts clean.
        self.assertEqual(self.add("192.0.2.2"), 1)
        e = pool_entries(self.db)["192.0.2.2"]
        self.assertEqual((e["tags"], e["enabled"], e["weight"]), ({}, True, 1), e)

    def test_rm_enable_disable_all_or_nothing(self):
        self.add("192.0.2.1", "192.0.2.2")
        self.assertEqual(self.run_pool("disable", "192.0.2.2").rc, 0)
        before = pool_list(self.db)
        for cmd in ("rm", "enable", "disable"):
            for args, named in [(["192.0.2.1", "192.0.2.99"], "192.0.2.99"),
                                (["192.0.2.99", "192.0.2.2"], "192.0.2.99"),
                                (["192.0.2.1", "2001:db8::1"], "2001:db8::1")]:
                with self.subTest(cmd=cmd, args=args):
                    r = self.run_pool(cmd, *args)
                    self.assert_refused(r, named)
                    self.assertEqual(pool_list(self.db), before, "a refused %s changed the pool" % cmd)

    def test_rm_cidr_as_readme_documents(self):
        # README: `shroud pool rm 198.51.100.0/28` removes what `pool add 198.51.100.0/28` added.
        self.add("198.51.100.0/28")
        self.add("198.51.100.100")
        self.assertEqual(len(pool_list(self.db)), 15)
        r = self.run_pool("rm", "198.51.100.0/28")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(set(pool_entries(self.db)), {"198.51.100.100"})

    def test_list_human_readable(self):
        self.add("192.0.2.1", "--tag", "country=de")
        self.add("2001:db8:7::/64")
        r = self.run_pool("list")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("192.0.2.1", r.out)
        self.assertIn("2001:db8:7::/64", r.out)

    # ---- help, usage errors, the database file

    def test_help_everywhere(self):
        for args in (["pool", "--help"], ["pool", "add", "--help"], ["pool", "list", "--help"],
                     ["pool", "rm", "--help"], ["pool", "enable", "--help"], ["pool", "disable", "--help"]):
            with self.subTest(args=args):
                r = harness.cli(*args, cwd=self.dir, timeout=HELP_TIMEOUT)
                self.assertEqual(r.rc, 0, r)
                self.assertIn("usage", r.out.lower(), "no usage text on stdout: %r" % r)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "shroud.db")), "--help created a database")
        self.assertFalse(os.path.exists(self.db))

    def test_usage_errors_exit_2(self):
        self.add("192.0.2.1")
        before = pool_list(self.db)
        for args in (["pool"], ["pool", "frobnicate"], ["pool", "add"], ["pool", "add", "192.0.2.5", "--bogus"],
                     ["pool", "add", "192.0.2.5", "--weight"], ["pool", "add", "192.0.2.5", "--tag"],
                     ["pool", "list", "--bogus"], ["pool", "rm"], ["pool", "enable"], ["pool", "disable"]):
            with self.subTest(args=args):
                r = harness.cli(*(args + ["--db", self.db]), cwd=self.dir, timeout=HELP_TIMEOUT)
                self.assertEqual(r.rc, 2, r)
                self.assertTrue(r.err.strip(), "a usage error must say something on stderr: %r" % r)
                self.assertEqual(pool_list(self.db), before)

    def test_database_mode_0600(self):
        for umask in ("000", "022"):
            with self.subTest(umask=umask):
                db = os.path.join(self.dir, "umask%s.db" % umask)
                p = subprocess.run(["/bin/sh", "-c", 'umask %s && exec "$0" "$@"' % umask, harness.BINARY,
                                    "pool", "add", "192.0.2.1", "--db", db],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir,
                                   env=harness.clean_env(), timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600, "created by pool add")
        # A database made by `user add`, then written by pool commands, refused ones included.
        add_user(self.db, "alice", "pw")
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o600)
        self.add("192.0.2.1/32")
        self.run_pool("add", "bogus")
        self.assertEqual(self.run_pool("disable", "192.0.2.1").rc, 0)
        self.assertEqual(self.run_pool("rm", "192.0.2.1").rc, 0)
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = self.db + suffix
            if os.path.exists(p):
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o600, p)
        self.assertEqual(harness.list_users(self.db), ["alice"], "pool commands must not touch users")


if __name__ == "__main__":
    harness.main()
