package main

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Meta describes the machine and the software under test.
type Meta struct {
	Started    string            `json:"started"`
	Finished   string            `json:"finished,omitempty"`
	Host       Host              `json:"host"`
	Versions   map[string]string `json:"versions"`
	Gowsgi     string            `json:"gowsgi_commit"`
	LoadAvg    string            `json:"loadavg_start"`
	LoadAvgEnd string            `json:"loadavg_end,omitempty"`
	Commands   map[string]string `json:"commands"`
}

// Host is the machine the benchmark ran on.
type Host struct {
	CPUs     int    `json:"nproc"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	OS       string `json:"os"`
	MemTotal string `json:"mem_total"`
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// cmdOut runs a command for its version output (stdout and stderr; wrk -v exits 1).
func cmdOut(dir string, argv ...string) string {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = serverEnv()
	b, _ := cmd.CombinedOutput()
	return firstLine(string(b))
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

func collectMeta(h *harness) Meta {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	m := Meta{
		Started: time.Now().UTC().Format(time.RFC3339),
		Host: Host{
			CPUs:     runtime.NumCPU(),
			CPUModel: procField("/proc/cpuinfo", "model name"),
			Kernel:   strings.TrimSpace(string(kernel)),
			OS:       procField("/etc/os-release", "PRETTY_NAME"),
			MemTotal: procField("/proc/meminfo", "MemTotal"),
		},
		LoadAvg:  loadAvg(),
		Commands: map[string]string{},
	}
	py := h.env.Python
	pyVer := func(mod string) string {
		return cmdOut(h.env.AppsDir, py, "-c", "import importlib.metadata as m; print(m.version('"+mod+"'))")
	}
	m.Versions = map[string]string{
		"go":              runtime.Version(),
		"python":          strings.TrimPrefix(cmdOut("", py, "--version"), "Python "),
		"python_embedded": cmdOut("", "pkg-config", "--modversion", "python3-embed") + libpythonLink(h.env.Gowsgi),
		"gowsgi":          cmdOut("", h.env.Gowsgi, "--version"),
		"gunicorn":        pyVer("gunicorn"),
		"gevent":          pyVer("gevent"),
		"uwsgi":           cmdOut("", h.env.UWSGI, "--version"),
		"uwsgi_plugin":    dpkgVersion("uwsgi-plugin-python3"),
		"waitress":        pyVer("waitress"),
		"flask":           pyVer("flask"),
		"werkzeug":        pyVer("werkzeug"),
		"wrk":             firstWords(cmdOut("", h.wrk, "-v"), 2),
	}
	rev := cmdOut("", "git", "rev-parse", "--short", "HEAD")
	if rev != "" {
		if st := cmdOut("", "git", "status", "--porcelain", "--untracked-files=no"); st != "" {
			rev += " (with uncommitted changes)"
		}
	}
	m.Gowsgi = rev

	// The exact command lines (for the hello app, or the first app a server serves).
	for _, s := range h.defs {
		for _, a := range h.apps {
			if s.serves(a.Name) {
				cmd := strings.Join(quoteArgs(s.Argv(h.env, a, "127.0.0.1:PORT")), " ")
				m.Commands[s.Name] = strings.ReplaceAll(cmd, h.root+"/", "")
				break
			}
		}
	}
	itoa, ftoa := strconv.Itoa, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	m.Commands["wrk"] = "wrk -t1 -c" + itoa(h.set.Conns) + " -d" + ftoa(h.set.Duration) + "s --timeout " +
		h.set.WrkTimeout + " --latency [-s echo.lua] http://127.0.0.1:PORT/"
	m.Commands["load"] = "bench/load -url http://127.0.0.1:PORT/ -c " + itoa(h.set.Conns) + " -d " +
		ftoa(h.set.FairDuration) + "s [-method POST -body-file F] [-expect-body B | -expect-len N]"
	m.Commands["pinned"] = "server: taskset -c " + h.set.ServerCPUs + " SERVER...; wrk and bench/load: taskset -c " + h.set.LoadCPUs
	return m
}

func dpkgVersion(pkg string) string {
	return cmdOut("", "dpkg-query", "-W", "-f=${Version}", pkg)
}

func quoteArgs(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if strings.ContainsAny(a, " \t\"'$") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

// libpythonLink says how the gowsgi binary at path has libpython: ", shared libpython" when
// it names one among the libraries it needs, ", static libpython" when it defines the C API
// itself (see README: the Makefile links the static library where one exists), else "".
func libpythonLink(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	libs, _ := f.ImportedLibraries() // none: a static binary
	for _, l := range libs {
		if strings.HasPrefix(l, "libpython") {
			return ", shared libpython"
		}
	}
	syms, _ := f.DynamicSymbols()
	for _, s := range syms {
		if s.Name == "Py_InitializeFromConfig" && s.Section != elf.SHN_UNDEF {
			return ", static libpython"
		}
	}
	return ""
}
