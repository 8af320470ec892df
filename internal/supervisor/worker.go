package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gowsgi/internal/frame"
)

// workerConn is the front's side of one worker process.
type workerConn struct {
	sup  *Supervisor
	pid  int
	conn *net.UnixConn
	out  *frame.Writer
	proc *os.Process

	// taken counts the requests the worker's threads took or it handed back (shared memory);
	// sent counts the requests sent, and is only added to inside the Writer's SendFunc, which
	// serialises it.
	taken *frame.SharedCounter
	sent  atomic.Uint64
	// chunks carries big response body chunks (DataShared frames); connections writing from
	// its buffers keep it mapped past the worker's end.
	chunks *frame.SharedChunks
	// ring carries every frame from the worker (frame.Ring); the socket only the descriptors
	// of File frames, which sockReader hands to the ring's reader through fds, in order.
	ring *frame.Ring
	fds  chan int
	// down carries every frame to the worker, through out; the socket nothing: its end tells
	// the worker that we are gone.
	down *frame.Ring

	readyAt  atomic.Int64 // unix nanoseconds of READY; 0 while booting
	lastSeen atomic.Int64 // unix nanoseconds of the last frame received
	requests atomic.Int64 // streams finished

	// Owned by the control goroutine.
	slot        *slot
	retiring    bool
	deadline    time.Time // a retiring worker is killed past it
	stuckSince  time.Time // when a retiring worker was first seen with only stuck requests
	maxRequests int

	// roomMu guards the fields that follow (see room.go).
	roomMu      sync.Mutex
	queuedBytes int           // what queued requests not yet taken hold of queueBudget
	roomHeld    []*Stream     // the queued streams holding some, in the order they came
	roomWaiters []*roomWaiter // requests waiting for room, first come first served
	roomClosed  bool          // retired or lost: waiters give up, none may wait

	// Owned by the recaller (see look).
	lookTaken    uint64 // taken at the last look
	stalledLooks int    // looks in a row that saw requests waiting and none taken

	// mu guards the fields that follow.
	mu       sync.Mutex
	streams  map[uint32]*Stream
	closed   bool // takes no new streams (retired or lost)
	dead     bool // the process is gone
	threads  int  // its Python threads, from READY
	withheld int  // tokens of streams it handed back, given back when it finishes one
}

// sharedChunks returns how many buffers of sharedChunkSize a worker with threads Python
// threads gets: 8 per thread, the credit a stream starts with (512 KiB) in the chunk size apps
// stream most, but no more than sharedMaxBuffers in all (and at least one per thread), so that
// the many threads of an I/O-bound worker do not pin 64 KiB × 8 each. The worker's threads
// share them all; a chunk that does not fit, or finds none free for a while, takes the ring.
func sharedChunks(threads int) int {
	return threads * max(1, min(8, sharedMaxBuffers/threads))
}

const (
	sharedChunkSize  = 64 << 10
	ringSize         = 256 << 10 // frames between the front and a worker, each way (frame.Ring)
	sharedMaxBuffers = 64        // 4 MiB per worker
	// sharedHolds bounds the chunks a worker lends from its arena at once; credit bounds them
	// well below that (8 per stream of 64 KiB chunks).
	sharedHolds = 1024
	// arenaPages sizes the arena where a worker's Python allocates its big objects, 64 MiB:
	// address space, resident only as far as used. Objects that do not fit go to malloc.
	arenaPages = 16384
)

