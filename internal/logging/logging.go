// Package logging formats gowsgi's error log and access log the way gunicorn users read them:
// "[2026-11-23 21:00:00 +0000] [pid] [LEVEL] message". Everyone else receives a *slog.Logger
// built here; nothing in this package is global.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// ParseLevel maps gunicorn's level names (debug, info, warning, error, critical) to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "critical":
		return slog.LevelError + 4, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warning, error or critical)", s)
}

// Handler is a slog.Handler writing gunicorn-style lines. It is safe for concurrent use.
type Handler struct {
	mu    *sync.Mutex // guards writes to w
	w     io.Writer
	level slog.Leveler
	pid   int
	attrs string
}

// New returns a logger writing to w at level.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(&Handler{mu: new(sync.Mutex), w: w, level: level, pid: os.Getpid()})
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError+4:
		return "CRITICAL"
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	fmt.Fprintf(&b, "[%s] [%d] [%s] %s", t.Format("2006-01-02 15:04:05 -0700"), h.pid, levelName(r.Level), r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func writeAttr(b *strings.Builder, a slog.Attr) {
	v := a.Value.Resolve().String()
	if strings.ContainsAny(v, " \"=") {
		v = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(b, " %s=%s", a.Key, v)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		writeAttr(&b, a)
	}
	h2 := *h
	h2.attrs = b.String()
	return &h2
}

// WithGroup implements slog.Handler; groups are flattened.
func (h *Handler) WithGroup(string) slog.Handler { return h }

// File is a log file that can be reopened (SIGUSR1, after logrotate moved it). It is safe for
// concurrent use; "-" or "" names the fallback stream, which is never reopened.
type File struct {
	path     string
	fallback *os.File

	// mu guards f.
	mu sync.Mutex
	f  *os.File
}

// OpenFile opens path for appending, or uses fallback for "-" and "".
func OpenFile(path string, fallback *os.File) (*File, error) {
	lf := &File{path: path, fallback: fallback, f: fallback}
	if path == "" || path == "-" {
		return lf, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	lf.f = f
	return lf, nil
}

// Write implements io.Writer.
func (lf *File) Write(p []byte) (int, error) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.f.Write(p)
}

// Reopen opens the file's path anew and switches to it.
func (lf *File) Reopen() error {
	if lf.path == "" || lf.path == "-" {
		return nil
	}
	f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("reopen %s: %w", lf.path, err)
	}
	lf.mu.Lock()
	old := lf.f
	lf.f = f
	lf.mu.Unlock()
	return old.Close()
}

// Close closes the file unless it is the fallback stream.
func (lf *File) Close() error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f == lf.fallback {
		return nil
	}
	return lf.f.Close()
}
