package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// fakePkgConfig writes a pkg-config into dir that answers for any module with the headers in
// dir/inc and the static library dir/libpython9.9.a, and logs its arguments to dir/args.
func fakePkgConfig(t *testing.T, dir string) string {
	t.Helper()
	script := "#!/bin/sh\necho \"$*\" >> " + dir + "/args\n" +
		"case \"$1\" in\n--cflags) echo -I" + dir + "/inc ;;\n--libs) echo " + dir + "/libpython9.9.a -lm ;;\nesac\n"
	p := filepath.Join(dir, "pkg-config")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func buildID(t *testing.T, pc string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(t), "scripts", "python-build-id"), "python3-embed")
	cmd.Env = append(os.Environ(), "PKG_CONFIG="+pc)
	out, err := cmd.Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		t.Fatalf("python-build-id: %q, %v", out, err)
	}
	return strings.TrimSpace(string(out))
}

// TestPythonBuildID checks the define the Makefile gives every cgo compile so that Go's build
// cache, which does not look at what pkg-config answers, rebuilds pybridge for another or an
// upgraded Python: it must change with the static library and with the headers' version.
func TestPythonBuildID(t *testing.T) {
	dir := t.TempDir()
	pc := fakePkgConfig(t, dir)
	lib := filepath.Join(dir, "libpython9.9.a")
	patch := filepath.Join(dir, "inc", "patchlevel.h")
	if err := os.MkdirAll(filepath.Dir(patch), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{lib, patch} {
		if err := os.WriteFile(f, []byte("v1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first := buildID(t, pc)
	if again := buildID(t, pc); again != first {
		t.Fatalf("the same Python gave %s, then %s", first, again)
	}
	if err := os.Chtimes(lib, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	upgraded := buildID(t, pc)
	if upgraded == first {
		t.Errorf("a new static library left the id at %s", first)
	}
	if err := os.WriteFile(patch, []byte("version 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if buildID(t, pc) == upgraded {
		t.Errorf("new headers left the id at %s", upgraded)
	}
}

// TestPkgConfigWrapper checks that scripts/pkg-config-python, the Makefile's PKG_CONFIG, asks
// pkg-config about $PYTHON_PKG when cgo asks about python3-embed or its cflags for
// python3-embed-static.
func TestPkgConfigWrapper(t *testing.T) {
	dir := t.TempDir()
	fakePkgConfig(t, dir)
	for _, mod := range []string{"python3-embed", "python3-embed-static"} {
		cmd := exec.Command(filepath.Join(testenv.RepoRoot(t), "scripts", "pkg-config-python"), "--cflags", "--", mod)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "PYTHON_PKG=python-9.9-embed")
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != "-I"+dir+"/inc" {
			t.Errorf("--cflags %s: %q, %v", mod, out, err)
		}
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "--cflags -- python-9.9-embed\n--cflags -- python-9.9-embed\n"; string(args) != want {
		t.Errorf("pkg-config was asked %q, want %q", args, want)
	}
}
