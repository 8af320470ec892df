#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target in the module for FUZZTIME (default 5s).
#
# Targets are discovered with `go test -list '^Fuzz'` per package, so new
# fuzzers are picked up without editing this script. Each target runs on its
# own (Go allows one -fuzz target per invocation). The script runs all of them
# and fails if any failed.
#
# go1.26's fuzz coordinator can report a bare "context deadline exceeded" when
# -fuzztime ends while a worker is mid-input (golang/go#75804, fixed in
# go1.27). Such a run found nothing: it wrote no failing input. It is retried
# once and, if it happens again, reported as a flake rather than a failure.
# Any run that writes a failing input (testdata/fuzz/NAME/...) or fails a seed
# is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}

failed=()
flaked=()
passed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run_target PKG NAME: 0 passed, 1 failed, 2 deadline flake.
run_target() {
	local pkg=$1 name=$2
	if "$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1 | tee "$log"; then
		return 0
	fi
	if grep -q 'context deadline exceeded' "$log" &&
		! grep -q 'Failing input written' "$log" &&
		! grep -q -- "--- FAIL: ${name}/" "$log"; then
		return 2
	fi
	return 1
}

# Only packages that have test files can have fuzz targets.
pkgs=$("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...)
for pkg in $pkgs; do
	if ! targets=$("$GO" test -list '^Fuzz' "$pkg" 2>&1); then
		echo "$targets" >&2
		failed+=("$pkg (listing fuzz targets)")
		continue
	fi
	for name in $(grep -E '^Fuzz[A-Za-z0-9_]*$' <<<"$targets" || true); do
		echo "fuzz: $pkg $name ($FUZZTIME)"
		rc=0
		run_target "$pkg" "$name" || rc=$?
		if [ "$rc" -eq 2 ]; then
			echo "fuzz: $pkg $name: 'context deadline exceeded' without a failing input (golang/go#75804); retrying"
			rc=0
			run_target "$pkg" "$name" || rc=$?
		fi
		case "$rc" in
		0) passed=$((passed + 1)) ;;
		2) flaked+=("$pkg $name") ;;
		*) failed+=("$pkg $name") ;;
		esac
	done
done

if [ "${#flaked[@]}" -gt 0 ]; then
	echo "fuzz: ${#flaked[@]} target(s) hit golang/go#75804 twice (no failing input; not counted as failures):"
	printf '  %s\n' "${flaked[@]}"
fi
if [ "${#failed[@]}" -gt 0 ]; then
	echo "fuzz: ${#failed[@]} failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $passed target(s) passed"
