// Package corpus runs the gunicorn request corpus against the real gowsgi binary: every valid
// request must reach the app as expected, every invalid one must get a 4xx (or a closed
// connection) and never reach the app.
package corpus

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

type uri struct {
	Target string `json:"target"`
	Path   string `json:"path"`
	Query  string `json:"query"`
}

type expectedRequest struct {
	Method   string      `json:"method"`
	URI      uri         `json:"uri"`
	Version  string      `json:"version"`
	Headers  [][2]string `json:"headers"`
	Body     string      `json:"body"`
	Trailers [][2]string `json:"trailers"`
}

type corpusCase struct {
	Name          string            `json:"name"`
	Group         string            `json:"group"`
	RawBase64     string            `json:"raw_base64"`
	Config        map[string]any    `json:"gunicorn_config"`
	Requests      []expectedRequest `json:"requests"`
	ExpectedError string            `json:"expected_error"`
}

type echo struct {
	Method   string            `json:"method"`
	RawURI   string            `json:"raw_uri"`
	Path     string            `json:"path"`
	Query    string            `json:"query"`
	Protocol string            `json:"protocol"`
	Environ  map[string]string `json:"environ"`
	Body     string            `json:"body"`
	Scheme   string            `json:"scheme"`
}

// deliberate lists valid corpus cases gowsgi refuses on purpose, with the status it sends and
// the reason; the test asserts that status, so a change of behaviour shows up here.
var deliberate = map[string]struct {
	status int
	why    string
}{
	"009":                                    {400, "Transfer-Encoding: identity with Content-Length is the CL.TE smuggling shape"},
	"025":                                    {400, "two Transfer-Encoding headers: the TE.TE vector of CVE-2024-1135"},
	"029":                                    {400, "two Transfer-Encoding headers (CVE-2024-1135)"},
	"030":                                    {400, "two Transfer-Encoding headers (CVE-2024-1135)"},
	"025_line":                               {501, "a coding other than chunked (gowsgi decodes no gzip/identity)"},
	"rfc9112_smuggle_gzip_chunked_01":        {501, "gzip before chunked: gowsgi decodes no gzip"},
	"rfc9112_smuggle_te_identity_chunked_01": {501, "identity before chunked is refused rather than ignored"},
	"rfc9112_target_absolute_userinfo_01":    {400, "userinfo in the target: RFC 9110 §4.2.4 says to treat it as an error"},
}

// unsupportedOption lists valid cases that gunicorn parses only with an opt-in leniency gowsgi
// does not offer; they must be refused with a 4xx, never half-parsed.
var unsupportedOption = map[string]string{
	"028":                  "--strip-header-spaces (whitespace before the colon)",
	"031compat":            "--permit-unconventional-http-method --casefold-http-method",
	"031compat2":           "--permit-unconventional-http-method",
	"compat_obs_fold":      "--permit-obsolete-folding",
	"compat_obs_fold_huge": "--permit-obsolete-folding",
	"pp_01":                "--proxy-protocol (not implemented yet)",
	"pp_02":                "--proxy-protocol (not implemented yet)",
	"pp_04":                "--proxy-protocol (not implemented yet)",
	"pp_05":                "--proxy-protocol (not implemented yet)",
}

// servedByDefault lists valid cases whose gunicorn option changes nothing for gowsgi's
// defaults: the request is served normally (environ compared as usual).
var servedByDefault = map[string]string{
	"pp_03":      "proxy_protocol on, but the request carries no PROXY header",
	"040_compat": "header_map=dangerous: gowsgi always drops names with '_' (gunicorn's default), and the request is otherwise valid",
}

// invalidServed lists invalid cases that gunicorn refuses only under an option whose policy
// gowsgi applies differently: gowsgi serves them, and what the option guards against must not
// reach the app (no environ value may contain any of forbidden).
var invalidServed = map[string]struct {
	why       string
	forbidden []string
}{
	"040":        {"header_map=refuse: gowsgi drops names with '_' (gunicorn's default) instead of refusing", []string{"tricked", "-1E23"}},
	"chunked_07": {"header_map=refuse: gowsgi drops names with '_' instead of refusing", []string{"gzip"}},
	"019":        {"forwarded_allow_ips='*': gowsgi trusts no forwarded scheme headers, so conflicting ones cannot change wsgi.url_scheme", nil},
}

