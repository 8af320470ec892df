package pybridge

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func init() { runtime.LockOSThread() } // TestMain runs on the main thread; Python's lives there

// The interpreter can start once per process, so TestMain owns it for every test here.
func TestMain(m *testing.M) {
	dir, _ := filepath.Abs("testdata")
	if err := Init(Config{Paths: []string{dir}, Multithread: true}); err != nil {
		println("init:", err.Error())
		os.Exit(1)
	}
	var err error
	if testChunks, err = newTestArena(); err == nil {
		err = UseArena(testChunks.Arena(), testChunks.HeldStates(), testChunks.Freed())
	}
	if err != nil {
		println("arena:", err.Error())
		os.Exit(1)
	}
	if err := LoadApp("bridgeapp", "application", false, ""); err != nil {
		println("load:", err.Error())
		os.Exit(1)
	}
	DetachMain()
	code := m.Run()
	Finalize()
	os.Exit(code)
}

func packEnv(kv ...string) []byte {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(kv[i])))
		b = append(b, kv[i]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(kv[i+1])))
		b = append(b, kv[i+1]...)
	}
	return b
}

// onThread runs fn on a new locked OS thread with its own Python thread, as the worker does.
func onThread(t *testing.T, fn func(th *Thread)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		th, err := NewThread()
		if err != nil {
			t.Error(err)
			return
		}
		fn(th)
	}()
	<-done
}

func call(th *Thread, path string, body string) Result {
	return th.Call(1, packEnv("REQUEST_METHOD", "GET", "PATH_INFO", path), []byte(body), true, -1, -1)
}

func TestPhases(t *testing.T) {
	onThread(t, func(th *Thread) {
		// A short list comes out whole, in one phase.
		r := call(th, "/hello", "")
		if r.Kind != Done || string(r.Data) != "Hello, World!" || r.Total != 13 || !strings.Contains(string(r.Head), "200 OK") {
			t.Errorf("call /hello: %+v", r)
		}
		th.Close()

		// A long one item by item.
		r = call(th, "/biglist", "")
		if r.Kind != Data || string(r.Data) != strings.Repeat("a", 10000) || r.Total != 20000 {
			t.Errorf("call /biglist: kind %v, %d bytes, total %d", r.Kind, len(r.Data), r.Total)
		}
		r = th.Next()
		if r.Kind != Done || string(r.Data) != strings.Repeat("b", 10000) {
			t.Errorf("next /biglist: kind %v, %d bytes", r.Kind, len(r.Data))
		}
		th.Close()

		// A list subclass may have close(), and gets it called once. The app counts the
		// calls for the life of the interpreter, which -count runs share: count from here.
		r = call(th, "/closed", "")
		before, err := strconv.Atoi(string(r.Data))
		if err != nil {
			t.Fatalf("/closed: %q", r.Data)
		}
		th.Close()
		for i := 1; i <= 2; i++ {
			r = call(th, "/closing", "")
			if r.Kind == Data {
				r = th.Next()
			}
			if r.Kind != Done || string(r.Data) != "" {
				t.Errorf("/closing did not end after its item: %+v", r)
			}
			th.Close()
			r = call(th, "/closed", "")
			if got := string(r.Data); got != strconv.Itoa(before+i) {
				t.Errorf("after %d requests close() was called %s times (%d before them)", i, got, before)
			}
			th.Close()
		}

		r = call(th, "/gen", "")
		var got []string
		for {
			got = append(got, string(r.Data))
			if r.Kind != Data {
				break
			}
			r = th.Next()
		}
		th.Close()
		if strings.Join(got, ",") != "x,xx,xxx," || r.Kind != Done || r.Total != -1 {
			t.Errorf("generator chunks %q, last %+v", got, r)
		}

		r = call(th, "/echo", "payload")
		if string(r.Data) != "payload" {
			t.Errorf("echo: %+v", r)
		}
		th.Close()
	})
}

