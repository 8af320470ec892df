//go:build pystatic

package pybridge

import (
	"os"
	"strings"
	"testing"
)

// TestStaticLibpython checks that the pystatic build runs the interpreter linked into the
// binary: no shared libpython is mapped, not even one an extension module pulled in.
func TestStaticLibpython(t *testing.T) {
	onThread(t, func(th *Thread) {
		call(th, "/extensions", "") // extension modules are loaded too
		th.Close()
	})
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "libpython") {
			t.Errorf("a shared libpython is mapped: %s", l)
		}
	}
}
