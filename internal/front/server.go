// Package front is the serving process: it owns the listeners and every client connection,
// does all HTTP/1.1 work, and hands each request to a free Python thread through the
// supervisor. It never starts Python; it knows only that a worker thread takes a packed request
// and answers with a head and a body.
package front

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"gowsgi/internal/frame"
	"gowsgi/internal/http1"
	"gowsgi/internal/supervisor"
	"gowsgi/internal/wsgi"
)

// Config is what the front needs to serve. Zero durations take the documented defaults.
type Config struct {
	Listeners []net.Listener
	Limits    http1.Limits
	Environ   wsgi.Options

	// HeaderTimeout bounds reading one request head once its first byte arrived (default 30s).
	HeaderTimeout time.Duration
	// KeepAlive is how long an idle keep-alive connection waits for its next request
	// (gunicorn --keep-alive; default 5s).
	KeepAlive time.Duration
	// BodyTimeout bounds each read of a request body (default 60s).
	BodyTimeout time.Duration
	// WriteTimeout bounds each write to a client (default 60s).
	WriteTimeout time.Duration
	// Timeout bounds how long the app may stay silent: until the response head, and then
	// between two pieces of the body. Past it the client gets 504 (or the connection closes if
	// the head was sent) and the worker raises RequestTimeout in the thread. 0 disables it.
	Timeout time.Duration
	// BodyPrefix is how many request body bytes travel with the request frame, read before a
	// Python thread is taken (default 64 KiB).
	BodyPrefix int
	// LocalSendBuffer is the kernel send buffer of a TCP connection from this host (a reverse
	// proxy on the same machine): default 256 KiB; negative leaves the kernel's autotuning.
	// Autotuning lets a send queue grow to megabytes while the reader's window is shut, which
	// on loopback, where no round trip needs a big window, only holds cold memory: a pinned
	// 1 MiB-stream benchmark served 20-40 % more responses with 256 KiB (docs/benchmarks.md).
	LocalSendBuffer int

	AccessLog io.Writer // nil: no access log
	Logger    *slog.Logger
}

func (c *Config) defaults() {
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = 30 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 5 * time.Second
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 60 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.LocalSendBuffer == 0 {
		c.LocalSendBuffer = 256 << 10
	}
	if c.BodyPrefix == 0 {
		c.BodyPrefix = 64 << 10
	}
}

// Server serves HTTP/1.1 on its listeners. Create it with New.
type Server struct {
	cfg    Config
	sup    *supervisor.Supervisor
	log    *slog.Logger
	access *accessLog
	date   atomic.Pointer[cachedDate]
	// writers pools the connections' response buffers (*bufio.Writer, 16 KiB).
	writers sync.Pool
	// prefixes and bodies pool the buffers request bodies are read into, before dispatch
	// (Config.BodyPrefix) and for the app's reads (bodyAhead): a connection that once had a
	// body does not keep a buffer for it while idle.
	prefixes, bodies frame.BufPool

	acceptors sync.WaitGroup // one goroutine per listener
	conns     sync.WaitGroup // one goroutine per connection

	// mu guards the fields that follow.
	mu       sync.Mutex
	live     map[*conn]struct{}
	draining bool
}

// New returns a server dispatching to sup.
func New(cfg Config, sup *supervisor.Supervisor) *Server {
	cfg.defaults()
	s := &Server{cfg: cfg, sup: sup, log: cfg.Logger, live: make(map[*conn]struct{})}
	s.writers.New = func() any { return bufio.NewWriterSize(nil, 16<<10) }
	s.prefixes.MinCap = cfg.BodyPrefix // one buffer fits every prefix
	if cfg.AccessLog != nil {
		s.access = newAccessLog(cfg.AccessLog)
	}
	return s
}

// Serve accepts connections until ctx ends, then drains: it stops accepting, lets in-flight
// requests finish within grace() (asked when draining starts, so a quick stop can shorten
// it), and closes what is left.
func (s *Server) Serve(ctx context.Context, grace func() time.Duration) {
	for _, l := range s.cfg.Listeners {
		s.acceptors.Add(1)
		go s.accept(l)
	}
	<-ctx.Done()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	for _, l := range s.cfg.Listeners {
		l.Close() // stops the acceptors; the error they see is expected
	}
	s.acceptors.Wait()
	s.closeIdle()
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace()):
		s.log.Warn("Graceful timeout reached; closing the remaining connections and stopping the workers")
		s.mu.Lock()
		for c := range s.live {
			c.nc.Close()
		}
		s.mu.Unlock()
		s.sup.Kill() // fails the streams the connections still wait on
		<-done
	}
}

func (s *Server) accept(l net.Listener) {
	defer s.acceptors.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off instead of spinning.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			s.log.Error(fmt.Sprintf("Accept: %v; retrying in %v", err, delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.tune(nc)
		c := newConn(s, nc)
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.live[c] = struct{}{}
		s.conns.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// tune applies LocalSendBuffer to a TCP connection from this host.
func (s *Server) tune(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || s.cfg.LocalSendBuffer < 0 {
		return
	}
	if ra, ok := tc.RemoteAddr().(*net.TCPAddr); ok && ra.IP.IsLoopback() {
		_ = tc.SetWriteBuffer(s.cfg.LocalSendBuffer) // a failure leaves autotuning, which works
	}
}

// closeIdle closes the connections that wait for a next request; busy ones close after their
// current response.
func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.live {
		if c.idle.Load() {
			c.nc.Close()
		}
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.live, c)
	s.mu.Unlock()
	s.conns.Done()
}