func TestErrors(t *testing.T) {
	onThread(t, func(th *Thread) {
		for _, tc := range []struct{ path, want string }{
			{"/raise", "ValueError: boom"},
			{"/badheader", "not latin-1"},
			{"/notbytes", "must be bytes"},
		} {
			r := call(th, tc.path, "")
			th.Close()
			if r.Kind != Error || !strings.Contains(r.Err, tc.want) {
				t.Errorf("%s: got %+v, want an error containing %q", tc.path, r, tc.want)
			}
		}
		// The thread still serves after errors.
		r := call(th, "/hello", "")
		th.Close()
		if r.Kind != Done {
			t.Errorf("after errors: %+v", r)
		}
	})
}

// TestStartResponse: the C start_response takes keywords and refuses what PEP 3333 does;
// exc_info replaces a head not yet sent.
func TestStartResponse(t *testing.T) {
	onThread(t, func(th *Thread) {
		r := call(th, "/start_response", "")
		th.Close()
		want := "TypeError,TypeError,TypeError,TypeError,TypeError,TypeError,ok,AssertionError,AssertionError"
		if r.Kind != Done || string(r.Data) != want || !strings.Contains(string(r.Head), "500 Oops") ||
			!strings.Contains(string(r.Head), "X-Late") {
			t.Errorf("got %q, head %q; want %q and the exc_info head", r.Data, r.Head, want)
		}
	})
}

// TestEnvironStrings: keys and values come out right however the worker's caches of them
// (cached_str) collide, for short and long strings and latin-1 bytes.
func TestEnvironStrings(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = "abcXYZ_019é"[rng.IntN(11)]
		}
		return string(b)
	}
	onThread(t, func(th *Thread) {
		for i := 0; i < 3000; i++ {
			kv := []string{"PATH_INFO", "/environ"}
			want := map[string]string{"PATH_INFO": "/environ"}
			for j := 0; j < 6; j++ {
				k, v := "HTTP_"+strings.ToUpper(word()), word()
				if j%2 == 0 {
					k = "K" + word()
				}
				kv = append(kv, k, v)
				want[k] = v
			}
			r := th.Call(1, packEnv(kv...), nil, true, -1, -1)
			got := string(r.Data)
			th.Close()
			for k, v := range want {
				if !strings.Contains("\n"+got+"\n", "\n"+k+"="+v+"\n") {
					t.Fatalf("request %d: environ lacks %q=%q:\n%s", i, k, v, got)
				}
			}
		}
	})
}

// TestBigListReleased: a long body returned whole in a one-item list is not kept by the
// thread after Close (a short one may stay until the thread's next request), nor by its hold
// once the front has let go of it (the next call on any thread drops it).
func TestBigListReleased(t *testing.T) {
	refs := func() string {
		var got string
		onThread(t, func(th *Thread) {
			got = string(call(th, "/bigrefs", "").Data)
			th.Close()
		})
		return got
	}
	before := refs()
	onThread(t, func(th *Thread) {
		r := call(th, "/big", "")
		if r.Kind != Done || len(r.Data) != 100000 {
			t.Errorf("/big: kind %v, %d bytes", r.Kind, len(r.Data))
		}
		th.Close()
		// The body is in the arena: its hold keeps it until the front is done with it.
		if r.Hold < 0 {
			t.Fatal("/big was not lent from the arena")
		}
		testChunks.ReleaseHeld(r.Hold)
	})
	if after := refs(); after != before {
		t.Errorf("refcount of the body %s after the request, %s before: an idle thread keeps it", after, before)
	}
}

