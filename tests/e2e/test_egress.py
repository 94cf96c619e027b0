"""The egress pool at work (issue 3): which source address each connection leaves from.

Every target is an echo server on loopback that first reports the source address it saw; the pool is
made of loopback addresses (127.0.0.2..127.0.0.21 unless a test says otherwise), all bindable here.

Proves, through the real daemon:
- stickiness: the same (user, session, site) keeps one source over 20 connections (for the default
  600 s TTL at most one change is allowed: a key's window may end during the run, two cannot), for a
  literal target, for `localhost`, and without a session; each site (10 targets) has its own choice;
  every reply's BND is the source the target saw; the banner says `egress pool of N`;
- isolation: 30 session ids spread over >= 5 addresses, each keeping its own; a second user with the
  same session ids chooses independently;
- `ttl-0`: 30 connections of one session come from >= 8 addresses; `ttl-2`: each of 3 sessions sees
  its source change within 12 s, and not more often than its 2 s windows allow;
- weights 1 and 3: the heavy entry gets 65-85 % of 400 sessions;
- tags: `country-DE` (any case) only from country=de entries, `tag-residential` only from entries
  with that value, `tag-us` matches country=us (any key), combinations intersect; no matching entry
  -> REP 0x02 and the target sees nothing;
- families: an IPv4-only pool and an `[::1]` target -> REP 0x04 with no connection at the target
  (never the default address); an IPv6-only pool and an IPv4 target likewise; `localhost` (A+AAAA)
  uses the family the pool has;
- health: an entry that cannot be bound (192.0.2.77, not on this host: only a bind is attempted,
  never a packet) cools down (visible in `pool list --json` within 5 s) while every request is
  retried on the next entry and succeeds; the back-off doubles on the next failure; at most 4 entries
  are tried per request; a target that refuses cools nothing (the same key keeps its source);
- changes: with 50 connections relaying, `pool add`, `pool disable`, `pool rm` take effect for new
  connections within a bounded poll while all 50 keep echoing;
- an empty pool (at start or emptied at run time) -> the system's default address, and the banner
  says so; without users, parameters are still parsed (and refused when malformed);
- username parameters: every malformed form fails the login with RFC 1929 status 0x01, every
  valid edge value is accepted;
- usage: usage_egress / usage_user rows add up to the connections made and the bytes sent, and the
  database holds neither the target address nor the session ids; the default log level names no
  username parameter value.
"""
import errno
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, add_user, pool_add, pool_cli, pool_entries, egress_attempt,  # noqa: E402
                     egress_source, run_parallel, echo_check, rep_name, recv_line, recv_all)

USER, PW = "alice", "alice-secret-pw"
USER2, PW2 = "bob", "bob-secret-pw"
POOL20 = ["127.0.0.%d" % i for i in range(2, 22)]
BAD = "192.0.2.77"              # TEST-NET-1: never on this host, so binding it fails
APPLY_BOUND = 3.0               # "within about a second", with room for ASan and the 1 s poll
FLUSH_BOUND = 5.0               # health and usage are written every 2 s


def count_changes(seq):
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def bind_fails_here(address):
    """True when binding `address` fails with EADDRNOTAVAIL on this host (no packet is sent)."""
    s = socket.socket()
    try:
        s.bind((address, 0))
        return False
    except OSError as e:
        return e.errno == errno.EADDRNOTAVAIL
    finally:
        s.close()


