package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Results is results.json.
type Results struct {
	Meta     Meta      `json:"meta"`
	Settings Settings  `json:"settings"`
	Summary  []Summary `json:"summary"`
	Checks   []Check   `json:"checks"`
	Runs     []Run     `json:"runs"`
}

// Summary is the median over repetitions of one (mode, app, server).
type Summary struct {
	Mode    string  `json:"mode"`
	App     string  `json:"app"`
	Server  string  `json:"server"`
	Config  string  `json:"config"`
	Reps    int     `json:"reps_ok"`
	Failed  int     `json:"reps_failed"`
	RPS     float64 `json:"rps"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Errors  int64   `json:"errors_total"`
	CPUUs   float64 `json:"cpu_us_per_request"`
	CPUBusy float64 `json:"cpu_cores_busy"`
	RSSMiB  float64 `json:"peak_rss_mib"`
	PSSMiB  float64 `json:"peak_pss_mib"`
	Procs   int     `json:"processes"`
	Jain    float64 `json:"fairness_jain"`
	MinMean float64 `json:"fairness_min_mean"`
	Served  float64 `json:"fairness_conns_served"`
	Other   float64 `json:"other_cores_busy"`
	Retried int     `json:"stalled_attempts_repeated"`
	RPSMin  float64 `json:"rps_min"`
	RPSMax  float64 `json:"rps_max"`
	FailMsg string  `json:"failure,omitempty"`
}

// Check is one number the project checks gowsgi against.
type Check struct {
	Name  string  `json:"name"`
	Mode  string  `json:"mode,omitempty"`
	App   string  `json:"app,omitempty"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Pass is set for checks with a fixed threshold.
	Pass *bool  `json:"pass,omitempty"`
	Note string `json:"note"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func summarize(runs []Run, defs []Server, apps []App, modes []string) []Summary {
	var out []Summary
	for _, mode := range modes {
		for _, app := range apps {
			for _, s := range defs {
				if !s.serves(app.Name) {
					continue
				}
				sum := Summary{Mode: mode, App: app.Name, Server: s.Name, Config: s.Config(app)}
				var rps, p50, p99, cpu, busy, rss, pss, jain, mm, served, other []float64
				for _, r := range runs {
					if r.Mode != mode || r.App != app.Name || r.Server != s.Name {
						continue
					}
					if r.Failed != "" {
						sum.Failed++
						if sum.FailMsg == "" {
							sum.FailMsg = firstLine(r.Failed)
						}
						continue
					}
					sum.Reps++
					sum.Retried += len(r.Discarded)
					other = append(other, r.OtherCores)
					sum.Errors += r.Errors
					rps = append(rps, r.Wrk.RPS)
					p50 = append(p50, r.Wrk.P50ms)
					p99 = append(p99, r.Wrk.P99ms)
					cpu = append(cpu, r.CPUUsPerReq)
					busy = append(busy, r.CPUCores)
					rss = append(rss, float64(r.PeakRSSKB)/1024)
					pss = append(pss, float64(r.PeakPSSKB)/1024)
					sum.Procs = max(sum.Procs, r.Procs)
					if r.Fair != nil {
						jain = append(jain, r.Fair.Jain)
						mm = append(mm, r.Fair.MinMean)
						served = append(served, float64(r.Fair.Served))
					}
				}
				if sum.Reps+sum.Failed == 0 {
					continue
				}
				sum.RPS, sum.P50ms, sum.P99ms = median(rps), median(p50), median(p99)
				sum.CPUUs, sum.CPUBusy = median(cpu), median(busy)
				sum.RSSMiB, sum.PSSMiB = median(rss), median(pss)
				sum.Jain, sum.MinMean, sum.Served = median(jain), median(mm), median(served)
				sum.Other = median(other)
				if len(rps) > 0 {
					sum.RPSMin, sum.RPSMax = slices.Min(rps), slices.Max(rps)
				}
				out = append(out, sum)
			}
		}
	}
	return out
}

func buildResults(meta Meta, set Settings, runs []Run, defs []Server, apps []App) Results {
	res := Results{Meta: meta, Settings: set, Runs: runs, Summary: summarize(runs, defs, apps, set.Modes)}
	res.Checks = computeChecks(res.Summary, set.Modes, set.Apps)
	return res
}

// sanitize replaces NaN (a summary without a successful run) by 0 for JSON.
func (r *Results) sanitize() {
	fix := func(p *float64) {
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			*p = 0
		}
	}
	for i := range r.Summary {
		s := &r.Summary[i]
		for _, p := range []*float64{&s.RPS, &s.P50ms, &s.P99ms, &s.CPUUs, &s.CPUBusy, &s.RSSMiB, &s.PSSMiB, &s.Jain, &s.MinMean, &s.Served, &s.Other} {
			fix(p)
		}
	}
	for i := range r.Checks {
		fix(&r.Checks[i].Value)
	}
}

func find(sums []Summary, mode, app, server string) *Summary {
	for i := range sums {
		s := &sums[i]
		if s.Mode == mode && s.App == app && s.Server == server && s.Reps > 0 {
			return s
		}
	}
	return nil
}

// peers returns the WSGI servers measured beside gowsgi on app: not gowsgi, not the baseline.
func peers(sums []Summary, mode, app string) []*Summary {
	var out []*Summary
	for i := range sums {
		s := &sums[i]
		if s.Mode == mode && s.App == app && s.Server != "gowsgi" && s.Server != goBaseline && s.Reps > 0 {
			out = append(out, s)
		}
	}
	return out
}

// fairPeer is the fairness (Jain) a peer needs to count as "best peer" for throughput
// and latency comparisons: wrk's numbers for a server that starves connections are not what
// its clients get.
const fairPeer = 0.9

// bestRPS returns the peer with the most req/s, and the one among peers with fairness of
// at least fairPeer.
func bestRPS(ps []*Summary) (best, bestFair *Summary) {
	for _, p := range ps {
		if best == nil || p.RPS > best.RPS {
			best = p
		}
		if p.Jain >= fairPeer && (bestFair == nil || p.RPS > bestFair.RPS) {
			bestFair = p
		}
	}
	return best, bestFair
}

func computeChecks(sums []Summary, modes, apps []string) []Check {
	var cs []Check
	add := func(c Check) { cs = append(cs, c) }
	pass := func(ok bool) *bool { return &ok }
	ratio := func(name, mode, app, peer string, f func(*Summary) float64, unit, note string) {
		g, p := find(sums, mode, app, "gowsgi"), find(sums, mode, app, peer)
		if g == nil || p == nil {
			return
		}
		add(Check{Name: name, Mode: mode, App: app, Value: f(g) / f(p), Unit: unit, Note: note})
	}
	rps := func(s *Summary) float64 { return s.RPS }
	for _, mode := range modes {
		if g := find(sums, mode, "hello", "gowsgi"); g != nil {
			note := "peers:"
			for _, p := range peers(sums, mode, "hello") {
				note += fmt.Sprintf(" %s %.0f", p.Server, p.CPUUs)
			}
			add(Check{Name: "server CPU per hello request", Mode: mode, App: "hello", Value: g.CPUUs, Unit: "µs", Note: note})
		}
		ratio("hello req/s ÷ Go net/http", mode, "hello", goBaseline, rps, "×", "higher is better")
		ratio("hello req/s ÷ gunicorn gthread", mode, "hello", "gunicorn-gthread", rps, "×", "higher is better")
		ratio("flask req/s ÷ gunicorn gthread", mode, "flask", "gunicorn-gthread", rps, "×", "higher is better")
		ratio("flask req/s ÷ uWSGI --http-socket", mode, "flask", "uwsgi-http", rps, "×", "higher is better")
		if g := find(sums, mode, "stream", "gowsgi"); g != nil {
			best, bestFair := bestRPS(peers(sums, mode, "stream"))
			if best != nil {
				add(Check{Name: "stream req/s ÷ best peer", Mode: mode, App: "stream", Value: g.RPS / best.RPS, Unit: "×",
					Note: fmt.Sprintf("best peer: %s (fairness %.3f)", best.Server, best.Jain)})
			}
			if bestFair != nil {
				add(Check{Name: "stream req/s ÷ best fair peer", Mode: mode, App: "stream", Value: g.RPS / bestFair.RPS, Unit: "×",
					Note: fmt.Sprintf("best peer with fairness ≥ %.1f: %s", fairPeer, bestFair.Server)})
				add(Check{Name: "stream peak RSS ÷ best fair peer", Mode: mode, App: "stream", Value: g.RSSMiB / bestFair.RSSMiB, Unit: "×",
					Note: fmt.Sprintf("gowsgi %.1f MiB, %s %.1f MiB; lower is better", g.RSSMiB, bestFair.Server, bestFair.RSSMiB)})
			}
			ratio("stream req/s ÷ Go net/http", mode, "stream", goBaseline, rps, "×",
				"the same 1 MiB in 16 writes of 64 KiB from Go's memory: the ceiling of the HTTP side")
			add(Check{Name: "stream fairness (Jain) ≥ 0.9", Mode: mode, App: "stream", Value: g.Jain, Unit: "",
				Pass: pass(g.Jain >= 0.9), Note: fmt.Sprintf("min/mean %.2f", g.MinMean)})
		}
		if g := find(sums, mode, "echo", "gowsgi"); g != nil {
			for _, p := range peers(sums, mode, "echo") {
				add(Check{Name: "echo req/s ÷ " + p.Server, Mode: mode, App: "echo", Value: g.RPS / p.RPS, Unit: "×", Note: "higher is better"})
			}
		}
		if mode == "unpinned" {
			ratio("sleep req/s ÷ gunicorn gevent", mode, "sleep", "gunicorn-gevent", rps, "×",
				"I/O-bound; gowsgi with its per-app thread count")
		}
		for _, app := range apps {
			g := find(sums, mode, app, "gowsgi")
			if g == nil {
				continue
			}
			// wrk's latency only covers the connections a server answered: a server that
			// starves most of them has a flattering p99, so compare with fair peers.
			var best *Summary
			for _, p := range peers(sums, mode, app) {
				if p.Jain >= fairPeer && (best == nil || p.P99ms < best.P99ms) {
					best = p
				}
			}
			if best != nil {
				add(Check{Name: "p99 latency ÷ best fair peer's p99", Mode: mode, App: app, Value: g.P99ms / best.P99ms, Unit: "×",
					Note: fmt.Sprintf("gowsgi %.2f ms, %s %.2f ms; lower is better", g.P99ms, best.Server, best.P99ms)})
			}
			add(Check{Name: "fairness (Jain) ≥ 0.95", Mode: mode, App: app, Value: g.Jain, Pass: pass(g.Jain >= 0.95),
				Note: fmt.Sprintf("min/mean %.2f", g.MinMean)})
			add(Check{Name: "errors = 0", Mode: mode, App: app, Value: float64(g.Errors), Pass: pass(g.Errors == 0 && g.Failed == 0),
				Note: fmt.Sprintf("over %d repetitions (wrk + fairness pass); %d failed runs", g.Reps, g.Failed)})
			for _, peer := range []string{"gunicorn-gthread", "gunicorn-sync"} {
				if p := find(sums, mode, app, peer); p != nil {
					add(Check{Name: "total RSS ÷ " + peer, Mode: mode, App: app, Value: g.RSSMiB / p.RSSMiB, Unit: "×",
						Note: fmt.Sprintf("gowsgi %.1f MiB, %s %.1f MiB; lower is better", g.RSSMiB, peer, p.RSSMiB)})
				}
			}
		}
	}
	return cs
}

func fmtRPS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

func fmtF(v float64, prec int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// perAppChecks are shown as one grid (mode × app) instead of one row each.
var perAppChecks = []struct{ name, col string }{
	{"p99 latency ÷ best fair peer's p99", "p99 ÷ best fair peer's"},
	{"fairness (Jain) ≥ 0.95", "fairness ≥ 0.95"},
	{"errors = 0", "errors = 0"},
	{"total RSS ÷ gunicorn-gthread", "RSS ÷ gunicorn gthread"},
	{"total RSS ÷ gunicorn-sync", "RSS ÷ gunicorn sync"},
}

func checkValue(c Check) string {
	var v string
	switch {
	case c.Unit == "µs":
		v = fmtF(c.Value, 0) + " µs"
	case c.Unit == "×":
		v = fmtF(c.Value, 2) + "×"
	case strings.HasPrefix(c.Name, "errors"):
		v = fmtF(c.Value, 0)
	default:
		v = fmtF(c.Value, 3)
	}
	if c.Pass != nil {
		if *c.Pass {
			v += " ✓"
		} else {
			v += " ✗"
		}
	}
	return v
}

func renderChecks(res Results) string {
	var b strings.Builder
	isGrid := func(name string) bool {
		return slices.ContainsFunc(perAppChecks, func(p struct{ name, col string }) bool { return p.name == name })
	}
	b.WriteString("| check | mode | value | note |\n|---|---|---:|---|\n")
	for _, c := range res.Checks {
		if !isGrid(c.Name) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Name, c.Mode, checkValue(c), c.Note)
		}
	}
	b.WriteString("\nPer app (gowsgi; ratios are gowsgi ÷ peer, lower is better):\n\n| mode | app |")
	for _, p := range perAppChecks {
		b.WriteString(" " + p.col + " |")
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(perAppChecks)) + "\n")
	for _, mode := range res.Settings.Modes {
		for _, app := range res.Settings.Apps {
			row := fmt.Sprintf("| %s | %s |", mode, app)
			any := false
			for _, p := range perAppChecks {
				cell := ""
				for _, c := range res.Checks {
					if c.Name == p.name && c.Mode == mode && c.App == app {
						cell = checkValue(c)
						any = true
					}
				}
				row += " " + cell + " |"
			}
			if any {
				b.WriteString(row + "\n")
			}
		}
	}
	return b.String()
}

// renderMarkdown renders results.md; chartRef is how the chart is linked.
func renderMarkdown(res Results, chartRef string) string {
	var b strings.Builder
	m, set := res.Meta, res.Settings
	quick := ""
	if set.Quick {
		quick = " (quick mode: not for quoting)"
	}
	fmt.Fprintf(&b, "Run of %s%s, gowsgi %s.\n\n", m.Started, quick, m.Gowsgi)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s, kernel %s, %s RAM; load average %s at the start, %s at the end.\n\n",
		m.Host.CPUs, m.Host.CPUModel, m.Host.OS, m.Host.Kernel, m.Host.MemTotal, m.LoadAvg, m.LoadAvgEnd)
	v := m.Versions
	fmt.Fprintf(&b, "Software: Python %s (gowsgi embeds %s), Go %s, %s, gunicorn %s (gevent %s), %s (plugin %s), waitress %s, Flask %s (Werkzeug %s), %s.\n\n",
		v["python"], v["python_embedded"], strings.TrimPrefix(v["go"], "go"), v["gowsgi"], v["gunicorn"], v["gevent"],
		"uWSGI "+v["uwsgi"], v["uwsgi_plugin"], v["waitress"], v["flask"], v["werkzeug"], firstWords(v["wrk"], 2))
	fmt.Fprintf(&b, "Settings: %d connections; wrk %g s per run, fairness pass %g s, warm-up %g s; %d repetition(s), interleaved, median shown; "+
		"%d processes × %d threads where they apply; gowsgi threads per app: %s.\n\n",
		set.Conns, set.Duration, set.FairDuration, set.WarmDuration, set.Reps, set.Workers, set.Threads, threadsNote(set))
	if chartRef != "" {
		fmt.Fprintf(&b, "![requests per second per app and server](%s)\n\n", chartRef)
	}
	for _, mode := range set.Modes {
		title := "Pinned: server on CPU 0, wrk and bench/load on CPU 1"
		if mode == "unpinned" {
			title = "Unpinned: no CPU affinity, server and load share both CPUs"
		}
		fmt.Fprintf(&b, "### %s\n\n", title)
		b.WriteString("| app | server | processes × threads | req/s | p50 ms | p99 ms | errors | CPU µs/req | CPU busy | peak RSS MiB | peak PSS MiB | fairness (Jain) | min/mean | conns served | other load |\n")
		b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range res.Summary {
			if s.Mode != mode {
				continue
			}
			name := s.Server
			if name == "gowsgi" {
				name = "**gowsgi**"
			}
			if s.Reps == 0 {
				fmt.Fprintf(&b, "| %s | %s | %s | failed: %s |||||||||||| |\n", s.App, name, s.Config, mdEscape(s.FailMsg))
				continue
			}
			errs := strconv.FormatInt(s.Errors, 10)
			if s.Failed > 0 {
				errs += fmt.Sprintf(" (+%d failed runs)", s.Failed)
			}
			if s.Retried > 0 {
				errs += fmt.Sprintf(" (%d stalled run(s) repeated)", s.Retried)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s/%d | %s |\n",
				s.App, name, s.Config, fmtRPS(s.RPS), fmtF(s.P50ms, 2), fmtF(s.P99ms, 2), errs,
				fmtF(s.CPUUs, 0), fmtF(s.CPUBusy, 2), fmtF(s.RSSMiB, 1), fmtF(s.PSSMiB, 1), fmtF(s.Jain, 3), fmtF(s.MinMean, 2),
				fmtF(s.Served, 0), res.Settings.Conns, fmtF(s.Other, 2))
		}
		b.WriteString("\n")
		b.WriteString(renderRatios(res, mode))
	}
	b.WriteString("### Numbers the project checks\n\n")
	b.WriteString(renderChecks(res))
	b.WriteString("\nThe command lines (PORT is picked per run; in pinned mode each is prefixed with `taskset -c 0`):\n\n```\n")
	keys := make([]string, 0, len(m.Commands))
	for k := range m.Commands {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%-17s %s\n", k+":", m.Commands[k])
	}
	b.WriteString("```\n")
	return b.String()
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

func threadsNote(set Settings) string {
	var parts []string
	for _, a := range set.Apps {
		t, ok := set.GowsgiThreads[a]
		if !ok {
			t = set.Threads
		}
		parts = append(parts, fmt.Sprintf("%s %d", a, t))
	}
	return strings.Join(parts, ", ")
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// renderRatios: gowsgi ÷ peer per app, for req/s, p99 and peak RSS.
func renderRatios(res Results, mode string) string {
	var peerNames []string
	for _, s := range res.Summary {
		if s.Mode == mode && s.Server != "gowsgi" && !slices.Contains(peerNames, s.Server) {
			peerNames = append(peerNames, s.Server)
		}
	}
	if len(peerNames) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("gowsgi ÷ peer (req/s: above 1 is gowsgi faster; p99 and RSS: below 1 is gowsgi better):\n\n")
	b.WriteString("| app |")
	for _, p := range peerNames {
		b.WriteString(" " + p + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(peerNames)) + "\n")
	for _, app := range res.Settings.Apps {
		g := find(res.Summary, mode, app, "gowsgi")
		if g == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s |", app)
		for _, pn := range peerNames {
			p := find(res.Summary, mode, app, pn)
			if p == nil {
				b.WriteString(" |")
				continue
			}
			fmt.Fprintf(&b, " **%s×** · p99 %s× · RSS %s× |", fmtF(g.RPS/p.RPS, 2), fmtF(g.P99ms/p.P99ms, 2), fmtF(g.RSSMiB/p.RSSMiB, 2))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// encodeResults writes results.json with meta and settings indented and one line per
// summary, check and run: small, and readable in a diff.
func encodeResults(res Results) ([]byte, error) {
	var b strings.Builder
	b.WriteString("{\n")
	for _, part := range []struct {
		key string
		v   any
	}{{"meta", res.Meta}, {"settings", res.Settings}} {
		js, err := json.MarshalIndent(part.v, " ", " ")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, " %q: %s,\n", part.key, js)
	}
	lists := []struct {
		key   string
		items []any
	}{{"summary", toAny(res.Summary)}, {"checks", toAny(res.Checks)}, {"runs", toAny(res.Runs)}}
	for i, l := range lists {
		fmt.Fprintf(&b, " %q: [", l.key)
		for j, it := range l.items {
			js, err := json.Marshal(it)
			if err != nil {
				return nil, err
			}
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n  ")
			b.Write(js)
		}
		b.WriteString("\n ]")
		if i < len(lists)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	return []byte(b.String()), nil
}

func toAny[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

const (
	docsBegin = "<!-- BEGIN RESULTS (generated by bench/run; do not edit by hand) -->"
	docsEnd   = "<!-- END RESULTS -->"
)

func writeResults(res Results, outDir, docs string) error {
	res.sanitize()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	js, err := encodeResults(res)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "chart.svg"), []byte(renderChart(res)), 0o644); err != nil {
		return err
	}
	md := "# gowsgi benchmark results\n\nGenerated by `make bench` (bench/run); method and column definitions: docs/benchmarks.md.\n\n" +
		renderMarkdown(res, "chart.svg")
	if err := os.WriteFile(filepath.Join(outDir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if docs == "" {
		return nil
	}
	absDocs, err := filepath.Abs(docs)
	if err != nil {
		return err
	}
	absChart, err := filepath.Abs(filepath.Join(outDir, "chart.svg"))
	if err != nil {
		return err
	}
	chartRef, err := filepath.Rel(filepath.Dir(absDocs), absChart)
	if err != nil {
		return err
	}
	return replaceSection(docs, renderMarkdown(res, filepath.ToSlash(chartRef)))
}

// replaceSection replaces the text between the results markers of a markdown file.
func replaceSection(path, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: results markers not found (%q ... %q)", path, docsBegin, docsEnd)
	}
	s = s[:i+len(docsBegin)] + "\n\n" + body + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// rerender rebuilds the reports from an existing results.json (-report).
func rerender(jsonPath, outDir, docs string) int {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	var apps []App
	for _, name := range res.Settings.Apps {
		if a, err := selectApps([]string{name}); err == nil {
			apps = append(apps, a...)
		}
	}
	env := &Env{Workers: res.Settings.Workers, Threads: res.Settings.Threads, AppThreads: res.Settings.GowsgiThreads}
	defs, err := selectServers(serverDefs(env), res.Settings.Servers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	res = buildResults(res.Meta, res.Settings, res.Runs, defs, apps)
	if outDir == "" {
		outDir = filepath.Dir(jsonPath)
	}
	if err := writeResults(res, outDir, docs); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	fmt.Println(renderChecks(res))
	return 0
}
