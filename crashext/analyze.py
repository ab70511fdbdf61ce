"""Walk one tree, run every check, explain: returns data only.

This is the single code path behind every front door (CLI, crash/PyKdump
command, drgn command, batch scan), so their outputs agree by
construction.

>>> a = analyze(mem, "/mnt/xfs/big64")          # doctest: +SKIP
>>> a.verdict, len(a.findings)                   # doctest: +SKIP
('clean', 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .checks import CheckContext, duplicates, folios, marks, nodes, siblings
from .explain import Explanation, explain
from .findings import ERROR, SEVERITY_RANK, Finding
from .folio import FolioRec, read_folios
from .layout import Layout
from .memory import Memory
from .targets import Target, resolve_target
from .xarray import entry as E
from .xarray.walk import MAX_NODES, Walk, walk_xarray

#: Check families in report order.
ALL_CHECKS = (
    ("nodes", nodes.check),
    ("siblings", siblings.check),
    ("duplicates", duplicates.check),
    ("folios", folios.check),
    ("marks", marks.check),
)

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
    folios: Dict[int, FolioRec]
    findings: List[Finding]
    explanations: List[Explanation]
    stats: Stats
    notes: List[str] = field(default_factory=list)
    layout: Optional[Layout] = None

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def verdict(self) -> str:
        """``corrupt`` (any error), ``suspect`` (warnings only), ``clean``."""
        if self.errors:
            return "corrupt"
        if self.findings:
            return "suspect"
        return "clean"


def _stats(w: Walk, recs: Dict[int, FolioRec]) -> Stats:
    s = Stats(nodes=len(w.nodes), node_reads=w.reads)
    s.depth = max((n.depth for n in w.nodes), default=-1) + 1
    s.entries = len(w.entries)
    for e in w.entries:
        if e.kind == E.POINTER:
            f = recs.get(e.raw)
            if f is not None and not f.is_tail:
                s.folios += 1
                s.pages += f.nr_pages
                s.orders[f.order] = s.orders.get(f.order, 0) + 1
        elif e.kind == E.VALUE:
            s.values += 1
            s.value_indices += e.span if e.node else 1
    s.orders = dict(sorted(s.orders.items()))
    return s


def analyze(mem: Memory, target: Union[str, Target],
            max_nodes: int = MAX_NODES) -> Analysis:
    """Analyse one tree.  ``target`` is a spec for
    :func:`crashext.targets.resolve_target` or a resolved Target.

    Raises :class:`crashext.memory.CrashextError` (one-line message) when
    the tree cannot be analysed at all: bad target, unreadable header,
    missing debug info.  Everything found inside the tree is a finding.
    """
    lay = layout_for(mem)
    if not isinstance(target, Target):
        target = resolve_target(mem, lay, target)
    w = walk_xarray(mem, lay, target.xarray, max_nodes=max_nodes)
    addrs = [e.raw for e in w.entries
             if e.kind == E.POINTER and E.is_kernel_pointer(e.raw)]
    recs, bad = read_folios(mem, lay, addrs)
    ctx = CheckContext(mem, lay, target, w, recs, bad)
    if target.mapping is None:
        ctx.notes.append("bare XArray: folio mapping/index/nrpages "
                         "checks off")
    found: List[Finding] = []
    for _name, check in ALL_CHECKS:
        found.extend(check(ctx))
    found.sort(key=lambda f: (SEVERITY_RANK.get(f.severity, 9),
                              f.indices[0] if f.indices else -1, f.code))
    a = Analysis(target=target, release=lay.release, walk=w, folios=recs,
                 findings=found, explanations=[], stats=_stats(w, recs),
                 notes=ctx.notes, layout=lay)
    a.explanations = explain(a)
    return a