// TestSecretsNotCached: cookies and credentials get a str of their own per request, where
// other short header values come from the worker's cache.
func TestSecretsNotCached(t *testing.T) {
	onThread(t, func(th *Thread) {
		var ids [2][]string
		for i := range ids {
			env := packEnv("PATH_INFO", "/header_ids", "HTTP_COOKIE", "s=1", "HTTP_X_PLAIN", "plain")
			r := th.Call(1, env, nil, true, -1, -1)
			ids[i] = strings.Fields(string(r.Data))
			th.Close()
		}
		if len(ids[0]) != 2 || len(ids[1]) != 2 {
			t.Fatalf("ids %q", ids)
		}
		if ids[0][0] == ids[1][0] {
			t.Errorf("two requests shared one HTTP_COOKIE str")
		}
		if ids[0][1] != ids[1][1] {
			t.Errorf("two requests did not share the cached HTTP_X_PLAIN str: the test sees no caching")
		}
	})
}

func TestThreadLocalPersists(t *testing.T) {
	onThread(t, func(th *Thread) {
		for i := 1; i <= 50; i++ {
			r := call(th, "/local", "")
			got := string(r.Data)
			th.Close()
			if got != strconv.Itoa(i) {
				t.Fatalf("request %d saw threading.local counter %q", i, got)
			}
		}
	})
}

func TestInterrupt(t *testing.T) {
	onThread(t, func(th *Thread) {
		if th.Interrupt(42) {
			t.Error("Interrupt of an idle thread raised")
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			th.Interrupt(41) // another request: must not fire
			for !th.Interrupt(42) {
				time.Sleep(50 * time.Millisecond)
			}
		}()
		r := th.Call(42, packEnv("REQUEST_METHOD", "GET", "PATH_INFO", "/spin"), nil, true, -1, -1)
		th.Close()
		if r.Kind != Error || !strings.Contains(r.Err, "RequestTimeout") {
			t.Fatalf("spinning request: got %+v, want a RequestTimeout error", r)
		}
		r = call(th, "/hello", "")
		th.Close()
		if r.Kind != Done {
			t.Fatalf("after the interrupt: %+v", r)
		}
	})
}

// BenchmarkCall measures one request's phases in the worker: environ, app call, close.
func BenchmarkCall(b *testing.B) {
	env := packEnv("REQUEST_METHOD", "GET", "SCRIPT_NAME", "", "PATH_INFO", "/hello", "QUERY_STRING", "",
		"RAW_URI", "/hello", "REQUEST_URI", "/hello", "SERVER_PROTOCOL", "HTTP/1.1", "SERVER_NAME", "127.0.0.1",
		"SERVER_PORT", "8000", "REMOTE_ADDR", "127.0.0.1", "REMOTE_PORT", "50000", "HTTP_HOST", "127.0.0.1:8000",
		"HTTP_USER_AGENT", "wrk", "HTTP_ACCEPT", "*/*", "HTTP_ACCEPT_ENCODING", "gzip", "HTTP_CONNECTION", "keep-alive",
		"wsgi.url_scheme", "http")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		th, err := NewThread()
		if err != nil {
			b.Error(err)
			return
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r := th.Call(uint64(i+1), env, nil, true, -1, -1)
			if r.Kind == Data {
				th.Next()
			}
			th.Close()
		}
	}()
	<-done
}

// TestExtensionModules imports every extension module of the standard library's lib-dynload
// and calls the C API through ctypes.pythonapi: both find it in the binary that embeds
// Python, which a static libpython must export whole (scripts/python-static-libs:
// --whole-archive, --export-dynamic).
func TestExtensionModules(t *testing.T) {
	onThread(t, func(th *Thread) {
		r := call(th, "/extensions", "")
		th.Close()
		lines := strings.Split(string(r.Data), "\n")
		var n int
		if _, err := fmt.Sscanf(lines[0], "%d imported", &n); err != nil || n < 10 {
			t.Fatalf("imported too few extension modules to tell: %q", r.Data)
		}
		for _, l := range lines[1:] {
			t.Errorf("extension module: %s", l)
		}
		t.Logf("%d extension modules imported", n)
	})
}
