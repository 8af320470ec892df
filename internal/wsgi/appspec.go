package wsgi

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultAttr is the attribute an application spec without ":CALLABLE" names.
const DefaultAttr = "application"

// AppSpec is a parsed application reference.
type AppSpec struct {
	Module string // dotted module path, e.g. "myproject.wsgi"
	Attr   string // the attribute, e.g. "application" (the default) or "create_app"
	Call   bool   // true for "create_app()" / "create_app('x', debug=True)"
	Args   string // the text between the parentheses, unevaluated; the worker evaluates it with Python's ast.literal_eval rules
}

// ParseAppSpec parses gunicorn's MODULE[:CALLABLE] application reference: "module",
// "module:variable", "package.module:app", "module:create_app()" or
// "module:create_app('x', debug=True)". The attribute defaults to [DefaultAttr].
//
// Each dotted part of the module and the attribute must be a Python identifier (Unicode letters
// and '_', then also digits, combining marks and connector punctuation, like str.isidentifier).
// No whitespace is allowed outside the parentheses. The call arguments are not evaluated, only
// checked for balanced (), [] and {} outside string literals ('...', "...", triple-quoted, with
// backslash escapes) and for the absence of comments; the spec must end right after the
// closing parenthesis. Errors quote the spec and name the problem, as in
// `app "x:1bad": "1bad" is not a Python identifier`.
func ParseAppSpec(s string) (AppSpec, error) {
	fail := func(format string, a ...any) (AppSpec, error) {
		return AppSpec{}, fmt.Errorf("app %q: %s", s, fmt.Sprintf(format, a...))
	}
	if !utf8.ValidString(s) {
		return fail("not valid UTF-8")
	}
	module, rest, hasAttr := strings.Cut(s, ":")
	if module == "" {
		return fail("missing module name before ':'")
	}
	for part := range strings.SplitSeq(module, ".") {
		if part == "" {
			return fail("module %q has an empty name between dots", module)
		}
		if !isIdentifier(part) {
			return fail("%q is not a Python identifier", part)
		}
	}
	spec := AppSpec{Module: module, Attr: DefaultAttr}
	if !hasAttr {
		return spec, nil
	}
	attr, args, call := strings.Cut(rest, "(")
	if attr == "" {
		return fail("missing attribute name after ':'")
	}
	if !isIdentifier(attr) {
		return fail("%q is not a Python identifier", attr)
	}
	spec.Attr = attr
	if !call {
		return spec, nil
	}
	end, err := matchParen(args)
	if err != nil {
		return fail("%v in the arguments of %s()", err, attr)
	}
	if end != len(args)-1 {
		return fail("unexpected %q after the closing parenthesis", args[end+1:])
	}
	spec.Call = true
	spec.Args = args[:end]
	return spec, nil
}

// isIdentifier reports whether s is a Python identifier, approximately str.isidentifier:
// ID_Start (letters, letter numbers, '_') followed by ID_Continue (those plus decimal digits,
// combining marks and connector punctuation).
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || unicode.IsLetter(r) || unicode.Is(unicode.Nl, r) {
			continue
		}
		if i > 0 && (unicode.IsDigit(r) || unicode.In(r, unicode.Mn, unicode.Mc, unicode.Pc)) {
			continue
		}
		return false
	}
	return true
}

// matchParen returns the index in s of the ')' closing an already-opened '('.
func matchParen(s string) (int, error) {
	stack := []byte{')'}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '(':
			stack = append(stack, ')')
		case '[':
			stack = append(stack, ']')
		case '{':
			stack = append(stack, '}')
		case ')', ']', '}':
			if want := stack[len(stack)-1]; c != want {
				return 0, fmt.Errorf("mismatched %q (want %q)", c, want)
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return i, nil
			}
		case '\'', '"':
			end, err := skipString(s, i)
			if err != nil {
				return 0, err
			}
			i = end
		case '#':
			return 0, errors.New("comment")
		}
	}
	return 0, fmt.Errorf("unclosed %q", openerOf(stack[len(stack)-1]))
}

func openerOf(closer byte) byte {
	switch closer {
	case ']':
		return '['
	case '}':
		return '{'
	}
	return '('
}

// skipString returns the index of the closing quote of the string literal opening at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	triple := strings.HasPrefix(s[i:], string([]byte{q, q, q}))
	j := i + 1
	if triple {
		j = i + 3
	}
	for ; j < len(s); j++ {
		switch c := s[j]; {
		case c == '\\':
			j++
		case c == '\n' && !triple:
			return 0, errors.New("unterminated string")
		case c == q && !triple:
			return j, nil
		case c == q && strings.HasPrefix(s[j:], string([]byte{q, q, q})):
			return j + 2, nil
		}
	}
	return 0, errors.New("unterminated string")
}
