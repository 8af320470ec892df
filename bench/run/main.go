// Command run is gowsgi's benchmark harness (`make bench`, scripts/bench.sh). It serves the
// apps in bench/apps with gowsgi and with its peers (gunicorn sync/gthread/gevent, uWSGI
// --http-socket/--http11-socket, waitress, and a Go net/http hello baseline), all at equal
// processes and threads, drives each with wrk for throughput and latency and with
// bench/load for per-connection fairness, measures the server's whole process tree (CPU
// time per request, peak RSS), and writes results.json, results.md and chart.svg.
// docs/benchmarks.md describes the method and every column.
//
// Runs are interleaved: repetition 1 runs every (mode, app, server) once, then repetition
// 2 again, and so on; the report gives the median over repetitions.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gowsgi/bench/loadstats"
)

// Settings are the harness's knobs; they are recorded in the results.
type Settings struct {
	Quick          bool           `json:"quick"`
	Duration       float64        `json:"wrk_seconds"`
	FairDuration   float64        `json:"fairness_seconds"`
	WarmDuration   float64        `json:"warmup_seconds"`
	Reps           int            `json:"repetitions"`
	Conns          int            `json:"connections"`
	Workers        int            `json:"workers"`
	Threads        int            `json:"threads"`
	GowsgiThreads  map[string]int `json:"gowsgi_threads_per_app"`
	Modes          []string       `json:"modes"`
	Apps           []string       `json:"apps"`
	Servers        []string       `json:"servers"`
	WrkTimeout     string         `json:"wrk_timeout"`
	ServerCPUs     string         `json:"server_cpus_pinned"`
	LoadCPUs       string         `json:"load_cpus_pinned"`
	SampleInterval string         `json:"rss_sample_interval"`
}

// Run is one measurement: one server serving one app in one mode, once.
type Run struct {
	Rep         int        `json:"rep"`
	Mode        string     `json:"mode"`
	App         string     `json:"app"`
	Server      string     `json:"server"`
	Config      string     `json:"config"`
	Argv        []string   `json:"argv"`
	ReadySec    float64    `json:"ready_seconds"`
	Wrk         WrkResult  `json:"wrk"`
	CPUSec      float64    `json:"cpu_seconds"`
	CPUUsPerReq float64    `json:"cpu_us_per_request"`
	CPUCores    float64    `json:"cpu_cores_busy"`
	CPUProcs    [2]int     `json:"cpu_processes_start_end"`
	LoadCPUSec  float64    `json:"wrk_cpu_seconds"`
	OtherCores  float64    `json:"other_cores_busy"`
	PeakRSSKB   int64      `json:"peak_rss_kib"`
	PeakPSSKB   int64      `json:"peak_pss_kib"`
	Procs       int        `json:"processes"`
	Fair        *LoadStats `json:"fairness,omitempty"`
	Errors      int64      `json:"errors"`
	Failed      string     `json:"failed,omitempty"`
	// Discarded holds earlier attempts of this run that stalled (see stalled).
	Discarded []string `json:"discarded_attempts,omitempty"`
}

// maxRepeats is how often a stalled run is repeated.
const maxRepeats = 2

// stalled reports a run in which the server made (next to) no progress: at most about one
// response per connection under wrk, or none at all in the fairness pass. On this shared
// machine that has meant the server's CPU was taken away for seconds, not a server bug;
// such a run is repeated (up to maxRepeats times) and the stalled attempts are kept in the
// JSON.
func (r Run) stalled(conns int) string {
	if r.Failed != "" {
		return ""
	}
	if r.Wrk.Requests < int64(2*conns) {
		return fmt.Sprintf("stall: wrk got %d responses on %d connections", r.Wrk.Requests, conns)
	}
	if r.Fair != nil && r.Fair.Requests == 0 {
		return "stall: no response in the fairness pass"
	}
	return ""
}

// LoadStats is bench/load's output (see bench/load).
type LoadStats = loadstats.Stats

type harness struct {
	root    string
	set     Settings
	env     *Env
	defs    []Server
	apps    []App
	wrk     string
	load    string
	tmp     string
	scripts map[string]string
	baseEnv []string
}

func main() {
	os.Exit(realMain())
}

