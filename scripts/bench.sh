#!/usr/bin/env bash
# bench.sh will run the benchmark suite described in docs/benchmarks.md
# (gowsgi against gunicorn, uWSGI and others, driven by wrk). Not built yet.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "bench: not yet implemented (benchmark-only tools: scripts/deps.sh bench)"