// start launches a worker process; it runs on the control goroutine.
func (s *Supervisor) start() (*workerConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "worker")
	theirs := os.NewFile(uintptr(fds[1]), "front")
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("socket to worker: %w", err)
	}
	conn := fc.(*net.UnixConn)

	// What is made for the worker is undone if a later step fails; the files for it are
	// closed once it has them, either way.
	files := []*os.File{theirs}
	undo := []func(){func() { conn.Close() }}
	fail := func(err error) (*workerConn, error) {
		closeFiles(files)
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	taken, takenFile, err := frame.NewSharedCounter()
	if err != nil {
		return fail(err)
	}
	files, undo = append(files, takenFile), append(undo, func() { taken.Close() })
	chunks, chunksFile, err := frame.NewSharedChunks(frame.ChunksLayout{
		Buffers: sharedChunks(s.cfg.Threads), Size: sharedChunkSize, Holds: sharedHolds, ArenaPages: arenaPages,
	})
	if err != nil {
		return fail(err)
	}
	files, undo = append(files, chunksFile), append(undo, chunks.Close)
	ring, ringFiles, err := newRing(false)
	if err != nil {
		return fail(err)
	}
	files, undo = append(files, ringFiles...), append(undo, ring.Release)
	down, downFiles, err := newRing(true)
	if err != nil {
		return fail(err)
	}
	files, undo = append(files, downFiles...), append(undo, down.Release)

	cmd := exec.Command(s.cfg.Exe, s.cfg.Args...)
	cmd.Env = s.cfg.Env
	cmd.Stdout = s.cfg.Stdout
	cmd.Stderr = s.cfg.Stderr
	cmd.WaitDelay = 5 * time.Second // a grandchild holding the log pipe must not hold us up
	// fds 3 to 11 in the worker (see cli.runWorker)
	cmd.ExtraFiles = files
	err = cmd.Start()
	closeFiles(files)
	files = nil
	if err == nil {
		err = errors.Join(ring.Started(), down.Started())
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("start worker: %w", err))
	}
	s.log.Info(fmt.Sprintf("Booting worker with pid: %d", cmd.Process.Pid))
	w := &workerConn{sup: s, pid: cmd.Process.Pid, conn: conn, out: frame.NewRingFlusher(down),
		streams: make(map[uint32]*Stream), proc: cmd.Process, taken: taken, chunks: chunks,
		ring: ring, fds: make(chan int, 64), down: down}
	w.lastSeen.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.workers[w] = struct{}{}
	s.mu.Unlock()

	s.procs.Add(1)
	go func() {
		defer s.procs.Done()
		w.serve(cmd)
	}()
	return w, nil
}

// newRing makes a ring to a worker or from one, with the files to pass to it.
func newRing(toWorker bool) (*frame.Ring, []*os.File, error) {
	r, mem, rw, ww, err := frame.NewRing(ringSize, toWorker)
	if err != nil {
		return nil, nil, err
	}
	return r, []*os.File{mem, rw, ww}, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// serve reads the worker's frames and reaps its process; it reports the exit to the control
// goroutine.
func (w *workerConn) serve(cmd *exec.Cmd) {
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is read from ProcessState below
		close(exited)
	}()
	sockDone := make(chan struct{})
	go func() {
		defer close(sockDone)
		w.sockReader()
	}()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		w.readLoop()
	}()
	select {
	case <-exited:
		w.conn.Close() // unblocks sockReader, which closes the ring: the reader drains it
		<-readDone
	case <-readDone:
		// The socket broke first; the process is exiting or must be made to.
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill() // it is already lost to us
			<-exited
		}
	}
	w.conn.Close()
	<-sockDone
	w.ring.Release()
	w.lost()
	_ = w.out.Close()   // the worker is gone; errors are expected
	w.down.Release()    // after out.Close: no sender touches the ring any more
	_ = w.taken.Close() // nothing reads it after lost
	w.chunks.Close()    // unmapped once the connections writing from it are done
	code := cmd.ProcessState.ExitCode()
	why := fmt.Sprintf("exit code %d", code)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		why = fmt.Sprintf("killed by signal %v", ws.Signal())
	}
	s := w.sup
	s.mu.Lock()
	delete(s.workers, w)
	s.mu.Unlock()
	s.do(func() { s.onExit(w, code, why) })
}

// accepting reports whether w takes new streams.
func (w *workerConn) accepting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.closed && !w.dead
}

// open starts a stream on w, holding queued bytes of its queue budget (0: on an idle
// thread), or returns nil when w no longer takes requests.
func (w *workerConn) open(queued int) *Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.dead {
		return nil
	}
	id := w.sup.nextID.Add(1)
	st := newStream(id, w)
	st.queued = queued
	w.streams[id] = st
	return st
}

