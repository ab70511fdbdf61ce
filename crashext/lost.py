"""Where the lost pages went: ``mapping->nrpages`` accounted for.

``nrpages`` is the sum of ``folio_nr_pages()`` over the folios of the
mapping: ``__filemap_add_folio()`` adds it when it stores a folio,
``page_cache_delete()`` subtracts it when it removes one (mm/filemap.c).
The folios the tree reaches account for part of it; the rest is

* in subtrees cut off the tree: ``xa_node``\\ s still allocated that name
  this XArray in ``->array`` but that the tree does not reach; their
  ``->parent`` / ``->offset`` name the slot they were in (``xas_store()``
  keeps them, lib/xarray.c) - found by the slab walk, walked here with
  :func:`crashext.xarray.walk.walk_subtree`;
* in folios cut off: ``folio->mapping`` is this mapping but the tree does
  not hold the folio at ``folio->index`` - found in the memory map
  (:mod:`crashext.memmap`);
* in subtrees that could not be read (their size is only bounded).

The tree may also count entries twice (one folio at several slots, a
shared subtree walked at two positions): those pages are reached once.

This module also tells a node reached twice completely: a shared node's
two positions, which one its own ``parent``/``offset`` name, the
``folio->index`` delta, and the node cut off from the other slot.

>>> lost = account(analysis, mem, memmap=find_folios(...))   # doctest: +SKIP
>>> lost.line()                                              # doctest: +SKIP
'nrpages 51200 = 51136 reachable + 64 in cut-off node 0x... (was slot 1 of node 0x...)'
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import fmt
from .findings import WARNING, Finding
from .folio import FolioRec, folio_state, read_folios
from .memory import KERNEL_MIN, Memory, UnreadableMemory
from .xarray import entry as E
from .xarray.walk import entry_blocks, node_reader, walk_subtree

#: Bound on nodes walked under one cut-off node.
MAX_CUTOFF_NODES = 100_000
#: Bound on cut-off subtrees walked per tree.
MAX_CUTOFFS = 256


@dataclass
class CutOff:
    """An allocated ``xa_node`` of this XArray that the tree does not
    reach (top of a cut-off subtree)."""

    node: int
    parent: int               # node->parent: the node it was taken from
    offset: int               # node->offset: its slot there
    shift: int                # node->shift
    index: Optional[int]      # first index of that slot (None: unknown)
    span: int                 # indices the slot covers
    folios: List[FolioRec] = field(default_factory=list)  # own, unreached
    pages: int = 0
    nodes: int = 0            # nodes walked under it
    problems: int = 0         # unreadable nodes / folios under it


@dataclass
class LostFolio:
    """A folio of this mapping that the tree does not hold at its
    ``index``."""

    folio: FolioRec
    found: str                       # "cut-off node" / "memory map"
    node: Optional[int] = None       # the cut-off node holding it
    reached_at: Tuple[int, ...] = ()  # indices the tree holds it at instead
    unreadable: Optional[int] = None  # unreadable node whose range has it
    locked: bool = False             # PG_locked: maybe being added


@dataclass
class Shared:
    """One node reached from two slots (a NODE_SHARED finding)."""

    finding: Any              # the NODE_SHARED Finding
    node: int
    shift: Optional[int]
    span: int
    first: Tuple[int, int, int]     # (holder, slot, index) walked first
    second: Tuple[int, int, int]    # (holder, slot, index) walked again
    own: Optional[int]        # 0: first, 1: second, None: neither
    delta: int                # second index - first index
    pages: int                # own folio pages under it (counted twice)
    folios: int
    walked: bool              # the second position was walked
    cutoff: Optional[CutOff] = None     # the node cut off the other slot
    cutoff_pages: Optional[int] = None  # memory map: pages of that range
    cutoff_folios: Optional[int] = None

    @property
    def wrong(self) -> Tuple[int, int, int]:
        """The position its parent/offset do not name (the second when
        neither does)."""
        return self.first if self.own == 1 else self.second


@dataclass
class CrossTree:
    """A node whose ``array`` names another XArray (a NODE_ARRAY finding),
    looked up in that tree: is it held there too - one subtree under two
    trees - or is its ``array`` just stale?"""

    finding: Any
    node: int
    array: int                      # the other struct xarray
    reached: Optional[bool]         # None: could not tell (unreadable)
    index: Optional[int] = None     # first index it covers there
    span: int = 0
    holder: Optional[int] = None    # node->parent (0: that xa_head)
    slot: Optional[int] = None      # node->offset
    why: str = ""                   # the link that fails, when not reached


@dataclass
class Unreadable:
    node: int
    holder: Optional[int]
    slot: Optional[int]
    index: int
    span: int


@dataclass
class Lost:
    """The accounting of one tree (:func:`account`)."""

    nrpages: Optional[int]
    reachable: int = 0              # distinct own folio pages the tree reaches
    reachable_folios: int = 0
    per_slot: int = 0               # pages counting every canonical slot
    foreign: int = 0                # pages of folios of other mappings
    foreign_folios: int = 0
    cutoffs: List[CutOff] = field(default_factory=list)
    folios: List[LostFolio] = field(default_factory=list)
    unreadable: List[Unreadable] = field(default_factory=list)
    shared: List[Shared] = field(default_factory=list)
    cross: List[CrossTree] = field(default_factory=list)
    memmap: Optional[str] = None    # what the memory map walk read; None: not run
    memmap_complete: bool = False
    slab: bool = False              # cut-off nodes looked for in the slab
    notes: List[str] = field(default_factory=list)

    @property
    def counted_twice(self) -> int:
        """Pages the tree counts more than once (per slot - distinct,
        own and foreign folios)."""
        return max(0, self.per_slot - self.reachable - self.foreign)

    @property
    def cutoff_pages(self) -> int:
        return sum(c.pages for c in self.cutoffs)

    @property
    def memmap_pages(self) -> int:
        """Pages of lost folios found only in the memory map (not under a
        cut-off node, not reached at another index)."""
        return sum(x.folio.nr_pages for x in self.folios
                   if x.found == "memory map" and not x.reached_at)

    @property
    def unexplained(self) -> Optional[int]:
        """nrpages minus every page accounted for (None: no nrpages)."""
        if self.nrpages is None:
            return None
        return (self.nrpages - self.reachable - self.cutoff_pages
                - self.memmap_pages)

    @property
    def unreadable_span(self) -> int:
        return sum(u.span for u in self.unreadable)

    def terms(self, addr=fmt.hx) -> List[str]:
        """The right-hand side of the equation, one term each:
        ``51136 reachable``, ``+ 64 in cut-off node X (was slot 1 of
        node Y)``, ..."""
        out = ["%d reachable" % self.reachable]
        for c in self.cutoffs:
            if not c.pages:
                continue
            was = ("was slot %d of node %s" % (c.offset, addr(c.parent))
                   if c.parent else "was the root")
            out.append("+ %d in cut-off node %s (%s)"
                       % (c.pages, addr(c.node), was))
        m = [x for x in self.folios
             if x.found == "memory map" and not x.reached_at]
        if m:
            pages = sum(x.folio.nr_pages for x in m)
            inside = sum(1 for x in m if x.unreadable is not None)
            s = "+ %d in %d folio%s cut off (memory map)" % (
                pages, len(m), "" if len(m) == 1 else "s")
            if inside:
                s += ", %d under unreadable nodes" % inside
            out.append(s)
        return out

    def line(self, addr=fmt.hx) -> str:
        """``nrpages 51200 = 51136 reachable + 64 in cut-off node X (was
        slot 1 of node Y)``, or what remains unexplained."""
        if self.nrpages is None:
            return "no nrpages (not a page cache)"
        s = "nrpages %d = %s" % (self.nrpages, " ".join(self.terms(addr)))
        rest = self.unexplained
        if rest:
            s += " " + self.rest_phrase()
        return s

    def lines(self, addr=fmt.hx) -> List[str]:
        """:meth:`line` as short lines (one term each), and the pages the
        tree counts twice."""
        if self.nrpages is None:
            return []
        terms = self.terms(addr)
        out = ["nrpages %d = %s" % (self.nrpages, terms[0])]
        out.extend("  " + t for t in terms[1:])
        if self.unexplained:
            out.append("  " + self.rest_phrase())
        if self.counted_twice:
            out.append("  (%d pages counted twice by the tree)"
                       % self.counted_twice)
        return out

    def says_more(self) -> bool:
        """Something beyond "nrpages = what the tree reaches"."""
        return self.nrpages is not None and (
            len(self.terms()) > 1 or bool(self.unexplained)
            or bool(self.counted_twice))

    def rest_phrase(self) -> str:
        """What is left: ``+ 32 unexplained`` with the reason a search
        could not account for it."""
        rest = self.unexplained or 0
        if rest < 0:
            return "- %d (the tree reaches more than nrpages)" % -rest
        why = []
        if self.unreadable and not self.memmap_complete:
            why.append("up to %d in unreadable nodes" % self.unreadable_span)
        if self.memmap is not None and not self.memmap_complete:
            why.append("memory map partly unreadable")
        todo = [w for w, done in (("memory map", self.memmap is not None),
                                  ("slab", self.slab)) if not done]
        if todo:
            why.append("not searched: " + ", ".join(todo))
        return "+ %d unexplained%s" % (rest, " (%s)" % "; ".join(why)
                                       if why else "")


# ----------------------------------------------------------------------


def _own_entries(a: Any) -> Tuple[Dict[int, List[int]], List[Tuple[int, int, int]]]:
    """``reached``: folio -> indices of the canonical slots holding it,
    and ``rows``: ``(index, folio, pages)`` of every canonical pointer
    entry to a readable head folio, in index order."""
    reached: Dict[int, List[int]] = {}
    rows: List[Tuple[int, int, int]] = []
    get = a.folios.get
    POINTER = E.POINTER
    for node, block in entry_blocks(a.walk.entries):
        if node is not None:
            if block != POINTER:
                continue
            sh = node.eshift
            pairs = zip(range(node.index, node.index + (len(node.slots) << sh),
                              1 << sh), node.slots)
        else:
            pairs = ((e.index, e.raw) for e in block if e.kind == POINTER)
        for idx, raw in pairs:
            lst = reached.get(raw)
            if lst is None:
                reached[raw] = [idx]
            else:
                lst.append(idx)
            f = get(raw)
            rows.append((idx, raw, f.nr_pages if f is not None
                         and not f.is_tail else 0))
    return reached, rows


def account(a: Any, mem: Optional[Memory], memmap: Any = None,
            slab_nodes: Optional[Iterable[Any]] = None) -> Lost:
    """Account for ``a.target.nrpages`` (``a``: an Analysis).

    ``memmap``: a :class:`crashext.memmap.MemmapResult` holding this
    mapping's folios (None: not searched).  ``slab_nodes``: objects with
    ``addr, shift, offset, parent, array, state`` (the slab walk's node
    headers; those with state ``"allocated"`` are used), None: not
    searched.  Reads memory (``mem``) only to walk cut-off subtrees."""
    t = a.target
    lay = a.layout
    M = t.mapping
    lost = Lost(nrpages=t.nrpages)
    if not a.findings and memmap is None and slab_nodes is None:
        # A clean tree: every folio is this mapping's, held once, and
        # their pages sum to nrpages (the folio check said so).
        s = a.stats
        lost.reachable = lost.per_slot = s.pages
        lost.reachable_folios = s.folios
        return lost
    reached, rows = _own_entries(a)
    get = a.folios.get
    seen = set()
    for idx, raw, pages in rows:
        lost.per_slot += pages
        if raw in seen or not pages:
            continue
        seen.add(raw)
        f = get(raw)
        if f.mapping == M:
            lost.reachable += pages
            lost.reachable_folios += 1
        else:
            lost.foreign += pages
            lost.foreign_folios += 1
    for f in a.walk.problems:
        if f.code == "NODE_UNREADABLE":
            lost.unreadable.append(Unreadable(
                f.address or 0, f.node, f.slots[0] if f.slots else None,
                f.indices[0] if f.indices else 0,
                (f.extra or {}).get("span") or 0))
    # Each node walked at its first position (Walk.node_at, one pass).
    walked: Dict[int, Any] = {}
    for n in a.walk.nodes:
        walked.setdefault(n.addr, n)
    if slab_nodes is not None and lay is not None:
        lost.slab = True
        _cutoffs(a, mem, lost, slab_nodes, walked, reached)
    cut_folios = {x.addr: c for c in lost.cutoffs for x in c.folios}
    for c in lost.cutoffs:
        for x in c.folios:
            lost.folios.append(LostFolio(
                x, "cut-off node", node=c.node,
                locked="locked" in folio_state(lay, x.flags)))
    if memmap is not None:
        lost.memmap = memmap.describe()
        lost.memmap_complete = memmap.complete
        lost.notes.extend(memmap.notes)
        for f in memmap.folios.get(M, []):
            at = reached.get(f.addr)
            if at is not None and f.index in at:
                continue                    # held at its own index
            if f.addr in cut_folios:
                continue                    # counted under its cut-off node
            lost.folios.append(LostFolio(
                f, "memory map", reached_at=tuple(at or ()),
                unreadable=_under(lost.unreadable, f.index),
                locked="locked" in folio_state(lay, f.flags)))
    lost.folios.sort(key=lambda x: (x.folio.index, x.folio.addr))
    _shared(a, lost, rows, walked)
    if mem is not None and lay is not None:
        for f in a.findings:
            if f.code == "NODE_ARRAY" and f.node and isinstance(f.found, int) \
                    and f.found > 1:
                lost.cross.append(_other_tree(mem, lay, f, f.node, f.found))
    return lost


def _other_tree(mem: Memory, lay: Any, f: Any, node: int,
                array: int) -> CrossTree:
    """Follow ``node``'s parent/offset chain in ``array``'s tree to its
    ``xa_head``: every parent must name the same array, sit one level up
    and hold the child at ``offset`` (the links ``xas_store()`` keeps)."""
    cshift = lay.chunk_shift
    c = CrossTree(f, node, array, None)
    read = node_reader(lay)     # (shift, offset, count, nr_values, parent,
    #                             array, slots, marks) of one node read

    try:
        shift, offset, _, _, parent, _, _, _ = read(mem, node)
        c.holder, c.slot = parent, offset
        c.span = 1 << min(shift + cshift, 64)
        cur, index = node, 0
        for _ in range(64 // cshift + 1):
            if not parent:
                head = mem.read_u64(array + lay.xa_head)
                c.reached = head == cur | 2
                if not c.reached:
                    c.why = "its xa_head holds another entry"
                break
            pshift, poff, _, _, pparent, parr, pslots, _ = read(mem, parent)
            slot = pslots[offset] if offset < lay.chunk_size else None
            if parr != array or pshift != shift + cshift or slot != cur | 2:
                c.reached = False
                c.why = ("parent %s names another array" % fmt.hx(parent)
                         if parr != array else
                         "parent %s slot %d holds another entry"
                         % (fmt.hx(parent), offset))
                break
            index += offset << pshift
            cur, shift, offset, parent = parent, pshift, poff, pparent
        else:
            c.why = "parent chain too long"
        if c.reached:
            c.index = index
    except UnreadableMemory as e:
        c.why = "unreadable: %s" % (e.reason or e)
    return c


def findings(lost: Lost) -> List[Finding]:
    """The evidence the accounting adds: NODE_CUT_OFF per cut-off node (a
    WARNING when it holds none of this file's folios), FOLIO_LOST per folio of this mapping not held at its index (a
    WARNING while the folio is locked: ``__filemap_add_folio()`` sets
    ``mapping`` and ``index`` before it stores the folio, under the
    folio lock)."""
    out: List[Finding] = []
    for c in lost.cutoffs:
        # A cut-off node holding none of this file's folios may be one
        # xas_split_alloc() set up (->array set) and has not linked yet.
        out.append(Finding(
            "NODE_CUT_OFF", severity="" if c.pages else WARNING,
            node=c.node, shift=c.shift,
            indices=(c.index,) if c.index is not None else (),
            extra={"parent": c.parent, "offset": c.offset, "span": c.span,
                   "pages": c.pages, "folios": len(c.folios)}))
    for x in lost.folios:
        f = x.folio
        extra: Dict[str, Any] = {"found": x.found, "pages": f.nr_pages}
        if x.node is not None:
            extra["cutoff_node"] = x.node
        if x.reached_at:
            extra["reached_at"] = list(x.reached_at)
        if x.unreadable is not None:
            extra["unreadable_node"] = x.unreadable
        sev = WARNING if x.locked else ""
        out.append(Finding("FOLIO_LOST", severity=sev, folio=f.addr,
                           indices=(f.index,), order=f.order,
                           expected="held at %d" % f.index,
                           found=("held at %s" % ",".join(
                               "%d" % i for i in x.reached_at[:4])
                               if x.reached_at else "not held"),
                           extra=extra))
    return out


def _under(unreadable: List[Unreadable], index: int) -> Optional[int]:
    for u in unreadable:
        if u.index <= index < u.index + u.span:
            return u.node
    return None


def _cutoffs(a: Any, mem: Optional[Memory], lost: Lost,
             slab_nodes: Iterable[Any], walked: Dict[int, Any],
             reached: Dict[int, List[int]]) -> None:
    """The tops of the subtrees cut off this tree, walked.  ``walked``:
    address -> the tree's node there at its first position."""
    lay = a.layout
    xa = a.walk.xarray
    cshift = lay.chunk_shift
    cand = {n.addr: n for n in slab_nodes
            if getattr(n, "state", "allocated") == "allocated"
            and n.array == xa and n.addr not in walked}
    tops = [n for n in cand.values() if n.parent not in cand]
    tops.sort(key=lambda n: (n.parent, n.offset, n.addr))
    if len(tops) > MAX_CUTOFFS:
        lost.notes.append("%d cut-off nodes; the first %d walked"
                          % (len(tops), MAX_CUTOFFS))
        tops = tops[:MAX_CUTOFFS]
    M = a.target.mapping
    for n in tops:
        p = walked.get(n.parent) if n.parent else None
        index: Optional[int] = None
        eshift: Optional[int] = None
        if p is not None and n.offset < lay.chunk_size:
            index = p.slot_index(n.offset)
            eshift = p.eshift - cshift if p.eshift >= cshift else None
        span = 1 << ((eshift if eshift is not None else n.shift) + cshift)
        c = CutOff(n.addr, n.parent, n.offset, n.shift, index, span)
        lost.cutoffs.append(c)
        if mem is None:
            continue
        try:
            w = walk_subtree(mem, lay, n.addr, index, eshift,
                             max_nodes=MAX_CUTOFF_NODES)
        except UnreadableMemory:
            c.problems += 1
            continue
        c.nodes = w.unique_nodes
        c.problems = sum(1 for f in w.problems
                         if f.code in ("NODE_UNREADABLE", "WALK_TRUNCATED"))
        raws = [e.raw for e in w.entries
                if e.kind == E.POINTER and e.raw >= KERNEL_MIN]
        recs, bad = read_folios(mem, lay, raws)
        c.problems += len(bad)
        got = set()
        for raw in raws:
            f = recs.get(raw)
            if f is None or f.is_tail or f.mapping != M or raw in got:
                continue
            got.add(raw)
            if raw in reached:
                continue        # the tree still reaches it elsewhere
            c.folios.append(f)
            c.pages += f.nr_pages


