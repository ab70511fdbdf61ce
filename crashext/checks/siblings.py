"""Sibling entries and multi-index runs.

A multi-index entry of order ``o`` stored in a node of shift ``s`` is one
canonical slot ``k`` (aligned to ``2^(o-s)``) followed by ``2^(o-s) - 1``
slots holding ``xa_mk_sibling(k)`` (``xas_store()`` with ``xa_sibs``; an
entry of order ``s + 6`` takes one slot of the parent instead).  So a
sibling must point backwards, at a pointer or value entry, with only
siblings of the same value in between.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Iterator, List, Tuple

from ..findings import Finding
from ..xarray import entry as E
from ..xarray.walk import entry_blocks
from . import CheckContext


def _explicit(entries):
    """The entries outside uniform node blocks (whose entries all have
    nr_slots 1, which this check skips)."""
    for node, block in entry_blocks(entries):
        if node is None:
            yield from block

_TARGET_CODE = {
    E.EMPTY: "SIBLING_TO_NULL",
    E.SIBLING: "SIBLING_TO_SIBLING",
    E.NODE: "SIBLING_TO_NODE",
    E.RETRY: "SIBLING_TO_SPECIAL",
    E.ZERO: "SIBLING_TO_SPECIAL",
    E.BAD_INTERNAL: "SIBLING_TO_SPECIAL",
}


@lru_cache(maxsize=None)
def _siblings(chunk: int) -> frozenset:
    """Every value the check takes for a sibling entry (4k+2 <= 4096)."""
    return frozenset(E.xa_mk_sibling(k) for k in range(min(chunk - 1, 1024)))


def check(ctx: CheckContext) -> Iterator[Finding]:
    chunk = ctx.layout.chunk_size
    kind_of = E.kind_of
    sibs = _siblings(chunk)
    for n in ctx.walk.nodes:
        slots = n.slots
        if sibs.isdisjoint(slots):
            continue            # fast path: no sibling entry in this node
        # (code, target slot) -> offending slots, one finding per group.
        bad: Dict[Tuple[str, int], List[int]] = {}
        for i in range(chunk):
            ent = slots[i]
            if ent & 3 != 2 or ent > 4096 or (ent >> 2) >= chunk - 1:
                continue                        # not a sibling
            k = ent >> 2
            if k >= i:
                code = "SIBLING_FORWARD"
            else:
                tk = kind_of(slots[k], chunk)
                code = _TARGET_CODE.get(tk)
                if code is None:
                    # Target is a pointer/value: everything between must be
                    # the same sibling.
                    if any(slots[j] != ent for j in range(k + 1, i)):
                        code = "SIBLING_RUN_BROKEN"
            if code:
                bad.setdefault((code, k), []).append(i)
        for (code, k), where in bad.items():
            yield Finding(code, node=n.addr, slots=tuple(where),
                          indices=tuple(n.slot_index(i) for i in where),
                          expected="sibling of an earlier entry",
                          found="sibling(%d)" % k, shift=n.eshift,
                          extra={"target_slot": k,
                                 "target": slots[k] if k < chunk else None})
    for e in _explicit(ctx.walk.entries):
        if e.nr_slots == 1 or e.node == 0:
            continue
        n = e.nr_slots
        if n & (n - 1):
            yield Finding("SIBLING_RUN_SIZE", node=e.node, slots=(e.slot,),
                          indices=(e.index,), expected="2^n slots",
                          found=n, shift=e.shift)
        elif e.slot % n:
            yield Finding("SIBLING_RUN_ALIGN", node=e.node, slots=(e.slot,),
                          indices=(e.index,), expected=0,
                          found=e.slot % n, order=e.tree_order,
                          shift=e.shift)
