package http1

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The gunicorn request corpus (tests/requests of benoitc/gunicorn, converted to JSON) lives
// next to the repository; GOWSGI_CORPUS overrides its location.
const corpusRel = "../../../shared/corpus/gunicorn-requests"

func corpusDir() string {
	if d := os.Getenv("GOWSGI_CORPUS"); d != "" {
		return d
	}
	return corpusRel
}

type corpusURI struct {
	Target, Form, Scheme, Authority, Path, Query, Fragment string
}

type corpusRequest struct {
	Method     string
	URI        corpusURI `json:"uri"`
	Version    string
	Headers    [][2]string
	Body       string
	BodyLength int         `json:"body_length"`
	Trailers   [][2]string `json:"trailers"`
}

type corpusCase struct {
	Name          string
	Group         string
	RawBase64     string         `json:"raw_base64"`
	Config        map[string]any `json:"gunicorn_config"`
	Requests      []corpusRequest
	ExpectedError string `json:"expected_error"`

	id  string // group/name
	raw []byte
}

// loadCorpus reads every case; it fails the test when the corpus is missing.
func loadCorpus(t testing.TB) []*corpusCase {
	dir := corpusDir()
	var cases []*corpusCase
	for _, group := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join(dir, group, "*.json"))
		if err != nil || len(files) == 0 {
			t.Fatalf("gunicorn corpus not found in %s (set GOWSGI_CORPUS): %v", dir, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c := new(corpusCase)
			if err := json.Unmarshal(data, c); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if c.raw, err = base64.StdEncoding.DecodeString(c.RawBase64); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			c.id = group + "/" + c.Name
			cases = append(cases, c)
		}
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].id < cases[j].id })
	return cases
}

// latin1 turns a corpus string (one rune per byte) back into bytes.
func latin1(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		b = append(b, byte(r))
	}
	return string(b)
}

// deliberateDifferences lists the corpus cases where gowsgi's parser disagrees with gunicorn on
// purpose. All are valid cases that we refuse; differenceStatus pins the status we answer.
var deliberateDifferences = map[string]string{
	"valid/009": "Transfer-Encoding: identity together with Content-Length: RFC 9112 §6.3 allows " +
		"ignoring CL, but a message carrying both is the CL.TE smuggling shape and we refuse it " +
		"(identity is also no longer a registered transfer coding)",
	"valid/025": "two Transfer-Encoding fields (gzip, then chunked): repeated TE fields are the " +
		"TE.TE vector of CVE-2024-1135, refused whatever their values",
	"valid/025_line": "Transfer-Encoding: gzip,chunked: we decode no transfer coding but chunked, " +
		"and passing gzip bytes to the app as the body is wrong; 501 per RFC 9112 §6.1",
	"valid/029":                             "two Transfer-Encoding fields (identity, then chunked), see valid/025",
	"valid/030":                             "two Transfer-Encoding fields (identity, then chunked), see valid/025",
	"valid/rfc9112_smuggle_gzip_chunked_01": "Transfer-Encoding: gzip, chunked, see valid/025_line",
	"valid/rfc9112_smuggle_te_identity_chunked_01": "Transfer-Encoding: identity, chunked: identity is not a transfer coding (removed by RFC 7230); 501",
	"valid/rfc9112_target_absolute_userinfo_01": "userinfo in an http(s) target: RFC 9110 §4.2.4 asks " +
		"recipients to treat it as an error (phishing, authority confusion)",
}

var differenceStatus = map[string]int{
	"valid/009":                             400,
	"valid/025":                             400,
	"valid/025_line":                        501,
	"valid/029":                             400,
	"valid/030":                             400,
	"valid/rfc9112_smuggle_gzip_chunked_01": 501,
	"valid/rfc9112_smuggle_te_identity_chunked_01": 501,
	"valid/rfc9112_target_absolute_userinfo_01":    400,
}

// truncatedCaptures are valid cases whose bytes were cut short when captured: the head parses,
// and the body ends early with io.ErrUnexpectedEOF after the bytes that are there.
var truncatedCaptures = map[string]string{
	"valid/099": "Content-Length is 17914 but only 8599 body bytes were captured",
}

// Handling of the cases with a non-empty gunicorn_config.
const (
	cfgLimits   = iota // run the case normally, with Limits taken from the config
	cfgRejected        // an opt-in leniency we do not offer: assert that we refuse the bytes
	cfgAccepted        // a policy that belongs to the front, not the parser: assert we parse it
)

type configCase struct {
	kind   int
	reason string
}

