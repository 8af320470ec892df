package tests

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

func TestFlask(t *testing.T) {
	t.Parallel()
	s := startApp(t, "flaskapp:application")
	var j struct {
		Framework string
		OK        bool
		Args      map[string]string
	}
	getJSON(t, s.URL+"/json?q=1", &j)
	if j.Framework != "flask" || !j.OK || j.Args["q"] != "1" {
		t.Errorf("/json: %+v", j)
	}

	form := url.Values{"a": {"1"}, "b": {"two words"}}
	resp, body := post(t, s.URL+"/form", "application/x-www-form-urlencoded", []byte(form.Encode()))
	wantStatus(t, resp, body, 200)
	var f struct {
		Fields map[string]string
		Files  map[string]string
	}
	decodeJSON(t, body, &f)
	if f.Fields["a"] != "1" || f.Fields["b"] != "two words" {
		t.Errorf("urlencoded /form: %s", body)
	}

	ctype, mp := multipartBody(t, map[string]string{"a": "1"}, "f", "x.txt", []byte("abc"))
	resp, body = post(t, s.URL+"/form", ctype, mp)
	wantStatus(t, resp, body, 200)
	decodeJSON(t, body, &f)
	if f.Fields["a"] != "1" || f.Files["f"] != "x.txt" {
		t.Errorf("multipart /form: %s", body)
	}

	resp, body = get(t, s.URL+"/raise")
	wantStatus(t, resp, body, 500)
	stillServesPath(t, s.URL+"/json")
}

func TestDjango(t *testing.T) {
	t.Parallel()
	s := startApp(t, "djangoproj.wsgi:application")
	var j struct {
		Framework string
		OK        bool
	}
	getJSON(t, s.URL+"/json", &j)
	if j.Framework != "django" || !j.OK {
		t.Errorf("/json: %+v", j)
	}

	form := url.Values{"a": {"1"}, "b": {"two words"}}
	resp, body := post(t, s.URL+"/form", "application/x-www-form-urlencoded", []byte(form.Encode()))
	wantStatus(t, resp, body, 200)
	if want := `{"fields": {"a": "1", "b": "two words"}}`; string(body) != want {
		t.Errorf("/form: %s, want %s", body, want)
	}

	// Below and above FILE_UPLOAD_MAX_MEMORY_SIZE (1 MiB): in memory, then a temporary file.
	for _, size := range []int{1000, 3 << 20} {
		data := randomBytes(t, size)
		ctype, mp := multipartBody(t, map[string]string{"title": "t"}, "doc", "doc.bin", data)
		resp, body := post(t, s.URL+"/upload", ctype, mp)
		wantStatus(t, resp, body, 200)
		var u struct {
			Fields map[string]string
			Files  map[string]struct {
				Filename, Sha256 string
				Size             int
			}
		}
		decodeJSON(t, body, &u)
		d := u.Files["doc"]
		if u.Fields["title"] != "t" || d.Filename != "doc.bin" || d.Size != size || d.Sha256 != sha(data) {
			t.Errorf("upload of %d bytes: %s", size, body)
		}
	}
}

func TestFalcon(t *testing.T) {
	t.Parallel()
	testJSONAndEcho(t, "falconapp:application", "falcon")
}

func TestBottle(t *testing.T) {
	t.Parallel()
	testJSONAndEcho(t, "bottleapp:application", "bottle")
}

// testJSONAndEcho checks a framework app's GET /json and POST /echo.
func testJSONAndEcho(t *testing.T, app, framework string) {
	s := startApp(t, app)
	var j map[string]any
	getJSON(t, s.URL+"/json?q=1", &j)
	if j["framework"] != framework || j["ok"] != true {
		t.Errorf("/json: %v", j)
	}
	data := bytes.Repeat([]byte("echo me\n"), 10000)
	resp, body := post(t, s.URL+"/echo", "text/plain", data)
	wantStatus(t, resp, body, 200)
	if !bytes.Equal(body, data) || resp.Header.Get("X-Length") != "80000" {
		t.Errorf("/echo: %d bytes back, X-Length %q; want the 80000 bytes sent", len(body), resp.Header.Get("X-Length"))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/echo: Content-Type %q", ct)
	}
}

// stillServesPath fails unless GET url answers 200.
func stillServesPath(t *testing.T, url string) {
	t.Helper()
	resp, body := get(t, url)
	wantStatus(t, resp, body, 200)
}
