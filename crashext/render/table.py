"""Table renderer: the analysis for a terminal, findings as a table
(:mod:`tabulate`; inside crash, where PyKdump's Python cannot import
tabulate, :mod:`.textable` draws the same ``simple`` table).

Header lines name the target (kind, inode, i_ino, mapping, xarray,
nrpages), the kernel release and the tree's statistics with the folio
order histogram; then the verdict, one row per finding (severity, code,
node, slot(s) within the node, XArray index in hex and decimal, folio,
expected, found), the explanations and the notes.

>>> print(render(analysis))                        # doctest: +SKIP
target    path /mnt/xfs/big64  inode 0xffff888006e6dd38  i_ino 131
...
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .. import fmt
from . import impact as impact_text
from .chat import (addr_fn, counts, first_per_code, orders_phrase,
                   pages_phrase, regroup, value_str, verdict_line)

HEADERS = ("severity", "code", "node", "slot", "index", "folio",
           "expected", "found")

#: Indices listed one per line in a cell before compressing with runs().
MAX_CELL_INDICES = 4

#: Rows per finding code in the table; the rest are counted below it
#: (a hostile tree can give tens of thousands; JSON lists every one).
MAX_ROWS_PER_CODE = 50

#: Explanations per conclusion code, likewise.
MAX_EXPLANATIONS_PER_CODE = 10


def header_lines(a: Any, grouped: bool = False) -> List[str]:
    """The lines above the findings table."""
    addr = addr_fn(grouped)
    t = a.target
    s = a.stats
    what = [t.kind + (" " + t.label if t.label else "")]
    if t.inode is not None:
        what.append("inode %s" % addr(t.inode))
    if t.i_ino is not None:
        what.append("i_ino %d" % t.i_ino)
    if getattr(t, "fs_type", None):
        what.append("fs %s" % t.fs_type)
    if getattr(t, "swap_cache", False):
        what.append("swap cache")
    if t.i_size is not None:
        what.append("i_size %d" % t.i_size)
    if t.folio is not None:
        what.append("folio %s" % addr(t.folio))
    out = ["target    " + "  ".join(what)]
    out.append("mapping   %s  xarray %s  nrpages %s" % (
        addr(t.mapping), addr(t.xarray),
        "-" if t.nrpages is None else t.nrpages))
    out.append("release   %s" % (a.release or "unknown"))
    out.append("stats     nodes %d  depth %d  entries %d  folios %d  "
               "pages %d  values %d (%d indices)  node reads %d" % (
                   s.nodes, s.depth, s.entries, s.folios, s.pages,
                   s.values, s.value_indices, s.node_reads))
    out.append("orders    %s   (order:folios)" % orders_phrase(s.orders))
    c = counts(a)
    out.append("verdict   %s   (%d errors, %d warnings; %s)" % (
        a.verdict.upper(), c["error"], c["warning"], pages_phrase(a)))
    return out


def _cell_indices(ix) -> str:
    if not ix:
        return ""
    if len(ix) <= MAX_CELL_INDICES:
        return "\n".join(fmt.idx(i) for i in ix)
    return "%s\n(%d indices)" % (fmt.runs(ix), len(ix))


def _cell_slots(f) -> str:
    if not f.slots:
        return ""
    slots = [s % 64 for s in f.slots if s >= 0]
    if not slots:
        return "head"
    if 1 < len(f.indices) <= MAX_CELL_INDICES and len(slots) == len(f.indices):
        return "\n".join(str(s) for s in slots)
    return fmt.slot_list(slots)


def rows(a: Any, grouped: bool = False,
         which: Optional[Sequence[int]] = None) -> List[List[str]]:
    """One row per finding (those at positions ``which``, default all),
    cells as strings (``HEADERS`` order)."""
    addr = addr_fn(grouped)
    out = []
    for f in (a.findings if which is None
              else [a.findings[i] for i in which]):
        out.append([
            f.severity,
            f.code,
            addr(f.node) if f.node is not None else "",
            _cell_slots(f),
            _cell_indices(f.indices),
            addr(f.folio) if f.folio is not None else "",
            value_str(f.code, f.expected, addr),
            value_str(f.code, f.found, addr),
        ])
    return out


def draw_table(cells: List[List[str]], headers: Sequence[str],
               tablefmt: str = "simple",
               showindex: Optional[Sequence[int]] = None) -> str:
    """``cells`` as a :mod:`tabulate` table; without tabulate (inside
    crash) the ``simple`` form from :func:`.textable.simple_table`."""
    try:
        from tabulate import tabulate
    except ImportError as e:
        # PyKdump: tabulate imports importlib.metadata and html, which its
        # embedded standard library does not have.
        if tablefmt != "simple":
            from ..memory import CrashextError
            raise CrashextError("table format %r needs tabulate (%s)"
                                % (tablefmt, e))
        from .textable import simple_table
        return simple_table(cells, headers, showindex)
    kw = {} if showindex is None else {"showindex": list(showindex)}
    return tabulate(cells, headers=list(headers), tablefmt=tablefmt,
                    disable_numparse=True, **kw)


def impact_lines(imp: Any, grouped: bool = False, tablefmt: str = "simple",
                 limit: Optional[int] = impact_text.MAX_TABLE_RANGES
                 ) -> List[str]:
    """The impact section: data at risk first, the totals, one row per
    byte range of the file (:func:`draw_table`), the nrpages equation."""
    addr = addr_fn(grouped)
    out = ["impact:"]
    risk = impact_text.risk_line(imp)
    if risk:
        out.append("  " + risk)
    out.extend("  " + x for x in impact_text.summary_lines(imp))
    if imp.ranges:
        t = draw_table(impact_text.table_rows(imp, addr, limit),
                       impact_text.HEADERS, tablefmt)
        out.extend("  " + ln for ln in t.splitlines())
        if limit is not None and len(imp.ranges) > limit:
            out.append("... %d more ranges not shown (-f json lists every "
                       "one)" % (len(imp.ranges) - limit))
    if imp.lost is not None and imp.lost.nrpages is not None:
        out.append("  " + imp.lost.line(addr))
    for n in imp.notes + (imp.lost.notes if imp.lost is not None else []):
        out.append("  note: " + n)
    return out


def render(a: Any, tablefmt: str = "simple", grouped: bool = False,
           meanings: bool = True,
           max_per_code: Optional[int] = MAX_ROWS_PER_CODE) -> str:
    """The analysis as header lines, a findings table, explanations and
    notes.  ``tablefmt`` is any :mod:`tabulate` format ("simple", "grid",
    "github", "plain", ...); ``grouped`` writes addresses as
    ``ffff8880_0a3c4000``; ``meanings`` adds the one-line meaning of each
    code present below the table; ``max_per_code`` caps the rows of
    each code (None: every finding), the rest counted below the table."""
    out = [verdict_line(a, None, addr_fn(grouped)), ""]
    out.extend(header_lines(a, grouped))
    if a.findings:
        out.append("")
        keep, left = first_per_code(a.findings, max_per_code)
        out.append(draw_table(rows(a, grouped, keep), HEADERS, tablefmt,
                              [i + 1 for i in keep]))
        for code, n in left.items():
            out.append("... %d more %s finding%s not shown (-f json "
                       "lists every one)" % (n, code, "" if n == 1 else "s"))
        if meanings:
            out.append("")
            seen = []
            for f in a.findings:
                if f.code not in seen:
                    seen.append(f.code)
                    out.append("%-20s %s" % (f.code, f.meaning))
    imp = getattr(a, "impact", None)
    if imp is not None and a.findings and (
            imp.ranges or (imp.lost is not None and imp.lost.says_more())):
        out.append("")
        out.extend(impact_lines(imp, grouped, tablefmt,
                                max_per_code))
    if a.explanations:
        out.append("")
        out.append("explanations:")
        keep, left = first_per_code(a.explanations, max_per_code and
                                    MAX_EXPLANATIONS_PER_CODE)
        for e in (a.explanations[k] for k in keep):
            refs = ",".join("#%d" % (i + 1) for i in e.findings)
            out.append("  %s (findings %s)" % (e.code, refs or "-"))
            for ln in e.lines:
                out.append("    " + (regroup(ln) if grouped else ln))
        for code, n in left.items():
            out.append("  ... %d more %s, same reasoning (-f json lists "
                       "every one)" % (n, code))
    if a.notes:
        out.append("")
        out.append("notes:")
        for n in a.notes:
            out.append("  - " + (regroup(n) if grouped else n))
    return "\n".join(out) + "\n"
