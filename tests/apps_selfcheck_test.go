package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// TestAppsSelfcheck runs testdata/apps/selfcheck.py, which calls every test app in-process
// under wsgiref.validate and checks that it behaves as the other tests here expect. It needs
// no gowsgi binary: when it fails, the apps (or the Python packages) are at fault, not the
// server. $GOWSGI_PYTHON picks the interpreter (default /usr/bin/python3, which sees the
// Debian packages scripts/deps.sh installs).
func TestAppsSelfcheck(t *testing.T) {
	t.Parallel()
	python := os.Getenv("GOWSGI_PYTHON")
	if python == "" {
		python = "/usr/bin/python3"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join(testenv.AppsDir(t), "selfcheck.py"))
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s selfcheck.py: %v\n%s", python, err, out)
	}
	t.Logf("%s", out)
}
