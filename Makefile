# gowsgi build, run and test entry points. See README.md.
#
#   make run     install deps, build, serve examples/hello on 127.0.0.1:8000
#   make test    install deps, go vet, go test, brief fuzzing
#   make fuzz    longer fuzzing (FUZZTIME=60s per target)
#   make bench   side-by-side benchmark against the peers (~20 min); bench-hop: the hop alone
#
# Build against another CPython with e.g. `make PYTHON_PKG=python-3.12-embed build`.
# The cgo preamble in internal/pybridge runs pkg-config for python3-embed, so a
# plain `go build ./...` works too (linking the shared libpython); see PKG_CONFIG below.
# `make PYTHON_LINK=shared` links the shared libpython where a static one exists too.

SHELL := /bin/bash
GO ?= go
PYTHON_PKG ?= python3-embed
GOWSGI_PYTHON ?= /usr/bin/python3
FUZZTIME ?= 5s
TEST_TIMEOUT ?= 15m
BIN := bin/gowsgi

PYTHON_LINK ?= static

export CGO_ENABLED := 1
# pybridge's cgo preamble asks pkg-config for python3-embed. To build against another
# Python, PKG_CONFIG points at a wrapper that answers for $(PYTHON_PKG) instead.
#
# Where that Python has a static libpython (libpythonX.Y.a), it is linked into the binary:
# the pystatic tag makes pybridge ask for python3-embed-static, which the wrapper answers
# with scripts/python-static-libs (12-20 % less CPU per Flask request in the workers; see
# docs/benchmarks.md). Go checks the flags pkg-config gives; --whole-archive must be allowed.
# Every go command inherits this through the environment, `go build`s run by tests too.
ifeq ($(PYTHON_LINK),static)
PYTHON_STATIC := $(shell PYTHON_PKG=$(PYTHON_PKG) scripts/python-static-libs >/dev/null 2>&1 && echo yes)
endif
ifeq ($(PYTHON_STATIC),yes)
export PKG_CONFIG := $(CURDIR)/scripts/pkg-config-python
export GOFLAGS := $(strip $(GOFLAGS) -tags=pystatic)
export CGO_LDFLAGS_ALLOW := -Wl,--(no-)?whole-archive
else ifneq ($(PYTHON_PKG),python3-embed)
export PKG_CONFIG := $(CURDIR)/scripts/pkg-config-python
endif
export PYTHON_PKG GOWSGI_PYTHON

# Go's build cache does not look at what pkg-config answers, so a build for another Python, or
# after the Python was upgraded, would reuse a pybridge compiled and linked for the last one.
# A define naming what it answers keeps them apart (scripts/python-build-id).
PYTHON_MODULE := python3-embed$(if $(PYTHON_STATIC),-static)
PYTHON_BUILD_ID := $(shell PKG_CONFIG=$(PKG_CONFIG) PYTHON_PKG=$(PYTHON_PKG) scripts/python-build-id $(PYTHON_MODULE))
export CGO_CPPFLAGS := $(strip $(CGO_CPPFLAGS) -DGOWSGI_PYTHON_BUILD=$(PYTHON_BUILD_ID))

SUBMAKE = $(MAKE) --no-print-directory

.PHONY: all deps build run test fuzz bench bench-hop clean _build _run _test _fuzz _check-python

all: build

deps:
	@scripts/deps.sh

build: _check-python
	$(GO) build -o $(BIN) ./cmd/gowsgi

run: deps
	@$(SUBMAKE) _run

test: deps
	@$(SUBMAKE) _test

fuzz: deps
	@$(SUBMAKE) _fuzz

bench: deps
	@$(SUBMAKE) build
	@scripts/bench.sh

# The front-worker hop alone, over the unix socket and over a shared-memory ring (about 3
# minutes; see docs/benchmarks.md).
bench-hop: deps
	@mkdir -p bin/bench
	$(GO) build -o bin/bench/hop ./bench/hop
	bin/bench/hop -out bench/results/hop.md

clean:
	rm -rf bin

_run: build
	$(BIN) --chdir examples/hello -b 127.0.0.1:8000 app:application

_test: _check-python
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

_fuzz: _check-python
	FUZZTIME=60s scripts/fuzz.sh

_check-python:
	@pkg-config --exists $(PYTHON_PKG) || { \
		echo "pkg-config cannot find '$(PYTHON_PKG)': run 'make deps', or set PYTHON_PKG (e.g. PYTHON_PKG=python-3.12-embed)" >&2; \
		exit 1; }

# Print the effective cgo environment (debugging aid).
.PHONY: env
env:
	@echo "PYTHON_PKG=$(PYTHON_PKG)"
	@echo "PKG_CONFIG=$$PKG_CONFIG"
	@echo "libpython: $(if $(PYTHON_STATIC),static (GOFLAGS=$$GOFLAGS),shared)"
	@echo "cflags: $$($${PKG_CONFIG:-pkg-config} --cflags python3-embed)"
	@echo "libs:   $$($${PKG_CONFIG:-pkg-config} --libs python3-embed$(if $(PYTHON_STATIC),-static))"
	@echo "GOWSGI_PYTHON=$$GOWSGI_PYTHON"
	@echo "CGO_CPPFLAGS=$$CGO_CPPFLAGS"
