package logging

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestLineFormat(t *testing.T) {
	var b bytes.Buffer
	New(&b, slog.LevelInfo).Warn("hello", "k", "v w")
	re := regexp.MustCompile(`^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[WARNING\] hello k="v w"\n$`)
	if !re.MatchString(b.String()) {
		t.Fatalf("got %q", b.String())
	}
	b.Reset()
	New(&b, slog.LevelWarn).Info("quiet")
	if b.Len() != 0 {
		t.Fatalf("info logged at warning level: %q", b.String())
	}
}

func TestParseLevel(t *testing.T) {
	for _, s := range []string{"debug", "info", "warning", "error", "critical", "INFO"} {
		if _, err := ParseLevel(s); err != nil {
			t.Errorf("ParseLevel(%q): %v", s, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel(loud) succeeded")
	}
}

func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "error.log")
	lf, err := OpenFile(path, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	lf.Write([]byte("one\n"))
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	lf.Write([]byte("two\n"))
	if err := lf.Reopen(); err != nil {
		t.Fatal(err)
	}
	lf.Write([]byte("three\n"))
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if strings.TrimSpace(string(old)) != "one\ntwo" || strings.TrimSpace(string(cur)) != "three" {
		t.Fatalf("rotated %q, current %q", old, cur)
	}
}
