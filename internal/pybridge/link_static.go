//go:build pystatic

package pybridge

// CPython's static library, linked into the binary: the Makefile sets this tag when the
// Python has one, and points PKG_CONFIG at scripts/pkg-config-python, which answers for this
// module with the flags of scripts/python-static-libs. The interpreter then runs without the
// indirections of position-independent code: 12-20 % less CPU per Flask request in the workers
// (docs/benchmarks.md). The module's name differs from link_shared.go's so that Go's build
// cache, which does not look at what pkg-config answers, keeps the two builds apart.

// #cgo pkg-config: python3-embed-static
import "C"
