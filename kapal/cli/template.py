"""Go ``text/template`` as docker's ``--format`` uses it, plus docker's table output.

Users hand ``docker ... --format`` strings written for Go's ``text/template``
and expect byte-identical output, so this is a faithful re-implementation of
the parts that matter, not a look-alike:

* the lexer/parser follow Go's grammar (trim markers, comments, raw strings,
  ``if``/``else if``/``else with``/``range``/``with``/``define``/``template``/
  ``block``/``break``/``continue``, variables, parenthesised pipelines,
  chained fields) and report errors with Go's wording;
* execution follows Go's rules for truth, ``range`` (sorted map keys,
  ``$i, $v``), missing map keys (``<no value>``), nil handling and errors
  (``template: :1:2: executing "" at <.X>: ...``);
* values print like Go's ``fmt`` (``%v``): ``[a b]``, ``map[k:v]``, ``true``,
  ``1e+06``, ``<nil>``; ``printf`` implements Go's verbs, flags and
  ``%!d(string=x)`` error notation;
* functions are Go's builtins plus docker's ``json``, ``split``, ``join``,
  ``title``, ``lower``, ``upper``, ``pad`` and ``truncate``
  (docker/cli ``templates/templates.go``), with docker's header variants for
  table headers;
* tables are aligned with a port of the tabwriter docker uses
  (minwidth 10, tabwidth 1, padding 3, space padding).

Data is plain Python: dicts (Go maps / JSON objects), lists, str, int, float,
bool, None -- typically Docker API JSON -- or objects whose attributes and
zero-argument methods play the role of Go struct fields and methods.

Only cheap modules are imported: this sits on the CLI start-up path.
"""

from __future__ import annotations

import math

from kapal.units import _underscore_ok  # strconv's rule, shared with the size parser

__all__ = [
    "ContextRow",
    "Template",
    "TemplateError",
    "go_json",
    "go_quote",
    "go_sprintf",
    "go_str",
    "is_table",
    "normalize_format",
    "parse",
    "render_table",
    "tabwrite",
    "tabwrite_text",
]


class TemplateError(ValueError):
    """A template failed to parse or execute; the message is Go's text.

    ``partial`` holds what had been rendered before an execution error: docker
    ignores header execution errors and prints whatever was produced.
    """

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class _Missing:
    """Go's invalid ``reflect.Value``: a missing map key or a dug-out nil."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


_MISSING = _Missing()
_NOFINAL = object()  # Go's missingVal: "no value piped into this command"

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1


# ==========================================================================
# Go fmt


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _go_type(v: object) -> str:
    """The Go type name docker would report for a JSON-decoded value."""
    if v is None or v is _MISSING:
        return "interface {}"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if _is_mapping(v):
        return "map[string]interface {}"
    return type(v).__name__


def _is_mapping(v: object) -> bool:
    return isinstance(v, dict) or (hasattr(v, "keys") and hasattr(v, "__getitem__"))


def _is_printable(ch: str) -> bool:
    # unicode.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII
    # space -- the same set as Python's isprintable().
    return ch.isprintable()


def _quote_with(s: str, quote: str, ascii_only: bool) -> str:
    out = [quote]
    for ch in s:
        o = ord(ch)
        if ch == quote or ch == "\\":
            out.append("\\" + ch)
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        elif _is_printable(ch) and (not ascii_only or o < 0x80):
            out.append(ch)
        elif ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append(quote)
    return "".join(out)


_SIMPLE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(s: str) -> str:
    """``strconv.Quote``: Go's double-quoted string literal (used by ``%q``)."""
    return _quote_with(s, '"', False)


def _quote_rune(r: int, ascii_only: bool = False) -> str:
    if r < 0 or r > 0x10FFFF or 0xD800 <= r <= 0xDFFF:
        r = 0xFFFD
    return _quote_with(chr(r), "'", ascii_only)


def _can_backquote(s: str) -> bool:
    for ch in s:
        if ch == "`" or ch == "\ufeff":
            return False
        if (ord(ch) < 0x20 and ch != "\t") or ch == "\x7f":
            return False
    return True


