"""Shared harness for shroud's end-to-end tests (Python stdlib only).

What is here, and what each piece guarantees:
- main(): the runner every tests/e2e/test_*.py calls. `--binary PATH` is required. It runs the file's
  unittest cases, prints the daemon logs of any failed test, and ends with the line `N passed, N failed`;
  the exit status is 0 only if nothing failed. A watchdog kills every daemon we started (by PID) and exits
  non-zero if a file overruns its time budget, so a hang never outlives CTest's timeout silently.
- Daemon: `shroud serve` in its own temporary directory with its own database; readiness is the one
  banner line on stdout (bounded wait, never a sleep); stderr goes to a log file; stop() sends SIGTERM and
  asserts exit code 0 within the grace period (SIGKILL by PID only as a last resort, and that is a failure).
- cli()/add_user(): the `shroud user ...` commands against a given database.
- Targets on loopback: an echo server that first reports the source address it saw (`SRC ip port\\n`)
  then echoes and closes its side after EOF; a sink that answers the SHA-256 of what it received; a
  source that sends deterministic bytes; an HTTP server with a known body.
- A raw SOCKS5 client: byte builders for greeting / RFC 1929 credentials / request, reply readers that
  read exactly the bytes of one message, and helpers that read exactly n bytes with a deadline.
- The egress pool (issue 3): pool_cli()/pool_add()/pool_list() run `shroud pool ...`; db_query()/db_dump() read
  a database read-only (usage counters); egress_attempt() is one login + CONNECT that reports where it
  ended (method, auth status, REP, or the source address the echo target saw); egress_source() asserts
  success and returns that source; run_parallel() spreads many attempts over a few threads;
  skip_file() ends a file that cannot run here as skipped.
- The encrypted link (issue 4): the serve banner's `link on ADDR...` part (Daemon.link_addrs,
  Daemon.link_addr(); `--listen none` gives no plain listener); link_add() runs `shroud link add`
  and returns the access key; parse_access_key()/format_access_key() read and write access keys
  (check included) so a test can point one at another port or break one of its keys; LinkClient
  is one `shroud link` process started with the key on stdin (or in a 0600 file), ready when its
  `shroud link: listening on ...` line arrives, stopped like a Daemon; link_client_fail() runs one
  that must exit, and reports its exit code, stderr and how long it took.
- The link from outside: linkprobe() runs tests/tools/linkprobe (built beside the binary: a client
  that can set its clock off, replay, bind a source, and break records on purpose) and parses what
  it printed into a ProbeRun; write_secret() writes a 0600 key file; link_revoke(); RecordServer is
  a target that records each connection's bytes and whether it ended with a FIN or a reset;
  PatternServer is the bulk target of linkprobe --bulk.
Only loopback addresses are ever connected to. Pool entries outside loopback (documentation ranges,
192.0.2.0/24, 2001:db8::/32) appear only as CLI arguments, as an address whose bind must fail, or as
local addresses inside a network namespace a test creates.
"""
import argparse
import base64
import concurrent.futures
import hashlib
import http.server
import ipaddress
import json
import os
import queue
import re
import resource
import select
import shutil
import signal
import socket
import socketserver
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import urllib.request

BINARY = None            # set by main() from --binary
BANNER_TIMEOUT = 20.0    # seconds to wait for the readiness line
CLI_TIMEOUT = 60.0       # seconds any one CLI command may take
FILE_BUDGET = 240.0      # watchdog for a whole test file (CTest kills at 300 s)
IO_TIMEOUT = 10.0        # default bound for one socket read
DEFAULT_GRACE = 10.0     # the daemon's documented default --grace

_ROOT_TMP = None         # per-file temporary root, removed when everything passed
_DAEMONS = []            # every Daemon ever started by this process, in order
_DAEMONS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# small utilities


def utc_now():
    """Wall-clock time in the daemon's log format, to line test events up with its log."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def spawn_logged(owner, cmd, stdin):
    """Start cmd for a Daemon or LinkClient `owner` (its log_path, workdir, env): the command line
    then its stderr go to the log, stdout is a pipe for the readiness line; owner.proc and
    owner._log_file are set, and owner is registered for the kill at exit."""
    owner._log_file = open(owner.log_path, "ab")
    owner._log_file.write(("$ %s\n" % " ".join(cmd)).encode())
    owner._log_file.flush()
    owner.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=owner._log_file,
                                  cwd=owner.workdir, env=clean_env(owner.env))
    with _DAEMONS_LOCK:
        _DAEMONS.append(owner)


def log(msg):
    """Progress/diagnostic line on stdout (kept in CTest's output), with a UTC timestamp."""
    sys.stdout.write("    # %s %s\n" % (utc_now()[11:], msg))
    sys.stdout.flush()


def deadline_loop(timeout, step=0.05):
    """Yield elapsed seconds until `timeout` passes; sleeps `step` between iterations.
    Used only for bounded polling of a condition that has no event to wait on."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            return
        yield elapsed
        time.sleep(step)


def tmp_root():
    global _ROOT_TMP
    if _ROOT_TMP is None:
        name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
        _ROOT_TMP = tempfile.mkdtemp(prefix="shroud-e2e-%s-" % name)
    return _ROOT_TMP


def new_workdir(tag="t"):
    return tempfile.mkdtemp(prefix=tag + "-", dir=tmp_root())


def clean_env(extra=None):
    """The environment for child processes: no proxy variables (curl honours NO_PROXY even for
    --socks5), no SHROUD_DB unless asked, sanitizer reports with stack traces."""
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy") \
                or k == "SHROUD_DB":
            del env[k]
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def free_port(host="127.0.0.1"):
    """A loopback port nothing listens on (bound, noted, closed): a connect there is refused."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_stat_cpu(pid):
    """utime + stime of a whole process (all threads), in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15 (proc(5)).
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_fd_targets(pid):
    """What each open descriptor of a process points at, from /proc/PID/fd."""
    d = "/proc/%d/fd" % pid
    out = []
    for name in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, name)))
        except OSError:
            pass  # closed meanwhile
    return out


def proc_relay_pipes(pid):
    """Pipes whose two ends the process holds: the relay's splice pipes, in use or kept in its
    workers' pools (socks/pipes.h). A pipe to a parent (stdout) has one end only."""
    targets = [t for t in proc_fd_targets(pid) if t.startswith("pipe:")]
    return sum(1 for t in set(targets) if targets.count(t) == 2)


def proc_fd_count(pid):
    """Open descriptors of a process, the relay's pipes left out: each worker keeps up to
    PIPES_KEEP empty ones for the next transfer, so their number says nothing about leaks
    (Daemon.relay_pipes bounds them separately)."""
    return len(proc_fd_targets(pid)) - 2 * proc_relay_pipes(pid)


def proc_rss_kib(pid):
    """VmRSS of a process in KiB, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


# --------------------------------------------------------------------------------------------
# the daemon


def parse_hostport(text):
    """'127.0.0.1:41235' or '[::1]:41236' -> (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text)
    if m is None:
        m = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):(\d+)", text)
    if m is None:
        raise AssertionError("cannot parse a listening address from %r" % text)
    host, port = m.group(1), int(m.group(2))
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise AssertionError("bad port in %r" % text)
    return host, port


def parse_banner(line):
    """Parse the readiness line. Returns dict(listen=[(host, port)...], link=[(host, port)...],
    fields={key: value}). The addresses are the text between 'listening on ' and the first ';'
    ('none' with `--listen none`); the link listeners are the field `link on ADDR...`."""
    prefix = "shroud: listening on "
    if not line.startswith(prefix) or ";" not in line:
        raise AssertionError("readiness line does not match the contract: %r" % line)
    rest = line[len(prefix):]
    addrs_text, tail = rest.split(";", 1)
    listen = [] if addrs_text.strip() == "none" else [parse_hostport(a) for a in addrs_text.split()]
    fields = {}
    for part in tail.split(";"):
        part = part.strip()
        if part:
            key, _, value = part.partition(" ")
            fields[key] = value
    link = []
    if "link" in fields:
        if not fields["link"].startswith("on "):
            raise AssertionError("the banner's link field is not 'link on ADDR...': %r" % line)
        link = [parse_hostport(a) for a in fields["link"][3:].split()]
        if not link:
            raise AssertionError("no link address in %r" % line)
    if not listen and not link:
        raise AssertionError("no listening address in %r" % line)
    return {"listen": listen, "link": link, "fields": fields, "line": line}