func realMain() int {
	root, _ := os.Getwd()
	var (
		quick      = flag.Bool("quick", false, "quick mode: 2 s runs, 1 repetition, results in bench/results/quick")
		dur        = flag.Duration("d", 0, "wrk duration per run, whole seconds (default 3s, quick 2s)")
		fairDur    = flag.Duration("fair-d", 0, "fairness pass duration per run (default 1s)")
		warmDur    = flag.Duration("warm-d", 0, "warm-up before each run (default 500ms)")
		reps       = flag.Int("reps", 0, "repetitions (default 3, quick 1)")
		conns      = flag.Int("c", 64, "connections")
		workers    = flag.Int("workers", 2, "processes per server")
		threads    = flag.Int("threads", 4, "threads per process where threads apply")
		gwThreads  = flag.String("gowsgi-threads", "sleep=32", "gowsgi threads per app, APP=N,... (others: -threads)")
		modesF     = flag.String("modes", "pinned,unpinned", "modes: pinned (server on CPU 0, load on CPU 1), unpinned")
		appsF      = flag.String("apps", "", "comma-separated apps (default all: hello,flask,stream,echo,sleep)")
		serversF   = flag.String("servers", "", "comma-separated servers (default all)")
		out        = flag.String("out", "", "results directory (default bench/results, quick bench/results/quick)")
		docs       = flag.String("docs", "", "markdown file whose results section (between markers) is replaced")
		gowsgi     = flag.String("gowsgi", filepath.Join(root, "bin/gowsgi"), "gowsgi binary")
		gohello    = flag.String("gohello", filepath.Join(root, "bin/bench/gohello"), "bench/gohello binary")
		loadBin    = flag.String("load", filepath.Join(root, "bin/bench/load"), "bench/load binary")
		wrkBin     = flag.String("wrk", "/usr/bin/wrk", "wrk binary")
		python     = flag.String("python", "/usr/bin/python3", "Python for waitress")
		gunicornB  = flag.String("gunicorn", "/usr/bin/gunicorn", "gunicorn")
		uwsgiB     = flag.String("uwsgi", "/usr/bin/uwsgi", "uwsgi")
		appsDir    = flag.String("apps-dir", filepath.Join(root, "bench/apps"), "directory of the bench apps")
		keepLogs   = flag.Bool("keep-logs", false, "keep the servers' logs (printed path)")
		onlyReport = flag.String("report", "", "re-render results.md/chart.svg (and -docs) from this results.json, run nothing")
	)
	flag.Parse()

	if *onlyReport != "" {
		return rerender(*onlyReport, *out, *docs)
	}

	set := Settings{
		Quick: *quick, Reps: *reps, Conns: *conns, Workers: *workers, Threads: *threads,
		WrkTimeout: "2s", ServerCPUs: "0", LoadCPUs: "1", SampleInterval: "100ms",
	}
	pick := func(d time.Duration, full, q time.Duration) float64 {
		if d == 0 {
			d = full
			if *quick {
				d = q
			}
		}
		return d.Seconds()
	}
	// Full: 216 runs of about 5.6 s each (3 s wrk, 1 s fairness, 0.5 s warm-up, ~1.1 s to
	// start and stop a server) keep `make bench` near 20 minutes on 2 CPUs.
	set.Duration = pick(*dur, 3*time.Second, 2*time.Second)
	set.FairDuration = pick(*fairDur, time.Second, time.Second)
	set.WarmDuration = pick(*warmDur, 500*time.Millisecond, 500*time.Millisecond)
	if set.Reps == 0 {
		set.Reps = 3
		if *quick {
			set.Reps = 1
		}
	}
	if set.Duration < 1 || set.Duration != float64(int(set.Duration)) {
		fmt.Fprintln(os.Stderr, "run: -d must be whole seconds (wrk's -d)")
		return 2
	}
	var err error
	if set.GowsgiThreads, err = parseAppInts(*gwThreads); err != nil {
		fmt.Fprintln(os.Stderr, "run: -gowsgi-threads:", err)
		return 2
	}
	set.Modes = splitList(*modesF)
	for _, m := range set.Modes {
		if m != "pinned" && m != "unpinned" {
			fmt.Fprintf(os.Stderr, "run: unknown mode %q\n", m)
			return 2
		}
	}
	if *out == "" {
		*out = filepath.Join(root, "bench/results")
		if *quick {
			*out = filepath.Join(*out, "quick")
		}
	}

	env := &Env{AppsDir: *appsDir, Gowsgi: *gowsgi, GoHello: *gohello, Python: *python,
		Gunicorn: *gunicornB, UWSGI: *uwsgiB, Workers: *workers, Threads: *threads,
		AppThreads: set.GowsgiThreads}
	h := &harness{root: root, set: set, env: env, defs: serverDefs(env), wrk: *wrkBin, load: *loadBin,
		scripts: map[string]string{}}

	if h.apps, err = selectApps(splitList(*appsF)); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 2
	}
	if h.defs, err = selectServers(h.defs, splitList(*serversF)); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 2
	}
	for _, a := range h.apps {
		h.set.Apps = append(h.set.Apps, a.Name)
	}
	for _, s := range h.defs {
		h.set.Servers = append(h.set.Servers, s.Name)
	}
	if err := h.preflight(); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}

	h.tmp, err = os.MkdirTemp("", "gowsgi-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	if *keepLogs {
		fmt.Fprintln(os.Stderr, "bench: server logs in", h.tmp)
	} else {
		defer os.RemoveAll(h.tmp)
	}
	for _, a := range h.apps {
		if h.scripts[a.Name], err = writeWrkScript(h.tmp, a); err != nil {
			fmt.Fprintln(os.Stderr, "run:", err)
			return 1
		}
		if a.BodySize > 0 {
			if err := os.WriteFile(filepath.Join(h.tmp, a.Name+".body"), postBody, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "run:", err)
				return 1
			}
		}
	}
	h.baseEnv = serverEnv()

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	defer stopAll()

	meta := collectMeta(h)
	runs, err := h.runAll(ctx)
	if err != nil {
		stopAll()
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "\nbench: interrupted; servers stopped, no results written")
			return 130
		}
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	meta.Finished = time.Now().UTC().Format(time.RFC3339)
	meta.LoadAvgEnd = loadAvg()

	res := buildResults(meta, h.set, runs, h.defs, h.apps)
	if err := writeResults(res, *out, *docs); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s/{results.json,results.md,chart.svg}\n", rel(root, *out))
	if *docs != "" {
		fmt.Fprintf(os.Stderr, "bench: updated %s\n", rel(root, *docs))
	}
	fmt.Println()
	fmt.Println(renderChecks(res))
	return 0
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseAppInts(s string) (map[string]int, error) {
	m := map[string]int{}
	for _, f := range splitList(s) {
		k, v, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return nil, fmt.Errorf("bad entry %q (want APP=N)", f)
		}
		m[k] = n
	}
	return m, nil
}

