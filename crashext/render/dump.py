"""Dump renderer: the ``dump`` command's tree listing.

Like crash's ``tree -t xarray``, but right for multi-index entries: one
line per node (address, shift, offset, count, nr_values, index range) and
one line per *canonical* entry (index in hex and decimal, slot, kind, raw
entry or folio, the order the tree gives it, the number of slots it
covers); sibling slots are summarised on their entry's line, never listed
one per index.  Slots that the walk did not attach to an entry (stray
siblings, nodes not followed) get their own line, so a corrupted node
shows what is really in it.

``flat=True`` prints one line per folio instead, ``index folio order``
(decimal index, hex folio address, the folio's own order), for
comparison with an oracle such as the lab manifest's ``first_folios``.

>>> print(render(analysis))                     # doctest: +SKIP
xarray 0xffff888006e6deb8 head 0xffff888000400492 flags 0x21
node 0xffff888000400490 shift 12 offset 14 count 4 nr_values 0 [0x0-0x3ffff]
  node 0xffff888006eaf918 shift 6 offset 0 count 64 nr_values 0 [0x0-0xfff]
    node 0xffff888006eaeb68 shift 0 offset 0 count 64 nr_values 0 [0x0-0x3f]
      0x0 (0) slot 0 pointer 0xffffea0000078300 order 2 slots 0-3
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import fmt
from ..xarray import entry as E

INDENT = "  "


def _span_end(base: int, eshift: int, chunk_shift: int) -> int:
    return base + (1 << (eshift + chunk_shift)) - 1


def _entry_line(e: Any, a: Any, addr) -> str:
    kind = E.KIND_NAMES.get(e.kind, str(e.kind))
    parts = [fmt.idx(e.index)]
    if e.slot >= 0:
        parts.append("slot %d" % e.slot)
    else:
        parts.append("xa_head")
    parts.append(kind)
    if e.kind == E.VALUE:
        parts.append("0x%x" % E.xa_to_value(e.raw))
    else:
        parts.append(addr(e.raw))
    to = e.tree_order
    if to is not None:
        parts.append("order %d" % to)
    if e.nr_slots > 1:
        parts.append("slots %d-%d" % (e.slot, e.slot + e.nr_slots - 1))
        if e.shift:
            parts.append("(%d indices)" % e.span)
    elif e.shift and e.kind in (E.POINTER, E.VALUE):
        parts.append("(%d indices)" % e.span)
    if e.kind == E.POINTER:
        f = a.folios.get(e.raw)
        if f is None:
            parts.append("[folio unreadable]")
        else:
            if f.is_tail:
                parts.append("[tail page]")
            elif to is not None and f.order != to:
                parts.append("[folio order %d]" % f.order)
            elif to is None:
                parts.append("folio order %d" % f.order)
            if f.index != e.index and a.target.mapping is not None:
                parts.append("[folio->index %s]" % fmt.idx(f.index))
            if a.target.mapping is not None and f.mapping != a.target.mapping:
                parts.append("[mapping %s]" % addr(f.mapping))
    return " ".join(parts)


def _node_line(n: Any, chunk_shift: int, addr) -> str:
    s = "node %s shift %d offset %d count %d nr_values %d [%s-%s]" % (
        addr(n.addr), n.shift, n.offset, n.count, n.nr_values,
        fmt.hx(n.index), fmt.hx(_span_end(n.index, n.eshift, chunk_shift)))
    if n.shift != n.eshift:
        s += " (expected shift %d)" % n.eshift
    return s


def tree_lines(a: Any, grouped: bool = False, marks: bool = False
               ) -> List[str]:
    """The tree listing as lines."""
    from .chat import addr_fn
    addr = addr_fn(grouped)
    w = a.walk
    cs = a.layout.chunk_shift if a.layout else 6
    chunk = 1 << cs
    out = ["xarray %s head %s flags 0x%x" % (addr(w.xarray), addr(w.head),
                                            w.flags)]
    if not w.nodes:
        for e in w.entries:
            out.append(_entry_line(e, a, addr))
        if not w.entries:
            out.append("(empty)")
        return out
    children: Dict[Tuple[int, int], Any] = {}
    for n in w.nodes:
        children[(n.holder, n.holder_slot)] = n
    entries: Dict[Tuple[int, int], Any] = {}
    for e in w.entries:
        entries[(e.node, e.slot)] = e
    problems: Dict[Tuple[int, int], str] = {}
    for f in w.problems:
        if f.node and f.slots:
            problems[(f.node, f.slots[0])] = f.code

    def visit(n: Any, depth: int) -> None:
        pad = INDENT * depth
        line = pad + _node_line(n, cs, addr)
        if marks and any(n.marks):
            line += " marks " + ",".join("%x" % m for m in n.marks)
        out.append(line)
        pad += INDENT
        covered = -1
        i = 0
        while i < chunk:
            raw = n.slots[i]
            child = children.get((n.addr, i))
            if child is not None:
                visit(child, depth + 1)
                i += 1
                continue
            e = entries.get((n.addr, i))
            if e is not None:
                out.append(pad + _entry_line(e, a, addr))
                covered = i + e.nr_slots - 1
                i += 1
                continue
            if raw == 0 or i <= covered:
                i += 1
                continue
            k = E.kind_of(raw, chunk)
            if k == E.SIBLING:
                # Stray siblings: a run of equal entries on one line.
                j = i
                while j + 1 < chunk and n.slots[j + 1] == raw and \
                        (n.addr, j + 1) not in entries:
                    j += 1
                where = "slot %d" % i if j == i else "slots %d-%d" % (i, j)
                out.append(pad + "%s %s sibling(%d) stray" % (
                    fmt.runs([n.slot_index(x) for x in range(i, j + 1)]),
                    where, E.xa_to_sibling(raw)))
                i = j + 1
                continue
            why = problems.get((n.addr, i), "not walked")
            out.append(pad + "%s slot %d %s %s (%s)" % (
                fmt.idx(n.slot_index(i)), i, E.KIND_NAMES.get(k, "?"),
                addr(E.xa_to_node(raw) if k == E.NODE else raw), why))
            i += 1

    roots = [n for n in w.nodes if n.holder == 0]
    for r in roots:
        visit(r, 0)
    for f in w.problems:
        if not f.slots:
            out.append("! %s %s" % (f.code, f.meaning))
    return out


def flat_lines(a: Any, values: bool = False) -> List[str]:
    """``index folio order`` per canonical pointer entry (decimal index,
    hex folio, the folio's own order, or the tree's when the folio could
    not be read: ``?`` when neither is known).  ``values`` adds value
    entries as ``index value:0xV order``."""
    out = []
    for e in a.walk.entries:
        if e.kind == E.POINTER:
            f = a.folios.get(e.raw)
            o: Optional[int] = f.order if f is not None else e.tree_order
            out.append("%d 0x%x %s" % (e.index, e.raw,
                                       "?" if o is None else o))
        elif values and e.kind == E.VALUE:
            o = e.tree_order
            out.append("%d value:0x%x %s" % (e.index, E.xa_to_value(e.raw),
                                             "?" if o is None else o))
    return out


def render(a: Any, flat: bool = False, values: bool = False,
           grouped: bool = False, marks: bool = False) -> str:
    """The tree listing (or, with ``flat``, the ``index folio order``
    lines).  ``grouped`` writes addresses as ``ffff8880_0a3c4000``;
    ``marks`` adds each node's mark bitmaps; ``values`` (flat only)
    includes value entries."""
    lines = flat_lines(a, values) if flat else tree_lines(a, grouped, marks)
    return "\n".join(lines) + "\n"
