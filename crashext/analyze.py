"""Walk one tree, run every check, explain: returns data only.

This is the single code path behind every front door (CLI, crash/PyKdump
command, drgn command, batch scan), so their outputs agree by
construction.

>>> a = analyze(mem, "/mnt/xfs/big64")          # doctest: +SKIP
>>> a.verdict, len(a.findings)                   # doctest: +SKIP
('clean', 0)
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from .checks import CheckContext, duplicates, folios, marks, nodes, siblings
from .explain import Explanation, explain
from .findings import ERROR, SEVERITY_RANK, Finding
from .folio import FolioRec, read_folios
from .impact import Impact, assess
from .layout import Layout
from . import lost as L
from .memmap import MemmapResult, find_folios
from .memory import KERNEL_MIN, CrashextError, Memory
from .targets import Target, resolve_target
from .xarray import entry as E
from .xarray.walk import MAX_NODES, EntryList, Walk, entry_blocks, walk_xarray

#: Check families in report order.
ALL_CHECKS = (
    ("nodes", nodes.check),
    ("siblings", siblings.check),
    ("duplicates", duplicates.check),
    ("folios", folios.check),
    ("marks", marks.check),
)

#: Memory map walks ``memmap="auto"`` makes per Memory (dump).
AUTO_MEMMAP_WALKS = 16


def layout_for(mem: Memory) -> Layout:
    """Discover the kernel's struct layout once per Memory object."""
    lay = getattr(mem, "_crashext_layout", None)
    if lay is None:
        lay = Layout.discover(mem)
        mem._crashext_layout = lay          # type: ignore[attr-defined]
    return lay


@dataclass
class Stats:
    nodes: int = 0
    depth: int = 0
    entries: int = 0
    folios: int = 0
    pages: int = 0
    values: int = 0
    value_indices: int = 0
    orders: Dict[int, int] = field(default_factory=dict)
    node_reads: int = 0


@dataclass
class Analysis:
    """Everything one analysis found (renderers take this)."""

    target: Target
    release: Optional[str]
    walk: Walk
    folios: Mapping[int, FolioRec]     # a crashext.folio.FolioTable
    findings: List[Finding]
    explanations: List[Explanation]
    stats: Stats
    notes: List[str] = field(default_factory=list)
    layout: Optional[Layout] = None
    #: What the damage means for the file (crashext.impact).
    impact: Optional[Impact] = None
    #: How a live tree was judged (crashext.stable.Stability); None for
    #: a dump.
    stability: Optional[Any] = None

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def verdict(self) -> str:
        """``corrupt`` (any error), ``suspect`` (warnings only), ``clean``;
        on a live kernel also ``changing`` (findings whose evidence kept
        changing and none confirmed: not judged)."""
        st = self.stability
        if st is not None and not st.judged:
            return "changing"
        if self.errors:
            return "corrupt"
        if self.findings:
            return "suspect"
        return "clean"


