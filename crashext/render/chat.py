"""Chat renderer: an analysis as a short Markdown code block for pasting
into workplace chat read on a phone.

The verdict comes first, on one line; each group of same-code findings
takes at most ``max_lines`` lines (default 15); no line is wider than
``width`` columns (default 60: enforced by a final wrap); indices are
shown as hex and decimal with their slot in the node, index lists are
compressed (:func:`crashext.fmt.runs`), and the XArray index is shown
beside ``folio->index`` when they differ.  The explanation lines follow
the findings they rest on.

>>> print(render(analysis))                          # doctest: +SKIP
```
CORRUPT inode 131 /mnt/xfs/big200: 3 errors
...
```

This module also holds the small wording helpers the other renderers
share (:func:`verdict_line`, :func:`value_str`, :func:`target_subject`).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import fmt
from . import impact as impact_text
from ..findings import CODES, ERROR, INFO, SEVERITY_RANK, WARNING, Finding

#: Position of each code in findings.CODES (grouped by what it says).
_CODE_RANK = {c: i for i, c in enumerate(CODES)}

WIDTH = 60
MAX_LINES = 15

#: Explanations shown per conclusion code (chat); the rest are counted.
MAX_EXPLANATIONS = 2


def first_per_code(items: Sequence[Any], max_per_code: Optional[int]
                   ) -> Tuple[List[int], Dict[str, int]]:
    """Positions of the ``items`` (findings or explanations: anything
    with a ``code``) to show - the first ``max_per_code`` of each code;
    None: all - and, per code, how many are left out: a tree of 1000
    cross-linked nodes says so once or twice, not 1000 times."""
    seen: Dict[str, int] = {}
    keep: List[int] = []
    left: Dict[str, int] = {}
    for k, x in enumerate(items):
        n = seen.get(x.code, 0)
        seen[x.code] = n + 1
        if max_per_code is None or n < max_per_code:
            keep.append(k)
        else:
            left[x.code] = left.get(x.code, 0) + 1
    return keep, left


FENCE = "```"

# Finding codes whose int expected/found values are raw entries or
# addresses (shown in hex), or XArray indices (hex + decimal).
_HEX_VALUES = {
    "RETRY_ENTRY", "ZERO_ENTRY", "BAD_INTERNAL", "NODE_IN_LEAF",
    "BAD_POINTER", "SIBLING_IN_HEAD", "ROOT_PARENT", "NODE_PARENT",
    "NODE_ARRAY", "NODE_FREEING", "FOLIO_MAPPING", "FOLIO_TAIL",
}
_INDEX_VALUES = {"FOLIO_INDEX"}
_ADDR_RE = re.compile(r"\b0x([0-9a-f]{16})\b")


# Shared wording helpers ---------------------------------------------------
def addr_fn(grouped: bool = False) -> Callable[[Optional[int]], str]:
    """Address formatter: ``0xffff88800a3c4000`` or ``ffff8880_0a3c4000``."""
    if grouped:
        return lambda v: "-" if v is None else fmt.grouped(v)
    return fmt.hx


def regroup(text: str) -> str:
    """Rewrite every 64-bit ``0x...`` address in ``text`` grouped."""
    return _ADDR_RE.sub(lambda m: m.group(1)[:8] + "_" + m.group(1)[8:], text)


def counts(a: Any) -> Dict[str, int]:
    """Number of findings per severity."""
    c = {ERROR: 0, WARNING: 0, INFO: 0}
    for f in a.findings:
        c[f.severity] = c.get(f.severity, 0) + 1
    return c


def target_subject(a: Any, addr: Callable = fmt.hx) -> str:
    """``inode 131``, ``mapping 0x...`` or ``xarray 0x...``."""
    t = a.target
    if t.i_ino is not None:
        return "inode %d" % t.i_ino
    if t.mapping is not None:
        return "mapping %s" % addr(t.mapping)
    return "xarray %s" % addr(t.xarray)


def pages_phrase(a: Any) -> str:
    """``16384 pages = nrpages`` (or ``, nrpages N`` when they differ)."""
    p = a.stats.pages
    nr = a.target.nrpages
    if nr is None:
        return "%d pages" % p
    if nr == p:
        return "%d pages = nrpages" % p
    return "%d pages, nrpages %d" % (p, nr)


def verdict_summary(a: Any) -> str:
    """What follows the colon of the verdict line."""
    if a.verdict == "clean":
        return "%s, %s" % (fmt.plural(a.stats.entries, "entry").replace(
            "entrys", "entries"), pages_phrase(a))
    if a.verdict == "changing":
        return "not judged, %d walks" % a.stability.walks
    c = counts(a)
    parts = []
    if c[ERROR]:
        parts.append(fmt.plural(c[ERROR], "error"))
    if c[WARNING]:
        parts.append(fmt.plural(c[WARNING], "warning"))
    if c.get(INFO):
        parts.append(fmt.plural(c[INFO], "note"))
    return ", ".join(parts)


def verdict_line(a: Any, width: Optional[int] = WIDTH,
                 addr: Callable = fmt.hx, with_label: bool = True) -> str:
    """``CORRUPT inode 134 /mnt/xfs/big64: 3 errors`` /
    ``CLEAN inode 134: 2052 entries, 16384 pages = nrpages``.  The path
    is left out when the line would exceed ``width``."""
    head = "%s %s" % (a.verdict.upper(), target_subject(a, addr))
    tail = ": " + verdict_summary(a)
    label = a.target.label
    if with_label and label:
        line = "%s %s%s" % (head, label, tail)
        if width is None or len(line) <= width:
            return line
    return head + tail


def value_str(code: str, v: Any, addr: Callable = fmt.hx) -> str:
    """A finding's expected/found value in the form that fits its code."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int):
        return str(v)
    if code in _INDEX_VALUES:
        return fmt.idx(v)
    if v >= 1 << 40:
        return addr(v)
    if code in _HEX_VALUES:
        return fmt.hx(v)
    return str(v)


