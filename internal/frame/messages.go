package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errShort = errors.New("truncated")

// AppendRequest appends a Request frame carrying the packed environ and the first body bytes.
func AppendRequest(dst []byte, stream uint32, environ, body []byte, bodyEnd bool) []byte {
	return append(AppendRequestHead(dst, stream, environ, len(body), bodyEnd), body...)
}

// AppendRequestHead appends a Request frame up to its body of bodyLen bytes, which the caller
// sends right after it (Writer.SendTail).
func AppendRequestHead(dst []byte, stream uint32, environ []byte, bodyLen int, bodyEnd bool) []byte {
	var flags uint8
	if bodyEnd {
		flags = FlagEnd
	}
	dst = AppendHeader(dst, Request, flags, stream, 4+len(environ)+bodyLen)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(environ)))
	return append(dst, environ...)
}

// ParseRequest splits a Request payload into the packed environ and the first body bytes.
func ParseRequest(p []byte) (environ, body []byte, err error) {
	if len(p) < 4 {
		return nil, nil, fmt.Errorf("parse request frame: %w", errShort)
	}
	n := binary.LittleEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return nil, nil, fmt.Errorf("parse request frame: environ of %d bytes: %w", n, errShort)
	}
	return p[4 : 4+n], p[4+n:], nil
}

// ReadyInfo is what a worker announces when it can take requests.
type ReadyInfo struct {
	Version uint16
	Threads uint32
	Pid     uint32
	Python  string // human-readable description of the embedded interpreter
}

// AppendReady appends a Ready frame.
func AppendReady(dst []byte, r ReadyInfo) []byte {
	dst = AppendHeader(dst, Ready, 0, 0, 10+len(r.Python))
	dst = binary.LittleEndian.AppendUint16(dst, r.Version)
	dst = binary.LittleEndian.AppendUint32(dst, r.Threads)
	dst = binary.LittleEndian.AppendUint32(dst, r.Pid)
	return append(dst, r.Python...)
}

// ParseReady decodes a Ready payload.
func ParseReady(p []byte) (ReadyInfo, error) {
	if len(p) < 10 {
		return ReadyInfo{}, fmt.Errorf("parse ready frame: %w", errShort)
	}
	return ReadyInfo{
		Version: binary.LittleEndian.Uint16(p),
		Threads: binary.LittleEndian.Uint32(p[2:]),
		Pid:     binary.LittleEndian.Uint32(p[6:]),
		Python:  string(p[10:]),
	}, nil
}

// HeadField is one response header as latin-1 bytes.
type HeadField struct {
	Name, Value []byte
}

// ResponseHead is a decoded response head.
type ResponseHead struct {
	Status []byte // e.g. "200 OK"
	Code   int    // the numeric part of Status, filled by the sender's validation
	Fields []HeadField
	// Length is the total body length when the worker knows it (a list body), else -1.
	Length int64
}

// PackedHead is the wire form of a status and header list, as the worker's C side builds it:
// u16 status length, status, u16 field count, then per field u16 name length, name, u32 value
// length, value. AppendHead and ParseHead translate.

// AppendHeadFrame appends a Head frame: i64 length, u16 code, then the packed status and headers.
func AppendHeadFrame(dst []byte, stream uint32, code int, length int64, packed []byte) []byte {
	dst = AppendHeader(dst, Head, 0, stream, 10+len(packed))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(length))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(code))
	return append(dst, packed...)
}

// AppendPackedHead appends the packed form of a status and header list.
func AppendPackedHead(dst []byte, status []byte, fields []HeadField) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(status)))
	dst = append(dst, status...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(fields)))
	for _, f := range fields {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(f.Name)))
		dst = append(dst, f.Name...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f.Value)))
		dst = append(dst, f.Value...)
	}
	return dst
}

