package wsgi

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseAppSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want AppSpec
	}{
		{"module only", "myapp", AppSpec{Module: "myapp", Attr: "application"}},
		{"module and variable", "myapp:app", AppSpec{Module: "myapp", Attr: "app"}},
		{"dotted module", "myproject.wsgi:application", AppSpec{Module: "myproject.wsgi", Attr: "application"}},
		{"dotted module only", "a.b.c", AppSpec{Module: "a.b.c", Attr: "application"}},
		{"underscores and digits", "_pkg2.mod_3:_app9", AppSpec{Module: "_pkg2.mod_3", Attr: "_app9"}},
		{"factory no args", "myapp:create_app()", AppSpec{Module: "myapp", Attr: "create_app", Call: true}},
		{"factory args", "myapp:create_app('x', debug=True)", AppSpec{Module: "myapp", Attr: "create_app", Call: true, Args: "'x', debug=True"}},
		{"paren in string", `m:f(")", '(')`, AppSpec{Module: "m", Attr: "f", Call: true, Args: `")", '('`}},
		{"escaped quote", `m:f('it\'s)')`, AppSpec{Module: "m", Attr: "f", Call: true, Args: `'it\'s)'`}},
		{"triple quotes", `m:f("""a)"b""", '''c'd''')`, AppSpec{Module: "m", Attr: "f", Call: true, Args: `"""a)"b""", '''c'd'''`}},
		{"nested containers", "m:f([1, (2, 3)], {'a': {'b': [4]}})", AppSpec{Module: "m", Attr: "f", Call: true, Args: "[1, (2, 3)], {'a': {'b': [4]}}"}},
		{"colon in args", "m:f(x='a:b')", AppSpec{Module: "m", Attr: "f", Call: true, Args: "x='a:b'"}},
		{"hash in string", "m:f('#1')", AppSpec{Module: "m", Attr: "f", Call: true, Args: "'#1'"}},
		{"whitespace in args", "m:f( 1 ,\t2 )", AppSpec{Module: "m", Attr: "f", Call: true, Args: " 1 ,\t2 "}},
		{"non-ASCII identifiers", "café.modül:прил", AppSpec{Module: "café.modül", Attr: "прил"}},
		{"CJK identifier", "应用:创建()", AppSpec{Module: "应用", Attr: "创建", Call: true}},
		{"combining mark after first", "e\u0301x:a", AppSpec{Module: "e\u0301x", Attr: "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAppSpec(tc.in)
			if err != nil {
				t.Fatalf("got error %v, want %+v", err, tc.want)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseAppSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string // the whole error message
	}{
		{"bad attr", "x:1bad", `app "x:1bad": "1bad" is not a Python identifier`},
		{"empty", "", `app "": missing module name before ':'`},
		{"only colon", ":", `app ":": missing module name before ':'`},
		{"no module", ":app", `app ":app": missing module name before ':'`},
		{"empty attr", "m:", `app "m:": missing attribute name after ':'`},
		{"call without attr", "m:()", `app "m:()": missing attribute name after ':'`},
		{"bad module", "1mod:app", `app "1mod:app": "1mod" is not a Python identifier`},
		{"hyphen in module", "my-app:app", `app "my-app:app": "my-app" is not a Python identifier`},
		{"leading dot", ".mod:app", `app ".mod:app": module ".mod" has an empty name between dots`},
		{"double dot", "a..b", `app "a..b": module "a..b" has an empty name between dots`},
		{"trailing dot", "a.:app", `app "a.:app": module "a." has an empty name between dots`},
		{"dotted attr", "m:a.b", `app "m:a.b": "a.b" is not a Python identifier`},
		{"second colon", "m:a:b", `app "m:a:b": "a:b" is not a Python identifier`},
		{"space before attr", "m: app", `app "m: app": " app" is not a Python identifier`},
		{"space after module", "m :app", `app "m :app": "m " is not a Python identifier`},
		{"path", "app/wsgi.py", `app "app/wsgi.py": "app/wsgi" is not a Python identifier`},
		{"unclosed paren", "m:f(", `app "m:f(": unclosed '(' in the arguments of f()`},
		{"unclosed nested", "m:f([1, 2)", `app "m:f([1, 2)": mismatched ')' (want ']') in the arguments of f()`},
		{"unclosed bracket", "m:f([1, 2", `app "m:f([1, 2": unclosed '[' in the arguments of f()`},
		{"unclosed brace", "m:f({", `app "m:f({": unclosed '{' in the arguments of f()`},
		{"mismatched", "m:f(]", `app "m:f(]": mismatched ']' (want ')') in the arguments of f()`},
		{"unterminated string", "m:f('x)", `app "m:f('x)": unterminated string in the arguments of f()`},
		{"unterminated triple", `m:f("""x")`, `app "m:f(\"\"\"x\")": unterminated string in the arguments of f()`},
		{"newline in string", "m:f('a\nb')", `app "m:f('a\nb')": unterminated string in the arguments of f()`},
		{"escape at end", `m:f('\`, `app "m:f('\\": unterminated string in the arguments of f()`},
		{"comment", "m:f(1 # x\n)", `app "m:f(1 # x\n)": comment in the arguments of f()`},
		{"trailing text", "m:f()x", `app "m:f()x": unexpected "x" after the closing parenthesis`},
		{"two calls", "m:f()()", `app "m:f()()": unexpected "()" after the closing parenthesis`},
		{"trailing space", "m:f() ", `app "m:f() ": unexpected " " after the closing parenthesis`},
		{"close without open", "m:f)", `app "m:f)": "f)" is not a Python identifier`},
		{"space before paren", "m:f ()", `app "m:f ()": "f " is not a Python identifier`},
		{"invalid UTF-8", "m\xff:app", `app "m\xff:app": not valid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAppSpec(tc.in)
			if err == nil {
				t.Fatalf("got %+v, want error %s", got, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("got error %s, want %s", err, tc.want)
			}
		})
	}
}

// refIdentifier is an independent check of Python identifier syntax for the fuzz target.
func refIdentifier(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	first, _ := utf8.DecodeRuneInString(s)
	if first != '_' && !unicode.In(first, unicode.L, unicode.Nl) {
		return false
	}
	for _, r := range s {
		if r != '_' && !unicode.In(r, unicode.L, unicode.Nl, unicode.Mn, unicode.Mc, unicode.Nd, unicode.Pc) {
			return false
		}
	}
	return true
}

func FuzzParseAppSpec(f *testing.F) {
	for _, s := range []string{
		"myapp", "a.b:c", "m:create_app('x', debug=True)", `m:f(")")`, "m:f([)]", "x:1bad",
		"m:f('''a''')", "é:ñ()", "m:f(#)", "m:f()x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseAppSpec(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "app ") {
				t.Errorf("error %q lacks the app prefix", err)
			}
			return
		}
		for part := range strings.SplitSeq(spec.Module, ".") {
			if !refIdentifier(part) {
				t.Errorf("module %q: part %q is not an identifier", spec.Module, part)
			}
		}
		if !refIdentifier(spec.Attr) {
			t.Errorf("attr %q is not an identifier", spec.Attr)
		}
		var want string
		switch {
		case spec.Call:
			want = spec.Module + ":" + spec.Attr + "(" + spec.Args + ")"
		case s == spec.Module:
			if spec.Attr != DefaultAttr || spec.Args != "" {
				t.Errorf("got %+v for a bare module", spec)
			}
			want = s
		default:
			want = spec.Module + ":" + spec.Attr
		}
		if s != want {
			t.Errorf("%q parsed as %+v, which spells %q", s, spec, want)
		}
	})
}