// limitFlags maps the corpus's gunicorn limit settings to gowsgi flags.
var limitFlags = map[string]string{
	"limit_request_line":       "--limit-request-line",
	"limit_request_fields":     "--limit-request-fields",
	"limit_request_field_size": "--limit-request-field_size",
}

// skipped lists cases that cannot be run black-box, with the reason.
var skipped = map[string]string{
	"099": "a capture cut short: its Content-Length promises more bytes than the file holds, so the server rightly waits for the rest",
}

func corpusDir(t *testing.T) string {
	if d := os.Getenv("GOWSGI_CORPUS"); d != "" {
		return d
	}
	d := filepath.Join(testenv.RepoRoot(t), "..", "shared", "corpus", "gunicorn-requests")
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("gunicorn corpus not found at %s (set GOWSGI_CORPUS): %v", d, err)
	}
	return d
}

func loadCases(t *testing.T, group string) []corpusCase {
	dir := filepath.Join(corpusDir(t), group)
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no corpus cases in %s: %v", dir, err)
	}
	sort.Strings(names)
	var cs []corpusCase
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		var c corpusCase
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		cs = append(cs, c)
	}
	return cs
}

func startEcho(t *testing.T, extra ...string) *testenv.Server {
	dir, _ := filepath.Abs(".")
	args := append([]string{"--chdir", dir, "--threads", "4", "--keep-alive", "2"}, extra...)
	return testenv.StartServer(t, append(args, "echoapp:application")...)
}

// serverFor returns the default server, or one started with the case's limit settings. It
// reports false when the case needs another gunicorn option.
func serverFor(t *testing.T, def *testenv.Server, c corpusCase) (*testenv.Server, bool) {
	if len(c.Config) == 0 {
		return def, true
	}
	var extra []string
	for k, v := range c.Config {
		flag, ok := limitFlags[k]
		if !ok {
			return def, false
		}
		extra = append(extra, fmt.Sprintf("%s=%v", flag, v))
	}
	return startEcho(t, extra...), true
}

// exchange sends raw and reads up to n responses; it stops at the first error or a closed
// connection.
func exchange(t *testing.T, addr string, raw []byte, n int) ([]*http.Response, []echo) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		c.Write(raw) // the server may close before taking it all; that is an answer too
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	br := bufio.NewReader(c)
	var resps []*http.Response
	var echoes []echo
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			break
		}
		resps = append(resps, resp)
		var e echo
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &e); err != nil {
				t.Errorf("response %d is not the echo app's JSON: %q", i, body)
			}
		}
		echoes = append(echoes, e)
	}
	return resps, echoes
}

// environForm maps expected wire headers to what PEP 3333 puts in environ: HTTP_ names, names
// with '_' dropped, repeats joined with ',' (cookies with '; ').
func environForm(hs [][2]string) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		name := strings.ToUpper(h[0])
		if strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			continue // gowsgi drops names with '_' or other symbols (gunicorn #2799)
		}
		key := "HTTP_" + strings.ReplaceAll(name, "-", "_")
		switch name {
		case "CONTENT-TYPE":
			key = "CONTENT_TYPE"
		case "CONTENT-LENGTH":
			key = "CONTENT_LENGTH"
		}
		if prev, ok := out[key]; ok {
			sep := ","
			if key == "HTTP_COOKIE" {
				sep = "; "
			}
			out[key] = prev + sep + h[1]
		} else {
			out[key] = h[1]
		}
	}
	return out
}

