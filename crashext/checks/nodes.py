"""Node header checks: each ``xa_node`` field against what the walk saw.

Invariants (lib/xarray.c): a child's ``shift`` is its parent's minus
XA_CHUNK_SHIFT (``xas_expand``/``xas_create``); ``parent`` and ``offset``
name the slot that holds it; ``array`` is the owning ``struct xarray``
(XA_RCU_FREE == 1 while ``xa_node_free()`` waits for RCU); ``count`` is
the number of non-NULL slots, siblings included, and ``nr_values`` the
number of slots holding a value entry or a sibling of one (both kept by
``update_node()`` from ``xas_store()``).  A shared node walked again at a
second position (``NodeRec.visit`` > 0) is checked again only for what
depends on the position (shift, parent, offset); its own fields were
checked at the first.
"""

from __future__ import annotations

from typing import Iterator

from ..findings import Finding
from ..xarray import entry as E
from ..xarray.walk import entry_blocks
from . import CheckContext, ino_of_mapping


def check(ctx: CheckContext) -> Iterator[Finding]:
    yield from ctx.walk.problems
    xa = ctx.walk.xarray
    chunk = ctx.layout.chunk_size
    # Nodes the walk found uniform (all pointers / all values).
    uniform = {node.addr: kind for node, kind in
               entry_blocks(ctx.walk.entries) if node is not None}
    for n in ctx.walk.nodes:
        idx = (n.index,)
        if n.shift != n.eshift:
            yield Finding("NODE_SHIFT", node=n.addr, indices=idx,
                          expected=n.eshift, found=n.shift, shift=n.eshift)
        if n.holder == 0:
            # (The walk only meets the root at holder 0, and never again.)
            if n.parent and not n.visit:
                yield Finding("ROOT_PARENT", node=n.addr, indices=idx,
                              expected=0, found=n.parent)
        else:
            if n.parent != n.holder:
                yield Finding("NODE_PARENT", node=n.addr, indices=idx,
                              expected=n.holder, found=n.parent)
            if n.offset != n.holder_slot:
                yield Finding("NODE_OFFSET", node=n.addr, indices=idx,
                              expected=n.holder_slot, found=n.offset)
        if n.visit:
            continue        # position-dependent checks only (docstring)
        if n.array == E.XA_RCU_FREE:
            yield Finding("NODE_FREEING", node=n.addr, indices=idx,
                          expected=xa, found=n.array)
        elif n.array != xa:
            extra = {}
            other = ino_of_mapping(ctx, n.array - ctx.layout.as_i_pages)
            if other is not None:
                extra["other_ino"] = other
            yield Finding("NODE_ARRAY", node=n.addr, indices=idx,
                          expected=xa, found=n.array, extra=extra)
        slots = n.slots
        kind = uniform.get(n.addr)
        if kind == E.POINTER:       # every slot a pointer
            count, values = len(slots), 0
        elif kind == E.VALUE:       # every slot a value entry
            count = values = len(slots)
        else:
            count = len(slots) - slots.count(0)
            values = 0
            # Only value entries (bit 0) and their siblings count in
            # nr_values: a node without any odd slot has none.
            if any(map(_ODD, slots)):
                values = _values(slots, chunk)
        if count != n.count:
            yield Finding("NODE_COUNT", node=n.addr, indices=idx,
                          expected=count, found=n.count)
        if values != n.nr_values:
            yield Finding("NODE_NR_VALUES", node=n.addr, indices=idx,
                          expected=values, found=n.nr_values)
        if count == 0:
            yield Finding("NODE_EMPTY", node=n.addr, indices=idx)


_ODD = (1).__and__


def _values(slots, chunk: int) -> int:
    """``nr_values`` as update_node() keeps it: slots holding a value entry
    or a sibling of one."""
    values = 0
    canon_value = False
    for s in slots:
        if not s:
            canon_value = False
            continue
        if s & 1:
            values += 1
            canon_value = True
        elif s & 3 == 2 and s <= 4096 and (s >> 2) < chunk - 1:
            values += canon_value          # sibling of a value entry
        else:
            canon_value = False
    return values
