#!/bin/bash
# ab.sh A B [PAIRS]: side-by-side check of two gowsgi binaries, the way the commit messages
# and issue notes quote "interleaved pinned pairs": for each app, PAIRS times, A then B, each
# serving bench/apps with -w 2 --threads 4 on CPU 0 while wrk (-t1 -c64, 4 s) loads it from
# CPU 1. Prints req/s, CPU µs per request of the front and of the workers (from /proc, in
# clock ticks), thread switches per request and wrk's p99. Loopback only; every server it
# starts is stopped by PID, also on Ctrl-C.
#
# Settings: APPS (default "hello echo flaskjson stream"), EXTRA (more gowsgi flags),
# DURATION (wrk seconds, default 4), BODY_KIB (the echo app's POST body, default 16).
set -euo pipefail
A=${1:?usage: scripts/ab.sh BINARY_A BINARY_B [PAIRS]}
B=${2:?usage: scripts/ab.sh BINARY_A BINARY_B [PAIRS]}
PAIRS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
SERVER=""
cleanup() {
	if [ -n "$SERVER" ]; then
		kill -TERM "$SERVER" 2>/dev/null || true
		wait "$SERVER" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cat > "$TMP/echo.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("0123456789abcdef", $((${BODY_KIB:-16} * 64)))
EOF

# ticks PID...: user+system clock ticks of the processes; switches PID...: their threads'
# voluntary and involuntary context switches.
ticks() { local t=0 p v; for p in "$@"; do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo $t; }
switches() {
	local t=0 p f v
	for p in "$@"; do
		for f in /proc/"$p"/task/*/status; do
			v=$(awk '/ctxt_switches/{s+=$2} END{print s+0}' "$f" 2>/dev/null || echo 0)
			t=$((t + v))
		done
	done
	echo $t
}

run() { # run BINARY APP: one measurement
	local bin=$1 app=$2 port script=() n
	port=$((20000 + RANDOM % 20000))
	[ "$app" = echo ] && script=(-s "$TMP/echo.lua")
	# shellcheck disable=SC2086 # EXTRA is a list of flags
	taskset -c 0 "$bin" --chdir "$ROOT/bench/apps" -b 127.0.0.1:$port -w 2 --threads 4 \
		--log-level warning ${EXTRA:-} "$app:application" > "$TMP/server.log" 2>&1 &
	SERVER=$!
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
		sleep 0.1
	done
	local workers f0 w0 s0 f1 w1 s1
	workers=$(pgrep -P "$SERVER" | tr '\n' ' ')
	# shellcheck disable=SC2086
	f0=$(ticks $SERVER); w0=$(ticks $workers); s0=$(switches $SERVER $workers)
	taskset -c 1 wrk -t1 -c64 -d"${DURATION:-4}s" --latency "${script[@]}" "http://127.0.0.1:$port/" > "$TMP/wrk.out"
	# shellcheck disable=SC2086
	f1=$(ticks $SERVER); w1=$(ticks $workers); s1=$(switches $SERVER $workers)
	kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
	n=$(awk '/requests in/{print $1}' "$TMP/wrk.out")
	awk -v n="$n" -v f=$((f1 - f0)) -v w=$((w1 - w0)) -v s=$((s1 - s0)) \
		-v rps="$(awk '/Requests\/sec/{print $2}' "$TMP/wrk.out")" \
		-v p99="$(awk '$1=="99%"{print $2}' "$TMP/wrk.out")" \
		'BEGIN{printf "req/s %9.0f  µs/req front %5.1f workers %5.1f  switches/req %.2f  p99 %s\n", rps, f*10000/n, w*10000/n, s/n, p99}'
}

for app in ${APPS:-hello echo flaskjson stream}; do
	for i in $(seq "$PAIRS"); do
		for which in A B; do
			bin=$A; [ $which = B ] && bin=$B
			printf '%-9s %s pair %d  %s\n' "$app" $which "$i" "$(run "$bin" "$app")"
		done
	done
done