var configCases = map[string]configCase{
	"valid/024":                       {cfgLimits, "raised limit_request_line and limit_request_field_size"},
	"valid/026":                       {cfgLimits, "raised limit_request_field_size"},
	"invalid/010":                     {cfgLimits, "lowered limit_request_field_size"},
	"invalid/011":                     {cfgLimits, "lowered limit_request_fields"},
	"invalid/012":                     {cfgLimits, "lowered limit_request_field_size"},
	"invalid/limit_header_default_01": {cfgLimits, "limit_request_field_size 0 means the default, as a zero Limits field does"},

	"valid/028":                  {cfgRejected, "strip_header_spaces: whitespace before the colon is always refused (RFC 9112 §5.1)"},
	"valid/031compat":            {cfgRejected, "permit_unconventional_http_method + casefold_http_method: lower-case methods are refused"},
	"valid/031compat2":           {cfgRejected, "permit_unconventional_http_method: lower-case methods are refused"},
	"valid/compat_obs_fold":      {cfgRejected, "permit_obsolete_folding: obs-fold is always refused"},
	"valid/compat_obs_fold_huge": {cfgRejected, "permit_obsolete_folding: obs-fold is always refused"},
	"valid/pp_01":                {cfgRejected, "proxy_protocol: a PROXY header is not HTTP; the front must strip it before calling ReadRequest"},
	"valid/pp_02":                {cfgRejected, "proxy_protocol, see valid/pp_01"},
	"valid/pp_04":                {cfgRejected, "proxy_protocol v2 binary header, see valid/pp_01"},
	"valid/pp_05":                {cfgRejected, "proxy_protocol v2 binary header, see valid/pp_01"},
	"invalid/013":                {cfgRejected, "permit_obsolete_folding with a lowered limit_request_field_size: obs-fold is refused (400) before any limit applies"},
	"invalid/pp_01":              {cfgRejected, "proxy_protocol: malformed PROXY line, refused as HTTP too"},
	"invalid/pp_02":              {cfgRejected, "proxy_protocol: malformed PROXY line, refused as HTTP too"},
	"invalid/pp_03":              {cfgRejected, "proxy_protocol: malformed PROXY line, refused as HTTP too"},

	"valid/pp_03":        {cfgAccepted, "proxy_protocol enabled but no PROXY header sent: plain HTTP"},
	"valid/040_compat":   {cfgAccepted, "header_map=dangerous: the parser keeps every field as sent; mapping to environ is the wsgi package's job"},
	"invalid/040":        {cfgAccepted, "header_map=refuse: names with '_' are tokens; the wsgi package drops them from environ"},
	"invalid/chunked_07": {cfgAccepted, "header_map=refuse: Transfer_Encoding is an ordinary field to the parser (dropped from environ by the wsgi package); framing is the chunked Transfer-Encoding"},
	"invalid/019":        {cfgAccepted, "forwarded_allow_ips: conflicting X-Forwarded-* scheme headers are judged by the front's proxy-header middleware"},
}

// errorStatus is what we answer to each gunicorn exception class of the invalid cases.
// unexpected stands for io.ErrUnexpectedEOF.
var errorStatus = map[string][]int{
	"InvalidRequestLine":     {400},
	"InvalidRequestMethod":   {400},
	"InvalidHTTPVersion":     {400, 505},
	"InvalidHeader":          {400},
	"InvalidHeaderName":      {400},
	"ObsoleteFolding":        {400},
	"InvalidChunkSize":       {400},
	"InvalidChunkExtension":  {400},
	"InvalidProxyLine":       {400},
	"LimitRequestLine":       {414},
	"LimitRequestHeaders":    {431},
	"NoMoreData":             {unexpected},
	"ChunkMissingTerminator": {unexpected},
}

func configLimits(cfg map[string]any) Limits {
	num := func(k string) int {
		v, _ := cfg[k].(float64)
		return int(v)
	}
	return Limits{
		MaxLineBytes:  num("limit_request_line"),
		MaxFields:     num("limit_request_fields"),
		MaxFieldBytes: num("limit_request_field_size"),
	}
}

func TestCorpus(t *testing.T) {
	cases := loadCorpus(t)
	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.id] = true
		t.Run(c.id, func(t *testing.T) {
			lim := Limits{}
			if len(c.Config) > 0 {
				cc, ok := configCases[c.id]
				if !ok {
					t.Fatalf("case with gunicorn_config %v is not listed in configCases", c.Config)
				}
				switch cc.kind {
				case cfgLimits:
					lim = configLimits(c.Config)
				case cfgRejected:
					for _, size := range bufSizes {
						if o := readOne(bufio.NewReaderSize(bytes.NewReader(c.raw), size), lim); o.status == 0 {
							t.Errorf("buf %d: accepted (%v); want refused: %s", size, o.err, cc.reason)
						}
					}
					return
				case cfgAccepted:
					for _, size := range bufSizes {
						br := bufio.NewReaderSize(bytes.NewReader(c.raw), size)
						for {
							o := readOne(br, lim)
							if o.err == io.EOF {
								break
							}
							if o.err != nil {
								t.Fatalf("buf %d: %v; want accepted: %s", size, o.err, cc.reason)
							}
						}
					}
					return
				}
			}
			if reason, ok := deliberateDifferences[c.id]; ok {
				for _, size := range bufSizes {
					o := readOne(bufio.NewReaderSize(bytes.NewReader(c.raw), size), lim)
					if o.status != differenceStatus[c.id] || o.inBody {
						t.Errorf("buf %d: got %d (%v), want head refused with %d: %s",
							size, o.status, o.err, differenceStatus[c.id], reason)
					}
				}
				return
			}
			switch c.Group {
			case "valid":
				for _, size := range bufSizes {
					checkValid(t, c, lim, size)
				}
			case "invalid":
				for _, size := range bufSizes {
					checkInvalid(t, c, lim, size)
				}
			}
		})
	}
	for _, m := range []map[string]string{deliberateDifferences, truncatedCaptures} {
		for id := range m {
			if !seen[id] {
				t.Errorf("%s is listed but not in the corpus", id)
			}
		}
	}
	for id := range configCases {
		if !seen[id] {
			t.Errorf("%s is listed in configCases but not in the corpus", id)
		}
	}
}

