// Package pybridge embeds CPython for a worker process. It is the only package that imports "C":
// the interpreter lifecycle on one locked owner goroutine, Python threads that each keep one
// thread state for their whole life (so threading.local survives between requests), and one cgo
// call per request phase — call the app, next chunk, close — each of which attaches to Python and
// detaches again inside C (design.md §1). Go never holds a Python reference or the GIL.
package pybridge

/*
#cgo CFLAGS: -Wall -Werror -O2
#cgo noescape gw_call
#cgo nocallback gw_call
#cgo nocallback gw_next
#cgo nocallback gw_close
#cgo nocallback gw_thread_new
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	_ "embed"
	"errors"
	"strings"
	"sync/atomic"
	"unsafe"
)

//go:embed glue.py
var glueSource string

// Config says how to start the interpreter.
type Config struct {
	// Paths are prepended to sys.path, in order (the app directory, --pythonpath entries).
	Paths []string
	// Multithread and Multiprocess become wsgi.multithread and wsgi.multiprocess.
	Multithread, Multiprocess bool
}

// Init starts the interpreter and loads the glue module. It must run on a goroutine locked to
// its OS thread for the interpreter's whole life (the worker's main goroutine); that thread
// holds the GIL when Init returns, until DetachMain.
func Init(cfg Config) error {
	glue := C.CString(glueSource)
	defer C.free(unsafe.Pointer(glue))
	paths := strings.Join(cfg.Paths, "\x00")
	cpaths := C.CString(paths)
	defer C.free(unsafe.Pointer(cpaths))
	var cerr *C.char
	if C.gw_init(glue, C.size_t(len(glueSource)), cpaths, C.size_t(len(paths)),
		cbool(cfg.Multithread), cbool(cfg.Multiprocess), &cerr) != 0 {
		return takeErr(cerr)
	}
	return nil
}

// UseArena makes Python allocate its objects of 16 KiB and more in arena, memory the front maps
// too, so that a body chunk there reaches the front with no copy: Result.Hold names the state
// word in held that keeps such a chunk alive, and freed counts the words cleared. It runs on
// Init's thread, attached, before LoadApp; the memory must stay mapped for the process's life.
func UseArena(arena []byte, held []atomic.Uint32, freed *atomic.Uint32) error {
	if len(arena) == 0 || len(held) == 0 {
		return nil
	}
	if C.gw_arena_init(unsafe.Pointer(unsafe.SliceData(arena)), C.size_t(len(arena)),
		(*C.uint32_t)(unsafe.Pointer(&held[0])), C.uint32_t(len(held)), (*C.uint32_t)(unsafe.Pointer(freed))) != 0 {
		return errors.New("set up the arena: out of memory")
	}
	return nil
}

// LoadApp imports module and takes attr from it; with call it evaluates attr(args) where args
// may hold literals only. The traceback of a failure is already in the error log; the error is
// its one-line reason. It runs on Init's thread, attached.
func LoadApp(module, attr string, call bool, args string) error {
	cm, ca, cargs := C.CString(module), C.CString(attr), C.CString(args)
	defer C.free(unsafe.Pointer(cm))
	defer C.free(unsafe.Pointer(ca))
	defer C.free(unsafe.Pointer(cargs))
	var cerr *C.char
	if C.gw_load_app(cm, ca, cbool(call), cargs, &cerr) != 0 {
		return takeErr(cerr)
	}
	return nil
}

// Describe returns the interpreter's version and prefix. It runs on Init's thread, attached.
func Describe() string {
	s := C.gw_describe()
	defer C.free(unsafe.Pointer(s))
	return C.GoString(s)
}

// DetachMain releases the GIL held by Init's thread so Python threads can run.
func DetachMain() { C.gw_detach_main() }

// Finalize finalizes the interpreter on Init's thread. No Python thread may be running.
func Finalize() { C.gw_finalize() }

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func takeErr(cerr *C.char) error {
	if cerr == nil {
		return errors.New("unknown error")
	}
	defer C.free(unsafe.Pointer(cerr))
	return errors.New(C.GoString(cerr))
}

// Kind says what a request phase produced.
type Kind int

// Kinds of Result.
const (
	Data  Kind = C.GW_OUT_DATA  // a chunk; more may follow
	Done  Kind = C.GW_OUT_DONE  // the last chunk (possibly empty)
	File  Kind = C.GW_OUT_FILE  // a regular file to send from FD
	Error Kind = C.GW_OUT_ERROR // the app failed; Err says why, the traceback is logged
)

// Messages on a thread's up pipe and the body pipe (see shim.h).
const (
	UpWant    = C.GW_UP_WANT
	UpHead    = C.GW_UP_HEAD
	UpData    = C.GW_UP_DATA
	UpSync    = C.GW_UP_SYNC
	BodyAbort = C.GW_BODY_ABORT
)

// Result is what one phase produced. Head and Data alias memory the thread owns: they are valid
// only until the next call on the same Thread.
type Result struct {
	Kind     Kind
	HeadSent bool   // write() already sent the head through the up pipe
	Head     []byte // packed status and headers (frame.PackedHead), nil when HeadSent or on Error
	Data     []byte
	Total    int64 // total body length when known, else -1
	FD       int   // File: a descriptor the caller must close
	FileOff  int64
	FileLen  int64
	Err      string
	// Hold >= 0 says Data is in the arena at HoldOff, kept alive by that hold until its state
	// word is cleared (see UseArena): by the front once it wrote the bytes, or by the caller
	// when it does not send them. Unlike Data, a held chunk outlives the next call.
	Hold, HoldOff int
}

// Thread is one Python thread. Its methods must be called from the one goroutine that created
// it, which stays locked to its OS thread for the Thread's whole life; it is not safe for
// concurrent use.
type Thread struct {
	t   *C.gw_thread
	out C.gw_out
}

// NewThread creates the Python thread state for the calling goroutine's OS thread. The caller
// must have called runtime.LockOSThread and never unlock it.
func NewThread() (*Thread, error) {
	t := C.gw_thread_new()
	if t == nil {
		return nil, errors.New("create Python thread state: out of memory")
	}
	return &Thread{t: t}, nil
}

// Call runs phase (a) of request serial (non-zero; Interrupt names it): build the environ from the packed env, call the app, and iterate to the
// first non-empty chunk. body holds the first request body bytes, the whole body when bodyEnd.
// upFD and bodyFD are the thread's pipe ends for write() data and further body.
func (t *Thread) Call(serial uint64, env, body []byte, bodyEnd bool, upFD, bodyFD int) Result {
	C.gw_call(t.t, C.ulonglong(serial), (*C.char)(unsafe.Pointer(unsafe.SliceData(env))), C.size_t(len(env)),
		(*C.char)(unsafe.Pointer(unsafe.SliceData(body))), C.size_t(len(body)), cbool(bodyEnd),
		C.int(upFD), C.int(bodyFD), &t.out)
	return t.result()
}

// Next runs phase (b): the next non-empty chunk.
func (t *Thread) Next() Result {
	C.gw_next(t.t, &t.out)
	return t.result()
}

// Interrupt raises glue.RequestTimeout inside the thread if it still runs request serial, and
// reports whether it did. It may be called from any goroutine, but it waits for the GIL: run
// it where blocking forever (an app holding the GIL in C) harms nobody else.
func (t *Thread) Interrupt(serial uint64) bool {
	return C.gw_interrupt(t.t, C.ulonglong(serial)) == 1
}

// Close runs phase (c): close() on the iterable, and every reference of the request dropped.
// A short exact list or tuple body that Call returned whole was closed by Call.
func (t *Thread) Close() {
	if t.out.closed != 0 {
		return
	}
	C.gw_close(t.t)
}

// Sweep drops the references of the lent chunks (Result.Hold) the front is done with, as the
// phase calls do on their way (Sweeps), and reports whether a chunk is still lent. It is for a
// thread that serves no request: else an idle worker would keep its last big chunks until its
// next request. It waits for the GIL.
func (t *Thread) Sweep() bool { return C.gw_sweep(t.t) != 0 }

// Sweeps counts the sweeps made so far. The serving threads make them too (each Call and
// Close, and each chunk lent), so a count that moves says they are at it, and a Sweep would
// take the GIL from them for nothing. It does not take the GIL.
func Sweeps() uint64 { return uint64(C.gw_sweeps()) }

func (t *Thread) result() Result {
	o := &t.out
	r := Result{
		Kind:     Kind(o.kind),
		HeadSent: o.head_sent != 0,
		Total:    int64(o.total),
		FD:       int(o.fd),
		FileOff:  int64(o.file_off),
		FileLen:  int64(o.file_len),
		Hold:     int(o.hold),
		HoldOff:  int(o.hold_off),
	}
	if o.head != nil {
		r.Head = unsafe.Slice((*byte)(unsafe.Pointer(o.head)), int(o.head_len))
	}
	if o.data != nil {
		r.Data = unsafe.Slice((*byte)(unsafe.Pointer(o.data)), int(o.data_len))
	}
	if o.err != nil {
		r.Err = C.GoString(o.err)
	}
	return r
}