def _shortest_digits(a: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``a`` (> 0): ``a == 0.DIGITS * 10**dp``."""
    r = repr(a)
    mant, _, exp = r.partition("e")
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    dp = len(ip) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    return stripped.rstrip("0") or "0", dp


def _e_form(digits: str, dp: int, echar: str) -> str:
    exp = dp - 1 if digits != "0" else 0
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mant}{echar}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _f_form(digits: str, dp: int) -> str:
    if digits == "0":
        return "0"
    if dp <= 0:
        return "0." + "0" * (-dp) + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def _format_float(f: float, verb: str, prec: int) -> str:
    """``strconv.FormatFloat(f, verb, prec, 64)`` for the verbs fmt uses."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    a = abs(f)
    lower = verb.lower()
    if lower == "x":
        return sign + _hex_float(a, prec, verb == "X")
    if lower == "b":
        mant, exp = math.frexp(a)
        if a == 0:
            return sign + "0p-1074"
        return f"{sign}{int(mant * (1 << 53))}p{exp - 53:+d}"
    if prec >= 0:
        if lower == "g" and prec == 0:
            prec = 1
        return sign + ("%." + str(prec) + verb) % a
    digits, dp = _shortest_digits(a) if a != 0 else ("0", 1)
    if lower == "e":
        return sign + _e_form(digits, dp, verb)
    if lower == "f":
        return sign + _f_form(digits, dp)
    # %g with the shortest representation: Go switches to %e at exponent 6
    # (unlike Python's repr, which waits until 16).
    exp = dp - 1
    if digits != "0" and (exp < -4 or exp >= 6):
        return sign + _e_form(digits, dp, "E" if verb == "G" else "e")
    return sign + _f_form(digits, dp)


def _hex_float(a: float, prec: int, upper: bool) -> str:
    if a == 0:
        mant, exp = "0", 0
    else:
        h = a.hex()  # 0x1.8000000000000p+1
        m, _, e = h[2:].partition("p")
        ip, _, fp = m.partition(".")
        fp = fp.rstrip("0")
        exp = int(e)
        if prec >= 0:
            fp = (fp + "0" * prec)[:prec]
        mant = ip + ("." + fp if fp else "")
    s = f"0x{mant}p{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return s.upper() if upper else s


class _Flags:
    __slots__ = ("minus", "plus", "sharp", "space", "zero", "wid", "prec")

    def __init__(self) -> None:
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.wid: int | None = None
        self.prec: int | None = None


_PLAIN = _Flags()


def _pad(s: str, fl: _Flags, zero_ok: bool = True) -> str:
    if fl.wid is None:
        return s
    n = fl.wid - len(s)
    if n <= 0:
        return s
    if fl.minus:
        return s + " " * n
    return ("0" if fl.zero and zero_ok else " ") * n + s


def _bad_verb(verb: str, arg: object, fl: _Flags) -> str:
    if arg is None or arg is _MISSING:
        return "%!" + verb + "(<nil>)"
    return "%!" + verb + "(" + _go_type(arg) + "=" + _fmt_arg(arg, "v", fl) + ")"


def _fmt_integer(v: int, verb: str, fl: _Flags) -> str:
    if verb in "vd":
        base, digits = 10, "0123456789abcdef"
    elif verb == "b":
        base, digits = 2, "01"
    elif verb in "oO":
        base, digits = 8, "01234567"
    elif verb == "x":
        base, digits = 16, "0123456789abcdef"
    elif verb == "X":
        base, digits = 16, "0123456789ABCDEF"
    elif verb == "c":
        return _pad(_rune_str(v), fl)
    elif verb == "q":
        return _pad(_quote_rune(v, fl.plus), fl)
    elif verb == "U":
        return _fmt_unicode(v, fl)
    else:
        return _bad_verb(verb, v, fl)
    negative = v < 0
    u = -v if negative else v
    prec = 0
    if fl.prec is not None:
        prec = fl.prec
        if prec == 0 and u == 0:
            return _pad("", fl, zero_ok=False)
    elif fl.zero and not fl.minus and fl.wid is not None:
        prec = fl.wid
        if negative or fl.plus or fl.space:
            prec -= 1
    out = []
    while u >= base:
        out.append(digits[u % base])
        u //= base
    out.append(digits[u])
    body = "".join(reversed(out))
    if len(body) < prec:
        body = "0" * (prec - len(body)) + body
    if fl.sharp:
        if base == 2:
            body = "0b" + body
        elif base == 8 and body[0] != "0":
            body = "0" + body
        elif base == 16:
            body = ("0X" if verb == "X" else "0x") + body
    if verb == "O":
        body = "0o" + body
    if negative:
        body = "-" + body
    elif fl.plus:
        body = "+" + body
    elif fl.space:
        body = " " + body
    return _pad(body, fl, zero_ok=False)


def _rune_str(v: int) -> str:
    if v < 0 or v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
        return "\ufffd"
    return chr(v)


def _fmt_unicode(v: int, fl: _Flags) -> str:
    digits = "%X" % (v & _UINT64_MAX if v < 0 else v)
    prec = 4 if fl.prec is None or fl.prec < 4 else fl.prec
    s = "U+" + digits.rjust(prec, "0")
    if fl.sharp and 0 <= v <= 0x10FFFF and not (0xD800 <= v <= 0xDFFF) and _is_printable(chr(v)):
        s += " '" + chr(v) + "'"
    return _pad(s, fl, zero_ok=False)


def _fmt_float(f: float, verb: str, fl: _Flags) -> str:
    if verb == "v":
        spec, prec = "g", -1
    elif verb in "bgGxX":
        spec, prec = verb, -1
    elif verb in "feEF":
        spec, prec = verb, 6
    else:
        return _bad_verb(verb, f, fl)
    if fl.prec is not None:
        prec = fl.prec
    num = _format_float(f, spec, prec)
    if num[0] not in "+-":
        num = "+" + num
    if fl.space and num[0] == "+" and not fl.plus:
        num = " " + num[1:]
    if num[1] in "IN":  # Inf and NaN are never zero padded
        if num[1] == "N" and not fl.space and not fl.plus:
            num = num[1:]
        return _pad(num, fl, zero_ok=False)
    if fl.plus or num[0] != "+":
        if fl.zero and not fl.minus and fl.wid is not None and fl.wid > len(num):
            return num[0] + "0" * (fl.wid - len(num)) + num[1:]
        return _pad(num, fl)
    return _pad(num[1:], fl)


def _fmt_complex(c: complex, verb: str, fl: _Flags) -> str:
    if verb not in "vbgGxXfFeE":
        return _bad_verb(verb, c, fl)
    # Go applies width and precision to each part; the imaginary part is signed.
    inner = _Flags()
    inner.sharp, inner.space, inner.zero, inner.minus = fl.sharp, fl.space, fl.zero, fl.minus
    inner.plus, inner.prec, inner.wid = fl.plus, fl.prec, fl.wid
    re_part = _fmt_float(c.real, verb, inner)
    inner.plus = True
    im_part = _fmt_float(c.imag, verb, inner)
    return "(" + re_part + im_part + "i)"


def _fmt_string(s: str, verb: str, fl: _Flags) -> str:
    if verb in "sv":
        if fl.prec is not None:
            s = s[: fl.prec]
        return _pad(s, fl)
    if verb == "q":
        if fl.prec is not None:
            s = s[: fl.prec]
        if fl.sharp and _can_backquote(s):
            return _pad("`" + s + "`", fl)
        return _pad(_quote_with(s, '"', fl.plus), fl)
    if verb in "xX":
        data = s.encode("utf-8", "surrogatepass")
        if fl.prec is not None:
            data = data[: fl.prec]
        fmt = "%02X" if verb == "X" else "%02x"
        prefix = ("0X" if verb == "X" else "0x") if fl.sharp else ""
        if fl.space:
            text = " ".join(prefix + fmt % b for b in data)
        else:
            text = (prefix if data else "") + "".join(fmt % b for b in data)
        return _pad(text, fl)
    return _bad_verb(verb, s, fl)


def _fmt_bool(b: bool, verb: str, fl: _Flags) -> str:
    if verb in "tv":
        return _pad("true" if b else "false", fl)
    return _bad_verb(verb, b, fl)


def _sort_key(k: object) -> tuple[int, object]:
    # internal/fmtsort: keys of one kind compare by value; nil sorts first.
    if k is None:
        return (0, 0)
    if isinstance(k, bool):
        return (1, k)
    if isinstance(k, (int, float)):
        return (2, k)
    if isinstance(k, str):
        return (3, k.encode("utf-8", "surrogatepass"))
    return (4, str(k))


def _sorted_items(m: object) -> list[tuple[object, object]]:
    keys = list(m.keys())  # type: ignore[attr-defined]
    try:
        keys.sort(key=_sort_key)
    except TypeError:
        pass
    return [(k, m[k]) for k in keys]  # type: ignore[index]


def _fmt_arg(arg: object, verb: str, fl: _Flags) -> str:
    """Go's ``pp.printArg``: format one operand for ``verb``."""
    if arg is None or arg is _MISSING:
        if verb in "Tv":
            return _pad("<nil>", fl)
        return _bad_verb(verb, arg, fl)
    if verb == "T":
        return _pad(_go_type(arg), fl)
    if isinstance(arg, bool):
        return _fmt_bool(arg, verb, fl)
    if isinstance(arg, int):
        return _fmt_integer(arg, verb, fl)
    if isinstance(arg, float):
        return _fmt_float(arg, verb, fl)
    if isinstance(arg, complex):
        return _fmt_complex(arg, verb, fl)
    if isinstance(arg, str):
        return _fmt_string(arg, verb, fl)
    if isinstance(arg, (bytes, bytearray)):
        if verb in "sqxX":
            return _fmt_string(bytes(arg).decode("utf-8", "replace"), verb, fl)
        return "[" + " ".join(_fmt_arg(b, verb, fl) for b in arg) + "]"
    if isinstance(arg, (list, tuple)):
        return "[" + " ".join(_fmt_elem(e, verb, fl) for e in arg) + "]"
    if _is_mapping(arg):
        parts = [_fmt_elem(k, verb, fl) + ":" + _fmt_elem(v, verb, fl) for k, v in _sorted_items(arg)]
        return "map[" + " ".join(parts) + "]"
    if verb in "sv":
        return _pad(str(arg), fl)
    return _bad_verb(verb, arg, fl)


def _fmt_elem(e: object, verb: str, fl: _Flags) -> str:
    # A nil interface inside a slice or map prints as <nil> whatever the verb.
    if e is None or e is _MISSING:
        return _pad("<nil>", fl)
    return _fmt_arg(e, verb, fl)


def go_str(value: object) -> str:
    """``fmt.Sprint(value)``: Go's ``%v`` rendering of a JSON-like value.

    ``None`` is ``<nil>``; lists print as ``[a b]``, dicts as ``map[k:v]`` with
    sorted keys, bools as ``true``/``false`` and floats with Go's shortest
    ``%g`` (``1e+06``, ``1.5``).
    """
    return _fmt_arg(value, "v", _PLAIN)


def _sprint(args: list[object] | tuple[object, ...]) -> str:
    # fmt.Sprint adds spaces between operands when neither side is a string.
    out = []
    prev_string = False
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(_fmt_arg(a, "v", _PLAIN))
        prev_string = is_string
    return "".join(out)


def _sprintln(args: list[object] | tuple[object, ...]) -> str:
    return " ".join(_fmt_arg(a, "v", _PLAIN) for a in args) + "\n"


def _parse_num(fmt: str, i: int, end: int) -> tuple[int | None, int]:
    start = i
    num = 0
    while i < end and "0" <= fmt[i] <= "9":
        num = num * 10 + ord(fmt[i]) - 48
        if num > 1_000_000:
            return None, end  # absurd width: Go gives up on the verb
        i += 1
    return (num if i > start else None), i


def go_sprintf(fmt: str, *args: object) -> str:
    """``fmt.Sprintf`` for the verbs and flags Go supports on basic values.

    Mismatches render Go's way: ``%!d(string=x)``, ``%!s(MISSING)``,
    ``%!(EXTRA int=2)``, ``%!(NOVERB)``.
    """
    out: list[str] = []
    argnum = 0
    reordered = False
    end = len(fmt)
    i = 0
    while i < end:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        fl = _Flags()
        while i < end:
            c = fmt[i]
            if c == "#":
                fl.sharp = True
            elif c == "0":
                fl.zero = not fl.minus
            elif c == "+":
                fl.plus = True
            elif c == "-":
                fl.minus = True
                fl.zero = False
            elif c == " ":
                fl.space = True
            else:
                break
            i += 1
        good_argnum = True
        argnum, i, after_index, ok, saw = _arg_number(fmt, i, argnum, len(args))
        reordered = reordered or saw
        good_argnum = good_argnum and ok
        if i < end and fmt[i] == "*":
            i += 1
            if argnum < len(args) and _is_int(args[argnum]):
                fl.wid = int(args[argnum])  # type: ignore[call-overload]
                if fl.wid < 0:
                    fl.wid = -fl.wid
                    fl.minus = True
                    fl.zero = False
            else:
                out.append("%!(BADWIDTH)")
            argnum += 1
            after_index = False
        else:
            fl.wid, i = _parse_num(fmt, i, end)
            if after_index and fl.wid is not None:
                good_argnum = False
        if i < end and fmt[i] == ".":
            i += 1
            if after_index:
                good_argnum = False
            argnum, i, after_index, ok, saw = _arg_number(fmt, i, argnum, len(args))
            reordered = reordered or saw
            good_argnum = good_argnum and ok
            if i < end and fmt[i] == "*":
                i += 1
                if argnum < len(args) and _is_int(args[argnum]):
                    fl.prec = int(args[argnum])  # type: ignore[call-overload]
                    if fl.prec < 0:
                        fl.prec = None
                else:
                    out.append("%!(BADPREC)")
                argnum += 1
                after_index = False
            else:
                fl.prec, i = _parse_num(fmt, i, end)
                if fl.prec is None:
                    fl.prec = 0
        if not after_index:
            argnum, i, after_index, ok, saw = _arg_number(fmt, i, argnum, len(args))
            reordered = reordered or saw
            good_argnum = good_argnum and ok
        if i >= end:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
        elif not good_argnum:
            out.append("%!" + verb + "(BADINDEX)")
        elif argnum >= len(args):
            out.append("%!" + verb + "(MISSING)")
        else:
            sharp_v = False
            if verb == "v":
                sharp_v = fl.sharp  # %#v: Go syntax
                fl.plus = False  # %+v only changes structs
                fl.sharp = False
            if sharp_v and isinstance(args[argnum], str):
                out.append(_pad(go_quote(args[argnum]), fl))  # type: ignore[arg-type]
                argnum += 1
                continue
            if verb == "w":
                out.append(_bad_verb(verb, args[argnum], fl))
            else:
                out.append(_fmt_arg(args[argnum], verb, fl))
            argnum += 1
    if not reordered and argnum < len(args):
        extra = []
        for a in args[argnum:]:
            if a is None or a is _MISSING:
                extra.append("<nil>")
            else:
                extra.append(_go_type(a) + "=" + _fmt_arg(a, "v", _PLAIN))
        out.append("%!(EXTRA " + ", ".join(extra) + ")")
    return "".join(out)


def _arg_number(fmt: str, i: int, argnum: int, numargs: int) -> tuple[int, int, bool, bool, bool]:
    """An explicit ``[n]`` argument index: (argnum, i, found, ok, saw_bracket)."""
    if i >= len(fmt) or fmt[i] != "[":
        return argnum, i, False, True, False
    if len(fmt) - i < 3:
        return argnum, i + 1, False, False, True
    close = fmt.find("]", i + 1)
    if close < 0:
        return argnum, i + 1, False, False, True
    text = fmt[i + 1 : close]
    if not text or not text.isascii() or not text.isdigit():
        return argnum, close + 1, False, False, True
    n = int(text) - 1
    if 0 <= n < numargs:
        return n, close + 1, True, True, True
    return argnum, close + 1, True, False, True


# ==========================================================================
# encoding/json (as docker's json template function configures it)


def _json_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise _FuncError("json: unsupported value: " + _format_float(f, "g", -1))
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = _format_float(f, "e", -1)
        # Go cleans e-09 up to e-9 (but keeps e+21).
        if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
            s = s[:-2] + s[-1]
        return s
    return _format_float(f, "f", -1)


class ContextRow(dict):  # type: ignore[type-arg]
    """A row of a docker formatter context (``ps``, ``images``, ``volume ls``...).

    docker's contexts marshal themselves through ``json.Marshal`` of a map, so
    ``{{json .}}`` on a row (and ``--format json``) prints keys sorted and
    escapes ``<``, ``>``, ``&`` as ``\u003c``..., unlike ``{{json .Field}}``.
    Use this dict subclass for such rows; it behaves as a dict otherwise.
    """

    __slots__ = ()


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _json_string(s: str, escape_html: bool = False) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if escape_html and ch in _HTML_ESCAPES:
            out.append(_HTML_ESCAPES[ch])
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append(_JSON_ESCAPES.get(ch) or f"\\u{o:04x}")
        elif ch in "\u2028\u2029":
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_JSON_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json(v: object, depth: int = 0, escape_html: bool = False) -> str:
    if depth > 500:
        raise _FuncError("json: unsupported value: encountered a cycle")
    if v is None or v is _MISSING:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_string(v, escape_html)
    if isinstance(v, (bytes, bytearray)):
        import base64  # Go marshals []byte as base64; rare enough to import lazily

        return '"' + base64.b64encode(bytes(v)).decode() + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_json(e, depth + 1, escape_html) for e in v) + "]"
    if _is_mapping(v):
        keys = list(v)  # type: ignore[call-overload]
        if isinstance(v, ContextRow):
            escape_html = True
            keys.sort(key=lambda k: str(k).encode("utf-8", "surrogatepass"))
        parts = []
        for k in keys:
            key = k if isinstance(k, str) else go_str(k)
            value = _json(v[k], depth + 1, escape_html)  # type: ignore[index]
            parts.append(_json_string(key, escape_html) + ":" + value)
        return "{" + ",".join(parts) + "}"
    if isinstance(v, complex):
        raise _FuncError("json: unsupported type: complex128")
    attrs = getattr(v, "__dict__", None)
    if isinstance(attrs, dict):
        public = {k: a for k, a in attrs.items() if not k.startswith("_")}
        return _json(public, depth + 1, escape_html)
    raise _FuncError("json: unsupported type: " + _go_type(v))