def _stats(w: Walk, recs: Mapping[int, FolioRec],
           hints: Optional[Dict[str, Any]] = None) -> Stats:
    s = Stats(nodes=w.unique_nodes, node_reads=w.reads)
    s.depth = max((n.depth for n in w.nodes), default=-1) + 1
    s.entries = len(w.entries)
    POINTER, VALUE = E.POINTER, E.VALUE
    get = recs.get
    rows_of = getattr(recs, "rows", None)
    head_bit = getattr(recs, "head_bit", 0)
    # The folio check found every pointer entry a readable order-0 head.
    plain = bool(hints and hints.get("plain_order0"))
    orders: Dict[int, int] = {}
    folios = pages = values = value_indices = 0
    for node, block in entry_blocks(w.entries):
        if node is not None:
            n = len(node.slots)
            if block == VALUE:
                values += n
                value_indices += n << node.eshift
                continue
            if block == POINTER and plain:
                folios += n
                pages += n
                orders[0] = orders.get(0, 0) + n
                continue
            if block == POINTER and rows_of is not None:
                # Every folio readable, none a tail, none large: n order-0
                # folios (what the loop below would count).
                rows = rows_of(node.slots)
                if rows is not None:
                    fl, ch = list(zip(*rows))[:2]
                    if not any(map(head_bit.__and__, fl)) \
                            and not any(map(_ODD, ch)):
                        folios += n
                        pages += n
                        orders[0] = orders.get(0, 0) + n
                        continue
            block = EntryList.node_entries(node, block)
        for e in block:
            k = e.kind
            if k == POINTER and plain:
                folios += 1
                pages += 1
                orders[0] = orders.get(0, 0) + 1
            elif k == POINTER:
                f = get(e.raw)
                if f is not None and not f.compound_head & 1:   # not is_tail
                    o = f.order
                    folios += 1
                    pages += 1 << o
                    orders[o] = orders.get(o, 0) + 1
            elif k == VALUE:
                values += 1
                value_indices += e.span if e.node else 1
    s.folios, s.pages = folios, pages
    s.values, s.value_indices = values, value_indices
    s.orders = dict(sorted(orders.items()))
    return s


_ODD = (1).__and__


def _folio_addrs(w: Walk) -> List[int]:
    """Pointer entries that are plausible kernel pointers
    (:func:`E.is_kernel_pointer`), in entry order."""
    POINTER = E.POINTER
    kmin = KERNEL_MIN
    addrs: List[int] = []
    for node, block in entry_blocks(w.entries):
        if node is not None:
            if block != POINTER:
                continue
            slots = node.slots          # all multiples of 8
            if min(slots) >= kmin:
                addrs.extend(slots)
                continue
            block = EntryList.node_entries(node, block)
        addrs.extend([e.raw for e in block
                      if e.kind == POINTER and e.raw >= kmin
                      and not e.raw & 7])
    return addrs


def analyze(mem: Memory, target: Union[str, Target],
            max_nodes: int = MAX_NODES, memmap: Any = False,
            slab_nodes: Optional[Any] = None,
            policy: Optional[Any] = None) -> Analysis:
    """Analyse one tree.  ``target`` is a spec for
    :func:`crashext.targets.resolve_target` or a resolved Target.

    Where lost pages went (:mod:`crashext.lost`): ``memmap`` True walks
    the memory map for this mapping's folios (:mod:`crashext.memmap`),
    ``"auto"`` only when nrpages is not accounted for by the tree, or is
    a :class:`~crashext.memmap.MemmapResult` already made; ``slab_nodes``
    are the slab walk's node headers (cut-off subtrees), None: not
    searched.

    On a live kernel (``mem.live()``) the walk is repeated until every
    finding rests on stable evidence (:mod:`crashext.stable`; ``policy``
    is its :class:`~crashext.stable.LivePolicy`); the memory map and the
    slab, which change faster than they can be read, are not searched.

    Raises :class:`crashext.memory.CrashextError` (one-line message) when
    the tree cannot be analysed at all: bad target, unreadable header,
    missing debug info.  Everything found inside the tree is a finding.
    """
    # The cyclic GC would scan the (acyclic) records of a big tree over
    # and over while they are built; pause it for the analysis.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        if is_live(mem):
            from .stable import analyze_stable
            lay = layout_for(mem)
            if not isinstance(target, Target):
                target = resolve_target(mem, lay, target)
            # Each walk is checked only; what is reported is concluded
            # (impact, explanations) once its findings are confirmed.
            return analyze_stable(
                mem, lay, target,
                lambda t: _analyze(mem, t, max_nodes, concluded=False),
                lambda a: _conclude(mem, a, False, None), policy)
        return _analyze(mem, target, max_nodes, memmap, slab_nodes)
    finally:
        if gc_was_on:
            gc.enable()


