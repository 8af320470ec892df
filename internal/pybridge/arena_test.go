package pybridge

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"gowsgi/internal/frame"
	"gowsgi/internal/testenv"
)

// testChunks is the shared memory whose arena the tests' Python allocates in (TestMain): the
// front's side of it, which lends and frees as the front would.
var testChunks *frame.SharedChunks

// newTestArena makes an arena of 16 MiB: less than /churn's objects need at their peak.
func newTestArena() (*frame.SharedChunks, error) {
	c, f, err := frame.NewSharedChunks(frame.ChunksLayout{Buffers: 1, Size: 4096, Holds: 64, ArenaPages: 4096})
	if err != nil {
		return nil, err
	}
	return c, f.Close()
}

// arenaEnv names the arena's addresses to the app, which checks where its objects are.
func arenaEnv(path string, kv ...string) []byte {
	a := testChunks.Arena()
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	return packEnv(append([]string{"REQUEST_METHOD", "GET", "PATH_INFO", path,
		"ARENA", fmt.Sprintf("%d-%d", lo, lo+uintptr(len(a)))}, kv...)...)
}

// TestArenaLend: body chunks of 64 KiB are allocated in the arena and lent, not copied: each
// one's bytes are the arena's at its hold's offset. A held chunk keeps its bytes after the
// app dropped it and went on allocating; once the holds are cleared, the next call drops the
// references and the next chunks take the same pages again.
func TestArenaLend(t *testing.T) {
	onThread(t, func(th *Thread) {
		arena := testChunks.Arena()
		stream := func() []Result {
			var got []Result
			r := th.Call(1, packEnv("REQUEST_METHOD", "GET", "PATH_INFO", "/fresh"), nil, true, -1, -1)
			for {
				if r.Kind != Data && r.Kind != Done {
					t.Fatalf("chunk %d: kind %v (%s)", len(got), r.Kind, r.Err)
				}
				if len(r.Data) == 0 && r.Kind == Done {
					break // a generator ends after its last chunk
				}
				if r.Hold < 0 {
					t.Fatalf("chunk %d of 64 KiB was not lent from the arena", len(got))
				}
				if &r.Data[0] != &arena[r.HoldOff] {
					t.Fatalf("chunk %d is not at offset %d of the arena", len(got), r.HoldOff)
				}
				got = append(got, r)
				if r.Kind == Done {
					break
				}
				r = th.Next()
			}
			th.Close()
			return got
		}
		first := stream()
		offsets := map[int]bool{}
		for i, r := range first {
			if len(r.Data) != 65536 || strings.Count(string(r.Data), string(rune(i))) != 65536 {
				t.Errorf("held chunk %d lost its bytes", i)
			}
			if offsets[r.HoldOff] {
				t.Errorf("chunk %d shares offset %d with an earlier held one", i, r.HoldOff)
			}
			offsets[r.HoldOff] = true
		}
		if len(first) != 6 {
			t.Fatalf("%d chunks, want 6", len(first))
		}
		for _, r := range first {
			testChunks.ReleaseHeld(r.Hold)
		}
		reused := 0
		for _, r := range stream() {
			if offsets[r.HoldOff] {
				reused++
			}
			testChunks.ReleaseHeld(r.Hold)
		}
		if reused == 0 {
			t.Error("no chunk took the pages of the released ones: the holds were not dropped")
		}
		if r := call(th, "/hello", ""); r.Hold != -1 {
			t.Errorf("a short body was lent: hold %d", r.Hold)
		}
		th.Close()
	})
}

