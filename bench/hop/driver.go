package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type driveConfig struct {
	works, transports, modes string
	reps                     int
	d, warm                  time.Duration
	conns                    int
	out                      string
}

// cell is one (mode, work, transport) of the matrix.
type cell struct {
	pinned    bool
	work      time.Duration
	transport string
}

// drive runs every cell reps times, interleaved (repetition 1 of every cell, then 2, ...), and
// prints the medians as a markdown table.
func drive(c driveConfig) error {
	var cells []cell
	for _, m := range strings.Split(c.modes, ",") {
		if m != "pinned" && m != "unpinned" {
			return fmt.Errorf("-modes: unknown mode %q", m)
		}
		for _, ws := range strings.Split(c.works, ",") {
			w, err := time.ParseDuration(ws)
			if err != nil {
				return fmt.Errorf("-works: %w", err)
			}
			for _, t := range strings.Split(c.transports, ",") {
				if t != "socket" && t != "ring" && t != "ring-batch" {
					return fmt.Errorf("-transports: unknown transport %q", t)
				}
				cells = append(cells, cell{pinned: m == "pinned", work: w, transport: t})
			}
		}
	}
	if c.reps < 1 {
		return fmt.Errorf("-reps %d: want at least 1", c.reps)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	results := make([][]result, len(cells))
	for rep := 0; rep < c.reps; rep++ {
		for i, cl := range cells {
			args := []string{self, "-role", "front", "-transport", cl.transport, "-work", cl.work.String(),
				"-d", c.d.String(), "-warm", c.warm.String(), "-c", fmt.Sprint(c.conns)}
			if cl.pinned {
				args = append([]string{"taskset", "-c", "0"}, args...)
			}
			r, err := runOne(args, 10*(c.d+c.warm)+30*time.Second)
			if err != nil {
				return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
			}
			if cl.pinned && !r.Pinned {
				return fmt.Errorf("%s: the front ran on more than one CPU", strings.Join(args, " "))
			}
			fmt.Fprintf(os.Stderr, "rep %d: %s work %v %s: %.0f req/s, %.1f µs/req\n",
				rep+1, mode(cl.pinned), cl.work, cl.transport, r.RPS, r.FrontUS+r.WorkerUS)
			results[i] = append(results[i], r)
		}
	}
	var md bytes.Buffer
	report(&md, c, cells, results)
	os.Stdout.Write(md.Bytes())
	if c.out != "" {
		if err := os.WriteFile(c.out, md.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

// runOne runs a front and reads its result; a front that takes longer than timeout is killed.
func runOne(args []string, timeout time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	outb, err := cmd.Output()
	if err != nil {
		return result{}, err
	}
	var r result
	if err := json.Unmarshal(outb, &r); err != nil {
		return result{}, fmt.Errorf("read result %q: %w", outb, err)
	}
	return r, nil
}

func mode(pinned bool) string {
	if pinned {
		return "pinned"
	}
	return "unpinned"
}

// report writes the medians of each cell, and ring ÷ socket for each (mode, work).
func report(w io.Writer, c driveConfig, cells []cell, results [][]result) {
	fmt.Fprintf(w, "Run of %s, %s; %d requests in flight, %v per run after %v of warm-up, median of %d.\n\n",
		time.Now().UTC().Format(time.RFC3339), runtime.Version(), c.conns, c.d, c.warm, c.reps)
	fmt.Fprintln(w, "| mode | app time µs | transport | req/s | p50 µs | p99 µs | CPU µs/req front | worker | hop (all − app time) | switches/req front | worker |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	med := func(rs []result, f func(result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	type key struct {
		pinned bool
		work   time.Duration
	}
	hop := map[key]map[string]float64{}
	rps := map[key]map[string]float64{}
	for i, cl := range cells {
		rs := results[i]
		fr := med(rs, func(r result) float64 { return r.FrontUS })
		wk := med(rs, func(r result) float64 { return r.WorkerUS })
		all := med(rs, func(r result) float64 { return r.FrontUS + r.WorkerUS })
		h := all - float64(cl.work)/1e3
		k := key{cl.pinned, cl.work}
		if hop[k] == nil {
			hop[k], rps[k] = map[string]float64{}, map[string]float64{}
		}
		hop[k][cl.transport] = h
		rps[k][cl.transport] = med(rs, func(r result) float64 { return r.RPS })
		fmt.Fprintf(w, "| %s | %.0f | %s | %.0f | %.0f | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f |\n",
			mode(cl.pinned), float64(cl.work)/1e3, cl.transport, rps[k][cl.transport],
			med(rs, func(r result) float64 { return r.P50US }), med(rs, func(r result) float64 { return r.P99US }),
			fr, wk, h,
			med(rs, func(r result) float64 { return r.FrontCS }),
			med(rs, func(r result) float64 { return r.WorkerCS }))
	}
	fmt.Fprintln(w)
	for _, cl := range cells {
		k := key{cl.pinned, cl.work}
		s, ok := hop[k]["socket"]
		if cl.transport == "socket" || !ok {
			continue
		}
		r := hop[k][cl.transport]
		than := "less"
		if r > s {
			than = "more"
		}
		fmt.Fprintf(w, "- %s, app time %v: %s's hop costs %.1f µs per request %s than the socket's (%.1f → %.1f), %.2f× the socket's req/s\n",
			mode(cl.pinned), cl.work, cl.transport, math.Abs(s-r), than, s, r, rps[k][cl.transport]/rps[k]["socket"])
	}
}