func checkValid(t *testing.T, c *corpusCase, lim Limits, size int) {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(c.raw), size)
	for i, want := range c.Requests {
		req, err := ReadRequest(br, lim)
		if err != nil {
			t.Fatalf("buf %d, request %d: %v", size, i, err)
		}
		check := func(what, got, want string) {
			if got != want {
				t.Errorf("buf %d, request %d: %s = %q, want %q", size, i, what, got, want)
			}
		}
		check("method", req.Method, want.Method)
		check("target", req.Target, latin1(want.URI.Target))
		check("path", req.Path, latin1(want.URI.Path))
		check("query", req.RawQuery, latin1(want.URI.Query))
		check("version", req.Proto, want.Version)
		if a := want.URI.Authority; a != "" {
			check("host", req.Host, latin1(a))
		}

		// gunicorn's default header_map=drop removes names with '_' (#2799); in gowsgi that
		// is the wsgi package's job, so the parser's output is compared without them.
		var got [][2]string
		for _, h := range req.Headers {
			if c.Name == "040_compat" || !strings.Contains(h.Name, "_") {
				got = append(got, [2]string{strings.ToUpper(h.Name), h.Value})
			}
		}
		if len(got) != len(want.Headers) {
			t.Errorf("buf %d, request %d: headers %q, want %q", size, i, got, want.Headers)
		} else {
			for j := range got {
				if got[j][0] != latin1(want.Headers[j][0]) || got[j][1] != latin1(want.Headers[j][1]) {
					t.Errorf("buf %d, request %d: header %d = %q, want %q", size, i, j, got[j], want.Headers[j])
				}
			}
		}

		r := NewBodyReader(br, req, lim)
		body, err := io.ReadAll(r)
		if reason, ok := truncatedCaptures[c.id]; ok {
			if err != io.ErrUnexpectedEOF {
				t.Errorf("buf %d: body error %v, want io.ErrUnexpectedEOF (%s)", size, err, reason)
			}
			check("body", string(body), latin1(want.Body))
			return
		}
		if err != nil {
			t.Fatalf("buf %d, request %d: body: %v", size, i, err)
		}
		check("body", string(body), latin1(want.Body))
		if len(body) != want.BodyLength {
			t.Errorf("buf %d, request %d: body length %d, want %d", size, i, len(body), want.BodyLength)
		}
		if want.Trailers != nil {
			tr := r.(interface{ Trailers() []Header }).Trailers()
			if len(tr) != len(want.Trailers) {
				t.Errorf("buf %d: trailers %q, want %q", size, tr, want.Trailers)
			}
			for j := range min(len(tr), len(want.Trailers)) {
				if strings.ToUpper(tr[j].Name) != want.Trailers[j][0] || tr[j].Value != latin1(want.Trailers[j][1]) {
					t.Errorf("buf %d: trailer %d = %q, want %q", size, j, tr[j], want.Trailers[j])
				}
			}
		}
		// gunicorn stops after a request that does not keep the connection alive.
		if !req.KeepAlive {
			if i != len(c.Requests)-1 {
				t.Errorf("buf %d, request %d: not keep-alive, but more requests are expected", size, i)
			}
			return
		}
	}
	if _, err := ReadRequest(br, lim); err != io.EOF {
		t.Errorf("buf %d: after the last request: %v, want io.EOF", size, err)
	}
}

// checkInvalid asserts that the first request of the case (head or body) is refused, with the
// status we give to gunicorn's exception class.
func checkInvalid(t *testing.T, c *corpusCase, lim Limits, size int) {
	t.Helper()
	o := readOne(bufio.NewReaderSize(bytes.NewReader(c.raw), size), lim)
	allowed, ok := errorStatus[c.ExpectedError]
	if !ok {
		t.Fatalf("unknown expected_error %q", c.ExpectedError)
	}
	for _, want := range allowed {
		if wantMatches(o, want) {
			return
		}
	}
	if o.err == nil {
		t.Errorf("buf %d: accepted %s %s; gunicorn raises %s", size, o.req.Method, o.req.Target, c.ExpectedError)
	} else {
		t.Errorf("buf %d: got %d %v; gunicorn raises %s, want one of %v", size, o.status, o.err, c.ExpectedError, allowed)
	}
}
