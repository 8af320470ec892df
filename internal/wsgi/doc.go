// Package wsgi holds the WSGI (PEP 3333) rules that the Go front process and the Python worker
// share. It is pure Go (no cgo), so the front uses it without linking CPython.
//
// It has three parts:
//
//   - Environ packing. [AppendEnviron] turns a parsed [http1.Request] and its connection into
//     the CGI-style string variables of a WSGI environ and packs them into bytes that the worker
//     decodes in C into a Python dict. [DecodeEnviron] and [EachEnviron] read them back for
//     tests and debugging.
//   - Response validation. [ValidateStatus] and [ValidateHeader] check what the application
//     passed to start_response before anything is written, so a malformed or injected status
//     line or header becomes a logged 500 instead of reaching the client.
//   - Application references. [ParseAppSpec] parses gunicorn's MODULE[:CALLABLE] spelling.
//
// # Packed environ format
//
// A packed environ is a sequence of entries, each
//
//	u16 little-endian key length | key bytes | u32 little-endian value length | value bytes
//
// repeated until the end of the buffer, with no header, count or terminator. Keys are ASCII and
// appear at most once. Values are raw bytes that the worker decodes as latin-1, so every byte
// becomes one character (PEP 3333 "native strings"). Entries that hold Python objects rather
// than strings (wsgi.input, wsgi.errors, wsgi.version, ...) are added by the worker itself.
package wsgi
