"""Go text/template + docker formatting parity.

Expected strings were checked against the docker 28 CLI (Go 1.24) by running
``docker inspect --format`` / ``docker images --format`` / ``docker ps
--format`` against a stub daemon; table expectations are also derivable by
hand from the tabwriter rules (minwidth 10, padding 3, last cell unpadded).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kapal.cli.template import (
    ContextRow,
    Template,
    TemplateError,
    go_json,
    go_quote,
    go_sprintf,
    go_str,
    is_table,
    normalize_format,
    parse,
    render_table,
    tabwrite,
    tabwrite_text,
)

DATA = {
    "Name": "web",
    "ID": "0123456789ab",
    "a": "<x&y>",
    "n": None,
    "i": 2,
    "neg": -3,
    "fl": 1.5,
    "big": 123456789,
    "list": ["p", "q"],
    "t": True,
    "f": False,
    "e": "",
    "z": 0,
    "m": {"k2": "v2", "k1": "v1"},
    "lm": [{"x": "1"}, {"x": "2"}],
    "uni": "héllo wörld",
    "nl": [None, "a"],
    "em": {},
    "el": [],
    "Labels": {"com.example.vendor": "ACME", "version": "1.0"},
    "nested": {"l": [{"m": {"z": "deep"}}]},
}


def render(text: str, data: object = DATA, **kw: str) -> str:
    return parse(text).render(data, **kw)


# --------------------------------------------------------------------------
# fields and printing


@pytest.mark.parametrize(
    ("tmpl", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("{{.Name}}", "web"),
        ("id={{.ID}} name={{.Name}}", "id=0123456789ab name=web"),
        ("{{.m.k1}}", "v1"),
        ("{{.nested.l}}", "[map[m:map[z:deep]]]"),
        ("{{.a}}", "<x&y>"),
        ("{{.missing}}", "<no value>"),
        ("{{.m.nope}}", "<no value>"),
        ("{{.m.nope.deeper}}", "<no value>"),
        ("{{.n}}", "<no value>"),  # a JSON null digs down to "no value"
        ("{{.list}}", "[p q]"),
        ("{{.nl}}", "[<nil> a]"),
        ("{{.m}}", "map[k1:v1 k2:v2]"),
        ("{{.lm}}", "[map[x:1] map[x:2]]"),
        ("{{.em}}|{{.el}}", "map[]|[]"),
        ("{{.t}} {{.f}}", "true false"),
        ("{{.i}} {{.neg}} {{.big}}", "2 -3 123456789"),
        ("{{.fl}}", "1.5"),
        ("{{.Labels}}", "map[com.example.vendor:ACME version:1.0]"),
        ("{{.uni}}", "héllo wörld"),
        ("{{$.Name}}|{{$}}", "web|" + go_str(DATA)),
        ("{{.}}", go_str(DATA)),
        ("{{(.m).k1}}|{{(index .lm 1).x}}", "v1|2"),
        (
            "{{1}} {{-3}} {{1.5}} {{1e3}} {{1e6}} {{0x1F}} {{0o17}} {{017}} {{0b101}} {{1_000}}",
            "1 -3 1.5 1000 1e+06 31 15 15 5 1000",
        ),
        ("{{'a'}} {{'\\n'}} {{'é'}}", "97 10 233"),
        ("{{true}} {{false}}", "true false"),
        ('{{"\\x41\\u00e9\\t|"}}{{`raw\\n`}}', "Aé\t|raw\\n"),
        ("{{1i}} {{1+2i}}", "(0+1i) (1+2i)"),
        ("{{-0.0}} {{.5}}", "-0 0.5"),
    ],
)
def test_fields_and_literals(tmpl: str, expected: str) -> None:
    assert render(tmpl) == expected


def test_none_data_prints_no_value() -> None:
    assert render("{{.}}|{{.X}}", None) == "<no value>|<no value>"


class Image:
    """Go-struct-like object: attributes are fields, methods are methods."""

    def __init__(self) -> None:
        self.Repository = "alpine"
        self.Size = 7_800_000
        self._hidden = "secret"

    def ID(self) -> str:
        return "a1b2c3d4e5f6"

    def Short(self, n: int) -> str:
        return self.ID()[:n]

    def Fails(self) -> str:
        raise RuntimeError("boom")


class Row(dict):  # dict subclass exposing computed columns, like a formatter context
    @property
    def Upper(self) -> str:
        return self["name"].upper()


@pytest.mark.parametrize(
    ("tmpl", "expected"),
    [
        ("{{.Repository}}", "alpine"),
        ("{{.ID}}", "a1b2c3d4e5f6"),
        ("{{.Short 4}}", "a1b2"),
        ("{{4 | .Short}}", "a1b2"),
        ("{{.Size}}", "7800000"),
    ],
)
def test_objects_attributes_and_methods(tmpl: str, expected: str) -> None:
    assert render(tmpl, Image()) == expected


def test_objects_errors() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type Image"):
        render("{{.Nope}}", Image())
    with pytest.raises(TemplateError, match="can't evaluate field _hidden"):
        render("{{._hidden}}", Image())
    with pytest.raises(TemplateError, match="error calling Fails: boom"):
        render("{{.Fails}}", Image())


def test_dict_key_wins_then_attribute_on_subclasses() -> None:
    row = Row(name="web", keys="k")
    assert render("{{.name}} {{.Upper}} {{.keys}}", row) == "web WEB k"
    # plain dicts never expose their methods
    assert render("{{.keys}} {{.items}}", {"x": 1}) == "<no value> <no value>"


# --------------------------------------------------------------------------
# pipelines and functions


@pytest.mark.parametrize(
    ("tmpl", "expected"),
    [
        ("{{.Name | upper}}", "WEB"),
        ("{{.Name | upper | lower}}", "web"),
        ('{{.a | printf "%s!"}}', "<x&y>!"),
        ('{{.i | printf "%d-%d" 1}}', "1-2"),
        ('{{upper .Name}}|{{lower "ABC"}}', "WEB|abc"),
        ('{{title "hello wORLD foo-bar_baz x.y"}}', "Hello WORLD Foo-Bar_baz X.Y"),
        ("{{title .uni}}", "Héllo Wörld"),
        ('{{pad "x" 2 3}}|{{pad "" 2 3}}|', "  x   ||"),
        ('{{truncate "abcdef" 3}}|{{truncate "ab" 3}}|{{truncate .uni 3}}', "abc|ab|hé"),
        ('{{split "a,b,c" ","}}|{{split "abc" ""}}|{{len (split "" ",")}}', "[a b c]|[a b c]|1"),
        ('{{join (split "a,b,c" ",") "+"}}', "a+b+c"),
        ('{{join .list ", "}}', "p, q"),
        (
            "{{json .list}}|{{json .a}}|{{json .n}}|{{json .t}}|{{json .fl}}",
            '["p","q"]|"<x&y>"|null|true|1.5',
        ),
        ("{{json .m}}", '{"k2":"v2","k1":"v1"}'),
        ("{{json .Labels}}", '{"com.example.vendor":"ACME","version":"1.0"}'),
        (
            "{{json 1e21}}|{{json 1e-7}}|{{json 0.000001}}|{{json 1e20}}",
            "1e+21|1e-7|0.000001|100000000000000000000",
        ),
        ('{{json "\\u2028\\b\\f\\u0001<>&é\\u007f"}}', '"\\u2028\\b\\f\\u0001<>&é\x7f"'),
        ("{{json .uni}}|{{json .missing}}", '"héllo wörld"|null'),
        (
            '{{index .list 1}}|{{index .m "k1"}}|{{index .lm 1 "x"}}|{{index .Labels "com.example.vendor"}}',
            "q|v1|2|ACME",
        ),
        ('{{index .m "nope"}}|{{index .a 0}}', "<no value>|60"),
        ("{{slice .list 1}}|{{slice .a 1 3}}|{{slice .list 0 0}}", "[q]|x&|[]"),
        ('{{len .list}}|{{len .m}}|{{len .uni}}|{{len ""}}', "2|2|13|0"),
        ('{{eq .a "<x&y>"}}|{{eq .i 2}}|{{eq .i 1 2 3}}|{{ne .a "x"}}', "true|true|true|true"),
        (
            '{{lt .i 3}}|{{gt .a "a"}}|{{le .i 2}}|{{ge .i 3}}|{{lt 1.5 2.5}}|{{lt "a" "b"}}',
            "true|false|true|false|true|true",
        ),
        (
            "{{eq .n nil}}|{{eq .missing nil}}|{{eq .n 1}}|{{eq .t true}}|{{eq .list nil}}|{{ne .m nil}}",
            "true|true|false|true|false|true",
        ),
        ("{{not .e}}|{{not .list}}|{{not .n}}|{{not 0}}", "true|false|true|true"),
        (
            '{{and 1 0 2}}|{{or 0 "" "x"}}|{{and .t .list}}|{{or .e .z}}|{{and .t .missing}}',
            "0|x|[p q]|0|<no value>",
        ),
        ('{{0 | or 3}}|{{and 1 2 | printf "%v"}}', "3|2"),
        (
            '{{print .a .i .t "x" .n}}|{{print}}|{{print 1 2 "a" "b" 3 true}}',
            "<x&y>2 truex<nil>||1 2ab3 true",
        ),
        ("{{println .a .i}}", "<x&y> 2\n"),
        (
            '{{html .a}}|{{js "a\\"b<c&=\'"}}|{{urlquery "é/~-_. &"}}|{{html .n}}',
            "&lt;x&amp;y&gt;|a\\\"b\\u003Cc\\u0026\\u003D\\'|%C3%A9%2F~-_.+%26|&lt;no value&gt;",
        ),
        ('{{html "\\"\'\\u0000"}}', "&#34;&#39;\ufffd"),
        ("{{call .f2 3}}", "6"),
    ],
)
def test_functions(tmpl: str, expected: str) -> None:
    data = dict(DATA, f2=lambda x: x * 2)
    assert render(tmpl, data) == expected


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("%v %v %v %v", (["p", "q"], {"b": 1, "a": None}, None, True), "[p q] map[a:<nil> b:1] <nil> true"),
        ("%s|%d|%q|%x", (["p", "q"], [1, 2], ["a", "b"], "hi"), '[p q]|[1 2]|["a" "b"]|6869'),
        (
            "%6.2f|%-6d|%06d|%+d|%x|%X|%o|%b",
            (1.5, 2, -3, 2, 255, 255, 8, 5),
            "  1.50|2     |-00003|+2|ff|FF|10|101",
        ),
        ("%e|%E|%g|%G", (1234.5678, 1.5, 0.000012345, 1e-10), "1.234568e+03|1.500000E+00|1.2345e-05|1E-10"),
        ("%5d|%-5d|%05d|%x|%X|%o", (3, 3, 3, 255, 255, 8), "    3|3    |00003|ff|FF|10"),
        (
            "%q|%10s|%-10s|%.2f|%t|%%",
            ("hi\n", "ab", "ab", 3.14159, True),
            '"hi\\n"|        ab|ab        |3.14|true|%',
        ),
        (
            "%05s|%-05d|%+v|%#x|%#o|%08.3f|%+.2e|% d",
            ("ab", 3, 5, 255, 8, 3.14159, 1234.5, 5),
            "000ab|3    |5|0xff|010|0003.142|+1.23e+03| 5",
        ),
        ("% x|%X|%#v|%#v", ("hi", -255, "q", 3), '68 69|-FF|"q"|3'),
        (
            "%5s|%.1s|%5.1q|%c|%q|%U|%#U",
            (1, "héllo", "abc", 0x1F600, 65, 0x1F600, 0x1F600),
            "%!s(int=    1)|h|  \"a\"|😀|'A'|U+1F600|U+1F600 '😀'",
        ),
        (
            "%v|%v|%v|%v|%v|%v|%v",
            (1e20, 123456789.0, 0.0001, 0.00001, 1e21, 100000.0, 1234567.0),
            "1e+20|1.23456789e+08|0.0001|1e-05|1e+21|100000|1.234567e+06",
        ),
        ("%.3g|%.0f|%.0e|%6.2v", (1234567.0, 2.5, 15000.0, 3.14159), "1.23e+06|2|2e+04|   3.1"),
        ("%d %s", (), "%!d(MISSING) %!s(MISSING)"),
        ("%d", (1, 2), "1%!(EXTRA int=2)"),
        ("%s|%d|%t", (1, "x", 1), "%!s(int=1)|%!d(string=x)|%!t(int=1)"),
        ("%d|%s|%v", (None, None, None), "%!d(<nil>)|%!s(<nil>)|<nil>"),
        ("%!|%|%z", (), "%!!(MISSING)|%!|(MISSING)%!z(MISSING)"),
        ("%", (), "%!(NOVERB)"),
        ("%[2]d %[1]d", (1, 2), "2 1"),
        ("%[3]d", (1,), "%!d(BADINDEX)"),
        ("%*d|%-*d|%.*f", (5, 1, 4, 2, 2, 3.14159), "    1|2   |3.14"),
        ("%T %T %T %T %T", ("s", 1, 1.5, True, [1]), "string int float64 bool []interface {}"),
        ("%v|%.2f|%5.1f", (1j, 1j, 2.25j), "(0+1i)|(0.00+1.00i)|(  0.0 +2.2i)"),
        ("%v %v %v", (float("inf"), float("-inf"), float("nan")), "+Inf -Inf NaN"),
        ("%05.1f|%+.1f|% .1f", (float("inf"), float("nan"), -1.0), " +Inf|+NaN|-1.0"),
    ],
)
def test_go_sprintf(fmt: str, args: tuple[object, ...], expected: str) -> None:
    assert go_sprintf(fmt, *args) == expected


def test_printf_in_template() -> None:
    assert render('{{printf "%-8s|%5.1f|%q" .Name .fl .a}}') == 'web     |  1.5|"<x&y>"'


# --------------------------------------------------------------------------
# control structures, variables, whitespace


@pytest.mark.parametrize(
    ("tmpl", "expected"),
    [
        ("{{if .t}}yes{{end}}", "yes"),
        ("{{if .f}}yes{{else}}no{{end}}", "no"),
        ("{{if .e}}a{{else if .z}}b{{else if .t}}c{{else}}d{{end}}", "c"),
        ("{{if .missing}}a{{else}}b{{end}}|{{if .el}}a{{else}}b{{end}}|{{if .m}}a{{end}}", "b|b|a"),
        ('{{if and .t (eq .Name "web")}}ok{{end}}', "ok"),
        ("{{range .list}}[{{.}}]{{end}}", "[p][q]"),
        ("{{range $i, $v := .list}}{{$i}}:{{$v}} {{end}}", "0:p 1:q "),
        ("{{range $v := .list}}{{$v}}{{end}}", "pq"),
        ("{{range $k, $v := .m}}{{$k}}={{$v}},{{end}}", "k1=v1,k2=v2,"),  # sorted keys
        ("{{range .lm}}[{{.x}}]{{end}}", "[1][2]"),
        ("{{range .nl}}<{{.}}>{{end}}", "<<no value>><a>"),
        (
            "{{range .el}}x{{else}}empty{{end}}|{{range .em}}x{{else}}E{{end}}|"
            "{{range .missing}}x{{else}}M{{end}}",
            "empty|E|M",
        ),
        ("{{range $i, $e := .list}}{{if $i}}, {{end}}{{$e}}{{end}}", "p, q"),
        ('{{range .list}}{{if eq . "p"}}{{continue}}{{end}}{{.}}{{end}}', "q"),
        ("{{range .list}}{{.}}{{break}}{{end}}", "p"),
        ("{{range .list}}{{range $.list}}{{break}}{{end}}{{.}}{{end}}", "pq"),
        ("{{range 3}}{{.}}{{end}}", "012"),
        ("{{range .list}}{{$.Name}}-{{.}} {{end}}", "web-p web-q "),
        ("{{range $i, $c := .nested.l}}{{$i}}{{$c.m.z}}{{end}}", "0deep"),
        ("{{with .m}}{{.k2}}{{end}}|{{with .e}}x{{else}}y{{end}}", "v2|y"),
        ("{{with $x := .a}}{{$x}}{{end}}", "<x&y>"),
        ("{{with .missing}}x{{else with .Name}}[{{.}}]{{end}}", "[web]"),
        ("{{$x := .i}}{{$x}}{{$x = .a}}{{$x}}", "2<x&y>"),
        ('{{$x := .a}}{{if true}}{{$x = "in"}}{{$y := "y"}}{{end}}{{$x}}', "in"),
        ("{{$n := len .list}}{{if gt $n 1}}many{{end}}", "many"),
        ('{{define "T"}}[{{.}}]{{end}}{{template "T" .a}}{{template "T" .i}}', "[<x&y>][2]"),
        ('{{block "B" .list}}{{len .}}{{end}}|{{template "B" "xyz"}}', "2|3"),
        (
            '{{define "r"}}{{if .}}{{template "r" slice . 1}}{{.}}{{end}}{{end}}{{template "r" "abc"}}',
            "cbcabc",
        ),
        # trim markers eat all ASCII whitespace on their side
        ("{{- .a -}}   {{- .i }}   {{ .t -}}   x", "<x&y>2   truex"),
        ('a  {{- "b" -}}  c', "abc"),
        ('a\n\t {{- "b"}} \n c', "ab \n c"),
        ("{{- 3}}|{{-3}}|{{3 -}}|{{ -3 }}", "3|-3|3|-3"),
        ("{{/* a comment */}}{{.i}}{{- /* c2 */ -}}  z", "2z"),
        ("x{{/* multi\nline */}}y", "xy"),
        ("{{ .Name }}|{{\t.Name\t}}|{{.Name\n}}|{{\n.Name}}", "web|web|web|web"),
    ],
)
def test_control(tmpl: str, expected: str) -> None:
    assert render(tmpl) == expected


def test_template_is_reusable() -> None:
    t = parse("{{.Name}}:{{len .list}}")
    assert isinstance(t, Template)
    assert t.render({"Name": "a", "list": [1]}) == "a:1"
    assert t.render({"Name": "b", "list": []}) == "b:0"


def test_missingkey_option() -> None:
    assert render("{{.nope}}", missingkey="zero") == "<no value>"
    assert render("{{print .nope}}", missingkey="zero") == "<nil>"
    with pytest.raises(TemplateError) as exc:
        render("{{.m.nope}}", missingkey="error")
    assert str(exc.value) == 'template: :1:4: executing "" at <.m.nope>: map has no entry for key "nope"'
    with pytest.raises(ValueError, match="unrecognized option"):
        render("x", missingkey="bogus")


# --------------------------------------------------------------------------
# errors: Go's exact messages


@pytest.mark.parametrize(
    ("tmpl", "message"),
    [
        ("{{.Foo", "template: :1: unclosed action"),
        ("{{.Foo}", "template: :1: bad character U+007D '}'"),
        ("{{foo}}", 'template: :1: function "foo" not defined'),
        ("{{if .Foo}}", "template: :1: unexpected EOF"),
        ("{{end}}", "template: :1: unexpected {{end}}"),
        ("{{else}}", "template: :1: unexpected {{else}}"),
        ("{{$x}}", 'template: :1: undefined variable "$x"'),
        ("{{| .Foo}}", 'template: :1: unexpected "|" in command'),
        ('{{.Foo | "x"}}', "template: :1: non executable command in pipeline stage 2"),
        ('{{"unterminated}}', "template: :1: unterminated quoted string"),
        ("{{`raw", "template: :1: unterminated raw quoted string"),
        ("{{(.Foo}}", "template: :1: unclosed left paren"),
        ("{{.Foo)}}", "template: :1: unexpected right paren"),
        ("{{3x}}", 'template: :1: bad number syntax: "3x"'),
        ("{{.Foo.}}", "template: :1: unexpected <.> in operand"),
        ("{{range}}{{end}}", "template: :1: missing value for range"),
        ("{{if 1}}{{else}}{{else}}{{end}}", "template: :1: expected end; found {{else}}"),
        ("{{with $x := 1}}{{end}}{{$x}}", 'template: :1: undefined variable "$x"'),
        ("{{break}}", "template: :1: {{break}} outside {{range}}"),
        ("{{.Foo %}}", 'template: :1: unexpected "%" in operand'),
        ("{{/* unclosed", "template: :1: unclosed comment"),
        ("{{/* x */ }}", "template: :1: comment ends before closing delimiter"),
        ("{{99999999999999999999}}", 'template: :1: integer overflow: "99999999999999999999"'),
        ("{{1e400}}", 'template: :1: illegal number syntax: "1e400"'),
        ('{{"\\q"}}', "template: :1: invalid syntax"),
        ("{{''}}", "template: :1: invalid syntax"),
        ("{{$x, $y := 1}}", "template: :1: too many declarations in command"),
        ("{{range $x, 1 := .L}}{{end}}", "template: :1: range can only initialize variables"),
        (
            '{{define "x"}}a{{end}}{{define "x"}}b{{end}}',
            'template: :1: template: multiple definition of template "x"',
        ),
        ("{{@}}", 'template: :1: unexpected "@" in command'),
        ("{{\x01}}", "template: :1: unrecognized character in action: U+0001"),
        ('{{"a".x}}', 'template: :1: unexpected . after term "\\"a\\""'),
        ("a\nb\n{{.X\nc", 'template: :4: function "c" not defined'),  # newlines are spaces in actions
        ("a\nb\n{{.X\n", "template: :4: unclosed action started at :3"),
        ("x\n{{if\n.Foo}}", "template: :3: unexpected EOF"),
        ("a\n{{if}}", "template: :2: missing value for if"),
    ],
)
def test_parse_errors(tmpl: str, message: str) -> None:
    with pytest.raises(TemplateError) as exc:
        parse(tmpl)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("tmpl", "message"),
    [
        ("{{.list.x}}", "can't evaluate field x in type interface {}"),
        ("{{.n.x}}", "nil pointer evaluating interface {}.x"),
        ('{{.a "arg"}}', "a is not a method but has arguments"),
        ("{{nil}}", "nil is not a command"),
        ("{{(1).x}}", "can't evaluate field x in type int"),
        ("{{len .n}}", "error calling len: len of nil pointer"),
        ('{{len (index .m "nope")}}', "error calling len: reflect: call of reflect.Value.Type on zero Value"),
        ("{{len 3}}", "error calling len: len of type int"),
        ("{{index .list 2}}", "error calling index: reflect: slice index out of range"),
        ("{{index .list -1}}", "error calling index: index out of range: -1"),
        ('{{index .list "a"}}', "error calling index: cannot index slice/array with type string"),
        ("{{index .m 1}}", "error calling index: value has type int; should be string"),
        ("{{index .n 1}}", "error calling index: index of untyped nil"),
        ('{{slice "abc" 2 1}}', "error calling slice: invalid slice index: 2 > 1"),
        ('{{slice "abc" 1 4}}', "error calling slice: index out of range: 4"),
        ("{{and}}", "wrong number of args for and: want at least 1 got 0"),
        ("{{len 1 2}}", "wrong number of args for len: want 1 got 2"),
        ('{{eq "a"}}', "error calling eq: missing argument for comparison"),
        ('{{eq 1 "1"}}', "error calling eq: incompatible types for comparison"),
        ("{{eq .i 1.5}}", "error calling eq: incompatible types for comparison"),
        ("{{lt true false}}", "error calling lt: invalid type for comparison"),
        ("{{lt nil 1}}", "error calling lt: invalid type for comparison"),
        ("{{eq .list .list}}", "error calling eq: non-comparable type [p q]: []interface {}"),
        ("{{upper .i}}", "wrong type for value; expected string; got int"),
        ("{{upper .n}}", "wrong type for value; expected string; got interface {}"),
        ("{{upper .missing}}", "invalid value; expected string"),
        ("{{upper 1}}", "expected string; found 1"),
        ("{{upper nil}}", "cannot assign nil to string"),
        ('{{truncate "abc" "x"}}', 'expected integer; found "x"'),
        ('{{pad "x" -1 0}}', "error calling pad: strings: negative Repeat count"),
        ("{{range .fl}}x{{end}}", "range can't iterate over 1.5"),
        ('{{range "abc"}}x{{end}}', "range can't iterate over abc"),
        ("{{range $i, $v := 2}}{{end}}", "can't use 2 to iterate over more than one variable"),
        ('{{template "nope"}}', 'template "nope" not defined'),
        ("{{call 1}}", "error calling call: non-function 1 of type int"),
        ("{{json .bad}}", "error calling json: json: unsupported value: NaN"),
    ],
)
def test_exec_errors(tmpl: str, message: str) -> None:
    with pytest.raises(TemplateError) as exc:
        render(tmpl, dict(DATA, bad=float("nan")))
    assert str(exc.value).endswith(": " + message)
    assert str(exc.value).startswith("template: :1:")


@pytest.mark.parametrize(
    ("tmpl", "prefix"),
    [
        ("{{len .n}}", 'template: :1:2: executing "" at <len .n>: '),
        # a field chain is positioned at its second field, as in Go
        ("{{.i}}|{{.Name}}|{{.list.x}}", 'template: :1:24: executing "" at <.list.x>: '),
        ("{{index .m 1}}", 'template: :1:2: executing "" at <index .m 1>: '),
        ("{{and}}", 'template: :1:2: executing "" at <and>: '),
        ('{{template "nope"}}', 'template: :1:11: executing "" at <{{template "nope"}}>: '),
        ("line1\n  {{upper .i}}", 'template: :2:10: executing "" at <.i>: '),
        ('{{define "T"}}{{.x.y}}{{end}}{{template "T" .nl}}', 'template: :1:18: executing "T" at <.x.y>: '),
    ],
)
def test_exec_error_positions(tmpl: str, prefix: str) -> None:
    with pytest.raises(TemplateError) as exc:
        render(tmpl)
    assert str(exc.value).startswith(prefix)


def test_exec_error_keeps_partial_output() -> None:
    with pytest.raises(TemplateError) as exc:
        render("ok {{.Name}} {{len 3}} never")
    assert exc.value.partial == "ok web "


def test_template_error_is_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# --------------------------------------------------------------------------
# helpers: go_str, go_json, go_quote


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "<nil>"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        (1.5, "1.5"),
        (1000000.0, "1e+06"),
        (100000.0, "100000"),
        (0.1, "0.1"),
        (1e-5, "1e-05"),
        (-0.0, "-0"),
        (2.0, "2"),
        ("s", "s"),
        ([], "[]"),
        (["a", "b", "c"], "[a b c]"),
        ((1, None), "[1 <nil>]"),
        ({"b": 1, "a": [1.5, True]}, "map[a:[1.5 true] b:1]"),
        ({2: "x", 1: "y"}, "map[1:y 2:x]"),
        ({}, "map[]"),
        (1 + 2j, "(1+2i)"),
    ],
)
def test_go_str(value: object, expected: str) -> None:
    assert go_str(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": [1, 2.5, None], "a": "x"}, '{"b":[1,2.5,null],"a":"x"}'),
        ("<a&b>", '"<a&b>"'),
        ('tab\tnl\n"q"\\', '"tab\\tnl\\n\\"q\\"\\\\"'),
        (1e6, "1000000"),
        (1.0, "1"),
        (-0.5, "-0.5"),
        (1e-7, "1e-7"),
        (1e21, "1e+21"),
        ((True, False), "[true,false]"),
        ({1: "x"}, '{"1":"x"}'),
        ("é\u2029", '"é\\u2029"'),
    ],
)
def test_go_json(value: object, expected: str) -> None:
    assert go_json(value) == expected


def test_go_json_rejects_nan() -> None:
    with pytest.raises(ValueError, match="unsupported value: NaN"):
        go_json(float("nan"))


def test_context_row_json_is_sorted_and_html_escaped() -> None:
    # docker's formatter contexts marshal through json.Marshal of a map.
    row = ContextRow(Repository="alpine", Digest="<none>", Containers="N/A")
    assert (
        render("{{json .}}", row)
        == '{"Containers":"N/A","Digest":"\\u003cnone\\u003e","Repository":"alpine"}'
    )
    assert render("{{json .Digest}}|{{.Repository}}", row) == '"<none>"|alpine'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", '"abc"'),
        ('a"b\\', '"a\\"b\\\\"'),
        ("\x00\x7f\t\n", '"\\x00\\x7f\\t\\n"'),
        ("é\u00a0\u2028😀", '"é\\u00a0\\u2028😀"'),
    ],
)
def test_go_quote(text: str, expected: str) -> None:
    assert go_quote(text) == expected


# --------------------------------------------------------------------------
# table output


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("table {{.ID}}\t{{.Name}}", (True, " {{.ID}}\t{{.Name}}")),
        ("table", (True, "")),
        ("table{{.ID}}", (True, "{{.ID}}")),
        ("{{.ID}}", (False, "{{.ID}}")),
        ("json", (False, "json")),
        ("Table {{.ID}}", (False, "Table {{.ID}}")),
    ],
)
def test_is_table(fmt: str, expected: tuple[bool, str]) -> None:
    assert is_table(fmt) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("table {{.ID}}\\t{{.Name}}  ", (True, "{{.ID}}\t{{.Name}}")),
        ("  {{.ID}}\\n", (False, "{{.ID}}\n")),
        ("json", (False, "{{json .}}")),
        ("table", (True, "")),
    ],
)
def test_normalize_format(fmt: str, expected: tuple[bool, str]) -> None:
    assert normalize_format(fmt) == expected


IMAGES_HEADER = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "Size": "SIZE",
}
IMAGES_FORMAT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def image_row(repo: str, tag: str, id_: str, created: str, size: str) -> dict[str, str]:
    return {"Repository": repo, "Tag": tag, "ID": id_, "CreatedSince": created, "Size": size}


def test_render_table_docker_images() -> None:
    rows = [
        image_row("alpine", "latest", "a1b2c3d4e5f6", "2 months ago", "7.8MB"),
        image_row("nginx", "1.25", "0123456789ab", "3 days ago", "187MB"),
    ]
    # REPOSITORY column: 10 chars + padding 3 = 13; TAG column stays at the
    # minimum width 10; the last column is never padded.
    assert render_table(IMAGES_HEADER, rows, IMAGES_FORMAT) == (
        "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE\n"
        "alpine       latest    a1b2c3d4e5f6   2 months ago   7.8MB\n"
        "nginx        1.25      0123456789ab   3 days ago     187MB\n"
    )


def test_render_table_wide_values() -> None:
    rows = [
        image_row("alpine", "latest", "a1b2c3d4e5f6", "3 days ago", "7.8MB"),
        image_row(
            "registry.example.com/some/very-long-repository-name",
            "v1.2.3-rc1",
            "ffeeddccbbaa",
            "13 months ago",
            "1.23GB",
        ),
        image_row("x", "y", "0123456789ab", "About a minute ago", "999B"),
    ]
    # captured from `docker images` (docker 28.2.2)
    # (each line split in two literals only to respect the line-length limit)
    assert render_table(IMAGES_HEADER, rows, IMAGES_FORMAT) == (
        "REPOSITORY                                            "
        "TAG          IMAGE ID       CREATED              SIZE\n"
        "alpine                                                "
        "latest       a1b2c3d4e5f6   3 days ago           7.8MB\n"
        "registry.example.com/some/very-long-repository-name   "
        "v1.2.3-rc1   ffeeddccbbaa   13 months ago        1.23GB\n"
        "x                                                     "
        "y            0123456789ab   About a minute ago   999B\n"
    )


def test_render_table_header_functions_keep_titles() -> None:
    rows = [
        image_row("alpine", "latest", "a1b2c3d4e5f6", "", ""),
        image_row("x", "y", "0123456789ab", "", ""),
    ]
    fmt = "table {{json .Repository}}\t{{upper .Tag}}\t{{pad .ID 1 1}}|"
    assert render_table(IMAGES_HEADER, rows, fmt) == (
        "REPOSITORY   TAG        IMAGE ID |\n"
        '"alpine"     LATEST     a1b2c3d4e5f6 |\n'
        '"x"          Y          0123456789ab |\n'
    )


def test_render_table_escapes_and_single_column() -> None:
    rows = [image_row("alpine", "latest", "", "", "")]
    # a literal backslash-t typed in a shell becomes a tab, as in docker
    assert render_table(IMAGES_HEADER, rows, "table {{.Repository}}\\t{{.Tag}}") == (
        "REPOSITORY   TAG\nalpine       latest\n"
    )
    assert render_table(IMAGES_HEADER, rows, "table {{.Tag}}") == "TAG\nlatest\n"
    assert render_table(IMAGES_HEADER, [], "table {{.Repository}}\t{{.Tag}}") == "REPOSITORY   TAG\n"


def test_render_table_empty_cells_and_missing_header() -> None:
    rows = [image_row("alpine", "latest", "", "", "7.8MB")]
    assert render_table(IMAGES_HEADER, rows, "table {{.Tag}}\t\t{{.Size}}") == (
        "TAG                 SIZE\nlatest              7.8MB\n"
    )
    assert render_table(IMAGES_HEADER, rows, "table {{.Nope}}\t{{.Tag}}") == (
        "<no value>   TAG\n<no value>   latest\n"
    )


def test_render_table_wide_characters() -> None:
    # East Asian wide characters take two columns (go-runewidth); captured from docker ps.
    header = {"Names": "NAMES", "Image": "IMAGE", "Status": "STATUS"}
    rows = [
        {"Names": "日本語コンテナ", "Image": "é-image", "Status": "Up 2 hours"},
        {"Names": "plain", "Image": "busybox", "Status": "Exited (0) 3 days ago"},
    ]
    assert render_table(header, rows, "table {{.Names}}\t{{.Image}}\t{{.Status}}") == (
        "NAMES            IMAGE     STATUS\n"
        "日本語コンテナ   é-image   Up 2 hours\n"
        "plain            busybox   Exited (0) 3 days ago\n"
    )


def test_render_table_row_errors_raise() -> None:
    with pytest.raises(TemplateError, match="error calling len"):
        render_table({"X": "X"}, [{"X": 1}], "table {{len .X}}")
    with pytest.raises(TemplateError, match='function "nope" not defined'):
        render_table({}, [], "table {{nope}}")


def test_tabwrite_rows() -> None:
    assert tabwrite([["NAME", "ID"], ["a", "1"], ["much-longer-name", "2"]]) == (
        "NAME               ID\na                  1\nmuch-longer-name   2\n"
    )
    assert tabwrite([["a", "b", "c"]], minwidth=0, padding=1) == "a b c\n"
    assert tabwrite([]) == ""


def test_tabwrite_text_columns_are_contiguous_blocks() -> None:
    # The example from Go's text/tabwriter documentation: "b" and "c" are in
    # different columns because line 3 interrupts the column.
    text = "aaaa\tbbb\td\naa\tb\tdd\na\t\naa\tcccc\teee\n"
    assert tabwrite_text(text, minwidth=0, padding=1) == ("aaaa bbb d\naa   b   dd\na    \naa   cccc eee\n")


def test_tabwrite_text_line_without_tabs_resets_columns() -> None:
    text = "a\tb\nno tabs here\nccc\td\n"
    assert tabwrite_text(text) == "a         b\nno tabs here\nccc       d\n"


def test_tabwrite_text_trailing_text_without_newline() -> None:
    assert tabwrite_text("ab\tc\nd\te") == "ab        c\nd         e"


# --------------------------------------------------------------------------
# robustness

TEMPLATE_ALPHABET = st.sampled_from(
    [
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "{{/*",
        "*/}}",
        ".",
        ".Name",
        ".list",
        ".m.k1",
        "$",
        "$x",
        ":=",
        "=",
        "|",
        "(",
        ")",
        " ",
        "\n",
        '"',
        "`",
        "'",
        "\\",
        "if",
        "else",
        "end",
        "range",
        "with",
        "define",
        "template",
        "block",
        "break",
        "continue",
        "nil",
        "true",
        "1",
        "-2",
        "0x1F",
        "1e3",
        "1i",
        "3x",
        "printf",
        "len",
        "index",
        "slice",
        "eq",
        "lt",
        "and",
        "or",
        "not",
        "json",
        "upper",
        "join",
        "split",
        "pad",
        "truncate",
        '"%d"',
        '"%s"',
        ",",
        "text",
        "é",
        "\t",
        "@",
        "-",
    ]
)
TEMPLATE_TEXT = st.one_of(st.text(max_size=60), st.lists(TEMPLATE_ALPHABET, max_size=25).map("".join))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEMPLATE_TEXT)
def test_parse_never_raises_anything_but_template_error(text: str) -> None:
    try:
        tmpl = parse(text)
    except TemplateError:
        return
    assert isinstance(tmpl, Template)
    # Executing whatever parsed must also fail only with TemplateError.
    try:
        out = tmpl.render(DATA)
    except TemplateError:
        return
    assert isinstance(out, str)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("%-+# 0123456789.*[]vdsqxXeEfgGtTcUob"), max_size=12),
    st.lists(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)), max_size=3
    ),
)
def test_go_sprintf_total(fmt: str, args: list[object]) -> None:
    assert isinstance(go_sprintf(fmt, *args), str)
