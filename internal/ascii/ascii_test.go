package ascii

import "testing"

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		s, lower string
		want     bool
	}{
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"content-length", "content-length", true},
		{"Content-Lengt", "content-length", false},
		{"Content_Length", "content-length", false},
		{"\xc3\x89", "\xc3\xa9", false}, // no Unicode folding
		{"", "", true},
	} {
		if got := EqualFold(tc.s, tc.lower); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", tc.s, tc.lower, got, tc.want)
		}
		if got := EqualFold([]byte(tc.s), tc.lower); got != tc.want {
			t.Errorf("EqualFold([]byte(%q), %q) = %v, want %v", tc.s, tc.lower, got, tc.want)
		}
	}
}