// TestArenaChurn: big objects allocated, resized and freed at random, more than the arena
// holds, keep their bytes, and those that fit are in the arena.
func TestArenaChurn(t *testing.T) {
	for seed := range 3 {
		onThread(t, func(th *Thread) {
			r := th.Call(1, arenaEnv("/churn", "SEED", fmt.Sprint(seed)), nil, true, -1, -1)
			got := string(r.Data)
			th.Close()
			var inside int
			if _, err := fmt.Sscanf(got, "ok %d", &inside); err != nil {
				t.Fatalf("seed %d: %s (%s)", seed, got, r.Err)
			}
			if inside < 100 {
				t.Errorf("seed %d: only %d big objects were allocated in the arena", seed, inside)
			}
			t.Logf("seed %d: %d big objects in the arena", seed, inside)
		})
	}
}

// TestArenaFork: a child forked with objects in the arena (os.fork, multiprocessing) frees
// them and allocates its own in their place; the parent's keep their bytes, because the child
// moved its arena to private memory first.
func TestArenaFork(t *testing.T) {
	onThread(t, func(th *Thread) {
		r := th.Call(1, arenaEnv("/fork"), nil, true, -1, -1)
		if got := string(r.Data); got != "child 0 parent intact" {
			t.Errorf("/fork: %q (%s)", got, r.Err)
		}
		th.Close()
	})
}

// TestArenaGivesBack: a big block's pages leave the resident set when it is freed (both
// processes': the front's mapping of them goes too), where smaller ones stay for reuse. The
// 8 MiB must fit in the test's 16 MiB arena, which the other tests leave nearly empty.
func TestArenaGivesBack(t *testing.T) {
	onThread(t, func(th *Thread) {
		hold := func(keep string) {
			r := th.Call(1, arenaEnv("/hold8m", "KEEP", keep), nil, true, -1, -1)
			if string(r.Data) != "ok" {
				t.Fatalf("/hold8m: %q (%s)", r.Data, r.Err)
			}
			th.Close()
		}
		before := rssShmem(t)
		hold("1")
		held := rssShmem(t)
		hold("0")
		after := rssShmem(t)
		t.Logf("RssShmem %d kB, %d with 8 MiB held, %d after", before, held, after)
		// Other tests may have left the pages resident already: what counts is the drop.
		if held-after < 7<<10 {
			t.Errorf("freeing 8 MiB gave back only %d kB", held-after)
		}
	})
}

// TestArenaSweep: Sweep drops a lent chunk once the front is done with it, with no request
// to serve: an 8 MiB chunk leaves the resident set when it is released and swept, and Sweep
// says whether a chunk is still lent. (The worker's sweeper calls it while the threads idle.)
func TestArenaSweep(t *testing.T) {
	onThread(t, func(th *Thread) {
		before := Sweeps()
		call(th, "/hello", "")
		th.Close()
		if Sweeps() == before {
			t.Error("a call did not count its sweep: the worker's sweeper would take the GIL from busy threads")
		}
		r := th.Call(1, arenaEnv("/lend8m"), nil, true, -1, -1)
		if r.Hold < 0 || len(r.Data) != 8<<20 {
			t.Fatalf("/lend8m: hold %d, %d bytes (%s)", r.Hold, len(r.Data), r.Err)
		}
		th.Close()
		if !th.Sweep() {
			t.Error("Sweep says nothing is lent while the front holds a chunk")
		}
		lent := rssShmem(t)
		testChunks.ReleaseHeld(r.Hold)
		released := rssShmem(t)
		if th.Sweep() {
			t.Error("Sweep says a chunk is still lent after the front released the last one")
		}
		swept := rssShmem(t)
		t.Logf("RssShmem %d kB lent, %d released, %d swept", lent, released, swept)
		if lent-released > 1<<10 {
			t.Errorf("releasing the hold alone gave back %d kB: only the sweep drops the chunk", lent-released)
		}
		if released-swept < 7<<10 {
			t.Errorf("the sweep gave back only %d kB of the 8 MiB chunk", released-swept)
		}
	})
}

// rssShmem is this process's resident shared memory in kB, where the arena's pages count.
func rssShmem(t *testing.T) int {
	t.Helper()
	n, err := testenv.RSSShmem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return int(n >> 10)
}
