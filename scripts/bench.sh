#!/usr/bin/env bash
# bench.sh runs the benchmark suite described in docs/benchmarks.md: gowsgi against
# gunicorn (sync, gthread, gevent), uWSGI (--http-socket, --http11-socket), waitress and a
# Go net/http baseline, driven by wrk (throughput, latency) and bench/load (fairness).
# `make bench` runs it after building bin/gowsgi.
#
#   scripts/bench.sh                 full run (about 20 minutes); writes bench/results/
#                                    and the results section of docs/benchmarks.md
#   BENCH_QUICK=1 scripts/bench.sh   2 s runs, 1 repetition; writes bench/results/quick/
#
# Optional settings (environment):
#   BENCH_APPS=hello,echo            apps (hello, flask, stream, echo, sleep)
#   BENCH_SERVERS=gowsgi,waitress    servers (gowsgi, gunicorn-sync, gunicorn-gthread,
#                                    gunicorn-gevent, uwsgi-http, uwsgi-http11, waitress,
#                                    go-net/http)
#   BENCH_MODES=pinned               pinned and/or unpinned
#   BENCH_DURATION=6s BENCH_FAIR_DURATION=2s BENCH_WARMUP=1s BENCH_REPS=3
#   BENCH_GOWSGI_THREADS=sleep=32    gowsgi threads per app (others: 4)
#   BENCH_OUT=DIR                    results directory
#   BENCH_ARGS="..."                 further bench/run flags (go run ./bench/run -h)
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}

# Benchmark-only tools (gunicorn, gevent, uWSGI, waitress, wrk, Flask); silent when present.
scripts/deps.sh bench

if [ ! -x bin/gowsgi ]; then
	echo "bench: bin/gowsgi is missing; run 'make build' (or 'make bench')" >&2
	exit 1
fi

# The harness, the load generator and the Go baseline are built, not `go run`, so that
# Ctrl-C reaches the harness directly and it can stop every server it started.
mkdir -p bin/bench
"$GO" build -o bin/bench/run ./bench/run
"$GO" build -o bin/bench/load ./bench/load
"$GO" build -o bin/bench/gohello ./bench/gohello

args=()
partial=${BENCH_APPS:-}${BENCH_SERVERS:-}${BENCH_MODES:-}
if [ "${BENCH_QUICK:-0}" != "0" ]; then
	args+=(-quick)
elif [ -z "$partial" ] && [ -z "${BENCH_OUT:-}" ]; then
	# Only a full run of everything replaces the committed results and the docs' section.
	args+=(-docs docs/benchmarks.md)
elif [ -z "${BENCH_OUT:-}" ]; then
	BENCH_OUT=bench/results/partial
fi
[ -n "${BENCH_DURATION:-}" ] && args+=(-d "$BENCH_DURATION")
[ -n "${BENCH_FAIR_DURATION:-}" ] && args+=(-fair-d "$BENCH_FAIR_DURATION")
[ -n "${BENCH_WARMUP:-}" ] && args+=(-warm-d "$BENCH_WARMUP")
[ -n "${BENCH_REPS:-}" ] && args+=(-reps "$BENCH_REPS")
[ -n "${BENCH_APPS:-}" ] && args+=(-apps "$BENCH_APPS")
[ -n "${BENCH_SERVERS:-}" ] && args+=(-servers "$BENCH_SERVERS")
[ -n "${BENCH_MODES:-}" ] && args+=(-modes "$BENCH_MODES")
[ -n "${BENCH_GOWSGI_THREADS:-}" ] && args+=(-gowsgi-threads "$BENCH_GOWSGI_THREADS")
[ -n "${BENCH_OUT:-}" ] && args+=(-out "$BENCH_OUT")

# shellcheck disable=SC2086 # BENCH_ARGS is split on purpose
exec bin/bench/run "${args[@]}" ${BENCH_ARGS:-}