// finish forgets a stream whose thread is free again, and gives its token back: to the idle
// threads when fewer streams than threads are left, else to the queue places; with it come
// the tokens withheld after hand-backs, as the worker makes progress again.
func (w *workerConn) finish(id uint32) {
	w.mu.Lock()
	st, ok := w.streams[id]
	delete(w.streams, id)
	idle, spare := 0, 0
	if ok && !w.closed && !w.dead {
		spare, w.withheld = w.withheld, 0
		if len(w.streams) < w.threads {
			idle = 1
		} else {
			spare++
		}
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	w.releaseStream(st)
	st.unref()
	w.releaseTaken()
	n := w.requests.Add(1)
	if w.maxRequests > 0 && n == int64(w.maxRequests) {
		w.sup.replace(w, fmt.Sprintf("served %d requests (--max-requests)", n))
	}
	w.giveTokens(idle, spare)
}

// giveTokens gives back idle tokens of w's threads and spare ones of its queue's places.
func (w *workerConn) giveTokens(idle, spare int) {
	for ; idle > 0; idle-- {
		w.sup.tokens <- w
	}
	for ; spare > 0; spare-- {
		w.sup.spare <- w
	}
}

// requeue forgets a stream the worker handed back before any thread took it (frame.Requeue):
// the front sends it again. Its token is withheld until the worker finishes a stream, so that
// the request does not go straight back to a worker whose threads are all held up; a worker
// left with no stream finishes none, and gets them back at once: its threads' first, as they
// are all idle, then its queue's places.
func (w *workerConn) requeue(id uint32) {
	w.mu.Lock()
	st := w.streams[id]
	delete(w.streams, id)
	idle, spare := 0, 0
	if st != nil && !w.closed && !w.dead {
		w.withheld++
		if len(w.streams) == 0 {
			idle = min(w.withheld, w.threads)
			spare, w.withheld = w.withheld-idle, 0
		}
	}
	w.mu.Unlock()
	if st != nil {
		w.releaseStream(st)
		st.push(Event{Kind: EventRequeue})
		st.unref()
	}
	w.giveTokens(idle, spare)
}

// onlyStuck reports whether every stream left on w was abandoned after a timeout.
func (w *workerConn) onlyStuck() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.streams) == 0 {
		return false
	}
	for _, st := range w.streams {
		if !st.isAbandoned() {
			return false
		}
	}
	return true
}

// shutdown asks the worker to finish its streams and exit.
func (w *workerConn) shutdown() {
	_ = w.out.Send(frame.AppendHeader(nil, frame.Shutdown, 0, 0, 0)) // a dead worker needs no telling
}

// lost fails every stream of a worker whose process has exited. Streams the worker's threads
// took may have run and fail; the others never reached the app and are dispatched again.
func (w *workerConn) lost() {
	w.mu.Lock()
	w.dead = true
	streams := w.streams
	w.streams = map[uint32]*Stream{}
	w.mu.Unlock()
	taken := w.taken.Load() // final: the process is gone
	w.closeRoom()           // requests waiting for room here go elsewhere
	w.forgetRoom()
	for _, st := range streams {
		if seq := st.seq.Load(); seq != 0 && seq <= taken {
			st.push(Event{Kind: EventFailed})
		} else {
			st.push(Event{Kind: EventRetry}) // the app never saw it: safe to send elsewhere
		}
		st.unref()
	}
}

// pushLent queues body bytes the worker lent from its shared memory (index i frees them),
// or frees them at once when the stream is gone.
func (w *workerConn) pushLent(id uint32, p []byte, i int) {
	if st := w.stream(id); st != nil {
		st.push(Event{Kind: EventData, Data: p, shared: i + 1})
	} else {
		w.chunks.Free(i)
	}
}

func (w *workerConn) stream(id uint32) *Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams[id]
}