// ParsePackedHead decodes a packed status and header list, appending fields to h.Fields. The
// slices alias p.
func ParsePackedHead(p []byte, h *ResponseHead) error {
	if len(p) < 2 {
		return fmt.Errorf("parse head: status: %w", errShort)
	}
	n := int(binary.LittleEndian.Uint16(p))
	p = p[2:]
	if len(p) < n+2 {
		return fmt.Errorf("parse head: status: %w", errShort)
	}
	h.Status = p[:n]
	count := int(binary.LittleEndian.Uint16(p[n:]))
	p = p[n+2:]
	if cap(h.Fields)-len(h.Fields) < count && count <= len(p)/6 { // a field takes at least 6 bytes
		h.Fields = append(make([]HeadField, 0, len(h.Fields)+count), h.Fields...)
	}
	for i := 0; i < count; i++ {
		if len(p) < 2 {
			return fmt.Errorf("parse head: field %d name: %w", i, errShort)
		}
		nl := int(binary.LittleEndian.Uint16(p))
		if len(p) < 2+nl+4 {
			return fmt.Errorf("parse head: field %d name: %w", i, errShort)
		}
		name := p[2 : 2+nl]
		vl := binary.LittleEndian.Uint32(p[2+nl:])
		p = p[2+nl+4:]
		if uint64(len(p)) < uint64(vl) {
			return fmt.Errorf("parse head: field %d value: %w", i, errShort)
		}
		h.Fields = append(h.Fields, HeadField{Name: name, Value: p[:vl]})
		p = p[vl:]
	}
	if len(p) != 0 {
		return fmt.Errorf("parse head: %d trailing bytes", len(p))
	}
	return nil
}

// ParseHeadFrame decodes a Head frame payload. The slices in h alias p.
func ParseHeadFrame(p []byte, h *ResponseHead) error {
	if len(p) < 10 {
		return fmt.Errorf("parse head frame: %w", errShort)
	}
	h.Length = int64(binary.LittleEndian.Uint64(p))
	h.Code = int(binary.LittleEndian.Uint16(p[8:]))
	return ParsePackedHead(p[10:], h)
}

// AppendFileFrame appends a File frame; the descriptor itself must be sent with it as SCM_RIGHTS.
func AppendFileFrame(dst []byte, stream uint32, offset, length int64) []byte {
	dst = AppendHeader(dst, File, 0, stream, 16)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(offset))
	return binary.LittleEndian.AppendUint64(dst, uint64(length))
}

// AppendDataShared appends a DataShared frame: n body bytes in shared buffer i.
func AppendDataShared(dst []byte, stream uint32, i, n int) []byte {
	dst = AppendHeader(dst, DataShared, 0, stream, 8)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(i))
	return binary.LittleEndian.AppendUint32(dst, uint32(n))
}

// ParseDataShared decodes a DataShared payload.
func ParseDataShared(p []byte) (i, n int, err error) {
	if len(p) != 8 {
		return 0, 0, fmt.Errorf("parse shared data frame: %w", errShort)
	}
	return int(binary.LittleEndian.Uint32(p)), int(binary.LittleEndian.Uint32(p[4:])), nil
}

// AppendDataHeld appends a DataHeld frame: n body bytes at off in the arena, lent in hold k.
func AppendDataHeld(dst []byte, stream uint32, k, off, n int) []byte {
	dst = AppendHeader(dst, DataHeld, 0, stream, 12)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(k))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(off))
	return binary.LittleEndian.AppendUint32(dst, uint32(n))
}

// ParseDataHeld decodes a DataHeld payload.
func ParseDataHeld(p []byte) (k, off, n int, err error) {
	if len(p) != 12 {
		return 0, 0, 0, fmt.Errorf("parse held data frame: %w", errShort)
	}
	le := binary.LittleEndian
	return int(le.Uint32(p)), int(le.Uint32(p[4:])), int(le.Uint32(p[8:])), nil
}

// ParseFileFrame decodes a File payload.
func ParseFileFrame(p []byte) (offset, length int64, err error) {
	if len(p) != 16 {
		return 0, 0, fmt.Errorf("parse file frame: %w", errShort)
	}
	return int64(binary.LittleEndian.Uint64(p)), int64(binary.LittleEndian.Uint64(p[8:])), nil
}
