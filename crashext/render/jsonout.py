"""JSON renderer: the analysis as a versioned, documented JSON document
(schema ``crashext.analysis/2``, described field by field in
``docs/json-schema.md``).

The output is deterministic: keys sorted, lists in the analysis' own
(stable) order, fixed indentation, so two analyses of the same tree give
identical bytes and ``render(a) == dumps(json.loads(render(a)))``.

Addresses (target, node, folio, parent, array, raw entries) are written as
``"0x..."`` hex strings: 64-bit kernel addresses do not survive a JSON
reader that uses doubles.  Counts and XArray indices are JSON integers.

>>> doc = json.loads(render(analysis))            # doctest: +SKIP
>>> doc["schema"], doc["verdict"]                  # doctest: +SKIP
('crashext.analysis/2', 'corrupt')
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .. import fmt, jsontext
from ..xarray import entry as E
from .chat import counts, verdict_line
from .impact import impact_dict

SCHEMA = "crashext.analysis/2"

#: Largest integer written as a JSON number in free-form values
#: (expected, found, extra, explanation data); larger ones become hex
#: strings.  2^53 - 1 is the largest integer a double holds exactly.
MAX_SAFE_INT = (1 << 53) - 1


def _value(v: Any) -> Any:
    """A free-form value made JSON-safe: big ints to hex strings, tuples
    and sets to lists, bytes to hex, unknown objects to str."""
    if v is None or isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        return (fmt.hex_or_none(v) if v > MAX_SAFE_INT or v < -MAX_SAFE_INT
                else v)
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return [_value(x) for x in sorted(v, key=repr)]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return str(v)


#: Target fields holding addresses (written as hex strings).
_TARGET_ADDRS = ("addr", "xarray", "mapping", "inode", "folio")


def target_dict(t: Any) -> Dict[str, Any]:
    """Every Target field; addresses as hex strings, an empty label as
    null.  Fields added to Target later appear here by themselves."""
    d = t.to_dict()
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if k in _TARGET_ADDRS:
            out[k] = fmt.hex_or_none(v)
        else:
            out[k] = _value(v)
    out["label"] = d.get("label") or None
    return out


def stats_dict(s: Any) -> Dict[str, Any]:
    return {
        "nodes": s.nodes,
        "depth": s.depth,
        "entries": s.entries,
        "folios": s.folios,
        "pages": s.pages,
        "values": s.values,
        "value_indices": s.value_indices,
        "node_reads": s.node_reads,
        "orders": {str(o): n for o, n in sorted(s.orders.items())},
    }


def finding_dict(f: Any, number: int) -> Dict[str, Any]:
    d = f.to_dict()
    return {
        "id": number,
        "code": d["code"],
        "severity": d["severity"],
        "meaning": f.meaning,
        "node": fmt.hex_or_none(d["node"]),
        "slots": list(d["slots"]),
        "indices": list(d["indices"]),
        "folio": fmt.hex_or_none(d["folio"]),
        "expected": _value(d["expected"]),
        "found": _value(d["found"]),
        "shift": d["shift"],
        "order": d["order"],
        "address": fmt.hex_or_none(d["address"]),
        "extra": _value(d["extra"]),
    }


def explanation_dict(e: Any) -> Dict[str, Any]:
    return {
        "code": e.code,
        "lines": list(e.lines),
        "text": e.text,
        "findings": [i + 1 for i in e.findings],
        "data": _value(e.data),
    }


def node_dict(n: Any) -> Dict[str, Any]:
    return {
        "addr": fmt.hex_or_none(n.addr),
        "shift": n.shift,
        "eshift": n.eshift,
        "offset": n.offset,
        "count": n.count,
        "nr_values": n.nr_values,
        "parent": fmt.hex_or_none(n.parent),
        "array": fmt.hex_or_none(n.array),
        "index": n.index,
        "depth": n.depth,
        "holder": fmt.hex_or_none(n.holder) if n.holder else None,
        "holder_slot": n.holder_slot,
        "marks": [fmt.hex_or_none(m) for m in n.marks],
        "slots": [fmt.hex_or_none(s) for s in n.slots],
    }


def entry_dict(e: Any, folios: Dict[int, Any]) -> Dict[str, Any]:
    d: Dict[str, Any] = {
        "index": e.index,
        "raw": fmt.hex_or_none(e.raw),
        "kind": E.KIND_NAMES.get(e.kind, str(e.kind)),
        "node": fmt.hex_or_none(e.node) if e.node else None,
        "slot": e.slot,
        "shift": e.shift,
        "nr_slots": e.nr_slots,
        "tree_order": e.tree_order,
        "folio": None,
    }
    if e.kind == E.POINTER:
        f = folios.get(e.raw)
        if f is not None:
            d["folio"] = {
                "order": f.order,
                "index": f.index,
                "mapping": fmt.hex_or_none(f.mapping),
                "refcount": f.refcount,
                "flags": fmt.hex_or_none(f.flags),
                "tail": f.is_tail,
            }
    return d


def to_data(a: Any, full: bool = False) -> Dict[str, Any]:
    """The JSON document as Python data (see docs/json-schema.md)."""
    w = a.walk
    c = counts(a)
    doc: Dict[str, Any] = {
        "schema": SCHEMA,
        "target": target_dict(a.target),
        "release": a.release,
        "verdict": a.verdict,
        "summary": verdict_line(a, None),
        "counts": {"error": c["error"], "warning": c["warning"],
                   "info": c.get("info", 0)},
        "tree": {"head": fmt.hex_or_none(w.head), "flags": w.flags,
                 "truncated": bool(w.truncated)},
        "stats": stats_dict(a.stats),
        "findings": [finding_dict(f, i + 1) for i, f in enumerate(a.findings)],
        "explanations": [explanation_dict(e) for e in a.explanations],
        "notes": list(a.notes),
        "impact": impact_dict(a),
    }
    st = getattr(a, "stability", None)
    if st is not None:
        doc["live"] = st.to_dict()
    if full:
        doc["nodes"] = [node_dict(n) for n in w.nodes]
        doc["entries"] = [entry_dict(e, a.folios) for e in w.entries]
    return doc


def dumps(doc: Any, indent: Optional[int] = 2) -> str:
    """Serialise like :func:`render` does (sorted keys, fixed separators,
    trailing newline)."""
    seps = (",", ": ") if indent is not None else (",", ":")
    return jsontext.dumps(doc, sort_keys=True, indent=indent,
                          separators=seps, allow_nan=False) + "\n"


def render(a: Any, full: bool = False, indent: Optional[int] = 2) -> str:
    """The analysis as JSON text.  ``full`` adds every node (header and
    raw slots) and every canonical entry; ``indent`` None gives one line."""
    return dumps(to_data(a, full), indent)


def render_many(analyses: Sequence[Any], full: bool = False,
                indent: Optional[int] = 2) -> str:
    """Several analyses (several targets of one dump) as a JSON array of
    ``crashext.analysis/2`` documents, in the order given."""
    return dumps([to_data(a, full) for a in analyses], indent)


def loads(text: str) -> Dict[str, Any]:
    """Parse a document written by :func:`render`; refuse any other
    schema (a version bump means a field changed meaning)."""
    doc = jsontext.loads(text)
    s = doc.get("schema") if isinstance(doc, dict) else None
    if s != SCHEMA:
        from ..memory import CrashextError
        raise CrashextError("not a %s document (schema %r)" % (SCHEMA, s))
    return doc


__all__: List[str] = ["SCHEMA", "render", "render_many", "to_data", "dumps",
                      "loads"]
