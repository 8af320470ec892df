package main

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"gowsgi/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestLibpythonLink checks what the report says of the gowsgi binary go build makes here:
// static libpython under the Makefile's pystatic tag (GOFLAGS), shared without it.
func TestLibpythonLink(t *testing.T) {
	want := ", shared libpython"
	if strings.Contains(os.Getenv("GOFLAGS"), "pystatic") {
		want = ", static libpython"
	}
	if got := libpythonLink(testenv.BuildBinary(t)); got != want {
		t.Errorf("gowsgi: %q, want %q", got, want)
	}
	if got := libpythonLink(os.Args[0]); got != "" {
		t.Errorf("a binary without Python: %q", got)
	}
}

const wrkSample = `Running 3s test @ http://127.0.0.1:18082/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   646.93us  366.39us   3.90ms   61.83%
    Req/Sec   100.08k     6.47k  105.97k    86.67%
  Latency Distribution
     50%  652.00us
     75%    0.93ms
     90%    1.11ms
     99%    1.45s
  298043 requests in 3.00s, 32.69MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  99278.17
Transfer/sec:     10.89MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{Requests: 298043, Seconds: 3, RPS: 99278.17, P50ms: 0.652, P90ms: 1.11, P99ms: 1450,
		SocketErrors: 10, Non2xx: 5}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	if _, err := parseWrk("wrk: connection refused"); err == nil {
		t.Error("parseWrk accepted output without a request count")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestSummaryChecksAndEncoding(t *testing.T) {
	env := &Env{Workers: 2, Threads: 4, AppThreads: map[string]int{"sleep": 32}}
	defs := serverDefs(env)
	apps, _ := selectApps([]string{"hello"})
	mk := func(server string, rep int, rps float64, jain float64) Run {
		return Run{Rep: rep, Mode: "pinned", App: "hello", Server: server, Wrk: WrkResult{RPS: rps, Requests: int64(rps), P99ms: 1},
			PeakRSSKB: 1024, Fair: &LoadStats{Jain: jain, MinMean: jain, Requests: 10}}
	}
	runs := []Run{
		mk("gowsgi", 1, 100, 1), mk("gowsgi", 2, 300, 1), mk("gowsgi", 3, 200, 1),
		mk("gunicorn-gthread", 1, 100, 1), mk("go-net/http", 1, 400, 1),
		{Rep: 1, Mode: "pinned", App: "hello", Server: "waitress", Failed: "boom"},
	}
	runs[4].Wrk.P99ms = 0.5 // the baseline is the ceiling, not a peer to compare latency with
	set := Settings{Modes: []string{"pinned"}, Apps: []string{"hello"}, Servers: []string{"gowsgi", "gunicorn-gthread", "waitress", "go-net/http"}, Conns: 64}
	res := buildResults(Meta{Started: "2026-01-01T00:00:00Z"}, set, runs, defs, apps)
	g := find(res.Summary, "pinned", "hello", "gowsgi")
	if g == nil || g.RPS != 200 || g.Reps != 3 {
		t.Fatalf("gowsgi summary = %+v", g)
	}
	var ratio, p99 float64
	for _, c := range res.Checks {
		switch c.Name {
		case "hello req/s ÷ gunicorn gthread":
			ratio = c.Value
		case "p99 latency ÷ best fair peer's p99":
			p99 = c.Value
		}
	}
	if ratio != 2 {
		t.Errorf("hello ÷ gthread = %v, want 2", ratio)
	}
	if p99 != 1 {
		t.Errorf("p99 ÷ best fair peer's = %v, want 1 (gunicorn-gthread's, not the Go baseline's)", p99)
	}
	res.sanitize()
	js, err := encodeResults(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("results.json does not parse: %v\n%s", err, js)
	}
	if len(back.Runs) != len(runs) || len(back.Summary) != len(res.Summary) {
		t.Errorf("round trip lost data: %d runs, %d summaries", len(back.Runs), len(back.Summary))
	}
	md := renderMarkdown(res, "chart.svg")
	if !strings.Contains(md, "failed: boom") || !strings.Contains(md, "| hello | **gowsgi** |") {
		t.Errorf("markdown misses rows:\n%s", md)
	}
	if svg := renderChart(res); !strings.HasPrefix(svg, "<svg") || !strings.HasSuffix(svg, "</svg>\n") {
		t.Error("chart is not an SVG document")
	}
}

func TestStalled(t *testing.T) {
	ok := Run{Wrk: WrkResult{Requests: 1000}, Fair: &LoadStats{Requests: 10}}
	if why := ok.stalled(64); why != "" {
		t.Errorf("healthy run reported as %q", why)
	}
	if (Run{Wrk: WrkResult{Requests: 64}}).stalled(64) == "" {
		t.Error("one response per connection not reported as a stall")
	}
	if (Run{Wrk: WrkResult{Requests: 1000}, Fair: &LoadStats{}}).stalled(64) == "" {
		t.Error("empty fairness pass not reported as a stall")
	}
}