def go_json(value: object) -> str:
    """docker's ``json`` template function: compact ``encoding/json`` output.

    Matches Go: no spaces, no HTML escaping (docker disables it), U+2028/U+2029
    escaped, floats without a trailing ``.0`` (``1e+21`` style past 1e21) and
    dict keys in the dict's own order (Docker API JSON already carries Go's
    order: sorted map keys, struct fields in declaration order).
    """
    try:
        return _json(value)
    except _FuncError as e:
        raise ValueError(str(e)) from None


# ==========================================================================
# lexer (text/template/parse/lex.go)

_EOF = ""  # what next() returns at end of input

_KEYWORDS = {
    ".": "dot",
    "block": "block",
    "break": "break",
    "continue": "continue",
    "define": "define",
    "else": "else",
    "end": "end",
    "if": "if",
    "range": "range",
    "nil": "nil",
    "template": "template",
    "with": "with",
}
_KEYWORD_TYPES = frozenset(_KEYWORDS.values())
_SPACE_CHARS = " \t\r\n"


class _Tok:
    __slots__ = ("typ", "pos", "val")

    def __init__(self, typ: str, pos: int, val: str) -> None:
        self.typ = typ
        self.pos = pos
        self.val = val

    def __str__(self) -> str:
        if self.typ == "eof":
            return "EOF"
        if self.typ == "error":
            return self.val
        if self.typ in _KEYWORD_TYPES:
            return "<" + self.val + ">"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_alnum(r: str) -> bool:
    return r == "_" or (r != _EOF and (r.isalpha() or r.isdecimal()))


def _fmt_U(r: str) -> str:
    # %#U
    s = f"U+{ord(r):04X}"
    if _is_printable(r):
        s += " '" + r + "'"
    return s


