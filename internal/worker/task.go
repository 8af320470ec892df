package worker

import (
	"sync"
	"sync/atomic"

	"gowsgi/internal/frame"
)

// InitialCredit is how many response body bytes a stream may send before the front grants more;
// it bounds the memory one streaming response can hold in both processes.
const InitialCredit = 512 << 10

// task is one request inside the worker, shared by the frame reader (which feeds it body,
// credit and cancellation), the Python thread running it, and that thread's companion.
type task struct {
	id      uint32
	env     []byte // the packed environ and the first body bytes, in payload, until release
	body    []byte
	bodyEnd bool
	payload []byte

	synced chan struct{} // the companion reached the end of the app call's up-pipe output
	q      *runq         // told of waits for frames (nil in tests)
	// spill is set once a chunk of this response waited sharedWait for a shared buffer in
	// vain: its clients' readers hold them up, so the rest of its body takes the ring.
	spill atomic.Bool

	// mu guards the fields that follow.
	mu        sync.Mutex
	bodyQ     [][]byte // body frames not yet handed to Python
	bodyDone  bool     // the front sent the last body frame
	credit    int64
	cancelled bool
	headSent  bool // a head went to the front for this stream
	failed    bool // write() sent an invalid head: answer 500 at the end instead
	failMsg   string
	wake      chan struct{} // signalled whenever the fields above change
	sleeper   int           // eventfd of the Python thread waiting in acquire, or -1
}

// newTask makes the task of a Request frame whose payload, read into a buffer from
// requestBuffer, holds env and body; the task owns it until release.
func newTask(id uint32, env, body []byte, bodyEnd bool, payload []byte) *task {
	return &task{
		id: id, env: env, body: body, bodyEnd: bodyEnd, payload: payload,
		credit: InitialCredit, wake: make(chan struct{}, 1), synced: make(chan struct{}, 1),
		bodyDone: bodyEnd, sleeper: -1,
	}
}

// reqBufs recycles the buffers Request frames are read into: a request body (up to 64 KiB
// travels with the request) would otherwise be a fresh allocation, and garbage, per request.
var reqBufs = frame.BufPool{MinCap: 4 << 10}

// requestBuffer is the worker's frame.Reader.Alloc: Request payloads are read into recycled
// buffers that the task keeps, instead of being copied out of the reader's.
func requestBuffer(k frame.Kind, n int) []byte {
	if k != frame.Request {
		return nil
	}
	return reqBufs.Get(n)
}

// release gives the request buffer back once the app call has made its own copies of the
// environ and the first body bytes.
func (t *task) release() {
	if t.payload != nil {
		reqBufs.Put(t.payload)
	}
	t.payload, t.env, t.body = nil, nil, nil
}

func (t *task) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
	t.mu.Lock()
	fd := t.sleeper
	t.sleeper = -1
	t.mu.Unlock()
	if fd >= 0 {
		frame.Kick(fd)
	}
}

func (t *task) deliverBody(p []byte, end bool) {
	t.mu.Lock()
	if len(p) > 0 {
		t.bodyQ = append(t.bodyQ, p)
	}
	if end {
		t.bodyDone = true
	}
	t.mu.Unlock()
	t.signal()
}

func (t *task) addCredit(n int64) {
	t.mu.Lock()
	t.credit += n
	t.mu.Unlock()
	t.signal()
}

func (t *task) cancel() {
	t.mu.Lock()
	t.cancelled = true
	t.mu.Unlock()
	t.signal()
}

func (t *task) isCancelled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cancelled
}

// acquire waits until the stream may send n more body bytes; false means it was cancelled.
// A stream with any credit left may overshoot by one chunk, which keeps big chunks whole.
// The Python thread passes its eventfd to sleep on (see runq for why); other goroutines
// pass -1 and wait on the channel.
func (t *task) acquire(n int, efd int) bool {
	for {
		t.mu.Lock()
		if t.cancelled {
			t.mu.Unlock()
			return false
		}
		if t.credit > 0 {
			t.credit -= int64(n)
			t.mu.Unlock()
			return true
		}
		if efd >= 0 {
			t.sleeper = efd
		}
		t.mu.Unlock()
		t.waitFrames(true)
		if efd >= 0 {
			frame.SleepOn(efd) // a signal after the unlock leaves the eventfd readable
		} else {
			<-t.wake
		}
		t.waitFrames(false)
	}
}

// waitFrames tells the queue that the task waits for a frame from the front (credit, body),
// which the reader must not nap through.
func (t *task) waitFrames(on bool) {
	if t.q != nil {
		t.q.waitFrames(on)
	}
}

// takeBody waits for the next body bytes (at most n) from the front. It returns empty p when
// the body has ended, and ok=false when the stream was cancelled.
func (t *task) takeBody(n int) (p []byte, ok bool) {
	for {
		t.mu.Lock()
		if t.cancelled {
			t.mu.Unlock()
			return nil, false
		}
		if len(t.bodyQ) > 0 {
			p = t.bodyQ[0]
			if len(p) > n {
				t.bodyQ[0] = p[n:]
				p = p[:n]
			} else {
				t.bodyQ = t.bodyQ[1:]
			}
			t.mu.Unlock()
			return p, true
		}
		if t.bodyDone {
			t.mu.Unlock()
			return nil, true
		}
		t.mu.Unlock()
		t.waitFrames(true)
		<-t.wake
		t.waitFrames(false)
	}
}

// bodyPending reports whether body bytes are queued or the body has ended, so that asking the
// front for more would be pointless.
func (t *task) bodyPending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bodyQ) > 0 || t.bodyDone
}
