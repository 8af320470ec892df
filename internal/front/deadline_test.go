package front

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestDeadlineArm(t *testing.T) {
	var armed []time.Time
	dl := newDeadline(func(at time.Time) error { armed = append(armed, at); return nil })
	t0 := time.Unix(1000, 0)
	const d = 64 * time.Second // slack: 1 s

	step := func(now time.Time, timeout time.Duration, want time.Time) {
		t.Helper()
		n := len(armed)
		dl.arm(now, timeout)
		switch {
		case want.IsZero() && len(armed) != n:
			t.Errorf("arm(%v, %v) set %v, want the armed deadline kept", now.Sub(t0), timeout, armed[n])
		case !want.IsZero() && (len(armed) != n+1 || !armed[n].Equal(want)):
			t.Errorf("arm(%v, %v): set %v, want %v", now.Sub(t0), timeout, armed[n:], want)
		}
	}
	step(t0, d, t0.Add(d))                                  // nothing armed yet
	step(t0.Add(500*time.Millisecond), d, time.Time{})      // within the slack: kept
	step(t0.Add(time.Second), d, t0.Add(time.Second+d))     // past it: moved
	step(t0.Add(time.Second), 2*d, t0.Add(time.Second+2*d)) // another timeout: set
	step(t0.Add(time.Second+time.Millisecond), d, t0.Add(time.Second+time.Millisecond+d))
	dl.clear()
	if last := armed[len(armed)-1]; !last.IsZero() {
		t.Errorf("clear set %v, want the zero time", last)
	}
	step(t0.Add(time.Second+time.Millisecond), d, t0.Add(time.Second+time.Millisecond+d)) // cleared: set again
	step(t0.Add(2*time.Second), 0, t0.Add(2*time.Second))                                 // a zero timeout is always set
	step(t0.Add(2*time.Second), 0, t0.Add(2*time.Second))
}

func TestHeadBuffered(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n", true}, // pipelined
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", true},
		{"GET / HTTP/1.1\r\nHost: x\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r", false},
		{"GET / HTTP/1.1\nHost: x\n\n", false}, // bare LF heads get the header timeout
	} {
		br := bufio.NewReaderSize(strings.NewReader(c.in), 4096)
		if _, err := br.Peek(1); err != nil {
			t.Fatal(err)
		}
		if got := headBuffered(br); got != c.want {
			t.Errorf("headBuffered(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}