class EgressCase(DaemonTestCase):
    """Helpers: a daemon with users and a pool made through the CLI before it starts."""

    def pool_daemon(self, pool=(POOL20,), users=((USER, PW),), args=(), log_level="debug"):
        """`pool`: argument lists, one `shroud pool add` each. Returns the started Daemon."""
        d = harness.Daemon(workdir=self.workdir(), args=args, log_level=log_level)
        for name, pw in users:
            add_user(d.db, name, pw)
        n = 0
        for a in pool:
            n += pool_add(d.db, *a)
        self.addCleanup(d.stop)
        d.start()
        if n:
            self.assertIn("egress pool of %d" % n, d.banner)
        else:
            self.assertIn("egress system default address (the pool is empty)", d.banner)
        return d

    def src(self, d, user, echo, host=None, pw=PW):
        return egress_source(d.addr(), echo.addr, user, pw, target_host=host)

    def srcs(self, d, users, echo, host=None, pw=PW, workers=4):
        return run_parallel(lambda u: self.src(d, u, echo, host, pw), users, workers)

    def attempt(self, d, user, echo, host=None, pw=PW, **kw):
        return egress_attempt(d.addr(), host or echo.addr[0], echo.addr[1], user, pw, **kw)

    def assert_sticky(self, seq, what, allow_window_end=True):
        """One source throughout; with the default TTL one change is allowed (the key's window
        may end during the run; 600 s windows cannot end twice within seconds)."""
        changes = count_changes(seq)
        self.assertLessEqual(changes, 1 if allow_window_end else 0,
                             "%s: the source changed %d times: %s" % (what, changes, seq))
        if changes:
            harness.log("%s: one change (a window ended during the run): %s" % (what, seq))

    def change(self, db, *args):
        r = pool_cli(db, *args)
        self.assertEqual(r.rc, 0, r)
        harness.log("changed: shroud pool %s" % " ".join(args[:4]))
        return time.monotonic()

    def wait_usage_failures(self, db, failures):
        """Poll until usage_egress counts `failures` failed connections today: the flush that
        wrote them wrote the health of the same moment first (health, then usage)."""
        total = None
        for _ in harness.deadline_loop(FLUSH_BOUND, 0.2):
            rows = harness.db_query(db, "SELECT coalesce(sum(failures), 0) AS n FROM usage_egress")
            total = rows[0]["n"]
            if total >= failures:
                return
        self.fail("usage_egress never counted %d failures within %.0f s (last %r)"
                  % (failures, FLUSH_BOUND, total))

    def wait_pool_entry(self, db, address, pred, what, bound=FLUSH_BOUND):
        """Poll `pool list --json` until pred(entry of address) holds; returns the entry."""
        seen = None
        for _ in harness.deadline_loop(bound, 0.2):
            seen = pool_entries(db).get(address)
            if seen is not None and pred(seen):
                return seen
        self.fail("%s: %s never got there within %.0f s; last: %r" % (what, address, bound, seen))