class _Lexer:
    """A direct port of Go's state machine; emits the whole token list."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.at_eof = False
        self.paren_depth = 0
        self.items: list[_Tok] = []

    def run(self) -> list[_Tok]:
        state = self.lex_text
        while state is not None:
            state = state()
        return self.items

    # --- primitives
    def next(self) -> str:
        if self.pos >= len(self.input):
            self.at_eof = True
            return _EOF
        r = self.input[self.pos]
        self.pos += 1
        return r

    def peek(self) -> str:
        r = self.next()
        self.backup()
        return r

    def backup(self) -> None:
        if not self.at_eof and self.pos > 0:
            self.pos -= 1

    def emit(self, typ: str):
        self.items.append(_Tok(typ, self.start, self.input[self.start : self.pos]))
        self.start = self.pos
        return self.lex_inside_action if typ not in ("text", "rightdelim") else self.lex_text

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        r = self.next()
        if r != _EOF and r in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            r = self.next()
            if r == _EOF or r not in valid:
                break
        self.backup()

    def errorf(self, msg: str) -> None:
        self.items.append(_Tok("error", self.start, msg))
        return None

    def has_left_trim(self, i: int) -> bool:
        s = self.input
        return i + 1 < len(s) and s[i] == "-" and s[i + 1] in _SPACE_CHARS

    def has_right_trim(self, i: int) -> bool:
        s = self.input
        return i >= 0 and i + 1 < len(s) and s[i] in _SPACE_CHARS and s[i + 1] == "-"

    def at_right_delim(self) -> tuple[bool, bool]:
        if self.has_right_trim(self.pos) and self.input.startswith("}}", self.pos + 2):
            return True, True
        if self.input.startswith("}}", self.pos):
            return True, False
        return False, False

    def at_terminator(self) -> bool:
        r = self.peek()
        if r != _EOF and r in _SPACE_CHARS:
            return True
        if r == _EOF or r in ".,|:)(":
            return True
        return self.input.startswith("}}", self.pos)

    # --- states
    def lex_text(self):
        x = self.input.find("{{", self.pos)
        if x >= 0:
            if x > self.pos:
                trim = 0
                if self.has_left_trim(x + 2):
                    chunk = self.input[self.start : x]
                    trim = len(chunk) - len(chunk.rstrip(_SPACE_CHARS))
                self.pos = x - trim
                if self.pos > self.start:
                    self.items.append(_Tok("text", self.start, self.input[self.start : self.pos]))
                self.pos = x
                self.ignore()
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.items.append(_Tok("text", self.start, self.input[self.start :]))
            self.start = self.pos
        self.items.append(_Tok("eof", self.pos, ""))
        return None

    def lex_left_delim(self):
        self.pos += 2
        trim = self.has_left_trim(self.pos)
        after = 2 if trim else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.items.append(_Tok("leftdelim", self.start, "{{"))
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self):
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            return self.errorf("unclosed comment")
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.errorf("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += 2
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACE_CHARS))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self):
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += 2
        self.items.append(_Tok("rightdelim", self.start, "}}"))
        self.start = self.pos
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACE_CHARS))
            self.ignore()
        return self.lex_text

    def lex_inside_action(self):
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            return self.errorf("unclosed left paren")
        r = self.next()
        if r == _EOF:
            return self.errorf("unclosed action")
        if r in _SPACE_CHARS:
            self.backup()
            return self.lex_space
        if r == "=":
            return self.emit("assign")
        if r == ":":
            if self.next() != "=":
                return self.errorf("expected :=")
            return self.emit("declare")
        if r == "|":
            return self.emit("pipe")
        if r == '"':
            return self.lex_quote
        if r == "`":
            return self.lex_raw_quote
        if r == "$":
            return self.lex_variable
        if r == "'":
            return self.lex_char
        if r == ".":
            if self.pos < len(self.input) and not ("0" <= self.input[self.pos] <= "9"):
                return self.lex_field
            self.backup()
            return self.lex_number
        if r in "+-" or "0" <= r <= "9":
            self.backup()
            return self.lex_number
        if _is_alnum(r):
            self.backup()
            return self.lex_identifier
        if r == "(":
            self.paren_depth += 1
            return self.emit("leftparen")
        if r == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                return self.errorf("unexpected right paren")
            return self.emit("rightparen")
        if ord(r) <= 0x7F and r.isprintable():
            return self.emit("char")
        return self.errorf("unrecognized character in action: " + _fmt_U(r))

    def lex_space(self):
        num = 0
        while True:
            r = self.peek()
            if r == _EOF or r not in _SPACE_CHARS:
                break
            self.next()
            num += 1
        # A space may start a trim-marked right delimiter " -}}".
        if self.has_right_trim(self.pos - 1) and self.input.startswith("}}", self.pos + 1):
            self.backup()
            if num == 1:
                return self.lex_right_delim
        return self.emit("space")

    def lex_identifier(self):
        while True:
            r = self.next()
            if _is_alnum(r):
                continue
            self.backup()
            word = self.input[self.start : self.pos]
            if not self.at_terminator():
                return self.errorf("bad character " + _fmt_U(r))
            if word in _KEYWORDS:
                return self.emit(_KEYWORDS[word])
            if word in ("true", "false"):
                return self.emit("bool")
            return self.emit("identifier")

    def lex_field(self):
        return self.lex_field_or_variable("field")

    def lex_variable(self):
        if self.at_terminator():
            return self.emit("variable")
        return self.lex_field_or_variable("variable")

    def lex_field_or_variable(self, typ: str):
        if self.at_terminator():
            return self.emit("variable" if typ == "variable" else "dot")
        r = _EOF
        while True:
            r = self.next()
            if not _is_alnum(r):
                self.backup()
                break
        if not self.at_terminator():
            return self.errorf("bad character " + _fmt_U(r))
        return self.emit(typ)

    def lex_char(self):
        while True:
            r = self.next()
            if r == "\\":
                r2 = self.next()
                if r2 != _EOF and r2 != "\n":
                    continue
                return self.errorf("unterminated character constant")
            if r == _EOF or r == "\n":
                return self.errorf("unterminated character constant")
            if r == "'":
                break
        return self.emit("charconst")

    def lex_number(self):
        if not self.scan_number():
            return self.errorf("bad number syntax: " + go_quote(self.input[self.start : self.pos]))
        sign = self.peek()
        if sign in ("+", "-"):
            if not self.scan_number() or self.input[self.pos - 1] != "i":
                return self.errorf("bad number syntax: " + go_quote(self.input[self.start : self.pos]))
            return self.emit("complex")
        return self.emit("number")

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if _is_alnum(self.peek()):
            self.next()
            return False
        return True

    def lex_quote(self):
        while True:
            r = self.next()
            if r == "\\":
                r2 = self.next()
                if r2 != _EOF and r2 != "\n":
                    continue
                return self.errorf("unterminated quoted string")
            if r == _EOF or r == "\n":
                return self.errorf("unterminated quoted string")
            if r == '"':
                break
        return self.emit("string")

    def lex_raw_quote(self):
        while True:
            r = self.next()
            if r == _EOF:
                return self.errorf("unterminated raw quoted string")
            if r == "`":
                break
        return self.emit("rawstring")


# ==========================================================================
# strconv helpers for literals


class _SyntaxErr(Exception):
    pass


def _parse_uint(s: str) -> int | None:
    """``strconv.ParseUint(s, 0, 64)``; None on any error."""
    if not s or not s.isascii():
        return None
    s0 = s
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1] in "bB":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1] in "oO":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1] in "xX":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
    n = 0
    underscores = False
    for c in s:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - 87
        else:
            return None
        if d >= base:
            return None
        n = n * base + d
        if n > _UINT64_MAX:
            return None
    if underscores and not _underscore_ok(s0):
        return None
    return n


def _parse_int(s: str) -> int | None:
    """``strconv.ParseInt(s, 0, 64)``; None on any error."""
    if not s:
        return None
    neg = s[0] == "-"
    body = s[1:] if s[0] in "+-" else s
    u = _parse_uint(body)
    if u is None:
        return None
    v = -u if neg else u
    if not (_INT64_MIN <= v <= _INT64_MAX):
        return None
    return v


def _parse_float(s: str) -> float | None:
    """``strconv.ParseFloat(s, 64)``; None on syntax or range errors."""
    from kapal.units import _go_parse_float  # both modules are cheap

    try:
        return _go_parse_float(s)
    except ValueError:
        return None


def _unquote_char(s: str, i: int, quote: str) -> tuple[int, bool, int]:
    """strconv.UnquoteChar at ``s[i]``: (value, is_byte, next index)."""
    c = s[i]
    if c == quote and quote in "'\"":
        raise _SyntaxErr
    if c != "\\":
        return ord(c), False, i + 1
    if i + 1 >= len(s):
        raise _SyntaxErr
    c = s[i + 1]
    i += 2
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
    if c in simple:
        return simple[c], False, i
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        digits = s[i : i + n]
        if len(digits) < n or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise _SyntaxErr
        v = int(digits, 16)
        if c == "x":
            return v, True, i + n
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise _SyntaxErr
        return v, False, i + n
    if "0" <= c <= "7":
        digits = c + s[i : i + 2]
        if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
            raise _SyntaxErr
        v = int(digits, 8)
        if v > 255:
            raise _SyntaxErr
        return v, True, i + 2
    if c in "'\"":
        if c != quote:
            raise _SyntaxErr
        return ord(c), False, i
    raise _SyntaxErr


def _unquote(lit: str) -> str:
    """``strconv.Unquote`` for the string literals the lexer accepts."""
    if len(lit) < 2:
        raise _SyntaxErr
    q = lit[0]
    if q != lit[-1]:
        raise _SyntaxErr
    body = lit[1:-1]
    if q == "`":
        if "`" in body:
            raise _SyntaxErr
        return body.replace("\r", "")
    if q != '"' or "\n" in body:
        raise _SyntaxErr
    if "\\" not in body and '"' not in body:
        return body
    buf = bytearray()
    i = 0
    while i < len(body):
        v, is_byte, i = _unquote_char(body, i, '"')
        if is_byte:
            buf.append(v)
        else:
            buf += chr(v).encode("utf-8", "surrogatepass")
    return buf.decode("utf-8", "replace")


# ==========================================================================
# parse tree (text/template/parse/node.go)


class _Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _TextNode(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _ListNode(_Node):
    __slots__ = ("nodes",)

    def __init__(self, pos: int, nodes: list[_Node] | None = None) -> None:
        super().__init__(pos)
        self.nodes: list[_Node] = nodes if nodes is not None else []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class _DotNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "."


class _NilNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class _BoolNode(_Node):
    __slots__ = ("value",)

    def __init__(self, pos: int, value: bool) -> None:
        super().__init__(pos)
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class _StringNode(_Node):
    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        super().__init__(pos)
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class _NumberNode(_Node):
    __slots__ = ("text", "is_int", "is_uint", "is_float", "is_complex", "int_v", "float_v", "complex_v")

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text
        self.is_int = self.is_uint = self.is_float = self.is_complex = False
        self.int_v = 0
        self.float_v = 0.0
        self.complex_v = 0j

    def __str__(self) -> str:
        return self.text


class _IdentifierNode(_Node):
    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class _VariableNode(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.idents = name.split(".")

    def __str__(self) -> str:
        return ".".join(self.idents)


class _FieldNode(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.idents = name[1:].split(".")

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


class _ChainNode(_Node):
    __slots__ = ("node", "fields")

    def __init__(self, pos: int, node: _Node, fields: list[str]) -> None:
        super().__init__(pos)
        self.node = node
        self.fields = fields

    def __str__(self) -> str:
        s = str(self.node)
        if isinstance(self.node, _PipeNode):
            s = "(" + s + ")"
        return s + "".join("." + f for f in self.fields)


class _CommandNode(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.args: list[_Node] = []

    def __str__(self) -> str:
        parts = []
        for a in self.args:
            parts.append("(" + str(a) + ")" if isinstance(a, _PipeNode) else str(a))
        return " ".join(parts)


class _PipeNode(_Node):
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.decl: list[_VariableNode] = []
        self.is_assign = False
        self.cmds: list[_CommandNode] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(d) for d in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class _ActionNode(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _PipeNode) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _BranchNode(_Node):
    __slots__ = ("pipe", "list", "else_list")
    keyword = ""

    def __init__(self, pos: int, pipe: _PipeNode, lst: _ListNode, else_list: _ListNode | None) -> None:
        super().__init__(pos)
        self.pipe = pipe
        self.list = lst
        self.else_list = else_list

    def __str__(self) -> str:
        s = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class _IfNode(_BranchNode):
    __slots__ = ()
    keyword = "if"


class _RangeNode(_BranchNode):
    __slots__ = ()
    keyword = "range"


class _WithNode(_BranchNode):
    __slots__ = ()
    keyword = "with"


class _EndNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class _ElseNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"


class _BreakNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{break}}"


class _ContinueNode(_Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


class _TemplateNode(_Node):
    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: _PipeNode | None) -> None:
        super().__init__(pos)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + go_quote(self.name) + "}}"
        return "{{template " + go_quote(self.name) + " " + str(self.pipe) + "}}"


def _is_empty_tree(n: _Node) -> bool:
    if isinstance(n, _ListNode):
        return all(_is_empty_tree(c) for c in n.nodes)
    if isinstance(n, _TextNode):
        return n.text.strip(" \t\n\v\f\r\x85\xa0") == ""
    return False


# ==========================================================================
# parser (text/template/parse/parse.go)

_MAX_PAREN_DEPTH = 100
_OPERAND_START = frozenset(
    (
        "bool",
        "charconst",
        "complex",
        "dot",
        "field",
        "identifier",
        "number",
        "nil",
        "rawstring",
        "string",
        "variable",
        "leftparen",
    )
)


class _ParseError(Exception):
    pass


class _Parser:
    def __init__(self, text: str, funcs: frozenset[str]) -> None:
        self.text = text
        self.funcs = funcs
        self.toks = _Lexer(text).run()
        self.i = 0
        self.lexed = 0  # furthest token handed out: Go's token[0]
        self.vars = ["$"]
        self.range_depth = 0
        self.paren_depth = 0
        self.action_line = 0
        self.trees: dict[str, _ListNode] = {}

    # --- token stream
    def line_of(self, pos: int) -> int:
        return 1 + self.text.count("\n", 0, pos)

    def next(self) -> _Tok:
        if self.i >= len(self.toks):
            return _Tok("eof", len(self.text), "")
        t = self.toks[self.i]
        if self.i > self.lexed:
            self.lexed = self.i
        self.i += 1
        if t.typ == "error":
            self.i = len(self.toks)  # Go's lexer stops after an error
        return t

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Tok:
        save = self.i
        t = self.next()
        self.i = save
        return t

    def next_non_space(self) -> _Tok:
        while True:
            t = self.next()
            if t.typ != "space":
                return t

    def peek_non_space(self) -> _Tok:
        # Like Go: the spaces are consumed, the token itself is not.
        while True:
            t = self.peek()
            if t.typ != "space":
                return t
            self.next()

    # --- errors
    def errorf(self, msg: str) -> None:
        tok = self.toks[min(self.lexed, len(self.toks) - 1)]
        raise _ParseError(f"template: :{self.line_of(tok.pos)}: {msg}")

    def unexpected(self, tok: _Tok, context: str) -> None:
        if tok.typ == "error":
            extra = ""
            line = self.line_of(tok.pos)
            if self.action_line != 0 and self.action_line != line:
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action") :]
            self.errorf(f"{tok}{extra}")
        self.errorf(f"unexpected {tok} in {context}")

    def expect(self, typ: str, context: str) -> _Tok:
        t = self.next_non_space()
        if t.typ != typ:
            self.unexpected(t, context)
        return t

    # --- grammar
    def parse(self) -> dict[str, _ListNode]:
        root = _ListNode(self.peek().pos)
        while self.peek().typ != "eof":
            if self.peek().typ == "leftdelim":
                save = self.i
                self.next()
                if self.next_non_space().typ == "define":
                    self.parse_definition()
                    continue
                self.i = save
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                self.errorf(f"unexpected {n}")
            root.nodes.append(n)
        self.add_tree("", root)
        return self.trees

    def add_tree(self, name: str, tree: _ListNode) -> None:
        old = self.trees.get(name)
        if old is None or _is_empty_tree(old):
            self.trees[name] = tree
        elif not _is_empty_tree(tree):
            self.errorf(f"template: multiple definition of template {go_quote(name)}")

    def _sub_tree(self) -> tuple[_ListNode, _Node]:
        # define/block bodies are separate trees: fresh variables, no range.
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        try:
            return self.item_list()
        finally:
            self.vars, self.range_depth = saved

    def parse_definition(self) -> None:
        context = "define clause"
        name_tok = self.next_non_space()
        if name_tok.typ not in ("string", "rawstring"):
            self.unexpected(name_tok, context)
        name = self.unquote(name_tok.val)
        self.expect("rightdelim", context)
        body, end = self._sub_tree()
        if not isinstance(end, _EndNode):
            self.errorf(f"unexpected {end} in {context}")
        self.add_tree(name, body)

    def unquote(self, lit: str) -> str:
        try:
            return _unquote(lit)
        except _SyntaxErr:
            self.errorf("invalid syntax")
        raise AssertionError  # unreachable

    def item_list(self) -> tuple[_ListNode, _Node]:
        lst = _ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != "eof":
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.errorf("unexpected EOF")
        raise AssertionError

    def text_or_action(self) -> _Node:
        tok = self.next_non_space()
        if tok.typ == "text":
            return _TextNode(tok.pos, tok.val)
        if tok.typ == "leftdelim":
            self.action_line = self.line_of(tok.pos)
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")
        raise AssertionError

    def action(self) -> _Node:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == "block":
            return self.block_control()
        if typ in ("break", "continue"):
            nxt = self.next_non_space()
            if nxt.typ != "rightdelim":
                self.unexpected(nxt, "{{" + typ + "}}")
            if self.range_depth == 0:
                self.errorf("{{" + typ + "}} outside {{range}}")
            return _BreakNode(tok.pos) if typ == "break" else _ContinueNode(tok.pos)
        if typ == "else":
            peek = self.peek_non_space()
            if peek.typ in ("if", "with"):
                return _ElseNode(peek.pos)
            return _ElseNode(self.expect("rightdelim", "else").pos)
        if typ == "end":
            return _EndNode(self.expect("rightdelim", "end").pos)
        if typ == "if":
            return _IfNode(*self.parse_control("if"))
        if typ == "range":
            return _RangeNode(*self.parse_control("range"))
        if typ == "with":
            return _WithNode(*self.parse_control("with"))
        if typ == "template":
            return self.template_control()
        self.backup()
        pos = self.peek().pos
        return _ActionNode(pos, self.pipeline("command", "rightdelim"))

    def parse_control(self, context: str) -> tuple[int, _PipeNode, _ListNode, _ListNode | None]:
        mark = len(self.vars)
        try:
            pipe = self.pipeline(context, "rightdelim")
            if context == "range":
                self.range_depth += 1
            lst, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list = None
            if isinstance(nxt, _ElseNode):
                if context == "if" and self.peek().typ == "if":
                    self.next()
                    else_list = _ListNode(nxt.pos, [_IfNode(*self.parse_control("if"))])
                elif context == "with" and self.peek().typ == "with":
                    self.next()
                    else_list = _ListNode(nxt.pos, [_WithNode(*self.parse_control("with"))])
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, _EndNode):
                        self.errorf(f"expected end; found {nxt}")
            return pipe.pos, pipe, lst, else_list
        finally:
            del self.vars[mark:]

    def template_name(self, tok: _Tok, context: str) -> str:
        if tok.typ not in ("string", "rawstring"):
            self.unexpected(tok, context)
        return self.unquote(tok.val)

    def template_control(self) -> _Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != "rightdelim":
            self.backup()
            pipe = self.pipeline(context, "rightdelim")
        return _TemplateNode(tok.pos, name, pipe)

    def block_control(self) -> _Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, "rightdelim")
        body, end = self._sub_tree()
        if not isinstance(end, _EndNode):
            self.errorf(f"unexpected {end} in {context}")
        self.add_tree(name, body)
        return _TemplateNode(tok.pos, name, pipe)

    def pipeline(self, context: str, end: str) -> _PipeNode:
        pipe = _PipeNode(self.peek_non_space().pos)
        while True:  # declarations
            v = self.peek_non_space()
            if v.typ != "variable":
                break
            self.next_non_space()
            v_index = self.i - 1
            nxt = self.peek_non_space()
            if nxt.typ in ("assign", "declare"):
                pipe.is_assign = nxt.typ == "assign"
                self.next_non_space()
                pipe.decl.append(_VariableNode(v.pos, v.val))
                self.vars.append(v.val)
                break
            if nxt.typ == "char" and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(_VariableNode(v.pos, v.val))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in ("variable", "rightdelim", "rightparen"):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            self.i = v_index
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ in _OPERAND_START:
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def check_pipeline(self, pipe: _PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (_BoolNode, _DotNode, _NilNode, _NumberNode, _StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> _CommandNode:
        cmd = _CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == "space":
                continue
            if tok.typ in ("rightdelim", "rightparen"):
                self.backup()
            elif tok.typ != "pipe":
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == "field":
            pos = self.peek().pos
            fields = []
            while self.peek().typ == "field":
                fields.append(self.next().val[1:])
            if isinstance(node, _FieldNode):
                node = _FieldNode(pos, str(node) + "".join("." + f for f in fields))
            elif isinstance(node, _VariableNode):
                node = _VariableNode(pos, str(node) + "".join("." + f for f in fields))
            elif isinstance(node, (_BoolNode, _StringNode, _NumberNode, _NilNode, _DotNode)):
                self.errorf(f"unexpected . after term {go_quote(str(node))}")
            else:
                node = _ChainNode(pos, node, fields)
        return node

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == "identifier":
            if tok.val not in self.funcs:
                self.errorf(f"function {go_quote(tok.val)} not defined")
            return _IdentifierNode(tok.pos, tok.val)
        if typ == "dot":
            return _DotNode(tok.pos)
        if typ == "nil":
            return _NilNode(tok.pos)
        if typ == "variable":
            v = _VariableNode(tok.pos, tok.val)
            if v.idents[0] not in self.vars:
                self.errorf(f"undefined variable {go_quote(v.idents[0])}")
            return v
        if typ == "field":
            return _FieldNode(tok.pos, tok.val)
        if typ == "bool":
            return _BoolNode(tok.pos, tok.val == "true")
        if typ in ("charconst", "complex", "number"):
            return self.number(tok)
        if typ == "leftparen":
            if self.paren_depth >= _MAX_PAREN_DEPTH:
                self.errorf("max expression depth exceeded")
            self.paren_depth += 1
            try:
                return self.pipeline("parenthesized pipeline", "rightparen")
            finally:
                self.paren_depth -= 1
        if typ in ("string", "rawstring"):
            return _StringNode(tok.pos, tok.val, self.unquote(tok.val))
        self.backup()
        return None

    def number(self, tok: _Tok) -> _NumberNode:
        text = tok.val
        n = _NumberNode(tok.pos, text)
        if tok.typ == "charconst":
            try:
                v, _, j = _unquote_char(text, 1, "'")
            except (_SyntaxErr, IndexError):
                self.errorf("invalid syntax")
                raise AssertionError from None
            if text[j:] != "'":
                self.errorf(f"malformed character constant: {text}")
            n.int_v = v
            n.float_v = float(v)
            n.is_int = n.is_uint = n.is_float = True
            return n
        if tok.typ == "complex":
            c = _parse_complex(text)
            if c is None:
                self.errorf(f"illegal number syntax: {go_quote(text)}")
                raise AssertionError
            n.is_complex = True
            n.complex_v = c
            _simplify_complex(n)
            return n
        if text.endswith("i"):
            f = _parse_float(text[:-1])
            if f is not None:
                n.is_complex = True
                n.complex_v = complex(0, f)
                _simplify_complex(n)
                return n
        u = _parse_uint(text)
        if u is not None:
            n.is_uint = True
        i = _parse_int(text)
        if i is not None:
            n.is_int = True
            n.int_v = i
        if n.is_int:
            n.is_float = True
            n.float_v = float(n.int_v)
        elif n.is_uint:
            n.is_float = True
            n.float_v = float(u)  # type: ignore[arg-type]
        else:
            f = _parse_float(text)
            if f is not None:
                if not any(c in text for c in ".eEpP"):
                    self.errorf(f"integer overflow: {go_quote(text)}")
                n.is_float = True
                n.float_v = f
                if math.isfinite(f) and f == int(f) and _INT64_MIN <= int(f) <= _INT64_MAX:
                    n.is_int = True
                    n.int_v = int(f)
                if math.isfinite(f) and f == int(f) and 0 <= int(f) <= _UINT64_MAX:
                    n.is_uint = True
        if not (n.is_int or n.is_uint or n.is_float):
            self.errorf(f"illegal number syntax: {go_quote(text)}")
        return n


def _parse_complex(text: str) -> complex | None:
    # "1+2i" style: split at the sign that starts the imaginary part.
    for k in range(len(text) - 1, 0, -1):
        if text[k] in "+-" and text[k - 1] not in "eEpP":
            re_part = _parse_float(text[:k])
            im_part = _parse_float(text[k:-1])
            if re_part is None or im_part is None or not text.endswith("i"):
                return None
            return complex(re_part, im_part)
    return None


def _simplify_complex(n: _NumberNode) -> None:
    n.is_float = n.complex_v.imag == 0
    if n.is_float:
        f = n.complex_v.real
        n.float_v = f
        if math.isfinite(f) and f == int(f):
            n.is_int = _INT64_MIN <= int(f) <= _INT64_MAX
            n.int_v = int(f) if n.is_int else 0
            n.is_uint = 0 <= int(f) <= _UINT64_MAX


# ==========================================================================
# functions


class _FuncError(Exception):
    """Raised by template functions; reported as ``error calling NAME: ...``."""


def _indirect_iface(v: object) -> object:
    return _MISSING if v is None else v


def _truth(v: object) -> bool:
    if v is None or v is _MISSING:
        return False
    if isinstance(v, (bool, int, float, complex)):
        return v != 0
    if isinstance(v, (str, bytes, bytearray, list, tuple)) or _is_mapping(v):
        return len(v) > 0  # type: ignore[arg-type]
    return True


def _basic_kind(v: object) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    return None


def _kind(v: object) -> str:
    # reflect.Kind as far as eq cares: slices, maps, anything else struct-like.
    if v is _MISSING:
        return "invalid"
    if isinstance(v, (list, tuple, bytes, bytearray)):
        return "slice"
    if _is_mapping(v):
        return "map"
    return "struct"


def _f_eq(arg1: object, *arg2: object) -> bool:
    arg1 = _indirect_iface(arg1)
    if not arg2:
        raise _FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in arg2:
        arg = _indirect_iface(arg)
        k2 = _basic_kind(arg)
        if k1 != k2:
            if arg1 is not _MISSING and arg is not _MISSING:
                raise _FuncError("incompatible types for comparison")
            truth = False
        elif k1 is not None:
            truth = arg1 == arg
        else:
            kind1, kind2 = _kind(arg1), _kind(arg)
            if kind1 != kind2 and "invalid" not in (kind1, kind2):
                detail = go_sprintf("%s: %v, %s: %v", arg1, _go_type(arg1), _go_type(arg), arg)
                raise _FuncError("non-comparable types " + detail)
            if arg1 is _MISSING or arg is _MISSING:
                truth = arg1 is arg
            else:
                if kind2 in ("slice", "map"):
                    raise _FuncError("non-comparable type " + go_sprintf("%s: %v", arg, _go_type(arg)))
                truth = type(arg1) is type(arg) and arg1 == arg
        if truth:
            return True
    return False


def _f_ne(arg1: object, arg2: object) -> bool:
    return not _f_eq(arg1, arg2)


def _f_lt(arg1: object, arg2: object) -> bool:
    arg1 = _indirect_iface(arg1)
    arg2 = _indirect_iface(arg2)
    k1 = _basic_kind(arg1)
    k2 = _basic_kind(arg2)
    if k1 is None or k2 is None:
        raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError("incompatible types for comparison")
    if k1 in ("bool", "complex"):
        raise _FuncError("invalid type for comparison")
    return arg1 < arg2  # type: ignore[operator]


def _f_le(arg1: object, arg2: object) -> bool:
    return _f_lt(arg1, arg2) or _f_eq(arg1, arg2)


def _f_gt(arg1: object, arg2: object) -> bool:
    return not _f_le(arg1, arg2)


def _f_ge(arg1: object, arg2: object) -> bool:
    return not _f_lt(arg1, arg2)


def _f_not(arg: object) -> bool:
    return not _truth(arg)


def _f_len(item: object) -> int:
    if item is None:
        raise _FuncError("len of nil pointer")
    if item is _MISSING:
        raise _FuncError("reflect: call of reflect.Value.Type on zero Value")
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, (list, tuple, bytes, bytearray)) or _is_mapping(item):
        return len(item)  # type: ignore[arg-type]
    raise _FuncError("len of type " + _go_type(item))


def _index_arg(index: object, cap: int) -> int:
    if index is _MISSING or index is None:
        raise _FuncError("cannot index slice/array with nil")
    if not _is_int(index):
        raise _FuncError("cannot index slice/array with type " + _go_type(index))
    x: int = index  # type: ignore[assignment]
    if x < 0 or x > cap:
        raise _FuncError(f"index out of range: {x}")
    return x


def _f_index(item: object, *indexes: object) -> object:
    item = _indirect_iface(item)
    if item is _MISSING:
        raise _FuncError("index of untyped nil")
    for index in indexes:
        index = _indirect_iface(index)
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogatepass")
            x = _index_arg(index, len(data))
            if x == len(data):
                raise _FuncError("reflect: string index out of range")
            item = data[x]
        elif isinstance(item, (list, tuple, bytes, bytearray)):
            x = _index_arg(index, len(item))
            if x == len(item):
                raise _FuncError("reflect: slice index out of range")
            item = item[x]
        elif _is_mapping(item):
            if index is _MISSING:
                raise _FuncError("value is nil; should be of type string")
            key = index
            if not isinstance(key, str):
                raise _FuncError(f"value has type {_go_type(key)}; should be string")
            try:
                item = item.get(key)  # type: ignore[attr-defined]
            except (TypeError, AttributeError):
                item = None
        else:
            raise _FuncError("can't index item of type " + _go_type(item))
    return item


def _f_slice(item: object, *indexes: object) -> object:
    item = _indirect_iface(item)
    if item is _MISSING:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _FuncError("cannot 3-index slice a string")
        seq: object = item.encode("utf-8", "surrogatepass")
    elif isinstance(item, (list, tuple, bytes, bytearray)):
        seq = item
    else:
        raise _FuncError("can't slice item of type " + _go_type(item))
    length = len(seq)  # type: ignore[arg-type]
    idx = [0, length, length]
    for i, index in enumerate(indexes):
        idx[i] = _index_arg(_indirect_iface(index), length)
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise _FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = seq[idx[0] : idx[1]]  # type: ignore[index]
    if isinstance(item, str):
        return part.decode("utf-8", "replace")
    return part


def _eval_args(args: tuple[object, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(["<no value>" if a is None or a is _MISSING else a for a in args])


def _f_html(*args: object) -> str:
    s = _eval_args(args)
    table = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\x00": "\ufffd"}
    return "".join(table.get(c, c) for c in s)


def _f_js(*args: object) -> str:
    s = _eval_args(args)
    table = {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "<": "\\u003C",
        ">": "\\u003E",
        "&": "\\u0026",
        "=": "\\u003D",
    }
    out = []
    for c in s:
        o = ord(c)
        if c in table:
            out.append(table[c])
        elif o < 0x20:
            out.append(f"\\u00{o:02X}")
        elif o < 0x80 or _is_printable(c):
            out.append(c)
        else:
            out.append(f"\\u{o:04X}")
    return "".join(out)


def _f_urlquery(*args: object) -> str:
    s = _eval_args(args)
    out = []
    for b in s.encode("utf-8", "surrogatepass"):
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_.~"):
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def _f_print(*args: object) -> str:
    return _sprint(args)


def _f_println(*args: object) -> str:
    return _sprintln(args)


def _f_printf(fmt: str, *args: object) -> str:
    return go_sprintf(fmt, *args)


def _f_call(name: str, fn: object, *args: object) -> object:
    fn = _indirect_iface(fn)
    if fn is _MISSING:
        raise _FuncError("call of nil")
    if not callable(fn):
        raise _FuncError(f"non-function {name} of type {_go_type(fn)}")
    return fn(*[None if a is _MISSING else a for a in args])


def _f_json(v: object) -> str:
    return _json(v)


def _f_split(s: str, sep: str) -> list[str]:
    if sep == "":
        return list(s)
    return s.split(sep)


def _f_join(elems: list[str] | None, sep: str) -> str:
    return sep.join(elems or ())


def _go_case(s: str, upper: bool) -> str:
    # Go maps rune by rune (no "ß" -> "SS" expansions).
    out = []
    for c in s:
        m = c.upper() if upper else c.lower()
        out.append(m if len(m) == 1 else c)
    return "".join(out)


def _f_upper(s: str) -> str:
    return s.upper() if s.isascii() else _go_case(s, True)


def _f_lower(s: str) -> str:
    return s.lower() if s.isascii() else _go_case(s, False)


def _is_separator(c: str) -> bool:
    # strings.Title's notion of a word boundary.
    if c.isascii():
        return not (c.isalnum() or c == "_")
    if c.isalpha() or c.isdecimal():
        return False
    return c.isspace()


def _f_title(s: str) -> str:
    out = []
    prev = " "
    for c in s:
        if _is_separator(prev):
            t = c.title()
            out.append(t if len(t) == 1 else c)
        else:
            out.append(c)
        prev = c
    return "".join(out)


def _f_pad(source: str, prefix: int, suffix: int) -> str:
    if source == "":
        return source
    if prefix < 0 or suffix < 0:
        raise _FuncError("strings: negative Repeat count")
    return " " * prefix + source + " " * suffix


def _f_truncate(source: str, length: int) -> str:
    data = source.encode("utf-8", "surrogatepass")
    if len(data) < length:
        return source
    if length < 0:
        raise _FuncError(f"runtime error: slice bounds out of range [:{length}]")
    return data[:length].decode("utf-8", "replace")


class _Func:
    __slots__ = ("impl", "params", "variadic")

    def __init__(self, impl: object, params: tuple[str, ...], variadic: str | None = None) -> None:
        self.impl = impl
        self.params = params
        self.variadic = variadic


# Parameter kinds: "any" (interface{}), "value" (reflect.Value: sees missing
# values as such), "str", "int", "strs" ([]string).
_BUILTINS: dict[str, _Func] = {
    "and": _Func(None, ("value",), "value"),
    "or": _Func(None, ("value",), "value"),
    "call": _Func(_f_call, ("value",), "value"),
    "html": _Func(_f_html, (), "any"),
    "index": _Func(_f_index, ("value",), "value"),
    "slice": _Func(_f_slice, ("value",), "value"),
    "js": _Func(_f_js, (), "any"),
    "len": _Func(_f_len, ("value",)),
    "not": _Func(_f_not, ("value",)),
    "print": _Func(_f_print, (), "any"),
    "printf": _Func(_f_printf, ("str",), "any"),
    "println": _Func(_f_println, (), "any"),
    "urlquery": _Func(_f_urlquery, (), "any"),
    "eq": _Func(_f_eq, ("value",), "value"),
    "ge": _Func(_f_ge, ("value", "value")),
    "gt": _Func(_f_gt, ("value", "value")),
    "le": _Func(_f_le, ("value", "value")),
    "lt": _Func(_f_lt, ("value", "value")),
    "ne": _Func(_f_ne, ("value", "value")),
    # docker/cli templates.basicFunctions
    "json": _Func(_f_json, ("any",)),
    "split": _Func(_f_split, ("str", "str")),
    "join": _Func(_f_join, ("strs", "str")),
    "title": _Func(_f_title, ("str",)),
    "lower": _Func(_f_lower, ("str",)),
    "upper": _Func(_f_upper, ("str",)),
    "pad": _Func(_f_pad, ("str", "int", "int")),
    "truncate": _Func(_f_truncate, ("str", "int")),
}


def _first(v: str, *_: object) -> str:
    return v


# docker/cli templates.HeaderFunctions: keep column titles intact.
_HEADER_FUNCS: dict[str, _Func] = dict(_BUILTINS)
_HEADER_FUNCS.update(
    {
        "json": _Func(_first, ("str",)),
        "split": _Func(_first, ("str", "str")),
        "join": _Func(_first, ("str", "str")),
        "title": _Func(_first, ("str",)),
        "lower": _Func(_first, ("str",)),
        "upper": _Func(_first, ("str",)),
        "truncate": _Func(_first, ("str", "int")),
    }
)

_FUNC_NAMES = frozenset(_BUILTINS)


# ==========================================================================
# execution (text/template/exec.go)

_BREAK = 1
_CONTINUE = 2
_MAX_EXEC_DEPTH = 100

_KIND_NAMES = {
    "str": "string",
    "int": "int",
    "strs": "[]string",
    "any": "interface {}",
    "value": "reflect.Value",
}


class _ExecError(Exception):
    pass


class _State:
    def __init__(self, tmpl: Template, funcs: dict[str, _Func], missingkey: str) -> None:
        self.tmpl = tmpl
        self.funcs = funcs
        self.missingkey = missingkey
        self.out: list[str] = []
        self.vars: list[list[object]] = []
        self.node: _Node | None = None
        self.name = ""
        self.depth = 0

    # --- errors
    def errorf(self, msg: str) -> None:
        if self.node is None:
            raise _ExecError(f"template: {self.name}: {msg}")
        text = self.tmpl.text
        pos = self.node.pos
        before = text[:pos]
        nl = before.rfind("\n")
        col = len(before[nl + 1 :].encode("utf-8", "surrogatepass"))
        line = 1 + before.count("\n")
        raise _ExecError(f"template: :{line}:{col}: executing {go_quote(self.name)} at <{self.node}>: {msg}")

    # --- variables
    def var_value(self, name: str) -> object:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        self.errorf(f"undefined variable: {name}")
        raise AssertionError

    def set_var(self, name: str, value: object) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        self.errorf(f"undefined variable: {name}")

    # --- walking
    def walk(self, dot: object, node: _Node) -> int:
        self.node = node
        if isinstance(node, _ActionNode):
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.node = node
                self.out.append("<no value>" if val is _MISSING else _fmt_arg(val, "v", _PLAIN))
            return 0
        if isinstance(node, _TextNode):
            self.out.append(node.text)
            return 0
        if isinstance(node, _ListNode):
            for n in node.nodes:
                sig = self.walk(dot, n)
                if sig:
                    return sig
            return 0
        if isinstance(node, (_IfNode, _WithNode)):
            mark = len(self.vars)
            try:
                val = self.eval_pipeline(dot, node.pipe)
                if _truth(val):
                    return self.walk(val if isinstance(node, _WithNode) else dot, node.list)
                if node.else_list is not None:
                    return self.walk(dot, node.else_list)
                return 0
            finally:
                del self.vars[mark:]
        if isinstance(node, _RangeNode):
            return self.walk_range(dot, node)
        if isinstance(node, _TemplateNode):
            self.walk_template(dot, node)
            return 0
        if isinstance(node, _BreakNode):
            return _BREAK
        if isinstance(node, _ContinueNode):
            return _CONTINUE
        self.errorf(f"unknown node: {node}")
        raise AssertionError

    def walk_range(self, dot: object, r: _RangeNode) -> int:
        self.node = r
        mark0 = len(self.vars)
        try:
            val = self.eval_pipeline(dot, r.pipe)
            mark = len(self.vars)
            ndecl = len(r.pipe.decl)

            def one(index: object, elem: object) -> int:
                if ndecl > 0:
                    self.vars[-1][1] = elem
                if ndecl > 1:
                    self.vars[-2][1] = index
                sig = self.walk(elem, r.list)
                del self.vars[mark:]
                return sig

            items: list[tuple[object, object]] | None = None
            if isinstance(val, (list, tuple, bytes, bytearray)):
                items = list(enumerate(val))
            elif _is_mapping(val):
                items = _sorted_items(val)
            elif _is_int(val):
                n: int = val  # type: ignore[assignment]
                if ndecl > 1:
                    self.errorf(f"can't use {n} to iterate over more than one variable")
                if n < 0:
                    self.errorf("range can't iterate over a negative number")
                items = [(i, i) for i in range(n)]
            elif val is not _MISSING:
                self.errorf(f"range can't iterate over {go_str(val)}")
            if items:
                for index, elem in items:
                    if one(index, elem) == _BREAK:
                        break
                return 0
            if r.else_list is not None:
                return self.walk(dot, r.else_list)
            return 0
        finally:
            del self.vars[mark0:]

    def walk_template(self, dot: object, t: _TemplateNode) -> None:
        self.node = t
        tree = self.tmpl._trees.get(t.name)
        if tree is None:
            self.errorf(f"template {go_quote(t.name)} not defined")
            raise AssertionError
        if self.depth >= _MAX_EXEC_DEPTH:
            self.errorf(f"exceeded maximum template depth ({_MAX_EXEC_DEPTH})")
        dot = self.eval_pipeline(dot, t.pipe)
        saved = self.vars, self.name
        self.vars, self.name = [["$", dot]], t.name
        self.depth += 1
        try:
            self.walk(dot, tree)
        finally:
            self.vars, self.name = saved
            self.depth -= 1

    # --- evaluation
    def eval_pipeline(self, dot: object, pipe: _PipeNode | None) -> object:
        if pipe is None:
            return _MISSING
        self.node = pipe
        value: object = _NOFINAL
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if value is None:
                value = _MISSING  # an interface{} holding nil digs down to nothing
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.idents[0], value)
            else:
                self.vars.append([v.idents[0], value])
        return value

    def not_a_function(self, args: list[_Node], final: object) -> None:
        if len(args) > 1 or final is not _NOFINAL:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: object, cmd: _CommandNode, final: object) -> object:
        first = cmd.args[0]
        if isinstance(first, _FieldNode):
            return self.eval_field_node(dot, first, cmd.args, final)
        if isinstance(first, _ChainNode):
            return self.eval_chain_node(dot, first, cmd.args, final)
        if isinstance(first, _IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, _PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, _VariableNode):
            return self.eval_variable_node(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, _BoolNode):
            return first.value
        if isinstance(first, _DotNode):
            return dot
        if isinstance(first, _NilNode):
            self.errorf("nil is not a command")
        if isinstance(first, _NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, _StringNode):
            return first.text
        self.errorf(f"can't evaluate command {go_quote(str(first))}")
        raise AssertionError

    def ideal_constant(self, n: _NumberNode) -> object:
        self.node = n
        text = n.text
        if n.is_complex:
            return n.complex_v
        is_hex_int = len(text) > 2 and text[0] == "0" and text[1] in "xX" and not any(c in text for c in "pP")
        if n.is_float and not is_hex_int and text[:1] != "'" and any(c in text for c in ".eEpP"):
            return n.float_v
        if n.is_int:
            return n.int_v
        if n.is_uint:
            self.errorf(f"{text} overflows int")
        return _MISSING

    def eval_field_node(self, dot: object, field: _FieldNode, args: list[_Node], final: object) -> object:
        self.node = field
        return self.eval_field_chain(dot, dot, field, field.idents, args, final)

    def eval_chain_node(
        self, dot: object, chain: _ChainNode, args: list[_Node] | None, final: object
    ) -> object:
        self.node = chain
        if isinstance(chain.node, _NilNode):
            self.errorf(f"indirection through explicit nil in {chain}")
        # Only a parenthesised pipeline or a function call can head a chain.
        node = chain.node
        self.node = node
        if isinstance(node, _PipeNode):
            pipe = self.eval_pipeline(dot, node)
        elif isinstance(node, _IdentifierNode):
            pipe = self.eval_function(dot, node, node, None, _NOFINAL)
        else:
            pipe = self.eval_arg(dot, "value", node)
        return self.eval_field_chain(dot, pipe, chain, chain.fields, args, final)

    def eval_variable_node(
        self, dot: object, v: _VariableNode, args: list[_Node] | None, final: object
    ) -> object:
        self.node = v
        value = self.var_value(v.idents[0])
        if len(v.idents) == 1:
            self.not_a_function(args or [v], final)
            return value
        return self.eval_field_chain(dot, value, v, v.idents[1:], args, final)

    def eval_field_chain(
        self,
        dot: object,
        receiver: object,
        node: _Node,
        idents: list[str],
        args: list[_Node] | None,
        final: object,
    ) -> object:
        # Values fetched out of maps have Go's static type interface{}; the
        # head of the chain has its concrete type (only error texts differ).
        iface = False
        for name in idents[:-1]:
            receiver = self.eval_field(dot, name, node, None, _NOFINAL, receiver, iface)
            iface = True
        return self.eval_field(dot, idents[-1], node, args, final, receiver, iface)

    def eval_field(
        self,
        dot: object,
        name: str,
        node: _Node,
        args: list[_Node] | None,
        final: object,
        receiver: object,
        iface: bool = False,
    ) -> object:
        if receiver is _MISSING:
            if self.missingkey == "error":
                self.errorf(f"nil data; no entry for key {go_quote(name)}")
            return _MISSING
        if receiver is None:
            self.errorf(f"nil pointer evaluating interface {{}}.{name}")
        has_args = (args is not None and len(args) > 1) or final is not _NOFINAL
        if _is_mapping(receiver):
            try:
                present = name in receiver  # type: ignore[operator]
            except TypeError:
                present = False
            if not present and type(receiver) is not dict and name[:1].isupper():
                attr = getattr(receiver, name, _MISSING)
                if attr is not _MISSING:
                    return self.use_attribute(dot, attr, name, node, args, final, has_args)
            if has_args:
                self.errorf(f"{name} is not a method but has arguments")
            if present:
                return receiver[name]  # type: ignore[index]
            if self.missingkey == "error":
                self.errorf(f"map has no entry for key {go_quote(name)}")
            if self.missingkey == "zero":
                return None
            return _MISSING
        if isinstance(receiver, (str, bytes, bytearray, int, float, complex, list, tuple)):
            tname = "interface {}" if iface else _go_type(receiver)
            self.errorf(f"can't evaluate field {name} in type {tname}")
        if name.startswith("_"):
            self.errorf(f"can't evaluate field {name} in type {type(receiver).__name__}")
        attr = getattr(receiver, name, _MISSING)
        if attr is _MISSING:
            self.errorf(f"can't evaluate field {name} in type {type(receiver).__name__}")
        return self.use_attribute(dot, attr, name, node, args, final, has_args)

    def use_attribute(
        self,
        dot: object,
        attr: object,
        name: str,
        node: _Node,
        args: list[_Node] | None,
        final: object,
        has_args: bool,
    ) -> object:
        if callable(attr) and not isinstance(attr, type):
            argv = [self.eval_arg(dot, "any", a) for a in (args or [])[1:]]
            if final is not _NOFINAL:
                argv.append(None if final is _MISSING else final)
            self.node = node
            try:
                return attr(*argv)
            except Exception as e:  # a Go method returning an error
                self.node = node
                self.errorf(f"error calling {name}: {e}")
        if has_args:
            self.errorf(f"{name} has arguments but cannot be invoked as function")
        return attr

    def eval_function(
        self,
        dot: object,
        node: _IdentifierNode,
        cmd: _Node,
        args: list[_Node] | None,
        final: object,
    ) -> object:
        self.node = node
        name = node.name
        fn = self.funcs.get(name)
        if fn is None:
            self.errorf(f"{go_quote(name)} is not a defined function")
            raise AssertionError
        argn = (args or [])[1:]
        num_in = len(argn) + (final is not _NOFINAL)
        if fn.variadic is not None:
            num_fixed = len(fn.params)
            if num_in < num_fixed:
                self.errorf(f"wrong number of args for {name}: want at least {num_fixed} got {len(argn)}")
        else:
            num_fixed = len(argn)
            if num_in != len(fn.params):
                self.errorf(f"wrong number of args for {name}: want {len(fn.params)} got {num_in}")
        if fn.impl is None:  # and/or short-circuit, returning the deciding operand
            want = name == "or"
            v: object = _MISSING
            for a in argn:
                v = self.eval_arg(dot, "value", a)
                if _truth(v) == want:
                    return v
            if final is not _NOFINAL:
                v = final
            return v
        argv = []
        for i, a in enumerate(argn):
            kind = fn.params[i] if i < num_fixed else fn.variadic
            argv.append(self.eval_arg(dot, kind, a))  # type: ignore[arg-type]
        if final is not _NOFINAL:
            if fn.variadic is None:
                kind = fn.params[-1]
            elif num_in - 1 < num_fixed:
                kind = fn.params[num_in - 1]
            else:
                kind = fn.variadic
            argv.append(self.validate(final, kind))
        if name == "call":  # Go passes the callee's source text for its error message
            argv.insert(0, str(argn[0]) if argn else go_str(final))
        try:
            return fn.impl(*argv)  # type: ignore[misc,operator]
        except _FuncError as e:
            self.node = cmd
            self.errorf(f"error calling {name}: {e}")
        except RecursionError:
            self.node = cmd
            self.errorf(f"error calling {name}: value too deeply nested")
        raise AssertionError

    def validate(self, value: object, kind: str) -> object:
        if value is _MISSING:
            if kind == "value":
                return _MISSING
            if kind in ("any", "strs"):
                return None
            self.errorf(f"invalid value; expected {_KIND_NAMES[kind]}")
        if kind in ("any", "value"):
            return value
        if kind == "str":
            if isinstance(value, str):
                return value
        elif kind == "int":
            if _is_int(value):
                return value
        elif kind == "strs":
            if value is None:
                return None
            if isinstance(value, (list, tuple)) and all(isinstance(e, str) for e in value):
                return list(value)
        self.errorf(f"wrong type for value; expected {_KIND_NAMES[kind]}; got {_go_type(value)}")
        raise AssertionError

    def eval_arg(self, dot: object, kind: str, n: _Node) -> object:
        self.node = n
        if isinstance(n, _DotNode):
            return self.validate(dot, kind)
        if isinstance(n, _NilNode):
            if kind == "value":
                return _MISSING
            if kind in ("any", "strs"):
                return None
            self.errorf(f"cannot assign nil to {_KIND_NAMES[kind]}")
        if isinstance(n, _FieldNode):
            return self.validate(self.eval_field_node(dot, n, [n], _NOFINAL), kind)
        if isinstance(n, _VariableNode):
            return self.validate(self.eval_variable_node(dot, n, None, _NOFINAL), kind)
        if isinstance(n, _PipeNode):
            return self.validate(self.eval_pipeline(dot, n), kind)
        if isinstance(n, _IdentifierNode):
            return self.validate(self.eval_function(dot, n, n, None, _NOFINAL), kind)
        if isinstance(n, _ChainNode):
            return self.validate(self.eval_chain_node(dot, n, None, _NOFINAL), kind)
        if kind == "str":
            if isinstance(n, _StringNode):
                return n.text
            self.errorf(f"expected string; found {n}")
        if kind == "int":
            if isinstance(n, _NumberNode) and n.is_int:
                return n.int_v
            self.errorf(f"expected integer; found {n}")
        if kind in ("any", "value"):
            if isinstance(n, _BoolNode):
                return n.value
            if isinstance(n, _NumberNode):
                return self.ideal_constant(n)
            if isinstance(n, _StringNode):
                return n.text
        self.errorf(f"can't handle {n} for arg of type {_KIND_NAMES[kind]}")
        raise AssertionError


# ==========================================================================
# public API


class Template:
    """A parsed template; :meth:`render` it against data as often as needed."""

    __slots__ = ("text", "_trees")

    def __init__(self, text: str, trees: dict[str, _ListNode]) -> None:
        self.text = text
        self._trees = trees

    def render(self, data: object, *, missingkey: str = "default") -> str:
        """Execute the template like Go's ``Template.Execute``.

        ``missingkey`` mirrors Go's ``Option("missingkey=...")``: ``"default"``
        (or ``"invalid"``) prints ``<no value>`` for missing map keys,
        ``"zero"`` yields nil, ``"error"`` fails -- docker's ``inspect`` uses
        ``"error"`` when it falls back to raw JSON maps.
        """
        return self._execute(data, _BUILTINS, missingkey)

    def _execute(self, data: object, funcs: dict[str, _Func], missingkey: str) -> str:
        if missingkey not in ("default", "invalid", "zero", "error"):
            raise ValueError(f"unrecognized option: missingkey={missingkey}")
        state = _State(self, funcs, missingkey)
        dot = _MISSING if data is None else data
        state.vars = [["$", dot]]
        try:
            state.walk(dot, self._trees[""])
        except _ExecError as e:
            raise TemplateError(str(e), "".join(state.out)) from None
        except RecursionError:
            raise TemplateError("template: : exceeded maximum template depth", "".join(state.out)) from None
        return "".join(state.out)


def parse(text: str) -> Template:
    """Parse a Go template with docker's function set; raise :class:`TemplateError`.

    Error messages are Go's (``template: :1: function "foo" not defined``) so
    the CLI can print them after docker's ``template parsing error: `` prefix.
    """
    try:
        trees = _Parser(text, _FUNC_NAMES).parse()
    except _ParseError as e:
        raise TemplateError(str(e)) from None
    except RecursionError:
        raise TemplateError("template: :1: max expression depth exceeded") from None
    return Template(text, trees)


def is_table(fmt: str) -> tuple[bool, str]:
    """docker's ``Format.IsTable``: a ``table`` prefix selects aligned columns.

    Returns ``(True, rest)`` where ``rest`` follows the 5-letter prefix (docker
    only checks the prefix, so ``table{{.ID}}`` counts too), else
    ``(False, fmt)``.
    """
    if fmt.startswith("table"):
        return True, fmt[5:]
    return False, fmt


def normalize_format(fmt: str) -> tuple[bool, str]:
    """docker's ``Context.preFormat``: the template text docker actually parses.

    Strips the ``table`` prefix, maps ``json`` to ``{{json .}}``, trims spaces
    and turns the two-character sequences ``\\t`` and ``\\n`` (as typed in a
    shell) into real tabs and newlines.  Returns ``(is_table, template_text)``.
    """
    table, rest = is_table(fmt)
    if not table and fmt == "json":
        rest = "{{json .}}"
    rest = rest.strip(" ")
    return table, rest.replace("\\t", "\t").replace("\\n", "\n")


def render_table(header: dict[str, str], rows: list[object], fmt: str, *, missingkey: str = "default") -> str:
    """Render docker's ``table`` output: header row plus rows, tab-aligned.

    ``fmt`` may include the ``table`` prefix.  Cells are separated by tabs in
    the format; the header is the same template executed against ``header``
    (field name -> column title) with docker's header functions (``upper``,
    ``json``... return the title unchanged), and header execution errors are
    ignored as docker does.  Alignment is docker's tabwriter (minwidth 10,
    padding 3); every row ends with a newline.
    """
    _, text = normalize_format(fmt)
    tmpl = parse(text)
    body = "".join(tmpl._execute(row, _BUILTINS, missingkey) + "\n" for row in rows)
    try:
        head = tmpl._execute(header, _HEADER_FUNCS, "default")
    except TemplateError as e:
        head = e.partial
    return tabwrite_text(head + "\n" + body)


# ==========================================================================
# tabwriter (docker/cli cli/command/formatter/tabwriter, from Go's text/tabwriter)


def _char_width(c: str) -> int:
    import unicodedata  # only reached for non-ASCII text

    o = ord(c)
    if o < 0x20 or 0x7F <= o <= 0x9F or o == 0xAD:
        return 0
    if o < 0x300:
        return 1
    if unicodedata.category(c) in ("Mn", "Me", "Cf", "Cc", "Cs") or 0x200B <= o <= 0x200F:
        return 0
    if unicodedata.east_asian_width(c) in ("W", "F"):
        return 2
    return 1


def _text_width(s: str) -> int:
    """go-runewidth's StringWidth: display columns, CJK wide chars count 2."""
    if s.isascii():
        return sum(1 for c in s if " " <= c <= "~")
    return sum(_char_width(c) for c in s)


