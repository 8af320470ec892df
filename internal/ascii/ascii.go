// Package ascii holds the byte-level text helpers that HTTP header handling needs in the front,
// the worker and the parser alike: case-insensitive comparison against a known lower-case
// name, without allocating and without Unicode folding (which RFC 9110 does not want).
package ascii

// EqualFold reports whether s equals lower, which must be lower-case ASCII, ignoring the case
// of ASCII letters in s.
func EqualFold[S string | []byte](s S, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
