// Command load is the benchmark's fairness load generator. It keeps N connections open,
// each one sending requests one after another (the next request only after the previous
// response was read completely), and records how many responses every connection got. A
// server that lets some connections wait while others are served shows it here, where an
// aggregate tool like wrk only reports totals.
//
//	load -url http://127.0.0.1:8000/ -c 64 -d 3s [-method POST -body-file F] [-expect-len N]
//
// Every request has -timeout to complete (a request that times out counts as an error);
// requests still in flight when the run ends are abandoned and neither counted nor errors,
// so starved connections show up as low counts, not as errors.
//
// A connection the server closes (Connection: close, or EOF between responses) is reopened;
// the connection slot keeps its count. It prints one JSON object (see Result) on stdout.
//
// Fairness is reported two ways over the per-connection counts x_1..x_n:
//
//	jain     = (Σx)² / (n·Σx²)   1 = perfectly even, 1/n = one connection got everything
//	min_mean = min(x) / mean(x)  0 as soon as one connection was starved completely
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gowsgi/bench/loadstats"
)

// Result is what load prints.
type Result = loadstats.Stats

func main() {
	rawURL := flag.String("url", "", "target URL (http only)")
	conns := flag.Int("c", 64, "connections")
	dur := flag.Duration("d", 3*time.Second, "duration")
	method := flag.String("method", "GET", "request method")
	bodyFile := flag.String("body-file", "", "request body file (sent with Content-Length)")
	expectLen := flag.Int64("expect-len", -1, "expected response body length; other lengths count as errors")
	expectBody := flag.String("expect-body", "", "expected response body; others count as errors")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout; a slower response counts as an error")
	flag.Parse()

	if err := run(*rawURL, *conns, *dur, *method, *bodyFile, *expectLen, *expectBody, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(rawURL string, n int, dur time.Duration, method, bodyFile string, expectLen int64, expectBody string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("bad -url %q (want http://HOST:PORT/PATH)", rawURL)
	}
	if n < 1 {
		return errors.New("-c must be >= 1")
	}
	var body []byte
	if bodyFile != "" {
		if body, err = os.ReadFile(bodyFile); err != nil {
			return err
		}
	}
	path := u.RequestURI()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gowsgi-bench-load\r\n", method, path, u.Host)
	if body != nil || method == "POST" || method == "PUT" {
		fmt.Fprintf(&req, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)

	chk := checker{expectLen: expectLen}
	if expectBody != "" {
		chk.expectBody = []byte(expectBody)
		chk.expectLen = int64(len(expectBody))
	}

	workers := make([]*worker, n)
	for i := range workers {
		workers[i] = &worker{addr: u.Host, req: req.Bytes(), chk: chk, timeout: timeout}
		// Connect up front so that every connection starts at the same moment.
		if err := workers[i].dial(); err != nil {
			return fmt.Errorf("connect %d: %w", i, err)
		}
	}
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.loop(end) }()
	}
	wg.Wait()

	res := Result{Conns: n, Seconds: dur.Seconds(), PerConn: make([]int64, n)}
	var lat []time.Duration
	for i, w := range workers {
		w.close()
		res.PerConn[i] = w.count
		res.Requests += w.count
		res.Errors += w.errs
		for _, e := range w.errText {
			if len(res.ErrorText) < 5 {
				res.ErrorText = append(res.ErrorText, e)
			}
		}
		lat = append(lat, w.lat...)
	}
	res.RPS = float64(res.Requests) / dur.Seconds()
	res.Jain, res.MinMean, res.Min, res.Max = fairness(res.PerConn)
	for _, c := range res.PerConn {
		if c > 0 {
			res.Served++
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p float64) float64 {
			i := int(math.Ceil(p*float64(len(lat)))) - 1
			i = max(0, min(i, len(lat)-1))
			return float64(lat[i].Microseconds()) / 1000
		}
		res.LatencyMS = loadstats.Latencies{P50: pct(0.50), P99: pct(0.99), Max: float64(lat[len(lat)-1].Microseconds()) / 1000}
	}
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(res)
}

// fairness returns Jain's index, min/mean, min and max of the counts.
func fairness(x []int64) (jain, minMean float64, lo, hi int64) {
	if len(x) == 0 {
		return 0, 0, 0, 0
	}
	var sum, sq float64
	lo, hi = x[0], x[0]
	for _, v := range x {
		f := float64(v)
		sum += f
		sq += f * f
		lo = min(lo, v)
		hi = max(hi, v)
	}
	if sum == 0 {
		return 0, 0, lo, hi
	}
	jain = sum * sum / (float64(len(x)) * sq)
	minMean = float64(lo) / (sum / float64(len(x)))
	return jain, minMean, lo, hi
}

type checker struct {
	expectLen  int64
	expectBody []byte
}

// worker is one connection slot.
type worker struct {
	addr    string
	req     []byte
	chk     checker
	timeout time.Duration

	conn    net.Conn
	br      *bufio.Reader
	count   int64
	errs    int64
	errText []string
	lat     []time.Duration
	scratch []byte
}

