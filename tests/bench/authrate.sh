#!/usr/bin/env bash
# Connections per second with and without a password, through one daemon, interleaved.
# Usage: tests/bench/authrate.sh BUILD_DIR [SECONDS] [THREADS] [ROUNDS]
# POOL=N (default 50) puts N loopback addresses (127.0.0.2 ...) in the egress pool, so every
# connection goes through sticky selection and a bound source, as in production; POOL=0 leaves
# the pool empty (the system's default address).
# Everything runs on loopback and stops by PID when the script ends.
set -euo pipefail
build=${1:?build dir}
seconds=${2:-3}
threads=${3:-4}
rounds=${4:-3}
shroud=$build/shroud
load=$build/socksload
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

wait_line() { # FILE PATTERN: wait up to 10 s for a line
	for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "timed out waiting for '$2' in $1" >&2; return 1
}

pool=${POOL:-50}
echo 'bench-password' | "$shroud" user add bench --db "$dir/b.db" --password-stdin
if [ "$pool" -gt 0 ]; then
	"$shroud" pool add $(for i in $(seq 2 $((pool + 1))); do echo "127.0.0.$i"; done) --db "$dir/b.db" >/dev/null
fi
"$load" sink >"$dir/sink.txt" & pids+=($!)
"$shroud" serve --db "$dir/b.db" --listen 127.0.0.1:0 --no-auth >"$dir/serve.txt" 2>"$dir/serve.err" & pids+=($!)
wait_line "$dir/sink.txt" '^sink '
wait_line "$dir/serve.txt" 'listening on'
sink=$(awk '{print $2}' "$dir/sink.txt")
proxy=$(sed -n 's/.*listening on \([^ ;]*\).*/\1/p' "$dir/serve.txt")

echo "proxy $proxy, sink 127.0.0.1:$sink, egress pool of $pool, $threads client threads, ${seconds}s per run, $rounds rounds"
for r in $(seq "$rounds"); do
	printf 'no password  '; "$load" rate --proxy "$proxy" --target "127.0.0.1:$sink" --threads "$threads" --seconds "$seconds"
	printf 'password     '; "$load" rate --proxy "$proxy" --target "127.0.0.1:$sink" --threads "$threads" --seconds "$seconds" --user bench --pass bench-password
done