class Selection(EgressCase):

    def test_sticky_per_user_session_site(self):
        echo = self.echo_server()
        pair = [self.start_server(x) for x in harness.same_port_pair(lambda h, p: harness.EchoServer(h, p))]
        sites = [self.echo_server("127.0.0.%d" % i) for i in range(101, 111)]
        d = self.pool_daemon()

        seq = [self.src(d, USER + "-session-s1", echo) for _ in range(20)]
        self.assertTrue(set(seq) <= set(POOL20), seq)
        self.assert_sticky(seq, "literal target, default TTL")

        seq = [self.src(d, USER + "-session-s1-ttl-86400", echo) for _ in range(20)]
        self.assert_sticky(seq, "literal target, ttl-86400", allow_window_end=False)

        seq = [self.src(d, USER + "-session-s1", pair[0], host="localhost") for _ in range(10)]
        self.assertTrue(set(seq) <= set(POOL20), "localhost through an IPv4 pool: %s" % seq)
        self.assert_sticky(seq, "name target localhost")

        seq = [self.src(d, USER, echo) for _ in range(10)]
        self.assertTrue(set(seq) <= set(POOL20), seq)
        self.assert_sticky(seq, "no session parameter")

        per_site = {}
        for t in sites:
            seq = [self.src(d, USER + "-session-s1-ttl-86400", t) for _ in range(3)]
            self.assert_sticky(seq, "site %s" % t.host, allow_window_end=False)
            per_site[t.host] = seq[0]
        harness.log("one session over 10 sites: %s" % per_site)
        self.assertGreaterEqual(len(set(per_site.values())), 3,
                                "the site must be part of the key: %s" % per_site)

    def test_isolation_sessions_and_users(self):
        echo = self.echo_server()
        d = self.pool_daemon(users=((USER, PW), (USER2, PW2)))
        # A long TTL: each key is checked twice, and no window may end between the two.
        ids = ["iso%d" % i for i in range(30)]
        a1 = self.srcs(d, ["%s-session-%s-ttl-86400" % (USER, i) for i in ids], echo)
        a2 = self.srcs(d, ["%s-session-%s-ttl-86400" % (USER, i) for i in ids], echo)
        b1 = self.srcs(d, ["%s-session-%s-ttl-86400" % (USER2, i) for i in ids], echo, pw=PW2)
        b2 = self.srcs(d, ["%s-session-%s-ttl-86400" % (USER2, i) for i in ids], echo, pw=PW2)
        self.assertEqual(a1, a2, "each alice session keeps its own source")
        self.assertEqual(b1, b2, "each bob session keeps its own source")
        self.assertTrue(set(a1 + b1) <= set(POOL20))
        harness.log("alice: %d distinct of 30, bob: %d distinct of 30"
                    % (len(set(a1)), len(set(b1))))
        self.assertGreaterEqual(len(set(a1)), 5, a1)
        self.assertGreaterEqual(len(set(b1)), 5, b1)
        same = sum(1 for x, y in zip(a1, b1) if x == y)
        harness.log("same session id, alice and bob on the same source: %d of 30 (1.5 expected)" % same)
        self.assertLessEqual(same, 10, "the user must be part of the key: alice %s, bob %s" % (a1, b1))

    def test_ttl0_rotates_per_connection(self):
        echo = self.echo_server()
        d = self.pool_daemon()
        for user in (USER + "-session-r-ttl-0", USER + "-ttl-0"):
            seq = [self.src(d, user, echo) for _ in range(30)]
            harness.log("%s: %d distinct of 30" % (user, len(set(seq))))
            self.assertTrue(set(seq) <= set(POOL20), seq)
            self.assertGreaterEqual(len(set(seq)), 8, "%s: %s" % (user, seq))

    def test_config_sticky_ttl_applies_to_a_running_daemon(self):
        echo = self.echo_server()
        d = self.pool_daemon()
        r = harness.cli("config", "sticky-ttl", "--db", d.db)
        self.assertEqual((r.rc, r.out), (0, "600\n"), r)
        for bad in ("604801", "x", "1.5", ""):
            r = harness.cli("config", "sticky-ttl", bad, "--db", d.db)
            self.assertEqual(r.rc, 2, r)
            self.assertIn("sticky-ttl", r.err, r)
        self.assertEqual(harness.cli("config", "sticky-ttl", "--db", d.db).out, "600\n")
        # sticky-ttl 0: a session without a ttl parameter now rotates per connection.
        self.assertEqual(harness.cli("config", "sticky-ttl", "0", "--db", d.db).rc, 0)
        user = USER + "-session-cfg"
        seq = []
        for _ in harness.deadline_loop(5.0, 0.05):
            seq.append(self.src(d, user, echo))
            if len(set(seq[-10:])) >= 4:
                break
        self.assertGreaterEqual(len(set(seq[-10:])), 4,
                                "sticky-ttl 0 never reached the daemon: %s" % seq)
        # Back to a long TTL: sticky again.
        self.assertEqual(harness.cli("config", "sticky-ttl", "86400", "--db", d.db).rc, 0)
        for _ in harness.deadline_loop(5.0, 0.05):
            tail = [self.src(d, user, echo) for _ in range(5)]
            if len(set(tail)) == 1:
                break
        self.assertEqual(len(set(tail)), 1, "sticky-ttl 86400 never reached the daemon: %s" % tail)

    def test_ttl_window_ends_and_is_redrawn(self):
        echo = self.echo_server()
        d = self.pool_daemon()
        users = [USER + "-session-e%d-ttl-2" % i for i in range(3)]
        seen = {u: [] for u in users}
        first = {u: self.src(d, u, echo) for u in users}
        t0 = time.monotonic()
        changed = {}
        # Every session is polled until all have changed, to count its changes too.
        for _ in harness.deadline_loop(12.0, 0.1):
            for u in users:
                s = self.src(d, u, echo)
                seen[u].append(s)
                if s != first[u] and u not in changed:
                    changed[u] = time.monotonic() - t0
            if len(changed) == len(users):
                break
        elapsed = time.monotonic() - t0
        harness.log("ttl-2: changed after %s s" % {u: round(t, 2) for u, t in changed.items()})
        self.assertEqual(sorted(changed), sorted(users),
                         "with ttl-2 the source never changed within 12 s: %s" % seen)
        # ... and did not change on every connection: within a 2 s window the source holds.
        for u in users:
            seq = [first[u]] + seen[u]
            self.assertLessEqual(count_changes(seq), int(elapsed / 2) + 1,
                                 "%s changed more often than its 2 s windows allow in %.1f s: %s"
                                 % (u, elapsed, seq))

    def test_weights_share(self):
        echo = self.echo_server()
        d = self.pool_daemon(pool=(["127.0.0.2", "--weight", "1"], ["127.0.0.3", "--weight", "3"]))
        seq = self.srcs(d, ["%s-session-w%d" % (USER, i) for i in range(400)], echo)
        self.assertTrue(set(seq) <= {"127.0.0.2", "127.0.0.3"}, set(seq))
        share = seq.count("127.0.0.3") / len(seq)
        harness.log("weight 3 of 4: share %.3f of 400 sessions (0.75 expected)" % share)
        self.assertGreaterEqual(share, 0.65)
        self.assertLessEqual(share, 0.85)

    def test_tags_filter(self):
        echo = self.echo_server()
        de, us = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}, {"127.0.0.6", "127.0.0.7", "127.0.0.8"}
        res = {"127.0.0.2", "127.0.0.3", "127.0.0.6"}
        d = self.pool_daemon(pool=(
            ["127.0.0.2", "127.0.0.3", "--tag", "country=de", "--tag", "kind=residential"],
            ["127.0.0.4", "127.0.0.5", "--tag", "country=de", "--tag", "kind=datacenter"],
            ["127.0.0.6", "--tag", "country=us", "--tag", "kind=residential"],
            ["127.0.0.7", "127.0.0.8", "--tag", "country=us", "--tag", "kind=datacenter"],
            ["127.0.0.9", "127.0.0.10"]))

        def check(fmt, allowed, n=20, min_distinct=2):
            seq = self.srcs(d, [fmt % i for i in range(n)], echo)
            harness.log("%s: %s" % (fmt, sorted(set(seq))))
            self.assertTrue(set(seq) <= allowed, "%s: %s outside %s" % (fmt, set(seq) - allowed, allowed))
            self.assertGreaterEqual(len(set(seq)), min_distinct, "%s: %s" % (fmt, seq))

        check(USER + "-country-DE-session-c%d", de)
        check(USER + "-session-c%d-country-de", de)
        check(USER + "-country-De-ttl-0-session-x%d", de)
        check(USER + "-tag-residential-session-t%d", res)
        check(USER + "-session-u%d-tag-us", us)                       # tag-VALUE matches any key
        check(USER + "-tag-de-tag-residential-session-v%d", {"127.0.0.2", "127.0.0.3"})
        check(USER + "-country-us-tag-residential-session-w%d", {"127.0.0.6"}, n=5, min_distinct=1)
        check(USER + "-session-all%d", de | us | {"127.0.0.9", "127.0.0.10"}, n=30, min_distinct=5)

        before = echo.accepted.qsize()
        for user in (USER + "-country-fr", USER + "-session-z-country-FR", USER + "-tag-nothing",
                     USER + "-country-us-tag-de", USER + "-tag-residential-tag-datacenter"):
            a = self.attempt(d, user, echo)
            self.assertEqual(a.stage, "reply", a)
            self.assertEqual(a.reply.rep, 0x02, "%s: got %r, want %s" % (user, a, rep_name(0x02)))
        self.assertEqual(echo.accepted.qsize(), before, "a refused request reached the target")

    def test_families(self):
        echo = self.echo_server()
        echo6 = self.echo_server("::1")
        d = self.pool_daemon()
        for user in (USER, USER + "-session-f1", USER + "-ttl-0"):
            a = self.attempt(d, user, echo6)
            self.assertEqual(a.stage, "reply", a)
            self.assertEqual(a.reply.rep, 0x04, "IPv4-only pool, [::1] target, %s: %r" % (user, a))
        self.assertEqual(echo6.accepted.qsize(), 0,
                         "the IPv6 target was reached (from the default address?)")
        self.assertIn(self.src(d, USER, echo), POOL20)

        # Now an IPv6-only pool: ::1 only. An IPv4 target is unreachable, [::1] works from ::1.
        t0 = self.change(d.db, "add", "::1")
        self.change(d.db, "rm", *POOL20)
        outcome = None
        for _ in harness.deadline_loop(APPLY_BOUND, 0.1):
            a = self.attempt(d, USER + "-ttl-0", echo)
            outcome = a
            if a.stage == "reply" and a.reply.rep == 0x04:
                break
        else:
            self.fail("IPv4 target with an IPv6-only pool: last %r" % outcome)
        harness.log("IPv6-only pool applied after %.2f s" % (time.monotonic() - t0))
        before = echo.accepted.qsize()
        for user in (USER, USER + "-session-f2"):
            a = self.attempt(d, user, echo)
            self.assertEqual((a.stage, a.reply.rep if a.reply else None), ("reply", 0x04), a)
        self.assertEqual(echo.accepted.qsize(), before, "the IPv4 target was reached")
        for user in (USER, USER + "-ttl-0"):
            self.assertEqual(self.src(d, user, echo6), "::1")