def is_live(mem: Any) -> bool:
    """``mem`` is a running kernel (a Memory whose ``live()`` says so)."""
    live = getattr(mem, "live", None)
    try:
        return bool(live()) if callable(live) else False
    except Exception:
        return False


def _finding_order(f: Finding) -> Any:
    """Sort key of a report's findings: severity, first index, code."""
    return (SEVERITY_RANK.get(f.severity, 9),
            f.indices[0] if f.indices else -1, f.code)


def _analyze(mem: Memory, target: Union[str, Target],
             max_nodes: int, memmap: Any = False,
             slab_nodes: Optional[Any] = None,
             concluded: bool = True) -> Analysis:
    lay = layout_for(mem)
    if not isinstance(target, Target):
        target = resolve_target(mem, lay, target)
    w = walk_xarray(mem, lay, target.xarray, max_nodes=max_nodes)
    recs, bad = read_folios(mem, lay, _folio_addrs(w))
    ctx = CheckContext(mem, lay, target, w, recs, bad)
    if target.mapping is None:
        ctx.notes.append("bare XArray: folio mapping/index/nrpages "
                         "checks off")
    # One bulk pass that lets the folio, duplicate and stats code skip a
    # clean tree of order-0 folios (the common big case).
    folios.plain_order0(ctx)
    found: List[Finding] = []
    for _name, check in ALL_CHECKS:
        found.extend(check(ctx))
    found.sort(key=_finding_order)
    a = Analysis(target=target, release=lay.release, walk=w, folios=recs,
                 findings=found, explanations=[],
                 stats=_stats(w, recs, ctx.hints),
                 notes=ctx.notes, layout=lay)
    if concluded:
        _conclude(mem, a, memmap, slab_nodes)
    return a


def _conclude(mem: Memory, a: Analysis, memmap: Any,
              slab_nodes: Optional[Any]) -> None:
    """The last steps of an analysis, once its findings are final: what
    they mean for the file (``a.impact``) and why (``a.explanations``)."""
    a.impact = _impact(mem, a, memmap, slab_nodes)
    a.explanations = explain(a)


def _memmap_for(mem: Memory, a: Analysis) -> Optional[MemmapResult]:
    """This mapping's folios from the memory map, or None (with a note)
    when the dump does not say where the struct pages are."""
    try:
        return find_folios(mem, a.layout, [a.target.mapping])
    except CrashextError as e:
        a.notes.append(str(e))
        return None


def _impact(mem: Memory, a: Analysis, memmap: Any,
            slab_nodes: Optional[Any]) -> Impact:
    """:func:`crashext.impact.assess` with the memory map walked when
    asked (``memmap`` True, or "auto" and nrpages unexplained); the
    accounting's own findings (cut-off nodes, lost folios) join
    ``a.findings``."""
    t = a.target
    pc = t.mapping is not None and not t.swap_cache \
        and t.fs_type != "hugetlbfs"
    mm = memmap if isinstance(memmap, MemmapResult) else None
    if memmap is True and pc:
        mm = _memmap_for(mem, a)
    imp = assess(a, mem, mm, slab_nodes)
    if memmap == "auto" and mm is None and pc and imp.lost is not None \
            and imp.lost.unexplained:
        # Each walk reads the whole struct page array: a dump with many
        # such trees gets AUTO_MEMMAP_WALKS of them, then a note.
        done = getattr(mem, "_crashext_memmap_walks", 0)
        if done < AUTO_MEMMAP_WALKS:
            mem._crashext_memmap_walks = done + 1   # type: ignore
            mm = _memmap_for(mem, a)
            if mm is not None:
                imp = assess(a, mem, mm, slab_nodes)
        else:
            imp.notes.append("memory map not searched: %d automatic walks "
                             "done in this dump already (check --memmap)"
                             % done)
    if imp.lost is not None:
        extra = L.findings(imp.lost)
        if extra:
            a.findings.extend(extra)
            a.findings.sort(key=_finding_order)
    return imp