def orders_phrase(orders: Dict[int, int]) -> str:
    """``2:1030 3:511 4:511`` (order:folios)."""
    return " ".join("%d:%d" % (o, n) for o, n in sorted(orders.items())) or "-"


def slot_in_node(f: Finding, k: int) -> Optional[int]:
    """Slot (mod 64) of the k-th index of ``f``, when the finding names
    slots."""
    if k < len(f.slots):
        return f.slots[k]
    return None


def where(i: int, slot: Optional[int]) -> str:
    """``0x7650 (30288) slot 16``."""
    s = fmt.idx(i)
    if slot is not None and slot >= 0:
        s += " slot %d" % slot
    return s


# Line fitting -----------------------------------------------------------
def fit(parts: Sequence[str], width: int, sep: str = "  ",
        indent: str = "  ") -> List[str]:
    """Join ``parts`` on one line when it fits, else greedily on several
    lines (a part is never split), continuation lines indented."""
    parts = [p for p in parts if p]
    if not parts:
        return []
    one = sep.join(parts)
    if len(one) <= width:
        return [one]
    out = [parts[0]]
    for p in parts[1:]:
        cand = out[-1] + sep + p
        if len(cand) <= width:
            out[-1] = cand
        else:
            out.append(indent + p)
    return out


def wrap_lines(lines: Sequence[str], width: int) -> List[str]:
    """Hard guarantee: every line at most ``width`` columns."""
    out: List[str] = []
    for line in lines:
        line = line.rstrip()
        if len(line) <= width:
            out.append(line)
            continue
        lead = len(line) - len(line.lstrip(" "))
        w = textwrap.wrap(line, width=width, subsequent_indent=" " * (lead + 2),
                          break_long_words=True, break_on_hyphens=False)
        out.extend(x[:width] for x in w)
    return out


