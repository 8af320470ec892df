package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Descendants returns the pids of every live descendant of pid (children, grandchildren...),
// found through the parent pid field of /proc/*/stat. It does not include pid itself.
func Descendants(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, err := parentPid(p)
		if err != nil {
			continue // the process exited meanwhile
		}
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out, nil
}

// parentPid reads the ppid field of /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its closing ')'.
func parentPid(pid int) (int, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.Atoi(fields[1]) // fields[0] is the state
}

// RSS returns the resident set size of pid in bytes (VmRSS of /proc/PID/status).
func RSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// RSSShmem returns the resident shared memory of pid in bytes (RssShmem of /proc/PID/status):
// where the pages of memfds such as a worker's arena count.
func RSSShmem(pid int) (int64, error) { return statusBytes(pid, "RssShmem") }

// statusBytes returns the field of /proc/PID/status that counts kB, in bytes; 0 when the
// field is missing (a zombie has no memory lines).
func statusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: odd %s line %q", pid, field, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil
}

// TreeRSS returns the summed resident set size, in bytes, of pid and all its descendants
// (a gowsgi front and its workers). Processes that exit while it reads are skipped; only an
// unreadable pid itself is an error.
func TreeRSS(pid int) (int64, error) {
	total, err := RSS(pid)
	if err != nil {
		return 0, err
	}
	kids, err := Descendants(pid)
	if err != nil {
		return 0, err
	}
	for _, k := range kids {
		if n, err := RSS(k); err == nil {
			total += n
		}
	}
	return total, nil
}
