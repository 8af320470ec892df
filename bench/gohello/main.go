// Command gohello is the benchmark's baseline: a minimal Go net/http server answering every
// path like one of the benchmark's apps, without Python. It is what the HTTP side of a
// request costs alone, the ceiling for those apps.
//
//	gohello -b 127.0.0.1:8000              # hello: "Hello, World!" (13 bytes, text/plain)
//	gohello -b 127.0.0.1:8000 -app stream  # stream: 1 MiB, written as 16 chunks of 64 KiB
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// hello and streamChunk are the bodies of bench/apps/hello.py and bench/apps/stream.py.
var (
	hello       = []byte("Hello, World!")
	streamChunk = bytes.Repeat([]byte("x"), 64<<10)
)

const streamCount = 16

func main() {
	bind := flag.String("b", "127.0.0.1:8000", "listen address HOST:PORT")
	app := flag.String("app", "hello", "the app to answer like: hello or stream")
	flag.Parse()

	var handler http.HandlerFunc
	switch *app {
	case "hello":
		length := strconv.Itoa(len(hello))
		handler = func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{length}
			w.Write(hello)
		}
	case "stream":
		length := strconv.Itoa(len(streamChunk) * streamCount)
		handler = func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{length}
			for range streamCount {
				if _, err := w.Write(streamChunk); err != nil {
					return // the client went away
				}
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "gohello: -app %q: want hello or stream\n", *app)
		os.Exit(2)
	}
	srv := &http.Server{
		Addr:              *bind,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "gohello:", err)
		os.Exit(1)
	}
}
