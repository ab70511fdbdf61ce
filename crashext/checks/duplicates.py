"""The same folio at more than one canonical slot, anywhere in the tree.

A folio is inserted once, at its own index, with its order
(``__filemap_add_folio()``); every other slot it covers is a sibling
entry.  Two canonical slots holding one pointer mean a stale entry - the
seed case is a split leaving one folio at slots 16, 32 and 48 of a node.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

from ..findings import Finding
from ..xarray import entry as E
from ..xarray.walk import EntryRec, entry_blocks
from . import CheckContext


def check(ctx: CheckContext) -> Iterator[Finding]:
    if ctx.hints.get("plain_order0") is not None:
        return      # folios and entries matched one to one: no duplicate
    POINTER = E.POINTER
    raws: List[int] = []
    for node, block in entry_blocks(ctx.walk.entries):
        if node is None:
            raws.extend([e.raw for e in block if e.kind == POINTER])
        elif block == POINTER:
            raws.extend(node.slots)
    if len(set(raws)) == len(raws):
        return          # fast path: no pointer twice (the usual case)
    seen: Dict[int, List[EntryRec]] = {}
    dups = set()
    for e in ctx.walk.entries:
        if e.kind != E.POINTER:
            continue
        lst = seen.get(e.raw)
        if lst is None:
            seen[e.raw] = [e]
        else:
            lst.append(e)
            dups.add(e.raw)
    for raw in sorted(dups, key=lambda r: seen[r][0].index):
        lst = seen[raw]
        # One node position (a node walked twice - a shared subtree - is
        # one address at two positions: its copies are not slots of one
        # node then).
        where = {(e.node, e.index - (e.slot << e.shift)) for e in lst}
        f = ctx.folios.get(raw)
        yield Finding(
            "DUP_FOLIO", folio=raw,
            node=lst[0].node if len(where) == 1 else None,
            slots=tuple(e.slot for e in lst),
            indices=tuple(e.index for e in lst),
            order=f.order if f else None,
            shift=lst[0].shift,
            expected=1, found=len(lst),
            extra={"nodes": [e.node for e in lst],
                   "folio_index": f.index if f else None,
                   "runs": [e.nr_slots for e in lst]})