func (w *worker) dial() error {
	c, err := net.DialTimeout("tcp", w.addr, w.timeout)
	if err != nil {
		return err
	}
	w.conn = c
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, 64*1024)
	} else {
		w.br.Reset(c)
	}
	return nil
}

func (w *worker) close() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

func (w *worker) fail(err error) {
	w.errs++
	if len(w.errText) < 2 {
		w.errText = append(w.errText, err.Error())
	}
	w.close()
}

func (w *worker) loop(end time.Time) {
	w.lat = make([]time.Duration, 0, 1024)
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		if w.conn == nil {
			if err := w.dial(); err != nil {
				w.fail(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		// A request still waiting when the run ends is abandoned, not counted as an error;
		// one that waited the full timeout before that is an error.
		deadline := now.Add(w.timeout)
		if deadline.After(end) {
			deadline = end
		}
		w.conn.SetDeadline(deadline)
		keep, err := w.roundTrip()
		done := time.Now()
		if err != nil {
			if !done.Before(end) && isTimeout(err) {
				w.close()
				return
			}
			w.fail(err)
			continue
		}
		if done.After(end) {
			// Finished after the deadline: not counted, so that every connection is
			// measured over the same interval.
			return
		}
		w.count++
		w.lat = append(w.lat, done.Sub(now))
		if !keep {
			w.close()
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roundTrip writes the request and reads one complete response. keep reports whether the
// connection may carry another request.
func (w *worker) roundTrip() (keep bool, err error) {
	if _, err := w.conn.Write(w.req); err != nil {
		return false, err
	}
	line, err := w.br.ReadSlice('\n')
	if err != nil {
		return false, fmt.Errorf("status line: %w", err)
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return false, fmt.Errorf("bad status line %q", line)
	}
	http10 := line[7] == '0'
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return false, fmt.Errorf("bad status line %q", line)
	}
	keep = !http10
	length := int64(-1)
	chunked := false
	for {
		h, err := w.br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("headers: %w", err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return false, fmt.Errorf("bad header %q", h)
		}
		value = bytes.TrimSpace(value)
		switch strings.ToLower(string(name)) {
		case "content-length":
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil {
				return false, fmt.Errorf("bad Content-Length %q", value)
			}
		case "transfer-encoding":
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case "connection":
			v := strings.ToLower(string(value))
			if strings.Contains(v, "close") {
				keep = false
			} else if strings.Contains(v, "keep-alive") {
				keep = true
			}
		}
	}
	var n int64
	switch {
	case chunked:
		n, err = w.readChunked()
	case length >= 0:
		n, err = w.readBody(length)
	default:
		keep = false
		n, err = w.readBody(-1)
	}
	if err != nil {
		return false, fmt.Errorf("body: %w", err)
	}
	if status < 200 || status > 399 {
		return false, fmt.Errorf("status %d", status)
	}
	if w.chk.expectLen >= 0 && n != w.chk.expectLen {
		return false, fmt.Errorf("body length %d, want %d", n, w.chk.expectLen)
	}
	if w.chk.expectBody != nil && !bytes.Equal(w.scratch, w.chk.expectBody) {
		return false, fmt.Errorf("body %.40q, want %.40q", w.scratch, w.chk.expectBody)
	}
	return keep, nil
}

// readBody reads length bytes (or up to EOF for -1); it keeps them in w.scratch only when
// the body is to be compared.
func (w *worker) readBody(length int64) (int64, error) {
	w.scratch = w.scratch[:0]
	if length < 0 {
		if w.chk.expectBody != nil {
			b, err := io.ReadAll(w.br)
			w.scratch = append(w.scratch, b...)
			return int64(len(b)), err
		}
		return io.Copy(io.Discard, w.br)
	}
	if w.chk.expectBody != nil && length <= int64(len(w.chk.expectBody)) {
		w.scratch = slices.Grow(w.scratch, int(length))[:length]
		_, err := io.ReadFull(w.br, w.scratch)
		return length, err
	}
	n, err := w.br.Discard(int(length))
	return int64(n), err
}

func (w *worker) readChunked() (int64, error) {
	var total int64
	w.scratch = w.scratch[:0]
	for {
		line, err := w.br.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		sz, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		if err != nil || size < 0 {
			return total, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			// Trailers, then the empty line.
			for {
				t, err := w.br.ReadSlice('\n')
				if err != nil {
					return total, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return total, nil
				}
			}
		}
		if w.chk.expectBody != nil && total+size <= int64(len(w.chk.expectBody)) {
			start := len(w.scratch)
			w.scratch = slices.Grow(w.scratch, int(size))[:start+int(size)]
			if _, err := io.ReadFull(w.br, w.scratch[start:]); err != nil {
				return total, err
			}
		} else if _, err := w.br.Discard(int(size)); err != nil {
			return total, err
		}
		total += size
		if _, err := w.br.Discard(2); err != nil {
			return total, err
		}
	}
}