class Health(EgressCase):

    def setUp(self):
        if not bind_fails_here(BAD):
            self.skipTest("binding %s does not fail here (ip_nonlocal_bind?)" % BAD)

    def test_bind_failure_cools_down_and_is_retried(self):
        echo = self.echo_server()
        d = self.pool_daemon(pool=(["127.0.0.2"], [BAD, "--weight", "50"]))
        seq = [self.src(d, "%s-session-h%d" % (USER, i), echo) for i in range(30)]
        self.assertEqual(set(seq), {"127.0.0.2"}, seq)
        e = self.wait_pool_entry(d.db, BAD, lambda e: e["cooling_until"] is not None
                                 and e["cooling_until"] > time.time() and e["failures"] >= 1,
                                 "cooling after a failed bind")
        harness.log("%s: %r (now %.1f)" % (BAD, e, time.time()))
        self.assertEqual(e["failures"], 1, "one failure so far: the cooled entry is skipped, not retried")
        self.assertLessEqual(e["cooling_until"], time.time() + 6, "first cool-down is 5 s: %r" % e)
        good = pool_entries(d.db)["127.0.0.2"]
        self.assertEqual(good["failures"], 0, good)
        self.assertTrue(good["cooling_until"] is None or good["cooling_until"] <= time.time(), good)

        # When the cool-down ends, the next key ranked on it fails again: 10 s this time.
        until1 = e["cooling_until"]
        i = 100
        for _ in harness.deadline_loop(until1 - time.time() + 8, 0.1):
            self.assertEqual(self.src(d, "%s-session-h%d" % (USER, i), echo), "127.0.0.2")
            i += 1
            e = pool_entries(d.db)[BAD]
            if e["failures"] >= 2:
                break
        harness.log("%s after the second failure: %r" % (BAD, e))
        self.assertEqual(e["failures"], 2, "a second failure after the cool-down: %r" % e)
        self.assertGreaterEqual(e["cooling_until"] - until1, 8,
                                "the second cool-down must be about 10 s (doubled): %r, first until %d"
                                % (e, until1))
        self.assertLessEqual(e["cooling_until"], time.time() + 11, e)

    def test_at_most_four_entries_per_request(self):
        echo = self.echo_server()
        bad = ["192.0.2.%d" % i for i in range(77, 82)]
        for b in bad:
            if not bind_fails_here(b):
                self.skipTest("binding %s does not fail here" % b)
        # Five unbindable entries that outrank 127.0.0.2 for practically every key.
        d = self.pool_daemon(pool=(["127.0.0.2"], bad + ["--weight", "1000"]))
        a = self.attempt(d, USER + "-session-m0", echo)
        self.assertEqual(a.stage, "reply", "4 tries, all unbindable: the request fails: %r" % a)
        self.assertNotEqual(a.reply.rep, 0, a)
        harness.log("first request: %r" % a)
        # The four binds of one request happen in one go, but a flush could catch them half
        # done: poll until at least 4 are on disk, then there must be exactly 4.
        for _ in harness.deadline_loop(FLUSH_BOUND, 0.2):
            by = pool_entries(d.db)
            cooling = sorted(x for x in bad if by[x]["cooling_until"] is not None and by[x]["failures"] >= 1)
            if len(cooling) >= 4:
                break
        self.assertEqual(len(cooling), 4, "exactly 4 entries tried for one request: %s" % cooling)
        # The fifth unbindable entry and then 127.0.0.2: the next requests succeed.
        for i in range(1, 11):
            self.assertEqual(self.src(d, USER + "-session-m%d" % i, echo), "127.0.0.2")
        self.wait_pool_entry(d.db, [x for x in bad if x not in cooling][0],
                             lambda e: e["failures"] >= 1, "the fifth entry cooled too")

    def test_retried_request_succeeds_with_three_bad_entries(self):
        echo = self.echo_server()
        bad = ["192.0.2.%d" % i for i in range(77, 80)]
        d = self.pool_daemon(pool=(["127.0.0.2"], bad + ["--weight", "50"]))
        seq = [self.src(d, USER + "-session-k%d" % i, echo) for i in range(20)]
        self.assertEqual(set(seq), {"127.0.0.2"}, "3 bad + 1 good fits in 4 tries: %s" % seq)
        for b in bad:
            self.wait_pool_entry(d.db, b, lambda e: e["cooling_until"] is not None and e["failures"] >= 1,
                                 "cooling")

    def test_refused_target_cools_nothing(self):
        echo = self.echo_server()
        closed = harness.free_port()
        d = self.pool_daemon(pool=(["127.0.0.2", "127.0.0.3"],))
        for i in range(6):
            user = USER + "-session-r%d-ttl-86400" % i
            before = self.src(d, user, echo)
            for _ in range(3):
                a = egress_attempt(d.addr(), "127.0.0.1", closed, user, PW)
                self.assertEqual(a.stage, "reply", a)
                self.assertEqual(a.reply.rep, 0x05, "closed port: %r" % a)
            # Same key (the site is the address, not the port): it must not have moved.
            self.assertEqual(self.src(d, user, echo), before,
                             "a refusing target must not cool the source it was tried from")
        # Once the 18 refusals are counted in usage, the health of that moment is on disk too.
        self.wait_usage_failures(d.db, 18)
        for addr, e in pool_entries(d.db).items():
            self.assertEqual(e["failures"], 0, e)
            self.assertTrue(e["cooling_until"] is None or e["cooling_until"] <= time.time(), e)


    def test_unreachable_target_cools_nothing(self):
        # A TCP connect to a multicast address fails with ENETUNREACH from every source: the
        # destination's fault. A client must not be able to cool the whole pool down with it.
        d = self.pool_daemon(pool=(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"],))
        for i in range(5):
            a = egress_attempt(d.addr(), "224.0.0.1", 80, USER + "-session-u%d" % i, PW)
            self.assertEqual(a.stage, "reply", a)
            self.assertEqual(a.reply.rep, 0x03, "network unreachable: %r" % a)
        self.wait_usage_failures(d.db, 5)
        for addr, e in pool_entries(d.db).items():
            self.assertEqual(e["failures"], 0, "%s was blamed for the target: %r" % (addr, e))
            self.assertTrue(e["cooling_until"] is None or e["cooling_until"] <= time.time(), e)


class PoolChanges(EgressCase):

    def test_changes_under_load(self):
        echo = self.echo_server()
        d = self.pool_daemon()
        conns = []
        for i in range(50):
            s, r = harness.socks_open(d.addr(), echo.host, echo.port, "%s-session-load%d" % (USER, i), PW)
            self.closing(s)
            line = recv_line(s).decode().split()
            self.assertIn(line[1], POOL20, line)
            conns.append(s)
        for s in conns:
            echo_check(s, b"warm\n")

        stop = threading.Event()
        errors, rounds = [], [0]

        def pump():
            try:
                while not stop.is_set():
                    for k, s in enumerate(conns):
                        echo_check(s, b"round %d conn %d\n" % (rounds[0], k))
                    rounds[0] += 1
                    stop.wait(0.05)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("round %d: %r" % (rounds[0], e))
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            new = ["127.0.0.%d" % i for i in range(30, 35)]
            disabled, removed = POOL20[:10], POOL20[10:]

            def poll(pred, what, streak_len):
                """ttl-0 connections until `streak_len` in a row satisfy pred; returns the time
                from the change to the first of them."""
                t_change = time.monotonic()
                streak, start, seen = 0, None, []
                for _ in harness.deadline_loop(APPLY_BOUND + 3, 0.02):
                    now = time.monotonic() - t_change
                    s = self.src(d, USER + "-ttl-0", echo)
                    seen.append(s)
                    if pred(s):
                        if streak == 0:
                            start = now
                        streak += 1
                        if streak >= streak_len:
                            break
                    else:
                        streak = 0
                else:
                    self.fail("%s: new connections never settled; sources %s" % (what, seen))
                harness.log("%s applied by %.2f s after the change (%d connections)" % (what, start, len(seen)))
                self.assertLessEqual(start, APPLY_BOUND, "%s: %s" % (what, seen))

            self.change(d.db, "add", *new)
            poll(lambda s: s in new, "add", 1)
            self.change(d.db, "disable", *disabled)
            poll(lambda s: s not in disabled, "disable", 15)
            self.change(d.db, "rm", *removed)
            poll(lambda s: s in new, "rm", 10)
            seq = self.srcs(d, ["%s-session-after%d" % (USER, i) for i in range(20)], echo)
            self.assertTrue(set(seq) <= set(new), "after the changes only %s: %s" % (new, seq))
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(errors, [], "a relayed connection broke during the changes")
        harness.log("%d pump rounds over the 50 connections during the changes" % rounds[0])
        self.assertGreater(rounds[0], 0)
        for s in conns:
            echo_check(s, os.urandom(4096))
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"")

    def test_empty_pool_uses_default_address(self):
        echo = self.echo_server()
        echo6 = self.echo_server("::1")
        d = self.pool_daemon(pool=())
        for user in (USER, USER + "-session-e1", USER + "-ttl-0"):
            self.assertEqual(self.src(d, user, echo), "127.0.0.1")
            self.assertEqual(self.src(d, user, echo6), "::1")
        harness.check_serves(d.addr(), echo, USER, PW)

        # A pool appears at run time ...
        self.change(d.db, "add", "127.0.0.2")
        for _ in harness.deadline_loop(APPLY_BOUND, 0.1):
            if self.src(d, USER + "-ttl-0", echo) == "127.0.0.2":
                break
        else:
            self.fail("pool add was not applied within %.0f s" % APPLY_BOUND)
        a = self.attempt(d, USER, echo6)
        self.assertEqual((a.stage, a.reply.rep if a.reply else None), ("reply", 0x04), a)
        # ... and is emptied again: back to the default address.
        self.change(d.db, "rm", "127.0.0.2")
        for _ in harness.deadline_loop(APPLY_BOUND, 0.1):
            if self.src(d, USER + "-ttl-0", echo) == "127.0.0.1":
                break
        else:
            self.fail("emptying the pool was not applied within %.0f s" % APPLY_BOUND)
        self.assertEqual(self.src(d, USER, echo6), "::1")

    def test_no_users_still_parses_parameters(self):
        echo = self.echo_server()
        d = self.pool_daemon(users=())
        seq = [self.src(d, "anyone-session-n1", echo, pw="whatever") for _ in range(5)]
        self.assertTrue(set(seq) <= set(POOL20), seq)
        self.assert_sticky(seq, "no users, session n1")
        seq = [self.src(d, "anyone-ttl-0", echo, pw="x") for _ in range(20)]
        self.assertGreaterEqual(len(set(seq)), 5, seq)
        for k, user in enumerate(("anyone-bogus-1", "anyone-ttl-x", "anyone-session-", "any-one")):
            a = self.attempt(d, user, echo, pw="x", source="127.0.0.%d" % (150 + k))
            self.assertEqual((a.stage, a.auth), ("auth", 0x01), "%s: %r" % (user, a))
        # No-auth (method 0x00) still works and uses the pool.
        s, _, src = harness.echo_open(d.addr(), echo.addr)
        s.close()
        self.assertIn(src[0], POOL20)


class Params(EgressCase):

    def test_malformed_parameters_refuse_the_login(self):
        echo = self.echo_server()
        d = self.pool_daemon()
        bad = [
            USER + "-foo-bar",                  # unknown key
            USER + "-session",                  # key without a value
            USER + "-session-",                 # empty value
            USER + "-",
            USER + "--session-a",
            USER + "-session-a-b",              # "b" is not a key
            USER + "-session-a-session-b",      # repeated
            USER + "-ttl-1-ttl-2",
            USER + "-country-de-country-us",
            USER + "-ttl-abc",
            USER + "-ttl-604801",
            USER + "-ttl-18446744073709551617",
            USER + "-ttl-+5",                   # params.h: no sign ...
            USER + "-ttl-01",                   # ... and no leading zero
            USER + "-ttl-",
            USER + "-country-deu",
            USER + "-country-d",
            USER + "-country-d1",
            USER + "-session-" + "s" * 65,
            USER + "-session-a@b",
            USER + "-tag-" + "t" * 33,
            USER + "-tag-a:b",
            USER + "-tag",
            "mallory-session-a",                # unknown user, valid parameters
        ]
        # Each refusal from its own client address: failures are throttled per address.
        for k, user in enumerate(bad):
            with self.subTest(user=user):
                a = self.attempt(d, user, echo, source="127.0.0.%d" % (150 + k))
                self.assertEqual((a.stage, a.auth), ("auth", 0x01), "%s: %r" % (user, a))
        a = self.attempt(d, USER + "-session-a", echo, pw="wrong", source="127.0.0.200")
        self.assertEqual((a.stage, a.auth), ("auth", 0x01), a)

        good_ok = [USER + "-session-" + "S._9" * 16, USER + "-ttl-604800", USER + "-ttl-0",
                   USER + "-ttl-1-session-x", USER + "-session-x.y_Z-ttl-600"]
        for user in good_ok:
            with self.subTest(user=user):
                self.assertIn(self.src(d, user, echo), POOL20)
        # Valid filters that nothing in this untagged pool matches: logged in, then REP 0x02.
        good_no_match = [USER + "-tag-" + "t" * 32, USER + "-country-ZZ", USER + "-tag-a-tag-b",
                         USER + "-tag-x-ttl-5-session-s.q_1-country-zz"]
        for user in good_no_match:
            with self.subTest(user=user):
                a = self.attempt(d, user, echo)
                self.assertEqual(a.stage, "reply", "the login must succeed: %r" % a)
                self.assertEqual(a.reply.rep, 0x02, a)


    def test_default_log_level_names_no_parameter_value(self):
        echo = self.echo_server()
        d = self.pool_daemon(pool=(POOL20[:4], ["127.0.0.9", "--tag", "kind=Zq9TagProbe"]), log_level=None)
        # Without a tag filter the tagged entry is eligible too.
        self.assertIn(self.src(d, USER + "-session-Zq9SessionProbe", echo), POOL20[:4] + ["127.0.0.9"])
        self.assertEqual(self.src(d, USER + "-session-Zq9Other-tag-Zq9TagProbe-ttl-0", echo), "127.0.0.9")
        a = self.attempt(d, USER + "-tag-Zq9NoMatchProbe", echo)
        self.assertEqual((a.stage, a.reply.rep if a.reply else None), ("reply", 0x02), a)
        a = self.attempt(d, USER + "-session-Zq9Bad@Probe", echo, source="127.0.0.150")
        self.assertEqual((a.stage, a.auth), ("auth", 0x01), a)
        d.stop()
        text = d.log_text()
        for probe in ("Zq9SessionProbe", "Zq9Other", "Zq9TagProbe", "Zq9NoMatchProbe", "Zq9Bad"):
            self.assertNotIn(probe, text, "the default log names a username parameter value")


class Usage(EgressCase):

    def test_usage_counters_add_up(self):
        # A distinctive target address and session ids: none of them may reach the database.
        echo = self.echo_server("127.0.0.101")
        pool = ["127.0.0.%d" % i for i in range(2, 6)]
        d = self.pool_daemon(pool=(pool,), users=((USER, PW), (USER2, PW2)))
        day0 = time.strftime("%Y-%m-%d", time.gmtime())
        sent = {}       # per source: [connections, bytes up, bytes down expected]
        per_user = {USER: [0, 0, 0], USER2: [0, 0, 0]}
        plan = [(USER, PW, "%s-session-Zq9Usage%d" % (USER, i)) for i in range(12)] + \
               [(USER2, PW2, "%s-session-Zq9Usage%d" % (USER2, i)) for i in range(6)]
        for k, (name, pw, user) in enumerate(plan):
            payload = os.urandom(1000 + 37 * k)
            a = egress_attempt(d.addr(), echo.host, echo.port, user, pw, payload=payload)
            self.assertTrue(a.ok, a)
            srcline = len(("SRC %s %d\n" % a.src).encode())
            for acc in (sent.setdefault(a.src[0], [0, 0, 0]), per_user[name]):
                acc[0] += 1
                acc[1] += len(payload)
                acc[2] += len(payload) + srcline
        harness.log("made: per source %s, per user %s" % (sent, per_user))

        rows = []
        for _ in harness.deadline_loop(FLUSH_BOUND + 3, 0.2):
            rows = harness.db_query(d.db, "SELECT * FROM usage_egress")
            if sum(r["connections"] for r in rows) >= len(plan):
                break
        urows = harness.db_query(d.db, "SELECT * FROM usage_user")
        harness.log("usage_egress: %s" % rows)
        harness.log("usage_user: %s" % urows)
        days = {day0, time.strftime("%Y-%m-%d", time.gmtime())}
        for r in rows + urows:
            self.assertIn(r["day"], days, r)

        def totals(rs, key):
            out = {}
            for r in rs:
                t = out.setdefault(r[key], [0, 0, 0, 0])
                for i, col in enumerate(("connections", "bytes_up", "bytes_down", "failures")):
                    t[i] += r[col]
            return out
        eg, us = totals(rows, "address"), totals(urows, "user")
        self.assertEqual(sum(t[0] for t in eg.values()), len(plan), "connections in usage_egress: %s" % eg)
        for src, (n, up, down) in sent.items():
            got = eg.get(src)
            self.assertIsNotNone(got, "no usage_egress row for %s: %s" % (src, eg))
            self.assertEqual(got[0], n, "connections from %s" % src)
            self.assertGreaterEqual(got[1], up, "bytes_up from %s" % src)
            self.assertLessEqual(got[1], up + 512 * n, "bytes_up from %s counted twice?" % src)
            self.assertGreaterEqual(got[2], down, "bytes_down to %s" % src)
            self.assertLessEqual(got[2], down + 512 * n, "bytes_down to %s counted twice?" % src)
            self.assertEqual(got[3], 0, "failures of %s" % src)
        self.assertFalse(set(eg) - set(sent), "usage rows for sources never used: %s" % eg)
        for name, (n, up, down) in per_user.items():
            got = us.get(name)
            self.assertIsNotNone(got, "no usage_user row for %s: %s" % (name, us))
            self.assertEqual(got[0], n, "connections of %s" % name)
            self.assertGreaterEqual(got[1], up, "bytes_up of %s" % name)
            self.assertLessEqual(got[1], up + 512 * n, "bytes_up of %s" % name)
            self.assertGreaterEqual(got[2], down, "bytes_down of %s" % name)
            self.assertEqual(got[3], 0, "failures of %s" % name)
        self.assertEqual(set(us), {USER, USER2}, "usage rows per user name, without parameters: %s" % us)
        # DESIGN.md: no table holds destinations (nor username parameters).
        dump = harness.db_dump(d.db)
        self.assertNotIn("127.0.0.101", dump, "the target address is in the database")
        self.assertNotIn("Zq9Usage", dump, "a session id is in the database")


if __name__ == "__main__":
    harness.main()