class DaemonError(AssertionError):
    pass


class Daemon:
    """One `shroud serve` process. Use start(); stop() asserts a clean exit."""

    def __init__(self, workdir=None, db=None, listen=("127.0.0.1:0",), args=(), env=None,
                 log_level="debug"):
        self.workdir = workdir or new_workdir("daemon")
        self.db = db or os.path.join(self.workdir, "shroud.db")
        self.listen_spec = list(listen)
        self.args = list(args)
        self.env = env
        self.log_level = log_level
        self.log_path = os.path.join(self.workdir, "serve.log")
        self.proc = None
        self.banner = None
        self.addrs = []
        self.link_addrs = []
        self.extra_stdout = b""
        self._stdout_thread = None
        self.exit_code = None
        self.signalled = False
        self.grace = DEFAULT_GRACE
        if "--grace" in self.args:
            self.grace = float(self.args[self.args.index("--grace") + 1])

    # -- lifecycle

    def command(self):
        cmd = [BINARY, "serve", "--db", self.db]
        for spec in self.listen_spec:
            cmd += ["--listen", spec]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd + self.args

    def start(self):
        spawn_logged(self, self.command(), subprocess.DEVNULL)
        line, rest = self._read_banner()
        self.extra_stdout = rest
        info = parse_banner(line)
        self.banner = info["line"]
        self.addrs = info["listen"]
        self.link_addrs = info["link"]
        self.fields = info["fields"]
        self._stdout_thread = threading.Thread(target=self._drain_stdout, daemon=True)
        self._stdout_thread.start()
        return self

    def _read_banner(self, timeout=None):
        fd = self.proc.stdout.fileno()
        buf = b""
        timeout = timeout or BANNER_TIMEOUT
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail_start("no readiness line within %.0f s (stdout so far: %r)"
                                 % (timeout, buf))
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                try:
                    rc = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    rc = "still running"
                self._fail_start("stdout closed before the readiness line (exit %s, stdout %r)"
                                 % (rc, buf))
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        return line.decode("utf-8", "replace"), rest

    def _fail_start(self, why):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.exit_code = self.proc.returncode
        raise DaemonError("%s\n--- %s ---\n%s" % (why, self.log_path, self.log_tail()))

    def _drain_stdout(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.extra_stdout += chunk

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        """Signal the daemon; after this, stop() accepts that it may already have exited."""
        if self.running():
            self.signalled = signal.Signals(sig).name
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit; returns (exit code or None on timeout, elapsed)."""
        start = time.monotonic()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - start

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Send `sig` and assert the daemon exits 0 within its grace period (+5 s for ASan's exit
        work) and wrote nothing more to stdout than the banner. Idempotent."""
        if self.proc is None:
            return
        if self.exit_code is not None:
            return
        if timeout is None:
            timeout = self.grace + 5.0
        problems = []
        if self.proc.poll() is not None:
            if not self.signalled:
                problems.append("the daemon had already exited with %s before it was asked to stop"
                                % self.proc.returncode)
        else:
            os.kill(self.proc.pid, sig)
            self.signalled = signal.Signals(sig).name
        rc, elapsed = self.wait_exit(timeout)
        if rc is None:
            problems.append("did not exit within %.1f s of %s; killed with SIGKILL"
                            % (timeout, signal.Signals(sig).name))
            self.proc.kill()
            rc = self.proc.wait()
        self.exit_code = rc
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=5)
        self.proc.stdout.close()
        self._log_file.close()
        if rc != 0 and not problems:
            problems.append("exit code %s after %s (want 0%s)" % (
                rc, self.signalled, "; negative = killed by that signal" if rc < 0 else ""))
        if self.extra_stdout.strip():
            problems.append("stdout after the banner must be empty, got %r" % self.extra_stdout[:500])
        if problems:
            raise DaemonError("; ".join(problems) + "\n--- %s ---\n%s"
                              % (self.log_path, self.log_tail()))
        return rc, elapsed

    def kill(self):
        """Last resort, by PID."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    # -- observation

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self, start=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return "(cannot read log: %s)" % e

    def log_tail(self, start=0, lines=150):
        text = self.log_text(start).splitlines()
        if len(text) > lines:
            return "\n".join(["... (%d lines skipped)" % (len(text) - lines)] + text[-lines:])
        return "\n".join(text)

    def addr(self, family=socket.AF_INET):
        """The first bound listening address of a family: (host, port)."""
        for host, port in self.addrs:
            if (":" in host) == (family == socket.AF_INET6):
                return host, port
        raise AssertionError("no %s listener in %r" % (family.name, self.addrs))

    def link_addr(self, family=socket.AF_INET):
        """The first bound link listener (`--link-listen`) of a family: (host, port)."""
        for host, port in self.link_addrs:
            if (":" in host) == (family == socket.AF_INET6):
                return host, port
        raise AssertionError("no %s link listener in %r" % (family.name, self.link_addrs))

    def rss_kib(self):
        return proc_rss_kib(self.proc.pid)

    def cpu_seconds(self):
        return proc_stat_cpu(self.proc.pid)

    def fd_count(self):
        return proc_fd_count(self.proc.pid)

    def relay_pipes(self):
        return proc_relay_pipes(self.proc.pid)

    def settled_fd_count(self, timeout=5.0):
        """The descriptor count once it stops changing for 0.5 s (bounded)."""
        last, since = self.fd_count(), time.monotonic()
        for _ in deadline_loop(timeout, 0.1):
            n = self.fd_count()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= 0.5:
                break
        return last

    def wait_fds_at_most(self, limit, timeout=5.0):
        """Assert the descriptor count drops to <= limit within timeout (connections released)."""
        n = self.fd_count()
        for _ in deadline_loop(timeout, 0.05):
            n = self.fd_count()
            if n <= limit:
                return n
        raise AssertionError("daemon still holds %d descriptors after %.1f s (baseline %d): %s"
                             % (n, timeout, limit, self.fd_listing()))

    def fd_listing(self):
        out = []
        d = "/proc/%d/fd" % self.proc.pid
        for name in sorted(os.listdir(d), key=int):
            try:
                out.append("%s->%s" % (name, os.readlink(os.path.join(d, name))))
            except OSError:
                pass
        return " ".join(out)


# --------------------------------------------------------------------------------------------
# the CLI


class CliResult:
    def __init__(self, args, rc, out, err):
        self.args, self.rc, self.out, self.err = args, rc, out, err

    def __repr__(self):
        return "shroud %s -> exit %s\n  stdout: %r\n  stderr: %r" % (
            " ".join(self.args), self.rc, self.out[:2000], self.err[:2000])


def cli(*args, input=None, env=None, cwd=None, timeout=CLI_TIMEOUT):
    """Run `shroud ARGS...` and return a CliResult (never raises on a non-zero exit)."""
    args = [str(a) for a in args]
    p = subprocess.run([BINARY] + args, input=(input.encode() if isinstance(input, str) else input),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=cwd or tmp_root(), env=clean_env(env), timeout=timeout)
    return CliResult(args, p.returncode, p.stdout.decode("utf-8", "replace"),
                     p.stderr.decode("utf-8", "replace"))


def add_user(db, name, password):
    """`shroud user add NAME --db DB --password-stdin`; asserts exit 0."""
    r = cli("user", "add", name, "--db", db, "--password-stdin", input=password + "\n")
    if r.rc != 0:
        raise AssertionError("user add failed: %r" % r)
    return r


def list_users(db):
    """Names from `shroud user list` (first column of each non-empty line); asserts exit 0."""
    r = cli("user", "list", "--db", db)
    if r.rc != 0:
        raise AssertionError("user list failed: %r" % r)
    return [line.split()[0] for line in r.out.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# loopback targets


class TcpServer:
    """A threaded TCP server on one loopback address: one thread per connection running
    handler(conn, peer, server). Peers seen are queued in `self.accepted`."""

    def __init__(self, handler, host="127.0.0.1", port=0, backlog=1024, conn_timeout=120.0):
        self.handler = handler
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.host, self.port = self.sock.getsockname()[:2]
        self.conn_timeout = conn_timeout
        self.accepted = queue.Queue()
        self.done = queue.Queue()    # peers whose handler finished normally (saw the peer's EOF)
        self.errors = []
        self.conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def addr(self):
        return self.host, self.port

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(self.conn_timeout)
            with self._lock:
                self.conns.append(conn)
            self.accepted.put(peer[:2])
            threading.Thread(target=self._run, args=(conn, peer[:2]), daemon=True).start()

    def _run(self, conn, peer):
        try:
            self.handler(conn, peer, self)
            self.done.put(peer)
        except Exception as e:  # recorded; a test that cares asserts on self.errors
            self.errors.append("%s: %r" % (peer, e))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait_done(self, port, timeout=10.0):
        """Wait until the handler for the connection from source port `port` finished normally
        (for the echo server: it saw EOF and closed its side). Other peers are skipped."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the target never finished the connection from port %d "
                                     "(finished: %r; errors: %r)" % (port, skipped, self.errors))
            try:
                peer = self.done.get(timeout=left)
            except queue.Empty:
                continue
            if peer[1] == port:
                return peer
            skipped.append(peer)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        with self._lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def _echo_handler(conn, peer, server):
    # First line: the source address this target saw (nginx-tests stream_proxy_bind.t idea).
    conn.sendall(("SRC %s %d\n" % (peer[0], peer[1])).encode())
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    # Everything was echoed and the client's FIN arrived: send ours.
    conn.shutdown(socket.SHUT_WR)