def _shared(a: Any, lost: Lost, rows: List[Tuple[int, int, int]],
            walked: Dict[int, Any]) -> None:
    """A story per NODE_SHARED finding (``walked``: as for
    :func:`_cutoffs`)."""
    idxs = [r[0] for r in rows]
    get = a.folios.get
    M = a.target.mapping
    for f in a.findings:
        if f.code != "NODE_SHARED":
            continue
        x = walked.get(f.address) if f.address else None
        ex = f.extra or {}
        first = (ex.get("first_holder") or 0, ex.get("first_slot", -1),
                 ex.get("first_index") or 0)
        second = (f.node or 0, f.slots[0] if f.slots else -1,
                  f.indices[0] if f.indices else 0)
        own = None
        if x is not None:
            for k, pos in enumerate((first, second)):
                if (pos[0], pos[1]) == (x.parent, x.offset):
                    own = k
        span = ex.get("span") or 0
        lo = bisect.bisect_left(idxs, first[2])
        hi = bisect.bisect_left(idxs, first[2] + span)
        pages = folios = 0
        for idx, raw, p in rows[lo:hi]:
            r = get(raw)
            if p and r is not None and r.mapping == M:
                pages += p
                folios += 1
        s = Shared(f, f.address or 0, f.shift, span, first, second, own,
                   second[2] - first[2], pages, folios,
                   bool(ex.get("walked")))
        holder, slot, index = s.wrong
        for c in lost.cutoffs:
            if c.parent == holder and c.offset == slot:
                s.cutoff = c
        if lost.memmap is not None:
            inside = [x_ for x_ in lost.folios
                      if index <= x_.folio.index < index + span]
            s.cutoff_pages = sum(x_.folio.nr_pages for x_ in inside)
            s.cutoff_folios = len(inside)
        lost.shared.append(s)


__all__ = ["Lost", "CutOff", "LostFolio", "Shared", "Unreadable", "account"]
