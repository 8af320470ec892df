//go:build !pystatic

package pybridge

// The shared libpython that pkg-config's python3-embed names: what a plain `go build` links.
// The Makefile builds with the pystatic tag instead (link_static.go) when that Python has a
// static library.

// #cgo pkg-config: python3-embed
import "C"
