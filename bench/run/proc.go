package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// procStat is what the harness reads from /proc/PID/stat.
type procStat struct {
	pid, ppid int
	// ticks is utime+stime+cutime+cstime: the process's own CPU time plus that of its
	// children it has already waited for.
	ticks int64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may contain anything; the fields
	// after the last ')' are space-separated: state(3) ppid(4) ... utime(14) stime(15)
	// cutime(16) cstime(17).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return procStat{pid: pid, ppid: int(num(4)), ticks: num(14) + num(15) + num(16) + num(17)}, nil
}

// tree returns pid and all its live descendants (found by walking the parent links of
// every process in /proc).
func tree(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU returns the CPU time (utime+stime+cutime+cstime) of root and its live
// descendants, in seconds, and how many processes it summed.
func treeCPU(root int) (float64, int) {
	var ticks int64
	n := 0
	for _, pid := range tree(root) {
		if st, err := readStat(pid); err == nil {
			ticks += st.ticks
			n++
		}
	}
	return float64(ticks) / clockTicks, n
}

// statusKB reads "Key:   123 kB" from /proc/PID/status or, for Pss, smaps_rollup.
func statusKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key) {
			fs := strings.Fields(line[len(key):])
			if len(fs) > 0 {
				v, _ := strconv.ParseInt(fs[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// memSample sums VmRSS (and Pss) over root and its live descendants, in KiB.
func memSample(root int) (rssKB, pssKB int64, procs int) {
	for _, pid := range tree(root) {
		p := "/proc/" + strconv.Itoa(pid)
		r := statusKB(p+"/status", "VmRSS:")
		if r == 0 {
			continue // exited, a zombie or a kernel thread
		}
		rssKB += r
		pssKB += statusKB(p+"/smaps_rollup", "Pss:")
		procs++
	}
	return
}

// memPeak samples the tree's memory every interval until stopped and keeps the peaks.
type memPeak struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	rss  int64
	pss  int64
	n    int
}

func startMemPeak(root int, every time.Duration) *memPeak {
	m := &memPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			rss, pss, procs := memSample(root)
			m.mu.Lock()
			m.rss = max(m.rss, rss)
			m.pss = max(m.pss, pss)
			m.n = max(m.n, procs)
			m.mu.Unlock()
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// end stops sampling and returns the peak RSS and PSS sums in KiB and the most processes
// seen at once.
func (m *memPeak) end() (rss, pss int64, procs int) {
	close(m.stop)
	<-m.done
	return m.rss, m.pss, m.n
}

// server is one started server process (and, through its process group, its children).
type server struct {
	cmd     *exec.Cmd
	pid     int
	logPath string
	exited  chan struct{}
	waitErr error
}

var (
	liveMu  sync.Mutex
	liveSet = map[*server]bool{}
)

// startServer starts argv in its own process group with stdout and stderr going to
// logPath. The child gets SIGKILL if the harness dies without cleaning up.
func startServer(argv []string, dir string, env []string, logPath string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, exited: make(chan struct{})}
	liveMu.Lock()
	liveSet[s] = true
	liveMu.Unlock()
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the server's process group, waits up to grace for the server to
// exit, then SIGKILLs whatever is left of the group.
func (s *server) stop(grace time.Duration) {
	pgid := s.pid // Setpgid: the group id is the leader's pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	select {
	case <-s.exited:
	case <-time.After(grace):
	}
	// The leader is gone (or overdue); give the rest of the group what is left of the
	// grace period, then kill it. The group id cannot be reused while a member lives.
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(-pgid, 0) == nil {
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
	<-s.exited
	liveMu.Lock()
	delete(liveSet, s)
	liveMu.Unlock()
}

// stopAll stops every server still running (on errors and on Ctrl-C).
func stopAll() {
	liveMu.Lock()
	var all []*server
	for s := range liveSet {
		all = append(all, s)
	}
	liveMu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop(5 * time.Second) }()
	}
	wg.Wait()
}

// logTail returns the last lines of the server's log for error messages.
func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCapture runs a short-lived helper (wrk, the load generator) and returns its stdout
// and the CPU time it used (seconds). It is killed when ctx ends.
func runCapture(ctx context.Context, argv []string, limit time.Duration) (string, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var cpu float64
	if ps := cmd.ProcessState; ps != nil {
		cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if ctx.Err() != nil {
			msg = ctx.Err().Error() + " " + msg
		}
		return out.String(), cpu, fmt.Errorf("%s: %v %s", filepath.Base(argv[0]), err, msg)
	}
	return out.String(), cpu, nil
}

// machineBusy returns the CPU time (seconds) all CPUs spent busy so far, from the first
// line of /proc/stat: user+nice+system+irq+softirq+steal.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, k := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		ticks += v
	}
	return float64(ticks) / clockTicks
}