// workerClosed reports whether err, from reading a worker's socket, only says that the worker
// closed its end: EOF, or a reset when it exited with frames of ours unread (a late CREDIT to
// a worker that had drained, say). The process waiter reports why the worker ended.
func workerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// sockReader reads the worker's socket, which carries the descriptors of File frames and
// ends with the worker, until it ends; then it closes the rings: the reader of the worker's
// drains what the worker published and stops, and senders to the worker fail.
func (w *workerConn) sockReader() {
	defer w.down.Close() // a sender waiting for room fails
	defer w.ring.Close()
	defer close(w.fds)
	fr := frame.NewFDReader(w.conn)
	defer fr.CloseFDs()
	var buf [64]byte
	for {
		_, err := fr.Read(buf[:])
		for fd := fr.TakeFD(); fd >= 0; fd = fr.TakeFD() {
			w.fds <- fd // the reader takes them, one per File frame, in order
		}
		if err != nil {
			if !workerClosed(err) && !errors.Is(err, net.ErrClosed) {
				w.sup.log.Error(fmt.Sprintf("Worker %d: read: %v", w.pid, err))
			}
			return
		}
	}
}

// readLoop turns the worker's frames into stream events until the ring is closed and drained.
func (w *workerConn) readLoop() {
	defer func() {
		// A reader that stops early (a broken frame) ends the socket too, and with it
		// sockReader; then the descriptors of File frames never read are closed.
		w.conn.Close()
		for fd := range w.fds {
			syscall.Close(fd)
		}
	}()
	r := frame.NewRingReader(w.ring)
	r.Alloc = w.sup.dataBuffer
	log := w.sup.log
	for {
		f, err := r.Next()
		if err != nil {
			if !workerClosed(err) {
				log.Error(fmt.Sprintf("Worker %d: read: %v", w.pid, err))
			}
			return
		}
		if !r.HasFrame() { // once per batch: the heartbeat check counts in seconds
			w.lastSeen.Store(time.Now().UnixNano())
		}
		switch f.Kind {
		case frame.Ready:
			info, err := frame.ParseReady(f.Payload)
			if err != nil || info.Version != frame.Version {
				log.Error(fmt.Sprintf("Worker %d speaks protocol %d, want %d", w.pid, info.Version, frame.Version))
				return
			}
			w.readyAt.Store(time.Now().UnixNano())
			threads := int(info.Threads)
			w.sup.do(func() { w.sup.onReady(w, threads) })
		case frame.Head:
			st := w.stream(f.Stream)
			e := Event{Kind: EventHead}
			if err := st.parseHead(f.Payload, &e.Head); err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			if st != nil {
				st.push(e)
			}
		case frame.Data:
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventData, Data: w.sup.ownData(f.Payload)})
			}
		case frame.DataShared:
			i, n, err := frame.ParseDataShared(f.Payload)
			var p []byte
			if err == nil {
				p, err = w.chunks.Lend(i, n)
			}
			if err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			w.pushLent(f.Stream, p, i)
		case frame.DataHeld:
			k, off, n, err := frame.ParseDataHeld(f.Payload)
			var p []byte
			var i int
			if err == nil {
				p, i, err = w.chunks.LendHeld(k, off, n)
			}
			if err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			w.pushLent(f.Stream, p, i)
		case frame.File:
			off, n, err := frame.ParseFileFrame(f.Payload)
			fd, ok := <-w.fds // sent before the frame
			if err != nil || !ok {
				log.Error(fmt.Sprintf("Worker %d: file frame without a descriptor", w.pid))
				return
			}
			file := os.NewFile(uintptr(fd), "wsgi.file_wrapper")
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventFile, File: file, Offset: off, Length: n})
			} else {
				file.Close()
			}
		case frame.WantBody:
			n, err := f.U32()
			if err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventWantBody, N: int(n)})
			}
		case frame.End:
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventEnd, Abort: f.Flags&frame.FlagAbort != 0})
			}
			w.finish(f.Stream)
		case frame.Requeue:
			w.requeue(f.Stream)
		case frame.Heartbeat:
		default:
			log.Error(fmt.Sprintf("Worker %d sent an unexpected %v frame", w.pid, f.Kind))
			return
		}
	}
}