def tabwrite_text(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-terminated cells exactly like Go's ``tabwriter`` (pad char ' ', no flags).

    Elastic tabstops: a column is a run of consecutive lines that have a cell
    in it; its width is ``max(minwidth, widest cell + padding)``.  Text after a
    line's last tab is not part of any column and is never padded; a line with
    no tab at all ends the current block of columns.
    """
    out: list[str] = []
    lines: list[list[tuple[str, int]]] = [[]]
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            line = lines[i]
            for j, (cell, width) in enumerate(line):
                out.append(cell)
                if j < len(widths):
                    out.append(" " * (widths[j] - width))
            if i + 1 != len(lines):
                out.append("\n")

    def fmt_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                w = lines[this][column][1] + padding
                if w > width:
                    width = w
                this += 1
            widths.append(width)
            fmt_block(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    def flush() -> None:
        fmt_block(0, len(lines))
        lines[:] = [[]]

    start = 0
    for idx, ch in enumerate(text):
        if ch in "\t\v\n\f":
            cell = text[start:idx]
            lines[-1].append((cell, _text_width(cell)))
            start = idx + 1
            ncells = len(lines[-1])
            if ch in "\n\f":
                lines.append([])
                if ch == "\f" or ncells == 1:
                    flush()
    if start < len(text):
        cell = text[start:]
        lines[-1].append((cell, _text_width(cell)))
    flush()
    return "".join(out)


def tabwrite(lines: list[list[str]], minwidth: int = 10, padding: int = 3) -> str:
    """Align rows of cells; each row is joined with tabs and ends with a newline.

    The last cell of each row is trailing text (unpadded), as in docker's
    tables.  Defaults are docker's (minwidth 10, padding 3).
    """
    return tabwrite_text("".join("\t".join(cells) + "\n" for cells in lines), minwidth, padding)
