#!/bin/sh
# Install what shroud needs to build, run and test, from Debian's packages.
# As root: installs what is missing with apt-get. Otherwise: prints the exact command and fails
# (for bench, the peers are optional: without root it says how to get them and goes on).
# Usage: scripts/deps.sh [run|test|bench]
set -eu

need="cmake make gcc pkg-config libev-dev libsodium-dev libsqlite3-dev libc-ares-dev libpsl-dev"
want=""
case "${1:-run}" in
test)
	# cmocka for unit tests; clang + its runtime for libFuzzer and the sanitizer build; curl and
	# python3-socks are the real clients of the end-to-end tests (node-socks, run by nodejs, for UDP
	# ASSOCIATE and BIND); iproute2 for network namespaces; strace shows that the link client
	# resolves no destination itself.
	need="$need libcmocka-dev clang libclang-rt-14-dev curl python3 python3-socks iproute2 nodejs node-socks strace"
	;;
bench)
	# taskset (util-linux) pins the proxy and the load generator to their cores; the peers shroud
	# is measured against: microsocks, dante (danted) and shadowsocks-libev (ss-local, ss-server).
	need="$need util-linux"
	want="microsocks dante-server shadowsocks-libev"
	;;
esac

missing=""
for p in $need $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	for p in $need; do
		case " $missing " in
		*" $p "*)
			echo "shroud needs these Debian packages:$missing" >&2
			echo "install them with:  sudo apt-get update && sudo apt-get install -y$missing" >&2
			exit 1
			;;
		esac
	done
	echo "benchmark peers not installed (the runner skips them):$missing" >&2
	echo "install them with:  sudo apt-get update && sudo apt-get install -y$missing" >&2
	exit 0
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >&2
