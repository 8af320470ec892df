package http1

// Byte classes, looked up in one table so that every validation loop costs one load and one
// test per byte.
const (
	cTchar   = 1 << iota // RFC 9110 §5.6.2 tchar
	cValue               // field-value byte: HTAB, SP, VCHAR, obs-text (0x80-0xFF)
	cTarget              // request-target byte: any VCHAR or obs-text; no CTL, no SP
	cRegName             // RFC 3986 unreserved / sub-delims / "%" (checked for pct-encoding)
	cQdtext              // RFC 9110 §5.6.4 qdtext: HTAB, SP, VCHAR except '"' and '\', obs-text
	cMethod              // tchar, but no lower-case letter and no '#' (gunicorn's default rule)
	cHex                 // HEXDIG, either case
)

var chars = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		isAlpha := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
		isDigit := '0' <= b && b <= '9'
		var m uint8
		if isAlpha || isDigit || contains("!#$%&'*+-.^_`|~", b) {
			m |= cTchar
			if !('a' <= b && b <= 'z') && b != '#' {
				m |= cMethod
			}
		}
		if b == '\t' || b >= 0x20 && b != 0x7f {
			m |= cValue
			if b == '\t' || b == ' ' || b == '!' || b >= 0x23 && b <= 0x5b || b >= 0x5d && b != 0x7f {
				m |= cQdtext
			}
		}
		if b > 0x20 && b != 0x7f {
			m |= cTarget
		}
		if isAlpha || isDigit || contains("-._~!$&'()*+,;=%", b) {
			m |= cRegName
		}
		if isDigit || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			m |= cHex
		}
		t[c] = m
	}
	return t
}()

func contains(set string, b byte) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == b {
			return true
		}
	}
	return false
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken[S string | []byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if chars[s[i]]&cTchar == 0 {
			return false
		}
	}
	return true
}

// tokenLen returns the length of the token at the start of s (0 when there is none).
func tokenLen[S string | []byte](s S) int {
	i := 0
	for i < len(s) && chars[s[i]]&cTchar != 0 {
		i++
	}
	return i
}

// trimOWS removes leading and trailing SP and HTAB.
func trimOWS(s string) string {
	i, j := 0, len(s)
	for i < j && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	for j > i && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	return s[i:j]
}

// fieldValue validates a raw field value (everything after the colon) and returns it without
// surrounding OWS. Only HTAB, SP, VCHAR and obs-text are allowed: NUL, CR, LF, DEL and the other
// control characters are refused rather than stripped (waitress CVE-2019-16789).
func fieldValue(v string) (string, bool) {
	for i := 0; i < len(v); i++ {
		if chars[v[i]]&cValue == 0 {
			return "", false
		}
	}
	return trimOWS(v), true
}

// unhex returns the value of a hexadecimal digit, or -1.
func unhex(c byte) int64 {
	switch {
	case '0' <= c && c <= '9':
		return int64(c - '0')
	case 'a' <= c && c <= 'f':
		return int64(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int64(c - 'A' + 10)
	}
	return -1
}
