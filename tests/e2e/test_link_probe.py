"""The encrypted link's probe resistance (issue 4, LINK.md "Server checks" and SILENT), measured
from outside with tests/tools/linkprobe and raw sockets, against `shroud serve --listen none
--link-listen 127.0.0.1:0 --link-handshake-timeout 2` (deadline S = 2 s, jitter up to
min(3, S/10) = 0.2 s).

Proves: random first flights of 0, 1, 16, 111, 112, 113, 127, 128, 500 and 5000 bytes, a replayed
valid first flight, a key revoked while the daemon runs (once a probe proves the daemon's snapshot
has it), a key for another server, a timestamp 120 s ahead or behind (while 30 s off is served),
and a valid first flight from a source in the penalty box all get ZERO bytes back and a clean
close (FIN) at the same absolute deadline: within [S - 0.05, S + 0.2 + 0.5] s of the connect (the
0.5 s is scheduling slack on a shared machine; each time is printed). So do probes that drip
bytes (the deadline is absolute: bytes never push it back). Every case but the penalty box one
comes from its own 127.0.0.x source, never boxed. The penalty box: four silent failures from a
source leave it served, the fifth boxes it, and then its valid first flight is silent too, while a
valid client from another source is served and relays data to a target; the box ends 15 s after
the fifth failure (within half a second). The cap on unauthenticated connections: with 64 open
from one source, its 65th is silent even with a valid first flight, another source is served, and
once the 64 have expired at their deadline (a failure each) the source is in the box. After the handshake: a bit flipped in the header,
body or tag of the CONNECT, a DATA or the EOF record, a reordered pair of records, a record cut
short by the TCP close, records ending without EOF, and a second CONNECT each close the link at
once (well before any timeout), and the target receives
nothing that was not verified: exactly the bytes of the records before the fault (nothing at all
when CONNECT is the broken one), then a reset, never a clean end. A valid link relays to an echo
target and ends cleanly, and carries 32 MiB each way at once, every byte checked, three times in a
row; a wrong PSK gets bytes that do not decrypt ("badreply").
"""
import concurrent.futures
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DaemonTestCase, linkprobe, tcp_connect, wait_closed  # noqa: E402

USER, PASSWORD = "alice", "al1ce-pa55"
DEADLINE = 2.0                     # --link-handshake-timeout
JITTER = min(3.0, DEADLINE / 10)   # the server adds up to this much, per connection
EARLY = 0.05                       # an event loop's cached "now" may lag the accept by a few ms
LATE = 0.5                         # scheduling slack (sanitizers, a shared two-core machine)
RANDOM_SIZES = (0, 1, 16, 111, 112, 113, 127, 128, 500, 5000)

# Record sizes on the wire (LINK.md "Records after Split"): enc(L) 18 bytes + frame + tag 16.
CONNECT_REC = 18 + 544 + 16        # CONNECT frames are always padded to 544 bytes
EOF_REC = 18 + 3 + 16
ECHO = "verified bytes first"                    # linkprobe --echo: proven at the target first
EVIL = "bytes that must not arrive unverified"   # linkprobe --send: the records broken on purpose


def data_rec(n):
    return 18 + 3 + n + 16


