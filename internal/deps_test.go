package internal_test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBoundaries keeps cgo in one package and Python out of the front (design.md §2): only
// pybridge imports "C", and the packages of the front process never import pybridge.
func TestBoundaries(t *testing.T) {
	noPython := []string{"front", "supervisor", "frame", "config", "wsgi", "http1", "logging", "listen"}
	for _, pkg := range noPython {
		deps := transitiveImports(t, "gowsgi/internal/"+pkg)
		for _, bad := range []string{"C", "gowsgi/internal/pybridge", "gowsgi/internal/worker"} {
			if deps[bad] {
				t.Errorf("internal/%s depends on %s", pkg, bad)
			}
		}
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "pybridge" || e.Name() == "testdata" {
			continue
		}
		p, err := build.ImportDir(e.Name(), 0)
		if err != nil {
			continue // not a Go package
		}
		for _, imp := range p.Imports {
			if imp == "C" {
				t.Errorf("internal/%s imports \"C\"; only pybridge may", e.Name())
			}
		}
	}
}

// TestPackageDocs requires a package doc comment in every package.
func TestPackageDocs(t *testing.T) {
	var dirs []string
	for _, root := range []string{".", "../cmd"} {
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && path != "." && !strings.Contains(path, "testdata") {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	for _, dir := range dirs {
		p, err := build.ImportDir(dir, build.ImportComment)
		if err != nil || p.Name == "" {
			continue
		}
		if p.Doc == "" {
			t.Errorf("package %s (%s) has no package doc", p.Name, dir)
		}
	}
}

func transitiveImports(t *testing.T, path string) map[string]bool {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		if !strings.HasPrefix(p, "gowsgi/") {
			return
		}
		pkg, err := build.Import(p, ".", 0)
		if err != nil {
			t.Fatalf("import %s: %v", p, err)
		}
		for _, imp := range pkg.Imports {
			visit(imp)
		}
	}
	visit(path)
	return seen
}