# Findings -----------------------------------------------------------------
def _detail(f: Finding, a: Any, addr: Callable) -> List[str]:
    """The what-was-wrong parts of one finding's row."""
    c = f.code
    ex, fo = f.expected, f.found
    if c == "FOLIO_INDEX":
        return ["folio->index %s" % value_str(c, fo, addr)]
    if c == "FOLIO_MAPPING":
        s = "mapping %s" % value_str(c, fo, addr)
        if "other_ino" in f.extra:
            s += " (inode %d)" % f.extra["other_ino"]
        return [s]
    if c == "FOLIO_ORDER":
        return ["tree order %s, folio order %s" % (ex, fo)]
    if c == "FOLIO_ALIGN":
        return ["order %s, off by %s" % (f.order, fo)]
    if c == "FOLIO_REFCOUNT":
        return ["refcount %s, need %s" % (fo, ex)]
    if c == "FOLIO_TAIL":
        return ["tail of %s" % value_str(c, fo, addr)]
    if c.startswith("SIBLING_") and isinstance(fo, str):
        tgt = f.extra.get("target")
        s = fo
        if isinstance(tgt, int):
            s += " -> %s" % (value_str("BAD_POINTER", tgt, addr)
                             if tgt else "NULL")
        return [s]
    if c in ("FOLIO_UNREADABLE", "NODE_UNREADABLE"):
        what = "child node" if c == "NODE_UNREADABLE" else "folio"
        return ["%s %s" % (what, addr(f.address)) if f.address else "",
                f.extra.get("reason") or ""]
    if c == "FOLIO_LOST":
        ex = f.extra or {}
        if ex.get("reached_at"):
            s = "held at %s instead" % ", ".join(
                fmt.hx(i) for i in ex["reached_at"][:3])
        elif ex.get("cutoff_node"):
            s = "in cut-off node %s" % addr(ex["cutoff_node"])
        else:
            s = "cut off (memory map)"
        return [s, "order %s" % f.order if f.order else "",
                "locked" if f.severity != ERROR else ""]
    if c == "NODE_CUT_OFF":
        ex = f.extra or {}
        return ["was slot %s of node %s" % (ex.get("offset"),
                                            addr(ex.get("parent"))),
                "%s pages" % ex.get("pages", "?")]
    if c == "NODE_SHARED":
        ex = f.extra or {}
        return ["node %s" % addr(f.address),
                "also slot %s of %s" % (ex.get("first_slot"),
                                        addr(ex.get("first_holder")))]
    if c == "NODE_CYCLE":
        return ["-> ancestor node %s" % addr(f.address)]
    if c == "FOLIO_BEYOND_EOF":
        return ["i_size %s" % (f.extra or {}).get("i_size")]
    if c == "MARK_PARENT" or c == "MARK_ON_EMPTY":
        return ["mark %s" % f.extra.get("mark", "?"),
                ("expected %s, found %s" % (ex, fo)) if ex is not None else ""]
    if ex is None and fo is None:
        return []
    if ex is None:
        return ["found %s" % value_str(c, fo, addr)]
    return ["expected %s, found %s" % (value_str(c, ex, addr),
                                       value_str(c, fo, addr))]


def _folio_index(a: Any, folio: Optional[int]) -> Optional[int]:
    rec = a.folios.get(folio) if folio is not None else None
    return rec.index if rec is not None else None


def _dup_lines(f: Finding, a: Any, addr: Callable, width: int) -> List[str]:
    lines = ["folio %s%s, %d copies" % (
        addr(f.folio), "" if f.order is None else " order %d" % f.order,
        len(f.indices))]
    if f.node is not None:
        lines.append(_node_head(a, f.node, addr))
    fi = f.extra.get("folio_index")
    nodes = f.extra.get("nodes") or []
    for k, i in enumerate(f.indices):
        parts = [where(i, slot_in_node(f, k))]
        if f.node is None and k < len(nodes):
            parts.append("node %s" % addr(nodes[k]))
        if fi is not None:
            parts.append("own index" if fi == i
                         else "folio->index %s" % fmt.idx(fi))
        lines.extend(fit(parts, width))
    return lines


