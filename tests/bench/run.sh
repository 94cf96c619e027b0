#!/usr/bin/env bash
# shroud against no proxy at all and against its peers, measured in one run, interleaved.
# Usage: tests/bench/run.sh BUILD_DIR          (`make bench`; `QUICK=1 make bench`: a ~1 minute smoke run)
#
# Subjects, each proxy pinned to core 0 with taskset, the generator and its sinks to core 1:
#   direct      socksload straight to the sink: the ceiling of the generator and sink on their core
#   shroud      plain SOCKS5 in the real configuration: a password user (RFC 1929 on every
#               connection), a 50-address loopback egress pool (127.0.0.2-51, plus ::1 so that
#               IPv6 targets have a source of their family) with sticky selection; --workers 1
#               since it has one core
#   microsocks  microsocks -i 127.0.0.1 -p PORT (no auth)
#   dante       danted -f CONF: socksmethod none, internal 127.0.0.1, external lo (no auth)
#   ss          shadowsocks-libev, ss-local -> ss-server, chacha20-ietf-poly1305, measured through
#               ss-local's SOCKS5 port (both processes count as the proxy)
#   link        shroud's encrypted link, the same shape as ss: `shroud link` (SOCKS5 on loopback,
#               no login) -> `shroud serve --listen none --link-listen` (--workers 1, the same
#               password user behind the link's key and the same egress pool as `shroud`), both
#               processes on the proxy's core and counted as the proxy; every proxied connection
#               is its own TCP connection to the server with its own Noise IK handshake (LINK.md)
# A peer that is not installed is skipped, saying so; `scripts/deps.sh bench` installs them as root.
# So is `link` when `shroud link` does not start (a build without the link client).
#
# Scenarios (tests/bench/socksload.c): bulk, N connections each carrying M MiB each way at once,
# every byte checked at both ends; rate, K workers for T seconds, each loop a connect, greeting,
# (login), CONNECT, 1-byte echo and close, with ATYP 1 (127.0.0.1), 3 (localhost) and 4 ([::1]),
# then ATYP 1 again with 16 exchanges in flight on one epoll thread (the blocking workers share the
# generator's core and run it out before a fast proxy's);
# hold, C idle relayed connections proven alive at the start and the end, the proxy's RSS (VmRSS
# of its processes) per connection, C sized to RLIMIT_NOFILE (2 descriptors per connection in the
# proxy). For round 1..3, for each subject: bulk, then the rates; hold once per subject at the end.
# The table gives the median of the rounds and their min-max, then shroud's ratio to each other,
# and link's to ss (the other encrypted client-server pair) and to shroud (what the link costs).
#
# tests/bench/authrate.sh stays a separate, smaller runner: shroud alone, with and without a
# password. Everything runs on loopback; every process started here is stopped by PID at exit.
set -euo pipefail
build=${1:?usage: tests/bench/run.sh BUILD_DIR}
shroud=$build/shroud
load=$build/socksload
if ! [ -x "$shroud" ] || ! [ -x "$load" ]; then echo "run.sh: no $shroud or $load: build first" >&2; exit 1; fi

rounds=3
if [ "${QUICK:-0}" = 1 ]; then
	bulk_conns=4 bulk_mib=16 rate_threads=4 rate_s=1 atyp_s=0.5 hold_conns=1000 hold_idle=0.5
else
	bulk_conns=8 bulk_mib=128 rate_threads=4 rate_s=5 atyp_s=3 hold_conns=10000 hold_idle=2
fi

dir=$(mktemp -d)
pids=()
started=$(date +%s)

