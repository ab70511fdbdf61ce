"""Wording of the impact (:mod:`crashext.impact`): which bytes of the
file read wrong, the data at risk, and where the lost pages went - as
short lines for chat, rows for the table and data for JSON.

Every offset and length is shown in hex and human units, every index
range in hex and decimal.

>>> print("\\n".join(chat_lines(analysis, 60)))        # doctest: +SKIP
READS WRONG: 0x20000 (128 KiB) of the file, 32 pages
aliased 0x20000 (128 KiB) at 0x420000 (4.06 MiB)
  idx 0x420-0x43f (1056-1087), 32 pages
  reads idx 0x410-0x41f (1040-1055)
  folio 0xffffea00007d4c00: uptodate
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .. import fmt
from ..folio import STATE_FLAGS

#: Ranges shown in chat (the rest are counted; -f json lists all).
MAX_CHAT_RANGES = 2
#: Ranges shown in the table.
MAX_TABLE_RANGES = 50

HEADERS = ("risk", "kind", "offset", "length", "pages", "index", "folios",
           "state", "detail")


def state_phrase(r: Any, addr: Callable = fmt.hx) -> str:
    """``folio 0x...: dirty, uptodate`` / ``8 folios: 2 dirty, 8
    uptodate`` / ``no folio found``."""
    if not r.nr_folios:
        return ""
    flags = [k for k in STATE_FLAGS if r.state.get(k)]
    if r.nr_folios == 1:
        names = ", ".join(flags) or "not uptodate, clean"
        return "folio %s: %s" % (addr(r.folios[0]), names)
    parts = ["%d %s" % (r.state[k], k) for k in flags]
    return "%s: %s" % (fmt.plural(r.nr_folios, "folio"),
                       ", ".join(parts) or "none uptodate or dirty")


def detail(r: Any, addr: Callable = fmt.hx) -> str:
    """What the range reads, or where its folio went."""
    k = r.kind
    if k == "aliased":
        src = ", ".join(fmt.idx_range(a, b) for a, b in r.sources)
        return "reads idx %s" % (src or "?")
    if k == "foreign":
        who = ("inode %d" % r.other_ino if r.other_ino is not None
               else "another file")
        return "%s's folio (mapping %s)" % (who, addr(r.mapping))
    if k == "stale":
        return "folio of no file: %s" % (r.why or "stale")
    if k == "lost":
        if r.reached_at:
            return "reached at idx %s instead" % ", ".join(
                fmt.hx(i) for i in r.reached_at[:3])
        if r.found == "cut-off node" and r.node:
            return "in cut-off node %s" % addr(r.node)
        if r.found:
            return "cut off (found in the %s)" % r.found
        return "%s: folio not found" % (r.why or "lost")
    if k == "unknown":
        return "%s%s" % (r.why or "unknown",
                         " (node %s)" % addr(r.node) if r.node else "")
    if k == "beyond_eof":
        return "past EOF"
    return r.why


def consequence(r: Any) -> str:
    """For data at risk: what happens to the dirty data."""
    if not r.at_risk:
        return ""
    if r.kind == "lost":
        return "=> dirty data never written back"
    if r.kind == "aliased":
        return "=> written back at folio->index"
    if r.kind == "foreign":
        return "=> written back into the other file"
    return "=> dirty data in a page no file owns"


def risk_line(imp: Any) -> Optional[str]:
    """``DATA AT RISK: 0x10000 (64 KiB), 1 dirty folio lost``, or None."""
    rs = imp.at_risk
    if not rs:
        return None
    size = imp.risk_pages << imp.page_shift
    folios = sum(r.nr_folios for r in rs)
    dirty = sum(r.state.get("dirty", 0) for r in rs)
    wb = sum(r.state.get("writeback", 0) for r in rs)
    what = ("dirty" if dirty and not wb else "writeback" if not dirty
            else "dirty/writeback")
    kinds = []
    for r in rs:
        w = {"lost": "lost", "aliased": "at a wrong index",
             "foreign": "of another file", "stale": "stale"}[r.kind]
        if w not in kinds:
            kinds.append(w)
    return "DATA AT RISK: %s, %d %s folio%s %s" % (
        fmt.nbytes(size), folios, what, "" if folios == 1 else "s",
        ", ".join(kinds))


def summary_lines(imp: Any) -> List[str]:
    """``READS WRONG: ...`` and ``LOST: ...`` totals."""
    out = []
    sh = imp.page_shift
    wrong = imp.wrong_pages
    if wrong:
        out.append("READS WRONG: %s of the file, %s" % (
            fmt.nbytes(wrong << sh), fmt.plural(wrong, "page")))
    lost = [r for r in imp.ranges if r.kind == "lost" and not r.at_risk]
    clean = imp.pages(r for r in lost if r.nr_folios)
    unknown = imp.pages(r for r in lost if not r.nr_folios)
    if clean:
        out.append("LOST, CLEAN: %s (re-read from disk)"
                   % fmt.nbytes(clean << sh))
    if unknown:
        out.append("LOST: %s, folios not found" % fmt.nbytes(unknown << sh))
    if not out and imp.ranges:
        out.append("PAST EOF: %s" % fmt.nbytes(
            imp.pages(imp.ranges) << sh))
    return out


def range_lines(r: Any, shift: int, addr: Callable = fmt.hx) -> List[str]:
    """Three to five short lines for one range."""
    off, length = r.byte_range(shift)
    head = "%s%s %s at %s" % ("AT RISK " if r.at_risk else "", r.kind,
                              fmt.nbytes(length), fmt.nbytes(off))
    out = [head, "  idx %s, %s" % (fmt.idx_range(r.first, r.last),
                                  fmt.plural(r.pages, "page"))]
    d = detail(r, addr)
    if d:
        out.append("  " + d)
    s = state_phrase(r, addr)
    if s:
        out.append("  " + s)
    c = consequence(r)
    if c:
        out.append("  " + c)
    return out


def chat_lines(a: Any, width: int = 60, addr: Callable = fmt.hx,
               max_ranges: int = MAX_CHAT_RANGES) -> List[str]:
    """The impact block of the chat form (empty for a clean tree): the
    totals, the first ranges in full (data at risk first), one line per
    kind for the rest, the nrpages equation."""
    imp = getattr(a, "impact", None)
    if imp is None or (not imp.ranges and not (
            imp.lost is not None and imp.lost.says_more())):
        return []
    out = summary_lines(imp)
    shown = imp.ranges[:max_ranges]
    # Every range at risk is shown, up to twice the limit.
    shown += [r for r in imp.ranges[max_ranges:2 * max_ranges]
              if r.at_risk]
    for r in shown:
        out.extend(range_lines(r, imp.page_shift, addr))
    rest: Dict[tuple, List[Any]] = {}
    for r in imp.ranges:
        if not any(r is x for x in shown):
            rest.setdefault((r.at_risk, r.kind), []).append(r)
    for (risk, kind), rs in rest.items():
        out.append("... %d more %s%s: %s, idx %s..%s" % (
            len(rs), "at risk " if risk else "", kind,
            fmt.size(imp.pages(rs) << imp.page_shift),
            fmt.hx(min(r.first for r in rs)),
            fmt.hx(max(r.last for r in rs))))
    if imp.lost is not None and imp.lost.says_more():
        out.extend(imp.lost.lines(addr))
    return out


def table_rows(imp: Any, addr: Callable = fmt.hx,
               limit: Optional[int] = MAX_TABLE_RANGES) -> List[List[str]]:
    """One row per range (``HEADERS`` order)."""
    rows = []
    for r in imp.ranges[:limit]:
        off, length = r.byte_range(imp.page_shift)
        flags = [k for k in STATE_FLAGS if r.state.get(k)]
        rows.append([
            "AT RISK" if r.at_risk else "",
            r.kind,
            fmt.nbytes(off),
            fmt.nbytes(length),
            str(r.pages),
            fmt.idx_range(r.first, r.last),
            str(r.nr_folios),
            ", ".join("%s %d" % (k, r.state[k]) if r.nr_folios > 1 else k
                      for k in flags),
            detail(r, addr),
        ])
    return rows


def range_dict(r: Any, shift: int) -> Dict[str, Any]:
    """A range as JSON data (addresses as hex strings)."""
    off, length = r.byte_range(shift)
    return {
        "kind": r.kind,
        "at_risk": r.at_risk,
        "reads_wrong": r.reads_wrong,
        "offset": off,
        "length": length,
        "pages": r.pages,
        "first_index": r.first,
        "last_index": r.last,
        "folios": ["0x%x" % x for x in r.folios],
        "nr_folios": r.nr_folios,
        "state": {k: r.state.get(k, 0) for k in STATE_FLAGS},
        "sources": [[a, b] for a, b in r.sources],
        "delta": r.delta,
        "mapping": fmt.hex_or_none(r.mapping),
        "other_ino": r.other_ino,
        "found": r.found or None,
        "node": None if not r.node else "0x%x" % r.node,
        "reached_at": list(r.reached_at),
        "beyond_eof": r.beyond_eof,
        "why": r.why or None,
    }


def lost_dict(lost: Any) -> Optional[Dict[str, Any]]:
    """The nrpages accounting as JSON data."""
    if lost is None:
        return None
    hx = fmt.hex_or_none
    return {
        "nrpages": lost.nrpages,
        "equation": lost.line() if lost.nrpages is not None else None,
        "reachable": lost.reachable,
        "reachable_folios": lost.reachable_folios,
        "per_slot": lost.per_slot,
        "counted_twice": lost.counted_twice,
        "foreign": lost.foreign,
        "cutoff": [{"node": hx(c.node), "parent": hx(c.parent),
                    "offset": c.offset, "shift": c.shift,
                    "first_index": c.index, "span": c.span,
                    "pages": c.pages, "folios": len(c.folios),
                    "nodes": c.nodes, "problems": c.problems}
                   for c in lost.cutoffs],
        "memmap_pages": lost.memmap_pages,
        "lost_folios": len(lost.folios),
        "unreadable": [{"node": hx(u.node), "holder": hx(u.holder),
                        "slot": u.slot, "first_index": u.index,
                        "span": u.span} for u in lost.unreadable],
        "unexplained": lost.unexplained,
        "memmap": lost.memmap,
        "memmap_complete": lost.memmap_complete,
        "slab": lost.slab,
        "shared": [{"node": hx(s.node), "first": [hx(s.first[0]),
                                                 s.first[1], s.first[2]],
                    "second": [hx(s.second[0]), s.second[1], s.second[2]],
                    "span": s.span, "own": s.own, "delta": s.delta,
                    "pages": s.pages, "folios": s.folios,
                    "cutoff_node": hx(s.cutoff.node) if s.cutoff else None,
                    "cutoff_pages": (s.cutoff.pages if s.cutoff
                                     else s.cutoff_pages)}
                   for s in lost.shared],
        "notes": list(lost.notes),
    }


def impact_dict(a: Any) -> Optional[Dict[str, Any]]:
    """``impact`` of the JSON document (None: not computed)."""
    imp = getattr(a, "impact", None)
    if imp is None:
        return None
    sh = imp.page_shift
    return {
        "page_size": 1 << sh,
        "i_size": imp.i_size,
        "at_risk": bool(imp.at_risk),
        "risk_bytes": imp.risk_pages << sh,
        "wrong_bytes": imp.wrong_pages << sh,
        "ranges": [range_dict(r, sh) for r in imp.ranges],
        "nrpages": lost_dict(imp.lost),
        "notes": list(imp.notes),
    }


def summary_dict(a: Any, max_ranges: int = 8) -> Dict[str, Any]:
    """A compact impact for scan rows and triage: totals, the first
    ranges, the nrpages equation.  Empty for a clean tree."""
    imp = getattr(a, "impact", None)
    if imp is None or (not imp.ranges and not (imp.lost and imp.lost.says_more())):
        return {}
    sh = imp.page_shift
    d: Dict[str, Any] = {
        "at_risk": bool(imp.at_risk),
        "risk_bytes": imp.risk_pages << sh,
        "wrong_bytes": imp.wrong_pages << sh,
        "ranges": [{k: v for k, v in range_dict(r, sh).items()
                    if k in ("kind", "at_risk", "offset", "length",
                             "first_index", "last_index", "nr_folios",
                             "state", "found", "why")}
                   for r in imp.ranges[:max_ranges]],
        "ranges_total": len(imp.ranges),
    }
    if imp.lost is not None and imp.lost.nrpages is not None:
        d["nrpages"] = imp.lost.line()
        d["unexplained"] = imp.lost.unexplained
    return d
