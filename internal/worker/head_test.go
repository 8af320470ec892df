package worker

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"gowsgi/internal/frame"
)

func packed(status string, kv ...string) []byte {
	var fs []frame.HeadField
	for i := 0; i < len(kv); i += 2 {
		fs = append(fs, frame.HeadField{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return frame.AppendPackedHead(nil, []byte(status), fs)
}

func TestCheckHead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		code    int
		fields  string // names kept, comma-separated
		wantErr string
	}{
		{"ok", packed("200 OK", "Content-Type", "text/plain"), 200, "Content-Type", ""},
		{"hop-by-hop dropped", packed("200 OK", "Connection", "close", "X-A", "1", "Transfer-Encoding", "chunked"), 200, "X-A", ""},
		{"bad status", packed("OK", "X-A", "1"), 0, "", "status"},
		{"crlf in value", packed("200 OK", "X-A", "a\r\nSet-Cookie: x"), 0, "", "X-A"},
		{"space in name", packed("200 OK", "X A", "1"), 0, "", ""},
		{"bad content-length", packed("200 OK", "Content-Length", "12abc"), 0, "", "Content-Length"},
		{"content-length ok", packed("404 Not Found", "content-length", "5"), 404, "content-length", ""},
		{"truncated", packed("200 OK", "X-A", "1")[:9], 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, head, err := checkHead(tc.in)
			if tc.code == 0 {
				if err == nil {
					t.Fatalf("no error for %q", tc.in)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not name %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || code != tc.code {
				t.Fatalf("got %d, %v; want %d", code, err, tc.code)
			}
			var h frame.ResponseHead
			if err := frame.ParsePackedHead(head, &h); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range h.Fields {
				names = append(names, string(f.Name))
			}
			if got := strings.Join(names, ","); got != tc.fields {
				t.Fatalf("kept %q, want %q", got, tc.fields)
			}
		})
	}
}

func TestError500IsComplete(t *testing.T) {
	r := frame.NewReader(bufio.NewReader(bytes.NewReader(appendError500(nil, 7))))
	var kinds []frame.Kind
	var body []byte
	for {
		f, err := r.Next()
		if err != nil {
			break
		}
		if f.Stream != 7 {
			t.Fatalf("frame for stream %d, want 7", f.Stream)
		}
		kinds = append(kinds, f.Kind)
		switch f.Kind {
		case frame.Head:
			var h frame.ResponseHead
			if err := frame.ParseHeadFrame(f.Payload, &h); err != nil || h.Code != 500 || h.Length != int64(len(body500)) {
				t.Fatalf("head %+v, %v", h, err)
			}
		case frame.Data:
			body = append(body, f.Payload...)
		}
	}
	if len(kinds) != 3 || kinds[0] != frame.Head || kinds[1] != frame.Data || kinds[2] != frame.End || string(body) != string(body500) {
		t.Fatalf("frames %v, body %q", kinds, body)
	}
}