def _row(f: Finding, a: Any, addr: Callable, width: int,
         show_folio: bool) -> List[str]:
    parts: List[str] = []
    if f.indices and f.slots:
        if len(f.indices) == 1:
            parts.append(where(f.indices[0], f.slots[0]))
        else:
            parts.append("slots %s" % fmt.slot_list(f.slots))
            parts.append(fmt.runs(f.indices))
    elif f.indices and f.node is None:
        parts.append(where(f.indices[0], None))
    parts.extend(_detail(f, a, addr))
    if show_folio and f.folio is not None:
        parts.append("folio %s" % addr(f.folio))
    if f.folio is not None and f.code not in ("FOLIO_INDEX", "DUP_FOLIO") \
            and f.indices:
        fi = _folio_index(a, f.folio)
        if fi is not None and fi != f.indices[0]:
            parts.append("folio->index %s" % fmt.idx(fi))
    if not parts:
        parts.append(f.meaning)
    return fit(parts, width)


def _node_head(a: Any, node: int, addr: Callable) -> str:
    n = a.walk.node_at(node)
    if n is None:
        return "node %s" % addr(node)
    return "node %s shift %d @%s" % (addr(node), n.eshift, fmt.hx(n.index))


def group_lines(a: Any, code: str, fs: List[Finding], width: int = WIDTH,
                max_lines: int = MAX_LINES, addr: Callable = fmt.hx
                ) -> List[str]:
    """Lines for the findings ``fs`` (all of one ``code``), at most
    ``max_lines`` of them."""
    sev = fs[0].severity
    head = ["%s x%d (%s)" % (code, len(fs), sev), fs[0].meaning]
    body: List[str] = []
    shown = 0
    # Keep two lines for the "... N more" summary.
    budget = max(3, max_lines - len(head) - (2 if len(fs) > 1 else 0))
    if code == "DUP_FOLIO":
        for f in fs:
            ls = _dup_lines(f, a, addr, width)
            if body and len(body) + len(ls) > budget:
                break
            body.extend(ls)
            shown += 1
    else:
        # Sub-group by node, in order of first appearance.
        order: List[Optional[int]] = []
        by: Dict[Optional[int], List[Finding]] = {}
        for f in fs:
            if f.node not in by:
                order.append(f.node)
                by[f.node] = []
            by[f.node].append(f)
        full = False
        for node in order:
            nf = by[node]
            folios = {f.folio for f in nf}
            one_folio = len(folios) == 1 and None not in folios and len(nf) > 1
            sub: List[str] = []
            if node is not None:
                sub.append(_node_head(a, node, addr))
            if one_folio:
                sub.append("folio %s" % addr(nf[0].folio))
            rows = [_row(f, a, addr, width - 2, not one_folio) for f in nf]
            if node is not None and len(nf) == 1 and len(rows[0]) == 1 \
                    and not one_folio:
                joined = fit([sub[0] + ":", rows[0][0]], width, sep=" ")
                if len(joined) == 1:
                    sub, rows = joined, [[]]
            if body and len(body) + len(sub) + len(rows[0]) > budget:
                break
            body.extend(sub)
            for f, r in zip(nf, rows):
                ls = [("  " + x) if node is not None else x for x in r]
                if len(body) + len(ls) > budget and shown:
                    full = True
                    break
                body.extend(ls)
                shown += 1
            if full:
                break
    rest = fs[shown:]
    if rest:
        idxs = [i for f in rest for i in f.indices]
        nodes = {f.node for f in rest if f.node is not None}
        more = "... %d more" % len(rest)
        if nodes:
            more += " in %s" % fmt.plural(len(nodes), "node")
        if idxs:
            at = " at " + fmt.runs(idxs)
            if len(more) + len(at) > width:
                at = " at %s..%s" % (fmt.hx(min(idxs)), fmt.hx(max(idxs)))
            more += at
        body.extend(wrap_lines([more], width)[:2])
    lines = head + body
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + ["..."]
    return lines


