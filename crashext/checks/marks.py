"""XArray marks (dirty / writeback / towrite in a page cache).

``xas_set_mark()`` sets a mark on the canonical slot and on every
ancestor's slot up to the root; ``xas_clear_mark()`` clears an ancestor's
bit only when no slot of the child keeps it.  So a child with any bit of a
mark set <=> its slot in the parent has that mark.  Marks live on canonical
slots only (``xas_squash_marks()``), never on siblings or empty slots -
except mark 0 of an allocating XArray (XA_FLAGS_TRACK_FREE), where it
means "free".
"""

from __future__ import annotations

from typing import Dict, Iterator

from ..findings import Finding
from ..xarray import entry as E
from ..xarray.walk import NodeRec
from . import CheckContext

XA_FLAGS_TRACK_FREE = 4     # include/linux/xarray.h


def check(ctx: CheckContext) -> Iterator[Finding]:
    chunk = ctx.layout.chunk_size
    by_addr: Dict[int, NodeRec] = {n.addr: n for n in ctx.walk.nodes}
    track_free = bool(ctx.walk.flags & XA_FLAGS_TRACK_FREE)
    for n in ctx.walk.nodes:
        parent = by_addr.get(n.holder) if n.holder else None
        for m, bits in enumerate(n.marks):
            if parent is not None and n.holder_slot >= 0:
                pbit = parent.marks[m] >> n.holder_slot & 1
                if bool(bits) != bool(pbit):
                    yield Finding("MARK_PARENT", node=n.addr,
                                  indices=(n.index,),
                                  expected=int(bool(bits)), found=pbit,
                                  extra={"mark": m, "parent": parent.addr,
                                         "parent_slot": n.holder_slot})
            if not bits or (m == 0 and track_free) or n.visit:
                continue
            odd = []
            b = bits
            while b:
                low = b & -b
                i = low.bit_length() - 1
                b ^= low
                if i >= chunk:
                    break
                k = E.kind_of(n.slots[i], chunk)
                if k in (E.EMPTY, E.SIBLING):
                    odd.append(i)
            if odd:
                yield Finding("MARK_ON_EMPTY", node=n.addr, slots=tuple(odd),
                              indices=tuple(n.slot_index(i) for i in odd),
                              extra={"mark": m})