class EchoServer(TcpServer):
    """Sends `SRC <ip> <port>\\n` (the peer it saw), echoes everything, closes its side after EOF.
    Peers whose EOF was seen are queued in `self.done`."""

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__(_echo_handler, host, port)


def _sink_handler(conn, peer, server):
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        h.update(data)
        n += len(data)
    server.received[peer] = n
    conn.sendall(h.digest())
    conn.shutdown(socket.SHUT_WR)


class SinkServer(TcpServer):
    """Reads to EOF, then answers the 32-byte SHA-256 of everything it read and closes."""

    def __init__(self, host="127.0.0.1"):
        self.received = {}
        super().__init__(_sink_handler, host)


_PATTERN = None


def pattern_block():
    global _PATTERN
    if _PATTERN is None:
        _PATTERN = memoryview(hashlib.shake_256(b"shroud-e2e-pattern").digest((1 << 20) + 8192))
    return _PATTERN


def pattern_chunks(total, chunk=1 << 20):
    """Deterministic pseudo-random bytes (the same stream whatever `chunk` is), as memoryview
    slices of at most `chunk` bytes. Each 1 MiB unit of the stream starts at a different offset of
    a fixed block, so a dropped, duplicated or reordered unit changes the digest."""
    block = pattern_block()
    unit = 1 << 20
    i = 0
    done = 0
    while done < total:
        n = min(unit, total - done)
        off = (i * 4099) % 8192
        u = block[off:off + n]
        for k in range(0, n, chunk):
            yield u[k:k + chunk]
        done += n
        i += 1


def pattern_digest(total):
    h = hashlib.sha256()
    for c in pattern_chunks(total):
        h.update(c)
    return h.digest()