class LinkProbe(DaemonTestCase):

    def setUp(self):
        self.next_host = 10

    def source(self):
        """A fresh 127.0.0.x source for one case (five failures would box a shared one)."""
        self.next_host += 1
        return "127.0.0.%d" % self.next_host

    def start_link_daemon(self, links=("k1",)):
        """A daemon with only a link listener; `links` made before it starts. Returns the daemon
        and {name: path of an access key file pointed at its link port}."""
        d, addr, keys = harness.link_only_daemon(self, USER, PASSWORD, DEADLINE, links=links)
        self.assertEqual(d.addrs, [], "--listen none must leave no plain listener")
        return d, addr, keys

    def key_file(self, name, line):
        return harness.write_secret(os.path.join(self.workdir(), name + ".key"), line)

    # ---- the silent deadline

    def raw_probe(self, addr, source, payload):
        """Connect from source, send payload, wait for the close: (how, seconds since the connect).
        wait_closed fails the test if any byte comes back."""
        s = tcp_connect(addr, source=source)
        t0 = time.monotonic()
        try:
            if payload:
                s.sendall(payload)
            how, _ = wait_closed(s, DEADLINE + JITTER + 5)
        finally:
            s.close()
        return how, time.monotonic() - t0

    def drip_probe(self, addr, source, chunk, interval):
        """Send `chunk` random bytes every `interval` seconds until the server closes: the
        deadline is absolute, bytes do not push it back. (how, seconds since the connect); our
        own bytes crossing the server's FIN may turn the close into a reset."""
        s = tcp_connect(addr, source=source)
        t0 = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - t0 < DEADLINE + JITTER + 5:
                r, _, _ = harness.select.select([s], [], [], interval)
                if r:
                    try:
                        data = s.recv(4096)
                    except ConnectionResetError:
                        return "reset", time.monotonic() - t0, sent
                    self.assertEqual(data, b"", "bytes came back to a dripping probe")
                    return "eof", time.monotonic() - t0, sent
                try:
                    s.send(os.urandom(chunk))
                    sent += chunk
                except (BrokenPipeError, ConnectionResetError):
                    return "reset", time.monotonic() - t0, sent
            self.fail("a dripping probe was still open after %.1f s" % (time.monotonic() - t0))
        finally:
            s.close()

    def assert_deadline(self, label, how, took):
        harness.log("%-40s no byte, %s after %.3f s" % (label, how, took))
        self.assertEqual(how, "eof", "%s: the silent close must be a FIN like every other" % label)
        self.assertGreaterEqual(took, DEADLINE - EARLY, "%s: closed before the deadline" % label)
        self.assertLessEqual(took, DEADLINE + JITTER + LATE,
                             "%s: closed after the deadline" % label)

    def assert_probe_silent(self, label, r):
        """A linkprobe run whose valid-looking first flight must be met with silence."""
        self.assertIsNotNone(r.silent, "%s: want silence, got %r" % (label, r))
        took, how = r.silent
        self.assert_deadline(label, how, took)

    def probe_silent(self, key, addr, label, *args, source=None):
        r = linkprobe(key, addr, "--bind", source or self.source(),
                      "--wait", DEADLINE + JITTER + 5, *args)
        self.assert_probe_silent(label, r)
        return r

    def probe_served(self, key, addr, *args, source=None):
        r = linkprobe(key, addr, "--bind", source or self.source(), *args)
        self.assertTrue(r.first.startswith("reply "), "a valid client must be served: %r" % r)
        return r

    def test_random_first_flights_are_silent(self):
        d, addr, keys = self.start_link_daemon()
        cases = [(n, self.source(), os.urandom(n)) for n in RANDOM_SIZES]
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            futures = [(n, pool.submit(self.raw_probe, addr, src, payload))
                       for n, src, payload in cases]
            results = [(n, f.result()) for n, f in futures]
        for n, (how, took) in results:
            self.assert_deadline("random first flight of %d bytes" % n, how, took)
        self.probe_served(keys["k1"], addr)   # the listener still serves a real client

    def test_dripping_probes_close_at_the_deadline(self):
        # One byte every 0.1 s never completes 128 bytes before the deadline; 20 bytes every
        # 0.1 s complete them at 0.7 s (mac1 fails: silent) and keep coming. Both close at the
        # deadline set at accept.
        d, addr, keys = self.start_link_daemon()
        cases = [("1 byte every 0.1 s", self.source(), 1),
                 ("20 bytes every 0.1 s", self.source(), 20)]
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            futures = [(label, pool.submit(self.drip_probe, addr, src, n, 0.1))
                       for label, src, n in cases]
            for label, f in futures:
                how, took, sent = f.result()
                harness.log("%-40s no byte, %s after %.3f s (%d bytes sent)"
                            % ("drip, " + label, how, took, sent))
                self.assertGreaterEqual(took, DEADLINE - EARLY, label)
                self.assertLessEqual(took, DEADLINE + JITTER + LATE, label)

    def test_unauthenticated_cap_per_source(self):
        # PENALTY_UNAUTH_PER_SOURCE (64) connections from one source that have not finished a
        # handshake: the next one from that source is silent even with a valid first flight,
        # while another source is served. The 64 send nothing until their deadline: each such
        # expiry counts as a failure, so afterwards the source is in the penalty box.
        d, addr, keys = self.start_link_daemon()
        crowded, other = self.source(), self.source()
        base = d.settled_fd_count()
        held = [self.closing(tcp_connect(addr, source=crowded)) for _ in range(64)]
        t0 = time.monotonic()
        for _ in harness.deadline_loop(DEADLINE - 0.5, 0.01):
            if d.fd_count() >= base + 64:
                break
        self.assertGreaterEqual(d.fd_count(), base + 64, "the daemon did not accept 64 connections")
        self.assertLess(time.monotonic() - t0, DEADLINE - 0.5, "too slow: they would expire")
        self.probe_silent(keys["k1"], addr, "valid first flight, 65th from a source",
                          source=crowded)
        self.probe_served(keys["k1"], addr, source=other)
        for s in held:        # they were closed at their deadline, silently, like any other
            how, _ = wait_closed(s, 5)
            self.assertEqual(how, "eof")
        d.wait_fds_at_most(base)
        self.probe_silent(keys["k1"], addr, "valid first flight after 64 expiries", source=crowded)
        self.probe_served(keys["k1"], addr, source=other)

    def test_replayed_first_flight_is_silent(self):
        d, addr, keys = self.start_link_daemon()
        saved = os.path.join(self.workdir(), "first.bin")
        self.probe_served(keys["k1"], addr, "--save-first", saved)
        with open(saved, "rb") as f:
            first = f.read()
        self.assertGreaterEqual(len(first), 128)
        how, took = self.raw_probe(addr, self.source(), first)
        self.assert_deadline("replayed first flight (%d bytes)" % len(first), how, took)
        self.probe_served(keys["k1"], addr)

    def test_clock_off_and_foreign_server_key_are_silent(self):
        d, addr, keys = self.start_link_daemon()
        # Within LINK.md's 60 s both ways: served (so what follows is the clock's doing).
        self.probe_served(keys["k1"], addr, "--clock-offset", 30)
        self.probe_served(keys["k1"], addr, "--clock-offset", -30)
        foreign = self.key_file("foreign", harness.access_key_with(
            open(keys["k1"]).read().strip(), server_public=os.urandom(32)))
        cases = [("timestamp 120 s ahead", keys["k1"], ("--clock-offset", 120)),
                 ("timestamp 120 s behind", keys["k1"], ("--clock-offset", -120)),
                 ("a key for another server", foreign, ())]
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            futures = [(label, pool.submit(linkprobe, key, addr, "--bind", self.source(),
                                           "--wait", DEADLINE + JITTER + 5, *args))
                       for label, key, args in cases]
            for label, f in futures:
                self.assert_probe_silent(label, f.result())

    def test_revoked_key_is_silent(self):
        d, addr, keys = self.start_link_daemon(links=("k1", "k2"))
        self.probe_served(keys["k2"], addr)
        harness.link_revoke(d.db, "k2")
        # The daemon polls the database each second: readiness is a k2 flight met with silence.
        ready, tries, src = None, 0, self.source()
        for _ in harness.deadline_loop(15.0, 0.2):
            tries += 1
            r = linkprobe(keys["k2"], addr, "--bind", src, "--wait", DEADLINE + JITTER + 5)
            if r.silent is not None:
                ready = r
                break
            self.assertTrue(r.first.startswith("reply "), r)
        self.assertIsNotNone(ready, "a revoked key was still served after 15 s")
        self.assert_probe_silent("revoked key (readiness probe %d)" % tries, ready)
        self.probe_silent(keys["k2"], addr, "revoked key")
        self.probe_served(keys["k1"], addr)   # the other link is untouched

    def fail_once(self, addr, source):
        """One silent failure from source: a random 128-byte flight (mac1 fails), then our FIN;
        the server, silent, closes when the peer does: after that the failure is counted."""
        s = tcp_connect(addr, source=source)
        try:
            s.sendall(os.urandom(128))
            s.shutdown(socket.SHUT_WR)
            how, took = wait_closed(s, DEADLINE + JITTER + 5)
        finally:
            s.close()
        self.assertLess(took, DEADLINE - EARLY, "a silent server closes when the peer closes")

    def test_penalty_box(self):
        d, addr, keys = self.start_link_daemon()
        target = self.start_server(harness.RecordServer())
        boxed, other = self.source(), self.source()
        for _ in range(4):
            self.fail_once(addr, boxed)
        self.probe_served(keys["k1"], addr, source=boxed)   # four failures: not boxed yet
        self.fail_once(addr, boxed)                         # the fifth
        # Another source is served while `boxed` is in the box, and relays data.
        text = "served while another source is boxed"
        r = self.probe_served(keys["k1"], addr, "--connect", "%s:%d" % target.addr,
                              "--send", text, "--wait", 5, source=other)
        self.assertEqual((r.rep, r.data, r.end), (0, text.encode(), "eof"), r)
        peer, got, how = target.wait_end()
        self.assertEqual((got, how), (text.encode(), "eof"))
        # The boxed source: a valid first flight is silent, like a random one.
        self.probe_silent(keys["k1"], addr, "valid first flight, boxed source", source=boxed)
        how, took = self.raw_probe(addr, boxed, os.urandom(300))
        self.assert_deadline("random 300 bytes, boxed source", how, took)
        self.probe_served(keys["k1"], addr, source=other)

    def test_penalty_box_ends(self):
        # The first box lasts PENALTY_BOX_MIN, 15 s from the fifth failure: valid flights from
        # the source are silent until then (they are not failures: they do not lengthen it), and
        # served after. Attempt times are taken at their start, from when the fifth failure was
        # known to be counted (the server closed after counting it), so a box of 15 s makes the
        # last silent attempt start before 15.2 s and the first served one after 14.8 s.
        d, addr, keys = self.start_link_daemon()
        boxed = self.source()
        for _ in range(5):
            self.fail_once(addr, boxed)
        boxed_at = time.monotonic()
        silent_starts, served_at = [], None
        for _ in harness.deadline_loop(15.0 + 10.0, 0.0):
            t = time.monotonic() - boxed_at
            # The first attempt waits for the deadline; the others give up after 0.5 s (no
            # byte by then), so that the box's end is seen within about half a second.
            wait = DEADLINE + JITTER + 5 if not silent_starts else 0.5
            r = linkprobe(keys["k1"], addr, "--bind", boxed, "--wait", wait)
            if r.first.startswith("reply "):
                served_at = t
                break
            if not silent_starts:
                self.assert_probe_silent("boxed source, first attempt", r)
            else:
                self.assertEqual(r.silent[1] if r.silent else r.first, "timeout", r)
            silent_starts.append(t)
        harness.log("boxed source: %d silent attempts (last at %.1f s), served again at %s s"
                    % (len(silent_starts), silent_starts[-1] if silent_starts else -1,
                       "%.1f" % served_at if served_at is not None else "never"))
        self.assertIsNotNone(served_at, "the source was still boxed 25 s after its fifth failure")
        self.assertGreaterEqual(served_at, 15.0 - 0.2, "served again before the box ended")
        self.assertLess(silent_starts[-1], 15.0 + 0.2, "still boxed after 15 s")

    # ---- after the handshake: records

    def test_valid_link_relays_and_wrong_psk_is_refused(self):
        d, addr, keys = self.start_link_daemon()
        target = self.start_server(harness.RecordServer())
        text = "hello through the link \\ \x01\x7f"
        r = self.probe_served(keys["k1"], addr, "--connect", "%s:%d" % target.addr, "--send", text)
        self.assertEqual((r.rep, r.data, r.end), (0, text.encode(), "eof"), r)
        self.assertEqual(target.wait_end()[1:], (text.encode(), "eof"))
        # By name, with parameters: the same target.
        r = self.probe_served(keys["k1"], addr, "--connect", "localhost:%d" % target.port,
                              "--params", "session-s1", "--send", "by name")
        self.assertEqual((r.rep, r.data, r.end), (0, b"by name", "eof"), r)
        wrong = self.key_file("wrong-psk", harness.access_key_with(
            open(keys["k1"]).read().strip(), psk=os.urandom(32)))
        r = linkprobe(wrong, addr, "--bind", self.source())
        self.assertEqual(r.first, "badreply", r)

    def test_bulk_both_ways(self):
        # 32 MiB each way at once through one link connection, every byte checked at both ends;
        # linkprobe sends first, so its upload ends while the download is still backed up in the
        # server: the server must keep sealing what the target sent when only the link's write
        # side has events left (the stall it had: `down` full, tx written out, no watcher armed).
        d, addr, keys = self.start_link_daemon()
        total = 32 << 20
        for i in range(3):
            target = self.start_server(harness.PatternServer(total))
            r = linkprobe(keys["k1"], addr, "--connect", "%s:%d" % target.addr, "--bulk", total,
                          "--wait", 10)
            harness.log("bulk %d: %s, link %s, %.2f s" % (i + 1, r.bulk, r.end, r.elapsed))
            self.assertEqual(r.rep, 0, r)
            self.assertEqual((r.bulk["sent"], r.bulk["received"], r.bulk["bad"], r.end),
                             (total, total, 0, "eof"), r)
            self.assertEqual(target.wait_end()[1:], (total, 0, "eof"))

    def test_fin_right_behind_eof_loses_nothing(self):
        # A client that ends cleanly (its EOF record) and shuts its socket right behind it,
        # against a target slower than the link: when the FIN arrives the server still holds
        # records it could not open yet (`up` full). They must all reach the target, then a
        # clean end: the FIN is the end of the transport, not a truncation.
        d, addr, keys = self.start_link_daemon()
        total = 4 << 20
        target = self.start_server(harness.PatternServer(total, read_chunk=4096, pace=0.0005))
        r = linkprobe(keys["k1"], addr, "--connect", "%s:%d" % target.addr, "--bulk", total,
                      "--fin", "--wait", 20)
        self.assertEqual(r.rep, 0, r)
        self.assertEqual(target.wait_end(timeout=60)[1:], (total, 0, "eof"))
        self.assertEqual((r.bulk["sent"], r.bulk["received"], r.bulk["bad"], r.end),
                         (total, total, 0, "eof"), r)

    def fault_case(self, addr, key, label, args, want_got, pipelined=False):
        """One linkprobe run that breaks the record stream (after --echo ECHO unless pipelined):
        asserts the link closes at once (no EOF record, no timeout) and the target received one
        of want_got, then a reset (want_got None: the target was never connected to)."""
        target = self.start_server(harness.RecordServer())
        echo = [] if pipelined else ["--echo", ECHO]
        r = linkprobe(key, addr, "--bind", "127.0.0.2", "--connect", "%s:%d" % target.addr,
                      "--wait", 8, *(echo + list(args)))
        harness.log("%-36s link: %s, after %.2f s" % (label, r.end, r.elapsed))
        self.assertTrue(r.first.startswith("reply "), r)
        self.assertIn(r.end, ("closed", "tcpreset"), "%s: the link must close at once: %r"
                      % (label, r))
        self.assertLess(r.elapsed, 5.0, "%s: closed late: %r" % (label, r))
        if want_got is None:
            self.assertIsNone(r.rep, "%s: a broken CONNECT got a reply: %r" % (label, r))
            self.assertTrue(target.accepted.empty(), "%s: the target was connected to" % label)
            return
        self.assertEqual(r.rep, 0, r)
        peer, got, how = target.wait_end()
        harness.log("%-36s target: %d bytes, %s" % (label, len(got), how))
        self.assertIn(got, want_got, "%s: the target received %r" % (label, got))
        self.assertEqual(how, "reset", "%s: the target must see a reset, not a clean end" % label)
        self.assertEqual(target.accepted.qsize(), 1, "%s: one connection to the target" % label)

    def test_tampered_records_close_the_link(self):
        d, addr, keys = self.start_link_daemon()
        key = keys["k1"]
        tail = CONNECT_REC + data_rec(len(ECHO))        # where the records after --echo start
        eof_at = tail + data_rec(len(EVIL))
        cases = [
            ("CONNECT header", 5, True, None),
            ("CONNECT body", 18 + 40, True, None),
            ("CONNECT tag", CONNECT_REC - 1, True, None),
            ("DATA header", tail + 1, False, (ECHO.encode(),)),
            ("DATA body", tail + 18 + 3 + 2, False, (ECHO.encode(),)),
            ("DATA tag", eof_at - 1, False, (ECHO.encode(),)),
            # The DATA before it was verified: it may reach the target; the end is a reset.
            ("EOF header", eof_at + 0, False, (ECHO.encode(), (ECHO + EVIL).encode())),
            ("EOF tag", eof_at + EOF_REC - 1, False, (ECHO.encode(), (ECHO + EVIL).encode())),
        ]
        for label, n, pipelined, want in cases:
            with self.subTest(label):
                self.fault_case(addr, key, "tampered " + label,
                                ["--send", EVIL, "--tamper", n], want, pipelined)
        # Control: the same stream untouched ends cleanly with everything delivered.
        target = self.start_server(harness.RecordServer())
        r = linkprobe(key, addr, "--connect", "%s:%d" % target.addr, "--echo", ECHO,
                      "--send", EVIL, "--wait", 8)
        self.assertEqual((r.rep, r.data, r.end), (0, (ECHO + EVIL).encode(), "eof"), r)
        self.assertEqual(target.wait_end()[1:], ((ECHO + EVIL).encode(), "eof"))

    def test_reordered_truncated_and_second_connect_close_the_link(self):
        d, addr, keys = self.start_link_daemon()
        key = keys["k1"]
        echo_only = (ECHO.encode(),)
        with self.subTest("reordered"):
            self.fault_case(addr, key, "EOF before DATA", ["--send", EVIL, "--reorder"], echo_only)
        with self.subTest("second CONNECT"):
            # After the --echo DATA (verified, at the target): CONNECT again, then DATA and EOF.
            self.fault_case(addr, key, "second CONNECT", ["--second-connect", "--send", EVIL],
                            echo_only)
        dr = data_rec(len(EVIL))
        for k, want in [(0, echo_only),                          # records end without EOF
                        (10, echo_only),                         # inside DATA's header
                        (18 + 5, echo_only),                     # inside DATA's body
                        (dr - 1, echo_only),                     # one byte short
                        (dr, (ECHO.encode(), (ECHO + EVIL).encode())),   # no EOF after DATA
                        (dr + 20, (ECHO.encode(), (ECHO + EVIL).encode()))]:  # EOF cut
            with self.subTest("truncated at %d" % k):
                self.fault_case(addr, key, "TCP close at tail byte %d" % k,
                                ["--send", EVIL, "--truncate", k], want)


if __name__ == "__main__":
    harness.main()