# Every descendant of a PID (dante forks its workers), deepest last; from /proc, no procps needed.
descendants() {
	local p c
	for p in "$@"; do
		# shellcheck disable=SC2013 # the file is one line of PIDs
		for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
			echo "$c"
			descendants "$c"
		done
	done
}
cleanup() {
	local p kids
	# Parents first (danted's parent stops its workers itself), then whatever is left of theirs.
	kids=$(descendants "${pids[@]}")
	for p in "${pids[@]}" $kids; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # FILE PATTERN: wait up to 10 s for a line
	for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "timed out waiting for '$2' in $1" >&2; return 1
}
free_port() { # a port nothing listens on, outside the ephemeral range
	local p
	for p in $(shuf -i 20000-29999 -n 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
	done
	return 1
}

# Pinning: the proxy on one core, the generator and the sinks on the other.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	on_proxy=(taskset -c 0) on_gen=(taskset -c 1) pinning="proxy on core 0, generator and sinks on core 1"
else
	on_proxy=() on_gen=() pinning="NOT pinned (fewer than 2 cores, or no taskset)"
fi
# Which side ran out during a rate run, and what one connection cost the proxy's core: the busy
# clock ticks of cores 0 and 1 from /proc/stat (user, nice, system, irq, softirq; on loopback the
# kernel's TCP work for a socket's peer is done on the sender's core, so it counts where it ran).
# Anything else that runs on core 0 meanwhile counts as the proxy's: an upper bound on its cost.
ticks() { # -> "core0_busy core1_busy core0_all core1_all"
	awk '$1 == "cpu0" || $1 == "cpu1" { b = $2 + $3 + $4 + $7 + $8; busy = busy " " b; all = all " " b + $5 + $6 + $9 }
		END { print busy all }' /proc/stat
}
hz=$(getconf CLK_TCK)
# Held connections take descriptors: everything started from here gets the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"${on_gen[@]}" "$load" sink >"$dir/echo.txt" 2>"$dir/echo.err" & pids+=($!)
"${on_gen[@]}" "$load" sink --bulk >"$dir/bulk.txt" 2>"$dir/bulk.err" & pids+=($!)
wait_line "$dir/echo.txt" '^sink '
wait_line "$dir/bulk.txt" '^sink '
echo_port=$(awk '{print $2}' "$dir/echo.txt")
bulk_port=$(awk '{print $2}' "$dir/bulk.txt")

declare -A addr auth procs
subjects=(direct)
skipped=()

# A subject is in once an exchange has gone through it end to end (readiness, never a sleep).
admit() { # NAME ADDR AUTH PIDS...
	local name=$1 a=$2 au=$3
	shift 3
	# shellcheck disable=SC2086
	if "${on_gen[@]}" "$load" probe --proxy "$a" --target "127.0.0.1:$echo_port" $au --seconds 10 \
		>/dev/null 2>>"$dir/probe.err"; then
		subjects+=("$name") addr[$name]=$a auth[$name]=$au procs[$name]="$*"
	else
		skipped+=("$name (started but no echo went through it; see its log)")
	fi
}

# shroud, the real configuration
echo 'bench-password' | "$shroud" user add bench --db "$dir/shroud.db" --password-stdin >/dev/null
# shellcheck disable=SC2046
"$shroud" pool add $(for i in $(seq 2 51); do echo "127.0.0.$i"; done) ::1 --db "$dir/shroud.db" >/dev/null
"${on_proxy[@]}" "$shroud" serve --db "$dir/shroud.db" --listen 127.0.0.1:0 --workers 1 --grace 1 \
	>"$dir/shroud.txt" 2>"$dir/shroud.err" & pids+=($!)
shroud_pid=$!
wait_line "$dir/shroud.txt" 'listening on'
admit shroud "$(sed -n 's/.*listening on \([^ ;]*\).*/\1/p' "$dir/shroud.txt")" \
	"--user bench --pass bench-password" "$shroud_pid"

if command -v microsocks >/dev/null; then
	port=$(free_port)
	"${on_proxy[@]}" microsocks -i 127.0.0.1 -p "$port" >"$dir/microsocks.log" 2>&1 & pids+=($!)
	admit microsocks "127.0.0.1:$port" "" $!
else
	skipped+=("microsocks (not installed)")
fi

if command -v danted >/dev/null; then
	port=$(free_port)
	{
		echo "logoutput: stderr"
		echo "internal: 127.0.0.1 port = $port"
		echo "external: lo"
		echo "socksmethod: none"
		echo "clientmethod: none"
		if [ "$(id -u)" -eq 0 ]; then
			echo "user.privileged: root"
			echo "user.unprivileged: nobody"
		fi
		echo "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }"
		echo "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }"
		echo "socks pass { from: 127.0.0.0/8 to: ::/0 }"
	} >"$dir/danted.conf"
	"${on_proxy[@]}" danted -f "$dir/danted.conf" >"$dir/danted.log" 2>&1 & pids+=($!)
	admit dante "127.0.0.1:$port" "" $!
else
	skipped+=("dante (danted not installed)")
fi

if command -v ss-local >/dev/null && command -v ss-server >/dev/null; then
	sport=$(free_port)
	port=$(free_port)
	"${on_proxy[@]}" ss-server -s 127.0.0.1 -p "$sport" -k bench-password -m chacha20-ietf-poly1305 \
		>"$dir/ss-server.log" 2>&1 & pids+=($!)
	ss_server_pid=$!
	"${on_proxy[@]}" ss-local -s 127.0.0.1 -p "$sport" -l "$port" -k bench-password \
		-m chacha20-ietf-poly1305 >"$dir/ss-local.log" 2>&1 & pids+=($!)
	admit ss "127.0.0.1:$port" "" "$ss_server_pid" $!
else
	skipped+=("ss (shadowsocks-libev not installed)")
fi

# shroud's encrypted link: the key made for a port chosen first, the server, then the client,
# which proves the keys with one handshake before its ready line. Any step that fails skips it.
link_start() { # -> link_server_pid, link_client_pid, link_addr
	local lport
	lport=$(free_port) || return 1
	echo 'bench-password' | "$shroud" user add bench --db "$dir/link.db" --password-stdin >/dev/null ||
		return 1
	# shellcheck disable=SC2046
	"$shroud" pool add $(for i in $(seq 2 51); do echo "127.0.0.$i"; done) ::1 \
		--db "$dir/link.db" >/dev/null || return 1
	(umask 077 && "$shroud" link add bench --user bench --server "127.0.0.1:$lport" \
		--db "$dir/link.db" >"$dir/link.key" 2>"$dir/link-client.err") || return 1
	"${on_proxy[@]}" "$shroud" serve --db "$dir/link.db" --listen none \
		--link-listen "127.0.0.1:$lport" --workers 1 --grace 1 \
		>"$dir/link-server.txt" 2>"$dir/link-server.err" & pids+=($!)
	link_server_pid=$!
	if ! wait_line "$dir/link-server.txt" 'link on' 2>/dev/null; then
		cp "$dir/link-server.err" "$dir/link-client.err"
		return 1
	fi
	"${on_proxy[@]}" "$shroud" link --access-key-file "$dir/link.key" --listen 127.0.0.1:0 \
		--max-conns 100000 >"$dir/link-client.txt" 2>"$dir/link-client.err" & pids+=($!)
	link_client_pid=$!
	wait_line "$dir/link-client.txt" '^shroud link: listening on' 2>/dev/null || return 1
	link_addr=$(sed -n 's/^shroud link: listening on \([^ ;]*\);.*/\1/p' "$dir/link-client.txt")
}
if link_start; then
	admit link "$link_addr" "" "$link_server_pid" "$link_client_pid"
else
	why=$(grep -m 1 . "$dir/link-client.err" 2>/dev/null | cut -c 1-200) || true
	skipped+=("link (shroud link did not start: $why)")
fi

echo "bench: ${subjects[*]}; $pinning; $rounds rounds"
for s in "${skipped[@]}"; do echo "bench: skipped $s"; done
echo "bench: bulk $bulk_conns x $bulk_mib MiB each way; rate $rate_threads workers x ${rate_s}s (ATYP 3, ATYP 4 and 16 in flight on one thread: ${atyp_s}s); hold $hold_conns x ${hold_idle}s idle"

results=$dir/results
: >"$results"
record() { echo "$1 $2 $3" >>"$results"; } # SUBJECT METRIC VALUE ("fail" when it failed)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; } # KEY LINE

via() { # SUBJECT: how socksload reaches the target
	if [ "$1" = direct ]; then echo "--no-proxy"; else echo "--proxy ${addr[$1]} ${auth[$1]}"; fi
}

run_bulk() { # SUBJECT
	local out
	# shellcheck disable=SC2046
	out=$("${on_gen[@]}" "$load" bulk $(via "$1") --target "127.0.0.1:$bulk_port" \
		--conns "$bulk_conns" --mbytes "$bulk_mib" --seconds 120 2>>"$dir/gen.err") || true
	if [ "$(field errors "$out")" = 0 ]; then
		record "$1" bulk "$(field mbps "$out")"
	else
		record "$1" bulk fail
	fi
	printf '  %-10s %s\n' "$1" "${out:-bulk failed}"
}

run_rate() { # SUBJECT KIND(v4|name|v6|c16) SECONDS
	local out t0 t1 busy0 busy1 us target=127.0.0.1:$echo_port extra=(--threads "$rate_threads")
	[ "$2" = name ] && extra+=(--name localhost)
	[ "$2" = v6 ] && target="[::1]:$echo_port"
	# c16: ATYP 1 with 16 exchanges in flight on one epoll thread instead of blocking threads,
	# so that the generator's core is not what runs out first (socksload.c, rate --concurrency).
	[ "$2" = c16 ] && extra=(--concurrency 16)
	t0=$(ticks)
	# shellcheck disable=SC2046
	out=$("${on_gen[@]}" "$load" rate $(via "$1") --target "$target" "${extra[@]}" \
		--seconds "$3" 2>>"$dir/gen.err") || true
	t1=$(ticks)
	if [ -n "$out" ] && [ "$(field conns "$out")" != 0 ]; then
		record "$1" "cps_$2" "$(field cps "$out")"
		record "$1" "err_$2" "$(field errors "$out")"
		if [ "${#on_proxy[@]}" -gt 0 ]; then
			# each core's busy %, and the proxy core's microseconds per exchange
			read -r busy0 busy1 us <<<"$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$(field conns "$out")" '
				BEGIN { split(a, x, " "); split(b, y, " ")
					printf "%.0f %.0f %.1f", 100 * (y[1] - x[1]) / (y[3] - x[3]),
						100 * (y[2] - x[2]) / (y[4] - x[4]), (y[1] - x[1]) * 1e6 / hz / n }')"
			record "$1" "b0_$2" "$busy0"
			record "$1" "b1_$2" "$busy1"
			[ "$1" != direct ] && record "$1" "us_$2" "$us"
			out="$out core0=$busy0% core1=$busy1%"
		fi
		if [ "$2" = v4 ]; then
			record "$1" p50 "$(field p50_ms "$out")"
			record "$1" p99 "$(field p99_ms "$out")"
		fi
		[ "$2" = c16 ] && record "$1" p99_c16 "$(field p99_ms "$out")"
	else
		record "$1" "cps_$2" fail
	fi
	printf '  %-10s %-4s %s\n' "$1" "$2" "${out:-rate failed}"
}

for r in $(seq "$rounds"); do
	echo "round $r/$rounds"
	for s in "${subjects[@]}"; do
		run_bulk "$s"
		run_rate "$s" v4 "$rate_s"
		# A name means nothing without a proxy to resolve it.
		[ "$s" != direct ] && run_rate "$s" name "$atyp_s"
		run_rate "$s" v6 "$atyp_s"
		run_rate "$s" c16 "$atyp_s"
	done
done

echo "hold (once per proxy)"
for s in "${subjects[@]}"; do
	[ "$s" = direct ] && continue # no proxy, no memory to weigh
	pidargs=()
	for p in ${procs[$s]}; do pidargs+=(--pid "$p"); done
	# shellcheck disable=SC2046
	out=$("${on_gen[@]}" "$load" hold $(via "$s") --target "127.0.0.1:$echo_port" \
		--conns "$hold_conns" --idle "$hold_idle" --seconds 60 "${pidargs[@]}" 2>"$dir/hold.err") || true
	# The generator says how RLIMIT_NOFILE sized the hold; once is enough.
	[ "$s" = "${subjects[1]}" ] && sed 's/^/  /' "$dir/hold.err"
	printf '  %-10s %s\n' "$s" "${out:-hold failed}"
	kib=$(field kib_per_conn "$out")
	record "$s" hold "${kib:-fail}"
	record "$s" alive "$(field alive_start "$out")/$(field alive_end "$out")_of_$(field conns "$out")"
done

# ---- the table --------------------------------------------------------------------------------
values() { awk -v s="$1" -v m="$2" '$1 == s && $2 == m { print $3 }' "$results"; }
num() { awk -v v="$1" 'BEGIN { if (v >= 100) printf "%.0f", v; else if (v >= 10) printf "%.1f", v; else printf "%.2f", v }'; }
median() { # SUBJECT METRIC: the median, or nothing
	local v
	mapfile -t v < <(values "$1" "$2" | sort -g)
	[ "${#v[@]}" -gt 0 ] || return 0
	case " ${v[*]} " in *" fail "*) return 0 ;; esac
	if [ $((${#v[@]} % 2)) = 1 ]; then echo "${v[$((${#v[@]} / 2))]}"
	else awk -v a="${v[$((${#v[@]} / 2 - 1))]}" -v b="${v[$((${#v[@]} / 2))]}" 'BEGIN { print (a + b) / 2 }'; fi
}
cell() { # SUBJECT METRIC: "median (min-max)", "fail" or "-"
	local v errs
	mapfile -t v < <(values "$1" "$2" | sort -g)
	if [ "${#v[@]}" = 0 ]; then echo "-"; return; fi
	case " ${v[*]} " in *" fail "*) echo "fail"; return ;; esac
	errs=""
	case $2 in cps_*) [ "$(values "$1" "err_${2#cps_}" | awk '{ n += $1 } END { print n + 0 }')" != 0 ] && errs="!" ;; esac
	if [ "${#v[@]}" = 1 ]; then echo "$(num "${v[0]}")$errs"; return; fi
	echo "$(num "$(median "$1" "$2")") ($(num "${v[0]}")-$(num "${v[-1]}"))$errs"
}

metrics=(bulk cps_v4 p50 p99 busy_v4 us_v4 cps_name cps_v6 cps_c16 p99_c16 busy_c16 us_c16 hold alive)
declare -A label=(
	[bulk]="bulk MB/s (both ways)"
	[cps_v4]="rate conn/s, ATYP 1"
	[p50]="  latency p50 ms"
	[p99]="  latency p99 ms"
	[busy_v4]="  busy % core 0/1"
	[us_v4]="  proxy core µs/conn"
	[busy_c16]="  busy % core 0/1"
	[us_c16]="  proxy core µs/conn"
	[cps_name]="rate conn/s, ATYP 3"
	[cps_v6]="rate conn/s, ATYP 4"
	[cps_c16]="rate conn/s, 16 in flight"
	[p99_c16]="  latency p99 ms"
	[hold]="hold KiB/conn (RSS)"
	[alive]="  alive at start/end"
)
echo
echo "medians of $rounds rounds (min-max); bulk $bulk_conns x $bulk_mib MiB each way; rate $rate_threads blocking workers, or 16 in flight; hold: one run"
printf '%-26s' ""
for s in "${subjects[@]}"; do printf '%-22s' "$s"; done
echo
for m in "${metrics[@]}"; do
	printf '%-26s' "${label[$m]}"
	for s in "${subjects[@]}"; do
		if [ "$m" = alive ]; then t=$(values "$s" alive | tr _ ' '); printf '%-22s' "${t:--}"
		elif [ "${m%_*}" = busy ]; then # medians of each core's busy %
			t="$(median "$s" "b0_${m#busy_}")/$(median "$s" "b1_${m#busy_}")"
			[ "$t" = / ] && t=-
			printf '%-22s' "$t"
		else printf '%-22s' "$(cell "$s" "$m")"; fi
	done
	echo
done
if grep -q '^[^ ]* err_[^ ]* [1-9]' "$results"; then
	echo "! some exchanges failed in that cell's runs:"
	awk '$2 ~ /^err_/ && $3 > 0 { printf "    %s %s: %s errors\n", $1, substr($2, 5), $3 }' "$results"
fi

ratios() { # SUBJECT OTHER...: the table of SUBJECT's medians divided by each OTHER's
	local a b m o s=$1
	shift
	echo
	echo "$s / other (medians): above 1 is $s ahead on MB/s and conn/s, behind on ms, µs and KiB"
	printf '%-26s' ""
	for o in "$@"; do printf '%-14s' "$o"; done
	echo
	for m in bulk cps_v4 p50 p99 us_v4 cps_name cps_v6 cps_c16 p99_c16 us_c16 hold; do
		printf '%-26s' "${label[$m]}"
		a=$(median "$s" "$m")
		for o in "$@"; do
			b=$(median "$o" "$m")
			if [ -n "$a" ] && [ -n "$b" ]; then
				printf '%-14s' "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
			else
				printf '%-14s' "-"
			fi
		done
		echo
	done
}
others=()
for s in "${subjects[@]}"; do
	if [ "$s" != shroud ] && [ "$s" != link ]; then others+=("$s"); fi
done
if [ -n "${addr[shroud]:-}" ]; then ratios shroud "${others[@]}"; fi
# The link against the other encrypted pair, and against the plain port: what encryption costs.
cmp=()
if [ -n "${addr[ss]:-}" ]; then cmp+=(ss); fi
if [ -n "${addr[shroud]:-}" ]; then cmp+=(shroud); fi
if [ -n "${addr[link]:-}" ] && [ "${#cmp[@]}" -gt 0 ]; then ratios link "${cmp[@]}"; fi
echo "bench: $(($(date +%s) - started)) s"