def _context(a: Any, width: int, addr: Callable,
             label_shown: bool) -> List[str]:
    t = a.target
    s = a.stats
    out: List[str] = []
    parts = []
    if t.label and not label_shown:
        parts.append(t.label)
    if getattr(t, "fs_type", None):
        parts.append(t.fs_type)
    if a.release:
        parts.append("kernel %s" % a.release)
    out.extend(fit(parts, width, sep=", "))
    nums = "%s, depth %d, %s" % (fmt.plural(s.nodes, "node"), s.depth,
                                 fmt.plural(s.folios, "folio"))
    if s.values:
        nums += ", %s" % fmt.plural(s.values, "value")
    out.append(nums)
    if a.verdict != "clean":
        out.append(pages_phrase(a))
    if s.orders:
        out.append("orders " + orders_phrase(s.orders))
    return out


def render(a: Any, width: int = WIDTH, max_lines: int = MAX_LINES,
           grouped: bool = False, fence: bool = True) -> str:
    """The analysis ``a`` as a chat message.

    ``width``: maximal line length (60); ``max_lines``: lines per group
    of same-code findings (15); ``grouped``: write 64-bit addresses as
    ``ffff8880_0a3c4000``; ``fence``: wrap in a Markdown code block."""
    addr = addr_fn(grouped)
    vl = verdict_line(a, width, addr)
    lines = [vl]
    imp = getattr(a, "impact", None)
    # Data at risk is said first, right under the verdict.
    risk = impact_text.risk_line(imp) if imp is not None else None
    if risk:
        lines.append(risk)
    lines.extend(_context(a, width, addr, bool(a.target.label)
                          and a.target.label in vl))
    block = impact_text.chat_lines(a, width, addr) if a.findings else []
    if block:
        lines.append("")
        lines.extend(regroup(x) if grouped else x for x in block)
    # The impact block already shows the nrpages equation.
    said = bool(block) and imp is not None and imp.lost is not None \
        and imp.lost.says_more()
    groups: Dict[str, List[Finding]] = {}
    pos: Dict[int, str] = {}
    first: Dict[str, int] = {}
    for i, f in enumerate(a.findings):
        groups.setdefault(f.code, []).append(f)
        pos[i] = f.code
        first.setdefault(f.code, i)
    # Most severe first; within a severity, in the order of CODES (the
    # telling evidence - duplicates, siblings, nodes - before its
    # consequences such as NRPAGES), then by first appearance.
    order = sorted(groups, key=lambda c: (
        SEVERITY_RANK.get(groups[c][0].severity, 9),
        _CODE_RANK.get(c, len(_CODE_RANK)), first[c]))
    keep = set(first_per_code(a.explanations, MAX_EXPLANATIONS)[0])
    left = set(range(len(a.explanations)))

    def explanations(ks: List[int], head: str) -> None:
        """The explanations at ``ks`` (those over the cap counted)."""
        hidden: Dict[str, int] = {}
        for k in ks:
            e = a.explanations[k]
            left.discard(k)
            if said and e.code == "NRPAGES":
                continue
            if k not in keep:
                hidden[e.code] = hidden.get(e.code, 0) + 1
                continue
            lines.append(head % e.code)
            lines.extend(" " + (regroup(ln) if grouped else ln)
                         for ln in e.lines)
        lines.extend("=> %d more %s, same reasoning" % (n, c)
                     for c, n in hidden.items())

    for code in order:
        lines.append("")
        lines.extend(group_lines(a, code, groups[code], width, max_lines,
                                 addr))
        explanations([k for k in sorted(left) if any(
            pos.get(i) == code for i in a.explanations[k].findings)],
            "=> why (%s):")
    explanations(sorted(left), "=> %s:")
    for n in a.notes:
        lines.append("note: " + (regroup(n) if grouped else n))
    lines = wrap_lines(lines, width)
    if fence:
        lines = [FENCE] + lines + [FENCE]
    return "\n".join(lines) + "\n"
