#!/usr/bin/env bash
# deps.sh installs the Debian/Ubuntu packages gowsgi needs to build and test.
#
#   scripts/deps.sh         build + test dependencies
#   scripts/deps.sh bench   the above plus benchmark-only tools
#
# It is idempotent and silent when everything is already present. It runs
# `apt-get update` at most once, and only if something has to be installed.
set -euo pipefail

build_pkgs=(gcc pkg-config python3-dev)
test_pkgs=(python3-flask python3-django python3-falcon python3-bottle)
# scripts/bench.sh: the servers gowsgi is compared with (gunicorn with its gevent worker,
# uWSGI with its Python 3 plugin, waitress), the Flask app, wrk, and taskset (util-linux).
bench_pkgs=(gunicorn python3-gevent uwsgi uwsgi-plugin-python3 python3-waitress python3-flask wrk util-linux)

want=("${build_pkgs[@]}" "${test_pkgs[@]}")
for arg in "$@"; do
	case "$arg" in
	bench) want+=("${bench_pkgs[@]}") ;;
	*)
		echo "deps.sh: unknown argument '$arg' (usage: scripts/deps.sh [bench])" >&2
		exit 2
		;;
	esac
done

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "deps.sh: 'go' is not on PATH; add /usr/local/go/bin to PATH" >&2
	else
		echo "deps.sh: Go is not installed; gowsgi needs Go >= 1.26 (https://go.dev/doc/install)" >&2
	fi
	exit 1
fi

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: this script supports Debian/Ubuntu (dpkg + apt-get) only;" >&2
	echo "         install by hand: ${want[*]}" >&2
	exit 1
fi

installed() {
	# dpkg -s exits 0 for removed-but-configured packages too; check the status.
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${want[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			sudo=(sudo)
		else
			echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
			exit 1
		fi
	fi
	echo "deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	if ! "${sudo[@]}" apt-get update -qq >"$log" 2>&1 ||
		! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
		cat "$log" >&2
		echo "deps.sh: apt-get failed installing: ${missing[*]}" >&2
		exit 1
	fi
fi

# python3-dev must provide the embedding flags the cgo bridge links with.
if ! pkg-config --exists python3-embed; then
	echo "deps.sh: 'pkg-config python3-embed' not found even though python3-dev is installed;" >&2
	echo "         check PKG_CONFIG_PATH or your Python installation" >&2
	exit 1
fi