func selectApps(names []string) ([]App, error) {
	if len(names) == 0 {
		return allApps, nil
	}
	var out []App
	for _, n := range names {
		i := slices.IndexFunc(allApps, func(a App) bool { return a.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown app %q", n)
		}
		out = append(out, allApps[i])
	}
	return out, nil
}

func selectServers(defs []Server, names []string) ([]Server, error) {
	if len(names) == 0 {
		return defs, nil
	}
	var out []Server
	for _, n := range names {
		i := slices.IndexFunc(defs, func(s Server) bool { return s.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown server %q", n)
		}
		out = append(out, defs[i])
	}
	return out, nil
}

// serverEnv is the environment every server starts with: the system's paths and nothing
// from the caller's Python setup (pyenv, virtualenvs, PYTHONPATH), so that every server
// runs Debian's /usr/bin/python3.
func serverEnv() []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"}
	for _, k := range []string{"HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// preflight checks that every binary the selected servers need exists.
func (h *harness) preflight() error {
	need := map[string]string{h.wrk: "wrk (scripts/deps.sh bench)", h.load: "bench/load (scripts/bench.sh builds it)"}
	for _, s := range h.defs {
		switch {
		case s.Name == "gowsgi":
			need[h.env.Gowsgi] = "gowsgi (make build)"
		case strings.HasPrefix(s.Name, "gunicorn"):
			need[h.env.Gunicorn] = "gunicorn (scripts/deps.sh bench)"
		case strings.HasPrefix(s.Name, "uwsgi"):
			need[h.env.UWSGI] = "uwsgi (scripts/deps.sh bench)"
		case s.Name == "waitress":
			need[h.env.Python] = "python3"
		case s.Name == goBaseline:
			need[h.env.GoHello] = "bench/gohello (scripts/bench.sh builds it)"
		}
	}
	if slices.Contains(h.set.Modes, "pinned") {
		need["/usr/bin/taskset"] = "taskset (util-linux)"
	}
	for p, what := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s not found: %s", p, what)
		}
	}
	return nil
}

type job struct {
	rep    int
	mode   string
	app    App
	server Server
}

func (h *harness) jobs() []job {
	var out []job
	for rep := 1; rep <= h.set.Reps; rep++ {
		for _, mode := range h.set.Modes {
			for _, app := range h.apps {
				var ss []Server
				for _, s := range h.defs {
					if s.serves(app.Name) {
						ss = append(ss, s)
					}
				}
				// Rotate the order every repetition so that no server always runs first
				// (or right after the same neighbour).
				k := (rep - 1) % len(ss)
				ss = append(ss[k:], ss[:k]...)
				for _, s := range ss {
					out = append(out, job{rep, mode, app, s})
				}
			}
		}
	}
	return out
}

func (h *harness) runAll(ctx context.Context) ([]Run, error) {
	jobs := h.jobs()
	per := h.set.Duration + h.set.FairDuration + h.set.WarmDuration + 1.2
	fmt.Fprintf(os.Stderr, "bench: %d runs (%d repetitions × %d modes × %d apps × servers), about %s\n",
		len(jobs), h.set.Reps, len(h.set.Modes), len(h.apps),
		(time.Duration(per*float64(len(jobs))) * time.Second).Round(time.Minute))
	var runs []Run
	start := time.Now()
	for i, j := range jobs {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r := h.runOne(ctx, j)
		var discarded []string
		for try := 0; try < maxRepeats && ctx.Err() == nil; try++ {
			why := r.stalled(h.set.Conns)
			if why == "" {
				break
			}
			fmt.Fprintf(os.Stderr, "            %s %s %s: %s (other load %.2f cores); repeating\n", j.mode, j.app.Name, j.server.Name, why, r.OtherCores)
			discarded = append(discarded, why+": "+r.line())
			r = h.runOne(ctx, j)
		}
		r.Discarded = discarded
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		runs = append(runs, r)
		fmt.Fprintf(os.Stderr, "[%3d/%d %5s] rep %d %-8s %-6s %-16s %s\n", i+1, len(jobs),
			time.Since(start).Round(time.Second), j.rep, j.mode, j.app.Name, j.server.Name, r.line())
	}
	return runs, nil
}

func (r Run) line() string {
	if r.Failed != "" {
		return "FAILED: " + r.Failed
	}
	s := fmt.Sprintf("%9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  %6.0f µs/req  RSS %6.1f MiB",
		r.Wrk.RPS, r.Wrk.P50ms, r.Wrk.P99ms, r.CPUUsPerReq, float64(r.PeakRSSKB)/1024)
	if r.Fair != nil {
		s += fmt.Sprintf("  fair %.3f (min/mean %.2f, %d served)", r.Fair.Jain, r.Fair.MinMean, r.Fair.Served)
	}
	return s + fmt.Sprintf("  errors %d  other load %.2f cores", r.Errors, r.OtherCores)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func pinned(mode, cpus string, argv []string) []string {
	if mode != "pinned" {
		return argv
	}
	return append([]string{"/usr/bin/taskset", "-c", cpus}, argv...)
}

func (h *harness) runOne(ctx context.Context, j job) (r Run) {
	r = Run{Rep: j.rep, Mode: j.mode, App: j.app.Name, Server: j.server.Name, Config: j.server.Config(j.app)}
	port, err := freePort()
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	base := "http://" + addr
	argv := pinned(j.mode, h.set.ServerCPUs, j.server.Argv(h.env, j.app, addr))
	r.Argv = argv
	logPath := filepath.Join(h.tmp, fmt.Sprintf("%d-%s-%s-%s.log", j.rep, j.mode, j.app.Name, strings.ReplaceAll(j.server.Name, "/", "_")))
	srv, err := startServer(argv, h.env.AppsDir, h.baseEnv, logPath)
	if err != nil {
		r.Failed = err.Error()
		return r
	}
	defer srv.stop(5 * time.Second)
	fail := func(format string, args ...any) Run {
		r.Failed = fmt.Sprintf(format, args...)
		if t := srv.logTail(8); t != "" {
			r.Failed += "\n    server log:\n    " + strings.ReplaceAll(t, "\n", "\n    ")
		}
		return r
	}

	// Ready: the first request answered 200, and the response is what the app sends.
	t0 := time.Now()
	var body []byte
	for {
		if ctx.Err() != nil {
			return fail("interrupted")
		}
		if !srv.alive() {
			return fail("server exited before it was ready (%v)", srv.waitErr)
		}
		if time.Since(t0) > 60*time.Second {
			return fail("not ready after 60 s")
		}
		status, b, err := request(j.app, base, 5*time.Second)
		if err == nil && status == 200 {
			body = b
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.ReadySec = time.Since(t0).Seconds()
	if err := j.app.Verify(body); err != nil {
		return fail("%v", err)
	}

	loadArgv := func(d float64) []string {
		a := []string{h.load, "-url", base + "/", "-c", strconv.Itoa(h.set.Conns),
			"-d", fmt.Sprintf("%gs", d), "-method", j.app.Method}
		if j.app.BodySize > 0 {
			a = append(a, "-body-file", filepath.Join(h.tmp, j.app.Name+".body"))
		}
		if j.app.ExpectBody != "" {
			a = append(a, "-expect-body", j.app.ExpectBody)
		} else if j.app.ExpectLen >= 0 {
			a = append(a, "-expect-len", strconv.FormatInt(j.app.ExpectLen, 10))
		}
		return pinned(j.mode, h.set.LoadCPUs, a)
	}

	// Warm up: every worker imports lazily-imported modules, fills caches and grows its
	// heap before anything is measured.
	if _, _, err := runCapture(ctx, loadArgv(h.set.WarmDuration), time.Duration(h.set.WarmDuration*float64(time.Second))+30*time.Second); err != nil {
		return fail("warm-up: %v", err)
	}

	// Throughput and latency: wrk. CPU time of the server's process tree around it.
	wrkArgv := []string{h.wrk, "-t1", "-c" + strconv.Itoa(h.set.Conns), "-d" + fmt.Sprintf("%gs", h.set.Duration),
		"--timeout", h.set.WrkTimeout, "--latency"}
	if s := h.scripts[j.app.Name]; s != "" {
		wrkArgv = append(wrkArgv, "-s", s)
	}
	wrkArgv = pinned(j.mode, h.set.LoadCPUs, append(wrkArgv, base+"/"))
	mem := startMemPeak(srv.pid, 100*time.Millisecond)
	cpu0, n0 := treeCPU(srv.pid)
	busy0 := machineBusy()
	w0 := time.Now()
	out, wrkCPU, err := runCapture(ctx, wrkArgv, time.Duration(h.set.Duration*float64(time.Second))+30*time.Second)
	wall := time.Since(w0).Seconds()
	busy1 := machineBusy()
	cpu1, n1 := treeCPU(srv.pid)
	if err != nil {
		mem.end()
		return fail("%v", err)
	}
	if r.Wrk, err = parseWrk(out); err != nil {
		mem.end()
		return fail("%v", err)
	}
	r.CPUSec = cpu1 - cpu0
	r.CPUProcs = [2]int{n0, n1}
	if r.Wrk.Requests > 0 {
		r.CPUUsPerReq = r.CPUSec * 1e6 / float64(r.Wrk.Requests)
	}
	r.CPUCores = r.CPUSec / wall
	r.LoadCPUSec = wrkCPU
	// Everything else the machine did meanwhile (other users, the harness itself): how
	// noisy this run was.
	r.OtherCores = max(0, (busy1-busy0)-r.CPUSec-wrkCPU) / wall
	r.Errors = r.Wrk.SocketErrors + r.Wrk.Non2xx

	// Fairness: bench/load, 64 sequential keep-alive connections, counts per connection.
	fout, _, err := runCapture(ctx, loadArgv(h.set.FairDuration), time.Duration(h.set.FairDuration*float64(time.Second))+30*time.Second)
	r.PeakRSSKB, r.PeakPSSKB, r.Procs = mem.end()
	if err != nil {
		return fail("fairness pass: %v", err)
	}
	var ls LoadStats
	if err := json.Unmarshal([]byte(fout), &ls); err != nil {
		return fail("fairness pass: %v", err)
	}
	r.Fair = &ls
	r.Errors += ls.Errors
	if !srv.alive() {
		return fail("server exited during the run (%v)", srv.waitErr)
	}
	return r
}