func TestValidCorpus(t *testing.T) {
	def := startEcho(t)
	for _, c := range loadCases(t, "valid") {
		t.Run(c.Name, func(t *testing.T) {
			if why, ok := skipped[c.Name]; ok {
				t.Skip(why)
			}
			raw, err := base64.StdEncoding.DecodeString(c.RawBase64)
			if err != nil {
				t.Fatal(err)
			}
			srv, ok := serverFor(t, def, c)
			if d, isDeliberate := deliberate[c.Name]; isDeliberate {
				resps, _ := exchange(t, srv.Addr, raw, len(c.Requests))
				if len(resps) == 0 || resps[0].StatusCode != d.status {
					t.Fatalf("want %d (%s), got %v", d.status, d.why, statuses(resps))
				}
				return
			}
			if why, refused := unsupportedOption[c.Name]; refused || (!ok && servedByDefault[c.Name] == "") {
				resps, _ := exchange(t, srv.Addr, raw, len(c.Requests))
				if len(resps) > 0 && resps[0].StatusCode < 400 {
					t.Fatalf("served with %d a request gunicorn accepts only with %s %v", resps[0].StatusCode, why, c.Config)
				}
				return
			}
			checkServed(t, srv, raw, c.Requests)
		})
	}
}

func statuses(rs []*http.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

// checkServed sends raw and compares what reached the app with each expected request.
func checkServed(t *testing.T, srv *testenv.Server, raw []byte, reqs []expectedRequest) {
	t.Helper()
	resps, echoes := exchange(t, srv.Addr, raw, len(reqs))
	if len(resps) != len(reqs) {
		t.Fatalf("got %d responses %v, want %d", len(resps), statuses(resps), len(reqs))
	}
	for i, want := range reqs {
		got := echoes[i]
		if resps[i].StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resps[i].StatusCode)
		}
		if got.Method != want.Method || got.RawURI != want.URI.Target || got.Query != want.URI.Query ||
			got.Protocol != want.Version || got.Body != want.Body {
			t.Errorf("request %d:\n got  %s %q q=%q %s body %q\n want %s %q q=%q %s body %q", i,
				got.Method, got.RawURI, got.Query, got.Protocol, got.Body,
				want.Method, want.URI.Target, want.URI.Query, want.Version, want.Body)
		}
		if got.Scheme != "http" {
			t.Errorf("request %d: wsgi.url_scheme = %q, want http", i, got.Scheme)
		}
		wantEnv := environForm(want.Headers)
		for k, v := range wantEnv {
			if got.Environ[k] != v {
				t.Errorf("request %d: environ[%s] = %q, want %q", i, k, got.Environ[k], v)
			}
		}
		for k := range got.Environ {
			if _, ok := wantEnv[k]; !ok {
				t.Errorf("request %d: unexpected environ[%s] = %q", i, k, got.Environ[k])
			}
		}
	}
}

func TestInvalidCorpus(t *testing.T) {
	def := startEcho(t)
	for _, c := range loadCases(t, "invalid") {
		t.Run(c.Name, func(t *testing.T) {
			raw, err := base64.StdEncoding.DecodeString(c.RawBase64)
			if err != nil {
				t.Fatal(err)
			}
			// An invalid request stays invalid under any option: a case that needs an option
			// gowsgi lacks runs against the defaults and must still be refused.
			srv, _ := serverFor(t, def, c)
			if p, served := invalidServed[c.Name]; served {
				resps, echoes := exchange(t, srv.Addr, raw, 1)
				if len(resps) != 1 || resps[0].StatusCode != 200 {
					t.Fatalf("want it served (%s), got %v", p.why, statuses(resps))
				}
				for k, v := range echoes[0].Environ {
					for _, bad := range p.forbidden {
						if strings.Contains(v, bad) {
							t.Errorf("environ[%s] = %q carries %q (%s)", k, v, bad, p.why)
						}
					}
				}
				if echoes[0].Scheme != "http" {
					t.Errorf("wsgi.url_scheme = %q from untrusted headers", echoes[0].Scheme)
				}
				return
			}
			resps, _ := exchange(t, srv.Addr, raw, 4)
			for i, r := range resps {
				if r.StatusCode == 200 {
					// A pipelined valid request before the invalid one may succeed; the invalid
					// part must not.
					if i == len(resps)-1 {
						t.Fatalf("%s (%s) reached the app: response %d is 200", c.Name, c.ExpectedError, i)
					}
					continue
				}
				if r.StatusCode < 400 || r.StatusCode >= 600 {
					t.Fatalf("response %d: status %d, want 4xx", i, r.StatusCode)
				}
			}
		})
	}
}
