"""JSON text for every form crashext prints or saves, with or without the
standard library's :mod:`json`.

PyKdump's embedded Python (crash's ``epython``) ships a fixed subset of
the standard library without ``json`` (see ``shared/pykdump-api.md``,
"The embedded standard library"), yet ``xa check -f json``, ``xa scan -f
json`` and ``xa capture`` must work there.  :func:`dumps` and
:func:`loads` use :mod:`json` when it imports and otherwise a small
encoder/decoder of this module that gives the same text for what crashext
writes (dicts, lists, tuples, str, int, float, bool, None; RFC 8259), so
``xa check -f json`` inside crash prints byte for byte what ``crashext
check -f json`` prints (the tests compare both on real analyses).

>>> dumps({"b": [1, 2], "a": "x\\u00e9"}, sort_keys=True)
'{"a": "x\\\\u00e9", "b": [1, 2]}'
>>> loads('{"a": [1, 2.5, null, true]}')
{'a': [1, 2.5, None, True]}
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Tuple

try:
    import json as _json
except ImportError:                     # PyKdump: no json in its pylib
    _json = None

#: True when the standard library's json module is used (False inside
#: PyKdump's embedded Python).
STDLIB = _json is not None

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r",
            "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_NEEDS_ESCAPE = re.compile(r'([\\"]|[^\ -~])')


def _escape_char(m: "re.Match[str]") -> str:
    c = m.group(0)
    e = _ESCAPES.get(c)
    if e is not None:
        return e
    n = ord(c)
    if n < 0x10000:
        return "\\u%04x" % n
    n -= 0x10000                        # a surrogate pair, as json does
    return "\\u%04x\\u%04x" % (0xD800 | (n >> 10), 0xDC00 | (n & 0x3FF))


def _string(s: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


def _float(f: float, allow_nan: bool) -> str:
    if f != f or f in (float("inf"), float("-inf")):
        if not allow_nan:
            raise ValueError("Out of range float values are not JSON "
                             "compliant: %r" % f)
        return "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")
    return float.__repr__(f)


def _key(k: Any, allow_nan: bool) -> str:
    # json: str keys as they are; int/float/bool/None keys converted.
    if isinstance(k, str):
        return k
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    if isinstance(k, float):
        return _float(k, allow_nan)
    raise TypeError("keys must be str, int, float, bool or None, not %s"
                    % type(k).__name__)


def _encode(obj: Any, indent: Optional[str], item_sep: str, key_sep: str,
            sort_keys: bool, allow_nan: bool) -> str:
    """The json module's encoding of ``obj`` (ensure_ascii=True,
    check_circular=False), without the json module."""
    parts: List[str] = []
    add = parts.append

    def open_(opener: str, closer: str, level: int) -> Tuple[str, str]:
        """Write a non-empty container's opening; return (item
        separator, closing text) at this nesting ``level``."""
        if level > 900:
            raise ValueError("document nested too deeply")
        if indent is None:
            add(opener)
            return item_sep, closer
        pad = "\n" + indent * (level + 1)
        add(opener + pad)
        return item_sep + pad, "\n" + indent * level + closer

    def enc(o: Any, level: int) -> None:
        if isinstance(o, str):
            add(_string(o))
        elif o is None:
            add("null")
        elif o is True:
            add("true")
        elif o is False:
            add("false")
        elif isinstance(o, int):
            add(int.__repr__(o))
        elif isinstance(o, float):
            add(_float(o, allow_nan))
        elif isinstance(o, (list, tuple)):
            if not o:
                add("[]")
                return
            sep, close = open_("[", "]", level)
            first = True
            for v in o:
                if not first:
                    add(sep)
                first = False
                enc(v, level + 1)
            add(close)
        elif isinstance(o, dict):
            if not o:
                add("{}")
                return
            items = [(_key(k, allow_nan), v) for k, v in o.items()]
            if sort_keys:
                # json sorts the original keys; for the str keys crashext
                # writes that is the same order.
                items.sort(key=lambda kv: kv[0])
            sep, close = open_("{", "}", level)
            first = True
            for k, v in items:
                if not first:
                    add(sep)
                first = False
                add(_string(k))
                add(key_sep)
                enc(v, level + 1)
            add(close)
        else:
            raise TypeError("Object of type %s is not JSON serializable"
                            % type(o).__name__)

    enc(obj, 0)
    return "".join(parts)


def dumps(obj: Any, indent: Optional[int] = None, sort_keys: bool = False,
          separators: Optional[Tuple[str, str]] = None,
          allow_nan: bool = True) -> str:
    """``json.dumps(obj, indent=..., sort_keys=..., separators=...,
    allow_nan=..., ensure_ascii=True)``, with or without :mod:`json`.

    >>> print(dumps({"k": [1]}, indent=2))
    {
      "k": [
        1
      ]
    }
    """
    if _json is not None:
        return _json.dumps(obj, indent=indent, sort_keys=sort_keys,
                           separators=separators, allow_nan=allow_nan,
                           ensure_ascii=True)
    if separators is None:
        separators = (", ", ": ") if indent is None else (",", ": ")
    pad = None if indent is None else " " * indent
    return _encode(obj, pad, separators[0], separators[1], sort_keys,
                   allow_nan)


# ----------------------------------------------------------------------
# Decoding (snapshots and documents read back inside crash)

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_STRCHUNK = re.compile(r'([^"\\\x00-\x1f]*)(["\\\x00-\x1f])')
_BACKSLASH = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f",
              "n": "\n", "r": "\r", "t": "\t"}
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"),
              "-Infinity": float("-inf")}


def _fail(msg: str, pos: int) -> ValueError:
    return ValueError("%s: char %d" % (msg, pos))


def _scan_string(s: str, pos: int) -> Tuple[str, int]:
    """The string whose opening quote is at ``pos - 1``."""
    chunks: List[str] = []
    while True:
        m = _STRCHUNK.match(s, pos)
        if m is None:
            raise _fail("Unterminated string", pos)
        chunks.append(m.group(1))
        pos = m.end()
        term = m.group(2)
        if term == '"':
            return "".join(chunks), pos
        if term != "\\":
            raise _fail("Invalid control character", pos - 1)
        esc = s[pos:pos + 1]
        if esc != "u":
            c = _BACKSLASH.get(esc)
            if c is None:
                raise _fail("Invalid \\escape", pos - 1)
            chunks.append(c)
            pos += 1
            continue
        h = s[pos + 1:pos + 5]
        if len(h) != 4 or not all(x in "0123456789abcdefABCDEF" for x in h):
            raise _fail("Invalid \\uXXXX escape", pos - 1)
        n = int(h, 16)
        pos += 5
        if 0xD800 <= n <= 0xDBFF and s[pos:pos + 2] == "\\u":
            h2 = s[pos + 2:pos + 6]
            if len(h2) == 4 and all(x in "0123456789abcdefABCDEF"
                                    for x in h2):
                n2 = int(h2, 16)
                if 0xDC00 <= n2 <= 0xDFFF:
                    n = 0x10000 + (((n - 0xD800) << 10) | (n2 - 0xDC00))
                    pos += 6
        chunks.append(chr(n))


def _decode(s: str) -> Any:
    """Iterative JSON parser (no recursion limit to hit on deep input)."""
    pos = _WS.match(s, 0).end()
    # Stack of open containers: (container, pending key or None).
    stack: List[List[Any]] = []
    value: Any = None
    while True:
        # --- one value starting at pos
        if pos >= len(s):
            raise _fail("Expecting value", pos)
        c = s[pos]
        if c == "{" or c == "[":
            pos = _WS.match(s, pos + 1).end()
            close = "}" if c == "{" else "]"
            if s[pos:pos + 1] == close:
                value = {} if c == "{" else []
                pos += 1
            else:
                cont: Any = {} if c == "{" else []
                if c == "{":
                    if s[pos:pos + 1] != '"':
                        raise _fail("Expecting property name enclosed in "
                                    "double quotes", pos)
                    key, pos = _scan_string(s, pos + 1)
                    pos = _WS.match(s, pos).end()
                    if s[pos:pos + 1] != ":":
                        raise _fail("Expecting ':' delimiter", pos)
                    pos = _WS.match(s, pos + 1).end()
                    stack.append([cont, key])
                else:
                    stack.append([cont, None])
                continue
        elif c == '"':
            value, pos = _scan_string(s, pos + 1)
        elif s.startswith("null", pos):
            value, pos = None, pos + 4
        elif s.startswith("true", pos):
            value, pos = True, pos + 4
        elif s.startswith("false", pos):
            value, pos = False, pos + 5
        else:
            m = _NUMBER.match(s, pos)
            if m is not None and m.end() > pos:
                i, f, e = m.groups()
                value = float(i + (f or "") + (e or "")) if f or e \
                    else int(i)
                pos = m.end()
            else:
                for name, v in _CONSTANTS.items():
                    if s.startswith(name, pos):
                        value, pos = v, pos + len(name)
                        break
                else:
                    raise _fail("Expecting value", pos)
        # --- put the value into its container, close what ends here
        while True:
            pos = _WS.match(s, pos).end()
            if not stack:
                if pos != len(s):
                    raise _fail("Extra data", pos)
                return value
            top = stack[-1]
            cont = top[0]
            if isinstance(cont, dict):
                cont[top[1]] = value
                nxt = s[pos:pos + 1]
                if nxt == ",":
                    pos = _WS.match(s, pos + 1).end()
                    if s[pos:pos + 1] != '"':
                        raise _fail("Expecting property name enclosed in "
                                    "double quotes", pos)
                    top[1], pos = _scan_string(s, pos + 1)
                    pos = _WS.match(s, pos).end()
                    if s[pos:pos + 1] != ":":
                        raise _fail("Expecting ':' delimiter", pos)
                    pos = _WS.match(s, pos + 1).end()
                    break
                if nxt != "}":
                    raise _fail("Expecting ',' delimiter", pos)
            else:
                cont.append(value)
                nxt = s[pos:pos + 1]
                if nxt == ",":
                    pos = _WS.match(s, pos + 1).end()
                    break
                if nxt != "]":
                    raise _fail("Expecting ',' delimiter", pos)
            pos += 1
            value = stack.pop()[0]


def loads(text: Any) -> Any:
    """``json.loads(text)``, with or without :mod:`json`.  Raises
    :class:`ValueError` (json's ``JSONDecodeError`` is one) on bad text."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    if _json is not None:
        return _json.loads(text)
    return _decode(text)


def _without_stdlib(func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call ``func`` as if :mod:`json` were absent (tests compare the
    two implementations)."""
    global _json
    saved, _json = _json, None
    try:
        return func(*args, **kw)
    finally:
        _json = saved


__all__ = ["STDLIB", "dumps", "loads"]
