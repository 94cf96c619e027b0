"""A real third-party client against UDP ASSOCIATE and BIND (issue 6): the npm package `socks`
(Debian: node-socks), run by node.

Its UDP support is SocksClient with command 'associate' plus SocksClient.createUDPFrame /
parseUDPFrame on a dgram socket; its BIND support is command 'bind' with the 'bound' and
'established' events. The script below logs in with a username carrying a session, sends one
datagram to an IPv4 literal and one to `localhost` through the relay, and runs a BIND whose peer it
connects itself; it prints what it saw as JSON.

Proves: node's client gets a relay address on 127.0.0.1; each answer is parsed by parseUDPFrame as
coming from the echo target, with the echo's `SRC ip port` + the payload; the source the target saw
is the one a TCP CONNECT of the same user, session and site leaves from; node's BIND gets a listener
on that same egress, its peer is announced, and bytes cross both ways.

Skipped (with the reason) when node or the `socks` package cannot be found: Debian's node-socks
installs it under /usr/share/nodejs, which is put on NODE_PATH for node builds that do not look
there by themselves.
"""
import json
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (DaemonTestCase, UdpEchoServer, add_user, pool_add, egress_source,  # noqa: E402
                     same_port_pair)

USER, PW = "alice", "alice-secret-pw"
POOL = ["127.0.0.%d" % i for i in range(2, 22)]
NODE_PATHS = ["/usr/share/nodejs", "/usr/lib/nodejs"]

SCRIPT = r"""
'use strict';
const dgram = require('dgram');
const net = require('net');
const { SocksClient } = require('socks');

const [proxyHost, proxyPort, user, pass, echoPort, namePort] = process.argv.slice(2);
const proxy = { host: proxyHost, port: +proxyPort, type: 5, userId: user, password: pass };
setTimeout(() => { console.error('node client: timed out'); process.exit(2); }, 20000).unref();

function once(emitter, ok, bad) {
  return new Promise((resolve, reject) => {
    emitter.once(ok, resolve);
    if (bad) emitter.once(bad, reject);
  });
}

async function associate() {
  const client = new SocksClient({ proxy, command: 'associate',
                                   destination: { host: '0.0.0.0', port: 0 } });
  const established = once(client, 'established', 'error');
  client.connect();
  const info = await established;
  const sock = dgram.createSocket('udp4');
  await new Promise((resolve) => sock.bind(0, '127.0.0.1', resolve));
  const results = [];
  for (const [host, port] of [['127.0.0.1', +echoPort], ['localhost', +namePort]]) {
    const sent = 'node via ' + host + ' ' + Math.random();
    const answer = once(sock, 'message');
    sock.send(SocksClient.createUDPFrame({ remoteHost: { host, port }, data: Buffer.from(sent) }),
              info.remoteHost.port, info.remoteHost.host);
    const frame = SocksClient.parseUDPFrame(await answer);
    results.push({ host: frame.remoteHost.host, port: frame.remoteHost.port,
                   frame: frame.frameNumber, data: frame.data.toString(), sent });
  }
  sock.close();
  info.socket.destroy();
  return { relay: info.remoteHost, results };
}

async function bind() {
  const client = new SocksClient({ proxy, command: 'bind',
                                   destination: { host: '127.0.0.1', port: 0 } });
  const bound = once(client, 'bound', 'error');
  const established = once(client, 'established', 'error');
  client.connect();
  const b = await bound;
  const peer = net.connect({ host: b.remoteHost.host, port: b.remoteHost.port,
                             localAddress: '127.0.0.1' });
  await once(peer, 'connect', 'error');
  const e = await established;
  const toPeer = once(peer, 'data');
  e.socket.write('from the client');
  const atPeer = (await toPeer).toString();
  const toClient = once(e.socket, 'data');
  peer.write('from the peer');
  const atClient = (await toClient).toString();
  const peerPort = peer.localPort;
  peer.destroy();
  e.socket.destroy();
  return { bound: b.remoteHost, announced: e.remoteHost, peer: peerPort,
           atPeer, atClient };
}

(async () => {
  const out = { udp: await associate(), bind: await bind() };
  console.log(JSON.stringify(out));
})().catch((e) => { console.error('node client: ' + (e && e.stack || e)); process.exit(1); });
"""


NODE, NODE_ENV = None, None


def find_node_socks():
    """Before the tests run: find node and the `socks` package, or skip the file naming what is
    missing."""
    global NODE, NODE_ENV
    NODE = shutil.which("node") or shutil.which("nodejs")
    if NODE is None:
        harness.skip_file("node is not installed (Debian package: nodejs)")
    NODE_ENV = harness.clean_env({"NODE_PATH": ":".join(NODE_PATHS)})
    p = subprocess.run([NODE, "-e", "require('socks').SocksClient.createUDPFrame"], env=NODE_ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        why = [ln for ln in p.stderr.decode("utf-8", "replace").splitlines() if "Error" in ln][:1]
        harness.skip_file("the npm package 'socks' is not where node looks (NODE_PATH=%s; Debian "
                          "package: node-socks): %s" % (":".join(NODE_PATHS), "".join(why)))


class NodeSocks(DaemonTestCase):

    def test_associate_and_bind_with_node_socks(self):
        echo = self.start_server(UdpEchoServer("127.0.0.1"))
        pair = [self.start_server(x) for x in same_port_pair(lambda h, p: UdpEchoServer(h, p))]
        tcp = self.echo_server("127.0.0.1")
        tpair = [self.start_server(x) for x in same_port_pair(lambda h, p: harness.EchoServer(h, p))]
        d = harness.Daemon(workdir=self.workdir())
        add_user(d.db, USER, PW)
        pool_add(d.db, *POOL)
        self.addCleanup(d.stop)
        d.start()
        user = USER + "-session-node-ttl-86400"
        want_ip = egress_source(d.addr(), tcp.addr, user, PW)
        want_name = egress_source(d.addr(), tpair[0].addr, user, PW, target_host="localhost")

        script = os.path.join(self.workdir(), "client.js")
        with open(script, "w") as f:
            f.write(SCRIPT)
        host, port = d.addr()
        p = subprocess.run([NODE, script, host, str(port), user, PW, str(echo.port), str(pair[0].port)],
                           env=NODE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 0, "node client failed: %s" % p.stderr.decode("utf-8", "replace"))
        out = json.loads(p.stdout.decode())
        harness.log("node socks: %s" % out)

        udp = out["udp"]
        self.assertEqual(udp["relay"]["host"], "127.0.0.1")
        ip_answer, name_answer = udp["results"]
        for r, port_, want in ((ip_answer, echo.port, want_ip), (name_answer, pair[0].port, want_name)):
            self.assertEqual(r["frame"], 0, r)
            self.assertEqual(r["port"], port_, r)
            first, _, rest = r["data"].partition("\n")
            self.assertEqual(rest, r["sent"], r)
            self.assertEqual(first.split()[1], want,
                             "UDP left from %s, TCP of the same identity from %s" % (first, want))
        self.assertEqual(ip_answer["host"], "127.0.0.1")

        b = out["bind"]
        self.assertEqual(b["bound"]["host"], want_ip, "BIND listens on the egress CONNECT uses")
        self.assertEqual((b["announced"]["host"], b["announced"]["port"]), ("127.0.0.1", b["peer"]))
        self.assertEqual((b["atPeer"], b["atClient"]), ("from the client", "from the peer"))


if __name__ == "__main__":
    find_node_socks()
    harness.main()
