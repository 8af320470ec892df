package worker

import (
	"bytes"
	"errors"
	"fmt"

	"gowsgi/internal/ascii"
	"gowsgi/internal/frame"
	"gowsgi/internal/wsgi"
)

// checkHead validates the status and headers an app gave start_response, before anything
// reaches the client, and returns the status code and the head to send. Hop-by-hop headers,
// which PEP 3333 forbids an app to set, are dropped rather than failing the response.
func checkHead(packed []byte) (int, []byte, error) {
	var h frame.ResponseHead
	if err := frame.ParsePackedHead(packed, &h); err != nil {
		return 0, nil, err
	}
	code, err := wsgi.ValidateStatus(h.Status)
	if err != nil {
		return 0, nil, fmt.Errorf("status %.64q: %w", h.Status, err)
	}
	drop := false
	for i, f := range h.Fields {
		err := wsgi.ValidateHeader(f.Name, f.Value)
		if errors.Is(err, wsgi.ErrHopByHop) {
			h.Fields[i].Name = nil
			drop = true
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if ascii.EqualFold(f.Name, "content-length") && !isDigits(f.Value) {
			return 0, nil, fmt.Errorf("header Content-Length: %.32q is not a length", f.Value)
		}
	}
	if !drop {
		return code, packed, nil
	}
	kept := h.Fields[:0]
	for _, f := range h.Fields {
		if f.Name != nil {
			kept = append(kept, f)
		}
	}
	return code, frame.AppendPackedHead(nil, h.Status, kept), nil
}

func isDigits(b []byte) bool {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

var body500 = []byte("Internal Server Error\n")

// appendError500 appends the frames of a complete 500 response.
func appendError500(dst []byte, id uint32) []byte {
	head := frame.AppendPackedHead(nil, []byte("500 Internal Server Error"), []frame.HeadField{
		{Name: []byte("Content-Type"), Value: []byte("text/plain; charset=utf-8")},
	})
	dst = frame.AppendHeadFrame(dst, id, 500, int64(len(body500)), head)
	dst = frame.Append(dst, frame.Data, 0, id, body500)
	return frame.AppendHeader(dst, frame.End, 0, id, 0)
}
