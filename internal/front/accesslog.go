package front

import (
	"io"
	"strconv"
	"sync"
	"time"

	"gowsgi/internal/ascii"
	"gowsgi/internal/http1"
)

// accessLog writes one line per response in gunicorn's default access log format:
// %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s". It is safe for concurrent use.
type accessLog struct {
	// mu guards w: one line is one write.
	mu sync.Mutex
	w  io.Writer
}

func newAccessLog(w io.Writer) *accessLog { return &accessLog{w: w} }

func (c *conn) logAccess(req *http1.Request, start time.Time, code int, n int64) {
	a := c.s.access
	if a == nil {
		return
	}
	var line []byte
	host := c.ci.RemoteHost
	if host == "" {
		host = "-"
	}
	line = append(line, host...)
	line = append(line, " - - ["...)
	line = start.AppendFormat(line, "02/Jan/2006:15:04:05 -0700")
	line = append(line, "] \""...)
	referer, agent := "-", "-"
	if req != nil {
		line = appendSafe(line, req.Method)
		line = append(line, ' ')
		line = appendSafe(line, req.Target)
		line = append(line, ' ')
		line = append(line, req.Proto...)
		for _, h := range req.Headers {
			switch {
			case ascii.EqualFold(h.Name, "referer"):
				referer = h.Value
			case ascii.EqualFold(h.Name, "user-agent"):
				agent = h.Value
			}
		}
	} else {
		line = append(line, '-')
	}
	line = append(line, "\" "...)
	line = strconv.AppendInt(line, int64(code), 10)
	line = append(line, ' ')
	if n > 0 {
		line = strconv.AppendInt(line, n, 10)
	} else {
		line = append(line, '-')
	}
	line = append(line, " \""...)
	line = appendSafe(line, referer)
	line = append(line, "\" \""...)
	line = appendSafe(line, agent)
	line = append(line, "\"\n"...)
	a.mu.Lock()
	// An unwritable access log must not take requests down with it.
	_, _ = a.w.Write(line)
	a.mu.Unlock()
}

// appendSafe appends s with quotes, backslashes and control bytes escaped, so a client cannot
// forge log lines.
func appendSafe(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}