def upload_checked(s, sink, total, label):
    """Send `total` pattern bytes on s (a tunnel to a SinkServer), half-close, and check what the
    sink got: exactly one connection of `total` bytes whose SHA-256 (sent back by the sink) is ours,
    then EOF. Logs the rate."""
    h = hashlib.sha256()
    t0 = time.monotonic()
    for chunk in pattern_chunks(total):
        s.sendall(chunk)
        h.update(chunk)
    s.shutdown(socket.SHUT_WR)
    digest = recv_exact(s, 32, timeout=60, what="digest bytes")
    took = time.monotonic() - t0
    log("%d MB up %s in %.1f s (%.0f MB/s)" % (total // 10**6, label, took, total / 1e6 / took))
    if list(sink.received.values()) != [total]:
        raise AssertionError("the sink received %r, not one connection of %d bytes"
                             % (list(sink.received.values()), total))
    if digest != h.digest():
        raise AssertionError("SHA-256 of what the sink received differs")
    if recv_all(s, 10) != b"":
        raise AssertionError("bytes after the sink's digest")


def download_checked(s, total, label, limit=120.0):
    """Read s to EOF (a tunnel from a SourceServer of `total` bytes) and check the count and the
    SHA-256 of the pattern, within `limit` seconds. Logs the rate."""
    h = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    s.settimeout(60)
    buf = bytearray(1 << 20)
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        h.update(memoryview(buf)[:k])
        n += k
        if time.monotonic() - t0 > limit:
            raise AssertionError("download too slow: %d of %d bytes in %.0f s" % (n, total, limit))
    took = time.monotonic() - t0
    log("%d MB down %s in %.1f s (%.0f MB/s)" % (total // 10**6, label, took, total / 1e6 / took))
    if n != total:
        raise AssertionError("downloaded %d bytes, not %d" % (n, total))
    if h.digest() != pattern_digest(total):
        raise AssertionError("SHA-256 of the download differs from the source's")


def _source_handler(conn, peer, server):
    if not server.go.wait(60):
        raise AssertionError("source was never told to start")
    if server.sndbuf:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server.sndbuf)
    for c in pattern_chunks(server.total, 64 * 1024):
        conn.sendall(c)
        server.progress += len(c)
    conn.shutdown(socket.SHUT_WR)
    # Hold the socket until the peer closes, so nothing we sent is reset away.
    while conn.recv(65536):
        pass


class SourceServer(TcpServer):
    """Sends `total` bytes of pattern_chunks(), then closes its side and waits for the peer's EOF.
    `progress` counts bytes handed to the kernel so far (it stalls when nobody downstream reads).
    Sending starts when `go` is set (set by default; pass start=False to hold it)."""

    def __init__(self, total, host="127.0.0.1", sndbuf=None, start=True):
        self.total = total
        self.go = threading.Event()
        if start:
            self.go.set()
        self.sndbuf = sndbuf
        self.progress = 0
        super().__init__(_source_handler, host)


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind does a reverse lookup of the host (socket.getfqdn): skip it,
        # there must be no DNS traffic from the tests themselves.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


class HttpServer:
    """http.server on one loopback address serving `body` for GET /. Records the client peers."""

    def __init__(self, host="127.0.0.1", port=0, body=None):
        self.body = body if body is not None else (
            b"shroud-e2e-body " + os.urandom(8).hex().encode() + b"\n") * 64
        self.peers = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.peers.append(self.client_address[:2])
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, fmt, *args):
                pass

        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        cls = type("HTTPServer_%s" % fam.name, (_QuietHTTPServer,), {"address_family": fam})
        self.server = cls((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    @property
    def addr(self):
        return self.host, self.port

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def same_port_pair(factory, hosts=("127.0.0.1", "::1"), attempts=30):
    """Start factory(host, port) on every host with one common port (so a name that resolves to
    either family reaches the same service). Returns the list of servers."""
    last = None
    for _ in range(attempts):
        first = factory(hosts[0], 0)
        servers = [first]
        try:
            for h in hosts[1:]:
                servers.append(factory(h, first.port))
            return servers
        except OSError as e:
            last = e
            for s in servers:
                s.close()
    raise AssertionError("could not bind %r on one common port: %r" % (hosts, last))


# --------------------------------------------------------------------------------------------
# raw SOCKS5 client (RFC 1928, RFC 1929)

REPLY_NAMES = {
    0x00: "succeeded", 0x01: "general failure", 0x02: "not allowed by ruleset",
    0x03: "network unreachable", 0x04: "host unreachable", 0x05: "connection refused",
    0x06: "TTL expired", 0x07: "command not supported", 0x08: "address type not supported",
}


def rep_name(rep):
    return "0x%02x (%s)" % (rep, REPLY_NAMES.get(rep, "unassigned"))


def greeting(*methods):
    """RFC 1928 §3: VER=05 NMETHODS METHODS..."""
    return bytes([5, len(methods)]) + bytes(methods)


def userpass(user, password):
    """RFC 1929 §2: VER=01 ULEN UNAME PLEN PASSWD."""
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return bytes([1, len(u)]) + u + bytes([len(p)]) + p


def encode_target(host, port):
    """RFC 1928 §4: ATYP DST.ADDR DST.PORT; IP literals as ATYP 01/04, anything else a domain (03)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode()
        return bytes([3, len(name)]) + name + struct.pack("!H", port)
    if ip.version == 4:
        return b"\x01" + ip.packed + struct.pack("!H", port)
    return b"\x04" + ip.packed + struct.pack("!H", port)


def request(cmd, host, port):
    """RFC 1928 §4: VER=05 CMD RSV=00 ATYP DST.ADDR DST.PORT."""
    return bytes([5, cmd, 0]) + encode_target(host, port)


def connect_request(host, port):
    return request(1, host, port)


def tcp_connect(addr, timeout=IO_TIMEOUT, source=None, nodelay=True, rcvbuf=None):
    """A TCP connection to addr (host, port) with TCP_NODELAY (and SO_RCVBUF set before connect)."""
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        s.bind((source, 0))
    try:
        s.connect(addr[:2])
    except BaseException:
        s.close()
        raise
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class ShortRead(AssertionError):
    pass


def recv_exact(sock, n, timeout=IO_TIMEOUT, what="bytes"):
    """Exactly n bytes, or ShortRead (EOF/reset; includes what arrived) / socket.timeout."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out after %.1f s waiting for %d %s (got %r)"
                                 % (timeout, n, what, bytes(buf)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            continue
        except ConnectionResetError:
            raise ShortRead("connection reset after %d of %d %s (got %r)" % (len(buf), n, what, bytes(buf)))
        if not chunk:
            raise ShortRead("EOF after %d of %d %s (got %r)" % (len(buf), n, what, bytes(buf)))
        buf += chunk
    return bytes(buf)


def recv_line(sock, timeout=IO_TIMEOUT, limit=256):
    """One line ending in \\n, read byte by byte so nothing after it is consumed."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        if len(buf) > limit:
            raise AssertionError("line longer than %d bytes: %r" % (limit, bytes(buf)))
        buf += recv_exact(sock, 1, max(0.001, deadline - time.monotonic()), "line bytes")
    return bytes(buf)


def recv_all(sock, timeout=IO_TIMEOUT):
    """Everything until EOF (bounded by timeout)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no EOF within %.1f s (%d bytes read)" % (timeout, len(buf)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            return bytes(buf)
        buf += chunk


def wait_closed(sock, timeout):
    """Wait until the peer closes: returns ('eof'|'reset', elapsed). Raises AssertionError if data
    arrives, socket.timeout if still open after `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("connection still open after %.1f s" % timeout)
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return "reset", time.monotonic() - start
        if not data:
            return "eof", time.monotonic() - start
        raise AssertionError("expected the connection to close, got data %r" % data)


def assert_no_data(sock, seconds):
    """Assert nothing at all (no byte, no EOF) arrives on sock for `seconds`."""
    r, _, _ = select.select([sock], [], [], seconds)
    if r:
        try:
            sock.settimeout(0.5)
            data = sock.recv(4096)
        except OSError as e:
            data = repr(e)
        raise AssertionError("expected silence for %.1f s, got %r" % (seconds, data or b"EOF"))


def read_method(sock, timeout=IO_TIMEOUT):
    """RFC 1928 §3 method selection: VER METHOD. Returns METHOD (asserts VER 5)."""
    b = recv_exact(sock, 2, timeout, "method-selection bytes")
    if b[0] != 5:
        raise AssertionError("method selection VER %#04x, want 0x05 (%r)" % (b[0], b))
    return b[1]


def read_auth_status(sock, timeout=IO_TIMEOUT):
    """RFC 1929 §2 status: VER=01 STATUS. Returns STATUS (asserts VER 1)."""
    b = recv_exact(sock, 2, timeout, "auth-status bytes")
    if b[0] != 1:
        raise AssertionError("auth status VER %#04x, want 0x01 (%r)" % (b[0], b))
    return b[1]


class Reply:
    def __init__(self, raw, rep, atyp, host, port):
        self.raw, self.rep, self.atyp, self.host, self.port = raw, rep, atyp, host, port

    def __repr__(self):
        return "Reply(%s, BND %s port %s, raw %s)" % (rep_name(self.rep), self.host, self.port,
                                                     self.raw.hex(" "))


def read_reply(sock, timeout=IO_TIMEOUT):
    """RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT, read exactly. Asserts VER 5, RSV 0."""
    deadline = time.monotonic() + timeout
    left = lambda: max(0.001, deadline - time.monotonic())
    head = recv_exact(sock, 4, timeout, "reply bytes")
    ver, rep, rsv, atyp = head
    if ver != 5:
        raise AssertionError("reply VER %#04x, want 0x05 (%r)" % (ver, head))
    if rsv != 0:
        raise AssertionError("reply RSV %#04x, want 0x00 (%r)" % (rsv, head))
    if atyp == 1:
        a = recv_exact(sock, 4, left(), "BND.ADDR bytes")
        host = str(ipaddress.IPv4Address(a))
    elif atyp == 4:
        a = recv_exact(sock, 16, left(), "BND.ADDR bytes")
        host = str(ipaddress.IPv6Address(a))
    elif atyp == 3:
        ln = recv_exact(sock, 1, left(), "BND.ADDR length")
        a = ln + recv_exact(sock, ln[0], left(), "BND.ADDR bytes")
        host = a[1:].decode("latin-1")
    else:
        raise AssertionError("reply ATYP %#04x is not 1, 3 or 4 (%r)" % (atyp, head))
    p = recv_exact(sock, 2, left(), "BND.PORT bytes")
    return Reply(head + a + p, rep, atyp, host, struct.unpack("!H", p)[0])


class SocksFailure(AssertionError):
    def __init__(self, stage, detail, reply=None):
        super().__init__("SOCKS5 %s: %s" % (stage, detail))
        self.stage, self.detail, self.reply = stage, detail, reply


def socks_handshake(sock, host, port, user=None, password=None, cmd=1, timeout=IO_TIMEOUT):
    """Run greeting (+ credentials) + request on an open socket; returns the Reply (any REP).
    Offers only 0x00 without credentials, only 0x02 with them. Raises SocksFailure when the
    server refuses the method or the credentials."""
    if user is None:
        sock.sendall(greeting(0x00))
        want = 0x00
    else:
        sock.sendall(greeting(0x02))
        want = 0x02
    m = read_method(sock, timeout)
    if m != want:
        raise SocksFailure("method", "offered %#04x, server chose %#04x" % (want, m))
    if user is not None:
        sock.sendall(userpass(user, password))
        st = read_auth_status(sock, timeout)
        if st != 0:
            raise SocksFailure("auth", "status %#04x for user %r" % (st, user))
    sock.sendall(request(cmd, host, port))
    return read_reply(sock, timeout)


def socks_open(proxy, host, port, user=None, password=None, timeout=IO_TIMEOUT, source=None,
               rcvbuf=None):
    """Connect to the proxy and CONNECT to (host, port); returns (sock, Reply) on REP 0x00,
    raises SocksFailure otherwise (the socket is closed)."""
    s = tcp_connect(proxy, timeout, source=source, rcvbuf=rcvbuf)
    try:
        r = socks_handshake(s, host, port, user, password, timeout=timeout)
        if r.rep != 0:
            raise SocksFailure("request", "CONNECT %s:%s answered %s" % (host, port, rep_name(r.rep)), r)
    except BaseException:
        s.close()
        raise
    return s, r


def echo_open(proxy, echo_addr, user=None, password=None, timeout=IO_TIMEOUT, target_host=None):
    """CONNECT through the proxy to an EchoServer and read its SRC line.
    Returns (sock, reply, (src_ip, src_port))."""
    host = target_host or echo_addr[0]
    s, r = socks_open(proxy, host, echo_addr[1], user, password, timeout)
    try:
        line = recv_line(s, timeout)
        m = re.fullmatch(rb"SRC (\S+) (\d+)\n", line)
        if m is None:
            raise AssertionError("echo target's first line is not 'SRC ip port': %r" % line)
    except BaseException:
        s.close()
        raise
    return s, r, (m.group(1).decode(), int(m.group(2)))


def echo_check(sock, payload=None, timeout=IO_TIMEOUT):
    """Send payload through an open echo relay and assert it comes back byte-for-byte."""
    if payload is None:
        payload = os.urandom(64)
    sock.sendall(payload)
    got = recv_exact(sock, len(payload), timeout, "echoed bytes")
    if got != payload:
        raise AssertionError("echo mismatch: sent %r, got %r" % (payload[:64], got[:64]))


def check_serves(proxy, echo, user=None, password=None, timeout=IO_TIMEOUT):
    """A normal client: CONNECT to the echo target, round-trip 1 KiB, close. Asserts success."""
    s, _, _ = echo_open(proxy, echo.addr, user, password, timeout)
    try:
        echo_check(s, os.urandom(1024), timeout)
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# the egress pool (issue 3)


def pool_cli(db, *args, **kw):
    """`shroud pool ARGS... --db DB`; returns the CliResult (never raises on a non-zero exit)."""
    return cli("pool", *(list(args) + ["--db", db]), **kw)


def pool_add(db, *args):
    """`shroud pool add ARGS... --db DB`; asserts exit 0 and stdout `added N`; returns N."""
    r = pool_cli(db, "add", *args)
    m = re.fullmatch(r"added (\d+)\n?", r.out)
    if r.rc != 0 or m is None:
        raise AssertionError("pool add failed or did not print 'added N': %r" % r)
    return int(m.group(1))


def pool_list(db):
    """`shroud pool list --json --db DB`, parsed; asserts exit 0 and a JSON array."""
    r = pool_cli(db, "list", "--json")
    if r.rc != 0:
        raise AssertionError("pool list --json failed: %r" % r)
    try:
        data = json.loads(r.out)
    except ValueError as e:
        raise AssertionError("pool list --json is not JSON (%s): %r" % (e, r))
    if not isinstance(data, list):
        raise AssertionError("pool list --json is not an array: %r" % r)
    return data


def pool_entries(db):
    """pool_list() as {address: entry}; asserts the addresses are unique."""
    entries = pool_list(db)
    by = {e["address"]: e for e in entries}
    if len(by) != len(entries):
        raise AssertionError("pool list --json repeats an address: %r" % entries)
    return by


def db_query(db, sql, params=()):
    """Run one read-only query (SQLite URI mode=ro) and return the rows as dicts. Only for
    observing what the daemon wrote (usage counters); the tests never write the database."""
    con = sqlite3.connect("file:%s?mode=ro" % urllib.request.pathname2url(db), uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def db_dump(db):
    """The whole database as SQL text (read-only), to assert what it does not contain."""
    con = sqlite3.connect("file:%s?mode=ro" % urllib.request.pathname2url(db), uri=True, timeout=10)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


class Attempt:
    """Where one login + CONNECT through the proxy ended. stage: 'method' (server chose `method`,
    not 0x02), 'auth' (RFC 1929 status `auth` != 0), 'reply' (REP `reply.rep` != 0) or 'ok' (REP 0,
    `src` = (ip, port) the echo target saw, payload echoed, both sides closed cleanly)."""

    def __init__(self, user):
        self.user = user
        self.stage, self.method, self.auth, self.reply, self.src = None, None, None, None, None

    @property
    def ok(self):
        return self.stage == "ok"

    def __repr__(self):
        if self.stage == "method":
            return "Attempt(%r: server chose method %#04x)" % (self.user, self.method)
        if self.stage == "auth":
            return "Attempt(%r: auth status %#04x)" % (self.user, self.auth)
        if self.stage == "reply":
            return "Attempt(%r: %r)" % (self.user, self.reply)
        return "Attempt(%r: ok from %s port %s)" % (self.user, self.src[0], self.src[1])


def egress_attempt(proxy, host, port, user, password, source=None, payload=b"ping\n",
                   timeout=IO_TIMEOUT):
    """Offer only method 0x02, log in as `user` (parameters and all), CONNECT to (host, port) — an
    EchoServer — and, on success, read its SRC line, round-trip `payload`, half-close and wait
    for the target's EOF (so the daemon has finished the connection when this returns). On success
    also asserts that the reply's BND is the source the target saw. Returns an Attempt."""
    a = Attempt(user)
    s = tcp_connect(proxy, timeout, source=source)
    try:
        s.sendall(greeting(0x02))                      # VER=5 NMETHODS=1 [02 username/password]
        a.method = read_method(s, timeout)
        if a.method != 0x02:
            a.stage = "method"
            return a
        s.sendall(userpass(user, password))            # RFC 1929: 01 ULEN UNAME PLEN PASSWD
        a.auth = read_auth_status(s, timeout)
        if a.auth != 0:
            a.stage = "auth"
            return a
        s.sendall(connect_request(host, port))
        a.reply = read_reply(s, timeout)
        if a.reply.rep != 0:
            a.stage = "reply"
            return a
        line = recv_line(s, timeout)
        m = re.fullmatch(rb"SRC (\S+) (\d+)\n", line)
        if m is None:
            raise AssertionError("echo target's first line is not 'SRC ip port': %r" % line)
        a.src = (m.group(1).decode(), int(m.group(2)))
        if (a.reply.host, a.reply.port) != a.src:
            raise AssertionError("%r: BND %s port %s is not the source the target saw (%s port %s)"
                                 % (user, a.reply.host, a.reply.port, a.src[0], a.src[1]))
        if payload:
            echo_check(s, payload, timeout)
        s.shutdown(socket.SHUT_WR)
        rest = recv_all(s, timeout)
        if rest:
            raise AssertionError("%r: unexpected bytes after the echo: %r" % (user, rest[:64]))
        a.stage = "ok"
        return a
    finally:
        s.close()


def egress_source(proxy, echo_addr, user, password, target_host=None, **kw):
    """egress_attempt() to an EchoServer that must succeed; returns the source IP it saw."""
    host = target_host or echo_addr[0]
    a = egress_attempt(proxy, host, echo_addr[1], user, password, **kw)
    if not a.ok:
        raise AssertionError("CONNECT %s:%s as %r failed: %r" % (host, echo_addr[1], user, a))
    return a.src[0]


def run_parallel(fn, items, workers=4):
    """[fn(x) for x in items], spread over `workers` threads; results in the order of items.
    The first exception is re-raised."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items))


def skip_file(reason):
    """End a test file that cannot run on this host: print `skipped: REASON` and the final line
    `0 passed, 0 failed, 1 skipped`, exit 0."""
    print("skipped: %s" % reason)
    print("0 passed, 0 failed, 1 skipped")
    sys.stdout.flush()
    sys.exit(0)


# --------------------------------------------------------------------------------------------
# UDP ASSOCIATE and BIND (issue 6)


class UdpEchoServer:
    """A UDP socket on one loopback address that answers every datagram with
    `SRC <ip> <port>\n` (the source it saw) followed by the datagram itself. Every (peer, payload)
    it received is queued in `seen`."""

    def __init__(self, host="127.0.0.1", port=0):
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.seen = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def addr(self):
        return self.host, self.port

    def _loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
                if not r:
                    continue
                data, peer = self.sock.recvfrom(65535)
            except (OSError, ValueError):
                return
            self.seen.put((peer[:2], data))
            try:
                self.sock.sendto(("SRC %s %d\n" % (peer[0], peer[1])).encode() + data, peer)
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def udp_frame(host, port, data, frag=0):
    """RFC 1928 §7: RSV=0000 FRAG ATYP DST.ADDR DST.PORT DATA (ATYP as encode_target chooses)."""
    return b"\x00\x00" + bytes([frag]) + encode_target(host, port) + data


def parse_udp_frame(d):
    """RFC 1928 §7 header of a datagram from the relay -> (host, port, data). Asserts RSV 0 and
    FRAG 0 (the relay never fragments)."""
    if len(d) < 4 or d[:3] != b"\x00\x00\x00":
        raise AssertionError("datagram from the relay does not start RSV=0000 FRAG=00: %r" % d[:32])
    atyp = d[3]
    if atyp == 1 and len(d) >= 10:
        return str(ipaddress.IPv4Address(d[4:8])), struct.unpack("!H", d[8:10])[0], d[10:]
    if atyp == 4 and len(d) >= 22:
        return str(ipaddress.IPv6Address(d[4:20])), struct.unpack("!H", d[20:22])[0], d[22:]
    if atyp == 3 and len(d) >= 5 and len(d) >= 7 + d[4]:
        n = d[4]
        return d[5:5 + n].decode("latin-1"), struct.unpack("!H", d[5 + n:7 + n])[0], d[7 + n:]
    raise AssertionError("datagram from the relay has a bad header: %r" % d[:32])


class UdpAssociation:
    """One UDP ASSOCIATE through the proxy: the TCP control connection (`ctl`), the reply
    (`reply`, whose BND is the relay), and the client's UDP socket (`sock`), bound to the same
    loopback family as the relay. `expect` is the request's DST.ADDR/DST.PORT."""

    def __init__(self, proxy, user=None, password=None, expect=None, timeout=IO_TIMEOUT,
                 sock=None):
        self.timeout = timeout
        self.ctl = tcp_connect(proxy, timeout)
        try:
            fam = socket.AF_INET6 if ":" in proxy[0] else socket.AF_INET
            if expect is None:
                expect = ("::", 0) if fam == socket.AF_INET6 else ("0.0.0.0", 0)
            self.reply = socks_handshake(self.ctl, expect[0], expect[1], user, password, cmd=3,
                                         timeout=timeout)
            if self.reply.rep != 0:
                raise SocksFailure("request", "UDP ASSOCIATE answered %s" % rep_name(self.reply.rep),
                                   self.reply)
            self.relay = (self.reply.host, self.reply.port)
            if sock is None:
                sock = socket.socket(fam, socket.SOCK_DGRAM)
                sock.bind((proxy[0], 0))
            self.sock = sock
        except BaseException:
            self.ctl.close()
            raise

    def send(self, host, port, data, frag=0):
        self.sock.sendto(udp_frame(host, port, data, frag), self.relay)

    def send_raw(self, datagram):
        self.sock.sendto(datagram, self.relay)

    def recv(self, timeout=None):
        """The next datagram from the relay, parsed: (host, port, data). Asserts it came from the
        relay's address and port; socket.timeout when none arrives in time."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        d, peer = self.sock.recvfrom(65535)
        if peer[:2] != self.relay:
            raise AssertionError("datagram from %r, not from the relay %r" % (peer, self.relay))
        return parse_udp_frame(d)

    def assert_silent(self, seconds):
        """Assert no datagram reaches the client for `seconds`."""
        r, _, _ = select.select([self.sock], [], [], seconds)
        if r:
            d = self.sock.recv(65535)
            raise AssertionError("expected no datagram for %.1f s, got %r" % (seconds, d[:64]))

    def echo(self, host, port, payload=None, timeout=None):
        """Send payload to a UdpEchoServer at (host, port) through the relay and return the source
        (ip, port) it saw. Asserts the reply names the echo's address and carries the payload."""
        if payload is None:
            payload = os.urandom(32)
        self.send(host, port, payload)
        rhost, rport, data = self.recv(timeout)
        m = re.fullmatch(rb"SRC (\S+) (\d+)\n(.*)", data, re.S)
        if m is None or m.group(3) != payload:
            raise AssertionError("echo answer is not 'SRC ip port' + the payload: %r" % data[:128])
        if rport != port:
            raise AssertionError("the relay's header names port %d, the echo is on %d" % (rport, port))
        return m.group(1).decode(), int(m.group(2))

    def close(self):
        try:
            self.sock.close()
        finally:
            self.ctl.close()


def bind_request(proxy, host, port, user=None, password=None, timeout=IO_TIMEOUT):
    """Connect to the proxy and send BIND (CMD 02) for the expected peer (host, port); returns
    (ctl, first Reply), any REP (the socket is left open for the caller to close)."""
    s = tcp_connect(proxy, timeout)
    try:
        r = socks_handshake(s, host, port, user, password, cmd=2, timeout=timeout)
    except BaseException:
        s.close()
        raise
    return s, r


# --------------------------------------------------------------------------------------------
# the encrypted link (issue 4): access keys and the client, `shroud link`

LINK_READY_PREFIX = "shroud link: listening on "
LINK_READY_TIMEOUT = 25.0   # the client's probe handshake may take LINK_REPLY_TIMEOUT (10 s)

_ACCESS_RE = re.compile(r"shroud-link1:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([1-9][0-9]{0,4})/"
                        r"([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})(?:\.([A-Za-z0-9_-]{43}))?"
                        r"\.([A-Za-z0-9_-]{8})")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def format_access_key(host, port, server_public, psk, client_private=None):
    """An access key line (crypto/access.h): shroud-link1:HOST:PORT/SERVER_KEY.PSK[.CLIENT].CHECK,
    CHECK = base64url of the first 6 bytes of BLAKE2b-256 over everything before its '.'."""
    h = "[%s]" % host if ":" in host else host
    body = "shroud-link1:%s:%d/%s.%s" % (h, port, _b64url(server_public), _b64url(psk))
    if client_private is not None:
        body += "." + _b64url(client_private)
    return body + "." + _b64url(hashlib.blake2b(body.encode(), digest_size=32).digest()[:6])


def parse_access_key(line):
    """-> dict(host, port, server_public, psk, client_private or None); asserts format and check."""
    m = _ACCESS_RE.fullmatch(line.strip())
    if m is None:
        raise AssertionError("not an access key: %r" % line)
    host = m.group(1)[1:-1] if m.group(1).startswith("[") else m.group(1)
    key = {"host": host, "port": int(m.group(2)), "server_public": _unb64url(m.group(3)),
           "psk": _unb64url(m.group(4)),
           "client_private": _unb64url(m.group(5)) if m.group(5) else None}
    if format_access_key(key["host"], key["port"], key["server_public"], key["psk"],
                         key["client_private"]) != line.strip():
        raise AssertionError("access key check does not match: %r" % line)
    return key


def access_key_with(line, **changes):
    """The access key `line` with fields replaced (host, port, server_public, psk,
    client_private), its check recomputed: e.g. pointed at the port a daemon actually bound."""
    key = parse_access_key(line)
    key.update(changes)
    return format_access_key(key["host"], key["port"], key["server_public"], key["psk"],
                             key["client_private"])


def link_add(db, name, user, server="127.0.0.1:1"):
    """`shroud link add NAME --user USER --server SERVER --db DB`: asserts exit 0 and exactly one
    line on stdout, an access key; returns it. (The server's port is often not known yet when the
    link is made: point the key at the bound port later with access_key_with(port=...).)"""
    r = cli("link", "add", name, "--user", user, "--server", server, "--db", db)
    lines = r.out.splitlines()
    if r.rc != 0 or len(lines) != 1:
        raise AssertionError("link add failed or did not print one line: %r" % r)
    parse_access_key(lines[0])
    return lines[0]


def link_only_daemon(case, user, password, deadline, links=("k1",), link_listen="127.0.0.1:0",
                     family=socket.AF_INET, **daemon_kw):
    """For a DaemonTestCase: a daemon with a link listener only (`--listen none --link-listen
    LINK_LISTEN --link-handshake-timeout DEADLINE`), one user and the links named in `links`
    (theirs) made before it starts; stopped at the case's cleanup. Returns (daemon, the link
    listener's (host, port) of `family`, {link name: path of a mode 0600 access-key file pointed
    at that port})."""
    workdir = case.workdir()
    d = Daemon(workdir=workdir, listen=("none",),
               args=["--link-listen", link_listen, "--link-handshake-timeout", "%g" % deadline],
               **daemon_kw)
    add_user(d.db, user, password)
    lines = {name: link_add(d.db, name, user) for name in links}
    case.addCleanup(d.stop)
    d.start()
    addr = d.link_addr(family)
    keys = {name: write_secret(os.path.join(workdir, name + ".key"),
                               access_key_with(line, port=addr[1]))
            for name, line in lines.items()}
    return d, addr, keys


class LinkClient(Daemon):
    """One `shroud link` process: the access key goes in on stdin (via="stdin": no flag;
    via="dash": --access-key-file -) or in a mode 0600 file (via="file"). Ready when the line
    `shroud link: listening on ADDR; server HOST:PORT` arrives (bounded wait); `addrs` then holds
    its SOCKS5 address. stop() asserts exit 0 after SIGTERM and nothing more on stdout."""

    def __init__(self, access_key, workdir=None, listen="127.0.0.1:0", args=(), key_file=None,
                 via="stdin", log_level=None, env=None, wrap=()):
        super().__init__(workdir=workdir or new_workdir("link"), listen=(listen,), args=args,
                         env=env, log_level=log_level)
        self.access_key = access_key
        self.key_file = key_file
        self.via = via
        self.wrap = list(wrap)   # a command prefix that runs the client as its one child (strace)
        self.tracee = None
        self.log_path = os.path.join(self.workdir, "link.log")
        self.server_text = None
        self.access_path = None
        if via == "file":
            self.access_path = write_secret(os.path.join(self.workdir, "access.key"), access_key)

    def command(self):
        cmd = self.wrap + [BINARY, "link"]
        if self.via == "file":
            cmd += ["--access-key-file", self.access_path]
        elif self.via == "dash":
            cmd += ["--access-key-file", "-"]
        cmd += ["--listen", self.listen_spec[0]]
        if self.key_file:
            cmd += ["--key", self.key_file]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd + self.args

    def start(self):
        spawn_logged(self, self.command(), subprocess.PIPE)
        try:
            if self.via != "file":
                self.proc.stdin.write(self.access_key.encode() + b"\n")
            self.proc.stdin.close()
        except OSError:
            pass  # it exited already: _read_banner reports how
        line, rest = self._read_banner(LINK_READY_TIMEOUT)
        self.extra_stdout = rest
        m = re.fullmatch(r"shroud link: listening on (\S+); server (\S+)", line)
        if m is None:
            self._fail_start("the ready line does not match the contract: %r" % line)
        self.banner = line
        self.addrs = [parse_hostport(m.group(1))]
        self.server_text = m.group(2)
        self.fields = {}
        if self.wrap:
            self.tracee = self._child_pid()
        self._stdout_thread = threading.Thread(target=self._drain_stdout, daemon=True)
        self._stdout_thread.start()
        return self

    def _child_pid(self):
        """The wrapper's one child: the client itself (it printed the ready line, so it exists)."""
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        for _ in deadline_loop(5.0, 0.02):
            with open(path) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        self._fail_start("the wrapper %r has no child process" % self.wrap)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """As Daemon.stop; under a wrapper the signal goes to the client itself, and the wrapper
        (which exits with its child's status) is waited for."""
        if self.tracee is not None and self.running() and self.exit_code is None:
            os.kill(self.tracee, sig)
            self.signalled = signal.Signals(sig).name
            self.wait_exit(timeout or self.grace + 5.0)
        return super().stop(sig, timeout)


class LinkRun:
    def __init__(self, rc, out, err, elapsed):
        self.rc, self.out, self.err, self.elapsed = rc, out, err, elapsed

    def __repr__(self):
        return "shroud link -> exit %s after %.2f s\n  stdout: %r\n  stderr: %r" % (
            self.rc, self.elapsed, self.out[:2000], self.err[:2000])


def link_client_fail(access_key, args=(), timeout=30.0, listen="127.0.0.1:0"):
    """Run `shroud link --listen LISTEN ARGS` with the key on stdin, for a case that must end by
    itself (a refused key, an unreachable server); returns a LinkRun. Raises if it is still
    running after `timeout` (it is killed by PID first)."""
    cmd = [BINARY, "link", "--listen", listen] + list(args)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=tmp_root(), env=clean_env())
    try:
        out, err = p.communicate((access_key + "\n").encode() if access_key is not None else b"",
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("shroud link still running after %.0f s: stdout %r stderr %r"
                             % (timeout, out[:500], err[:500]))
    return LinkRun(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                   time.monotonic() - t0)


# --------------------------------------------------------------------------------------------
# the encrypted link from outside (issue 4): tests/tools/linkprobe and a recording target


def linkprobe_path():
    """The linkprobe tool built beside the shroud binary (CMake target `linkprobe`)."""
    return os.path.join(os.path.dirname(BINARY), "linkprobe")


class ProbeRun:
    """What one linkprobe run printed: `lines`; `first` is its first line (reply N, badreply,
    silent T how, unreachable ...); `silent` = (seconds, how) for a silent first flight, else None;
    `rep` the CONNECT_REPLY's REP or None; `data` the DATA bytes received; `end` the end of the link
    (eof, reset, closed, tcpreset, badrecord, timeout) or None; `bulk` the --bulk line as a dict
    (sent, received, bad, seconds) or None; `elapsed` the run's wall time."""

    def __init__(self, args, rc, out, err, elapsed):
        self.args, self.rc, self.err, self.elapsed = args, rc, err, elapsed
        self.lines = out.splitlines()
        self.first = self.lines[0] if self.lines else ""
        self.silent, self.rep, self.end, self.bulk = None, None, None, None
        data = bytearray()
        for line in self.lines:
            word, _, rest = line.partition(" ")
            if word == "silent":
                t, _, how = rest.partition(" ")
                self.silent = (float(t), how)
            elif word == "rep":
                self.rep = int(rest)
            elif word == "data":
                data += rest.encode("latin-1").decode("unicode_escape").encode("latin-1")
            elif word == "end":
                self.end = rest
            elif word == "bulk":
                f = rest.split()
                self.bulk = {f[i]: float(f[i + 1]) for i in range(0, len(f) - 1, 2)}
        self.data = bytes(data)

    def __repr__(self):
        return "linkprobe %s -> exit %s after %.2f s\n  stdout: %r\n  stderr: %r" % (
            " ".join(self.args), self.rc, self.elapsed, self.lines, self.err[:2000])


def linkprobe(access_key_file, server, *args, timeout=60.0):
    """Run `linkprobe --access-key-file F --server HOST:PORT ARGS...` (see its header comment) and
    return a ProbeRun; asserts exit 0 (it exits 2 only on usage errors)."""
    cmd = [linkprobe_path(), "--access-key-file", access_key_file,
           "--server", "%s:%d" % tuple(server)] + [str(a) for a in args]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_root(),
                       env=clean_env(), timeout=timeout)
    r = ProbeRun(cmd[1:], p.returncode, p.stdout.decode("latin-1"),
                 p.stderr.decode("utf-8", "replace"), time.monotonic() - t0)
    if r.rc != 0:
        raise AssertionError("linkprobe failed: %r" % r)
    return r


def write_secret(path, text):
    """Write one line to a new mode 0600 file (an access key for linkprobe or `shroud link`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def link_revoke(db, name):
    """`shroud link revoke NAME --db DB`; asserts exit 0."""
    r = cli("link", "revoke", name, "--db", db)
    if r.rc != 0:
        raise AssertionError("link revoke failed: %r" % r)
    return r


def _record_handler(conn, peer, server):
    got = bytearray()
    end = "eof"
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            got += data
            if server.echo:
                conn.sendall(data)
        if server.echo:
            conn.shutdown(socket.SHUT_WR)
    except (ConnectionResetError, BrokenPipeError):
        end = "reset"
    server.ends.put((peer, bytes(got), end))


class RecordServer(TcpServer):
    """A target that records, per connection, every byte it received and how the connection
    ended: 'eof' (a clean FIN) or 'reset' (RST). With echo=True it also echoes each chunk and
    closes its side after the peer's EOF. Ended connections are queued in `ends` as
    (peer, bytes, how); connections accepted (ended or not) in `accepted`."""

    def __init__(self, host="127.0.0.1", echo=True):
        self.echo = echo
        self.ends = queue.Queue()
        super().__init__(_record_handler, host)

    def wait_end(self, timeout=IO_TIMEOUT):
        """The next connection to end: (peer, bytes, how); AssertionError if none within timeout."""
        try:
            return self.ends.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no connection to the target ended within %.1f s (accepted: %d)"
                                 % (timeout, self.accepted.qsize()))


_P251 = bytes(range(251)) * 4200   # a period of the pattern for 1 MiB from any offset


def pattern251(offset, n):
    """Bytes offset..offset+n (n <= 1 MiB) of the stream whose byte i is i % 251 (linkprobe --bulk)."""
    start = offset % 251
    return _P251[start:start + n]


def _pattern_handler(conn, peer, server):
    def send():
        try:
            off = 0
            while off < server.total:
                n = min(1 << 20, server.total - off)
                conn.sendall(pattern251(off, n))
                off += n
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the receiving side reports how the connection ended

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received, bad, how = 0, 0, "eof"
    try:
        while True:
            data = conn.recv(server.read_chunk)
            if not data:
                break
            if data != pattern251(received, len(data)):
                bad += 1
            received += len(data)
            if server.pace:
                time.sleep(server.pace)  # a target slower than the link (pacing, not a wait)
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    sender.join(timeout=60)
    server.ends.put((peer, received, bad, how))


class PatternServer(TcpServer):
    """A bulk target for linkprobe --bulk: sends `total` bytes of pattern251() and then its FIN,
    while it reads and checks what comes in against the same pattern. Each ended connection is
    queued in `ends` as (peer, bytes received, chunks that did not match, 'eof'|'reset').
    read_chunk and pace (seconds after each read) make a slow reader."""

    def __init__(self, total, host="127.0.0.1", read_chunk=1 << 20, pace=0.0):
        self.total = total
        self.read_chunk, self.pace = read_chunk, pace
        self.ends = queue.Queue()
        super().__init__(_pattern_handler, host)

    def wait_end(self, timeout=IO_TIMEOUT):
        try:
            return self.ends.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no connection to the bulk target ended within %.1f s" % timeout)


# --------------------------------------------------------------------------------------------
# test base class and runner


class DaemonTestCase(unittest.TestCase):
    """unittest.TestCase with daemon/target helpers whose cleanup is registered automatically."""

    def workdir(self):
        return new_workdir(self.id().rsplit(".", 1)[-1][:40])

    def start_daemon(self, users=(), args=(), listen=("127.0.0.1:0",), stop_on_cleanup=True,
                     **kw):
        """Create a fresh database (with `users`: [(name, password)] added through the CLI
        first), start `shroud serve`, and register stop() (which asserts exit 0) as cleanup."""
        wd = self.workdir()
        d = Daemon(workdir=wd, listen=listen, args=args, **kw)
        for name, pw in users:
            add_user(d.db, name, pw)
        if stop_on_cleanup:
            self.addCleanup(d.stop)
        else:
            self.addCleanup(d.kill)
        d.start()
        return d

    def start_server(self, server):
        self.addCleanup(server.close)
        return server

    def echo_server(self, host="127.0.0.1"):
        return self.start_server(EchoServer(host))

    def closing(self, sock):
        self.addCleanup(sock.close)
        return sock


class _Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = 0
        self._marks = {}
        self._first = 0

    def startTest(self, test):
        with _DAEMONS_LOCK:
            self._marks = {id(d): d.log_size() for d in _DAEMONS if d.running()}
            self._live = [d for d in _DAEMONS if d.running()]
            self._first = len(_DAEMONS)
        self._t0 = time.monotonic()
        super().startTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1

    def stopTest(self, test):
        super().stopTest(test)
        bad = [t for t, _ in self.failures + self.errors if t is test]
        self.stream.write("    (%.1f s)\n" % (time.monotonic() - self._t0))
        if bad:
            with _DAEMONS_LOCK:
                ds = self._live + _DAEMONS[self._first:]
            for d in ds:
                start = self._marks.get(id(d), 0)
                self.stream.write("    ---- daemon log %s (pid %s, exit %s) ----\n%s\n    ---- end of log ----\n"
                                  % (d.log_path, d.proc.pid if d.proc else "-", d.exit_code,
                                     d.log_tail(start)))
        self.stream.flush()


def _kill_all_daemons():
    with _DAEMONS_LOCK:
        ds = list(_DAEMONS)
    for d in ds:
        try:
            d.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _watchdog(result_box):
    sys.stdout.write("\nWATCHDOG: this test file ran longer than %.0f s; stacks:\n" % FILE_BUDGET)
    for tid, frame in sys._current_frames().items():
        sys.stdout.write("--- thread %s ---\n%s" % (tid, "".join(traceback.format_stack(frame))))
    _kill_all_daemons()
    r = result_box.get("result")
    passed = r.passed if r else 0
    failed = (len(r.failures) + len(r.errors) if r else 0) + 1
    sys.stdout.write("%d passed, %d failed\n" % (passed, failed))
    sys.stdout.flush()
    os._exit(3)


def main():
    """Entry point of every test file: `test_X.py --binary PATH [unittest test names...]`."""
    global BINARY
    ap = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").strip())
    ap.add_argument("--binary", required=True, help="path to the shroud executable")
    ap.add_argument("tests", nargs="*", help="optional test names (Class or Class.method)")
    args = ap.parse_args()
    BINARY = os.path.abspath(args.binary)
    if not (os.path.isfile(BINARY) and os.access(BINARY, os.X_OK)):
        print("no executable at %s" % BINARY)
        print("0 passed, 1 failed")
        sys.exit(1)

    # 500 relayed connections need ~1000 descriptors here and ~1000 in the daemon (it inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))
    # A daemon that dies mid-write must not kill the runner.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    main_mod = sys.modules["__main__"]
    loader = unittest.TestLoader()
    if args.tests:
        suite = loader.loadTestsFromNames(args.tests, main_mod)
    else:
        suite = loader.loadTestsFromModule(main_mod)

    box = {}
    dog = threading.Timer(FILE_BUDGET, _watchdog, args=(box,))
    dog.daemon = True
    dog.start()

    class Runner(unittest.TextTestRunner):
        def _makeResult(self):
            r = super()._makeResult()
            box["result"] = r
            return r

    print("binary: %s" % BINARY)
    print("tmp:    %s" % tmp_root())
    sys.stdout.flush()
    t0 = time.monotonic()
    result = Runner(stream=sys.stdout, verbosity=2, resultclass=_Result).run(suite)
    dog.cancel()
    _kill_all_daemons()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    if result.skipped:
        print("%d skipped:" % len(result.skipped))
        for t, why in result.skipped:
            print("  %s: %s" % (t.id(), why))
    if failed == 0 and result.passed > 0:
        shutil.rmtree(tmp_root(), ignore_errors=True)
    else:
        print("kept %s for inspection" % tmp_root())
    print("time: %.1f s" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (result.passed, failed))
    sys.stdout.flush()
    sys.exit(0 if failed == 0 and result.passed > 0 else 1)


# --------------------------------------------------------------------------------------------
# network namespaces

NETNS_MARK = "SHROUD_E2E_IN_NETNS"


def namespace_lo(local_prefixes=(), addrs=()):
    """Inside the namespace reexec_in_namespace made: bring lo up, route each IPv6 prefix in
    `local_prefixes` to it as local (every address in them bindable) and add each address in
    `addrs`; asserts ::1 is there. Any command that fails fails the module."""
    cmds = [["ip", "link", "set", "lo", "up"]]
    cmds += [["ip", "-6", "route", "add", "local", p, "dev", "lo"] for p in local_prefixes]
    cmds += [["ip", "-6", "addr", "add", a + "/128", "dev", "lo", "nodad"] for a in addrs]
    for cmd in cmds:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if p.returncode != 0:
            raise AssertionError("%s failed inside the namespace: %s" % (" ".join(cmd), p.stdout.decode()))
    shown = subprocess.run(["ip", "-6", "addr", "show", "dev", "lo"], stdout=subprocess.PIPE,
                           timeout=30).stdout.decode()
    if "::1/128" not in shown:
        raise AssertionError("no ::1 on lo inside the namespace: %r" % shown)
    log("namespace ready: lo up%s" % "".join(", " + x for x in list(local_prefixes) + list(addrs)))


def reexec_in_namespace(test_file):
    """For a test file that needs its own network namespace (IPv6 prefixes routed to lo, extra
    addresses): outside, run test_file again under `unshare -n` (or `unshare -r -n`) and exit with
    its status, or skip the file; inside (NETNS_MARK set in the environment), return."""
    if os.environ.get(NETNS_MARK) == "1":
        return
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            skip_file("no %s(8) on this host" % tool)
    if not os.path.exists("/proc/net/if_inet6"):
        skip_file("IPv6 is not available in this kernel (no /proc/net/if_inet6)")
    why = []
    for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
        p = subprocess.run(prefix + ["true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if p.returncode == 0:
            break
        why.append("%s: %s" % (" ".join(prefix), p.stderr.decode("utf-8", "replace").strip()
                               or "exit %d" % p.returncode))
    else:
        skip_file("cannot create a network namespace (%s)" % "; ".join(why))
    env = dict(os.environ)
    env[NETNS_MARK] = "1"
    sys.stdout.write("re-running inside a new network namespace: %s\n" % " ".join(prefix))
    sys.stdout.flush()
    try:
        p = subprocess.run(prefix + [sys.executable, os.path.abspath(test_file)] + sys.argv[1:], env=env,
                           timeout=FILE_BUDGET + 30)
    except subprocess.TimeoutExpired:
        print("the namespaced run did not finish within %.0f s" % (FILE_BUDGET + 30))
        print("0 passed, 1 failed")
        sys.exit(1)
    sys.exit(p.returncode)
