// Command gohello is the benchmark's baseline: a minimal Go net/http server answering
// "Hello, World!" (13 bytes, text/plain) on every path. It is what a hello-world request
// costs without Python, and the ceiling for the hello app.
//
//	gohello -b 127.0.0.1:8000
package main

import (
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

var body = []byte("Hello, World!")

func main() {
	bind := flag.String("b", "127.0.0.1:8000", "listen address HOST:PORT")
	flag.Parse()

	length := strconv.Itoa(len(body))
	srv := &http.Server{
		Addr: *bind,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{length}
			w.Write(body)
		}),
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
