package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the front and the worker, so the end-to-end test runs
// the same code the driver does.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun runs a short front, with its worker process, over each transport: every request in
// flight must come back (the front fails on a lost, unknown or doubled response) and the
// result must count them.
func TestRun(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"socket", "ring", "ring-batch"} {
		t.Run(transport, func(t *testing.T) {
			r, err := runOne([]string{self, "-role", "front", "-transport", transport, "-work", "2us",
				"-d", "300ms", "-warm", "100ms", "-c", "16"}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if r.Transport != transport || r.Requests < 100 || r.RPS <= 0 || r.FrontUS < 0 || r.WorkerUS < 0 {
				t.Fatalf("implausible result: %+v", r)
			}
		})
	}
}

func TestDriverRejectsBadMatrix(t *testing.T) {
	for _, c := range []driveConfig{
		{works: "0", transports: "pipe", modes: "pinned", reps: 1},
		{works: "fast", transports: "ring", modes: "pinned", reps: 1},
		{works: "0", transports: "ring", modes: "sideways", reps: 1},
		{works: "0", transports: "ring", modes: "pinned", reps: 0},
	} {
		if err := drive(c); err == nil || !strings.Contains(err.Error(), "-") {
			t.Errorf("%+v: %v, want an error naming the flag", c, err)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
