"""Walk an XArray (``struct xarray`` + ``struct xa_node`` tree), one memory
read per node.

The walk records every node (header fields, the raw 64 slots, the marks)
and every canonical entry (pointer, value, retry, zero, bad internal) with
its XArray index and the number of slots its run of sibling entries covers.
It follows ``xas_descend()`` / ``xa_for_each`` semantics from
lib/xarray.c, but is defensive: a node is never followed twice (cycles), the
depth is bounded by the shift (a child's shift is its parent's minus
XA_CHUNK_SHIFT), and unreadable memory becomes a finding instead of an
exception.

Sibling entries are *not* judged here; the walk only attaches a sibling to
the canonical entry directly before it when the run is well formed
(``sibling(k)`` right after slot ``k`` or another ``sibling(k)``).  The
sibling checks (:mod:`crashext.checks.siblings`) re-read ``NodeRec.slots``.

>>> w = walk_xarray(mem, layout, 0xffff888006cbcab8)   # doctest: +SKIP
>>> len(w.nodes), w.entries[0].index                    # doctest: +SKIP
(151, 0)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..findings import Finding
from ..layout import Layout
from ..memory import LayoutError, Memory, UnreadableMemory
from . import entry as E

#: Default bound on nodes walked in one tree (about 2^30 indices of order-0
#: folios); beyond it the walk stops with WALK_TRUNCATED.
MAX_NODES = 20_000_000


@dataclass
class NodeRec:
    """One ``struct xa_node`` as read, plus where the walk found it."""

    addr: int
    shift: int            # as stored in the node
    offset: int
    count: int
    nr_values: int
    parent: int
    array: int
    slots: Tuple[int, ...]
    marks: Tuple[int, ...]    # one bitmap per mark (XA_MARK_0..)
    index: int            # first XArray index the node covers
    eshift: int           # shift the walk expects (from its position)
    depth: int
    holder: int           # node that held the entry (0: xa_head)
    holder_slot: int      # slot in holder (-1: xa_head)

    def slot_index(self, slot: int) -> int:
        return self.index + (slot << self.eshift)


@dataclass
class EntryRec:
    """A canonical (non-sibling) entry that is not a node."""

    index: int            # first XArray index
    raw: int              # the raw entry
    kind: int             # crashext.xarray.entry kind
    node: int             # node address; 0 when stored in xa_head
    slot: int             # slot within node (-1 for xa_head)
    shift: int            # the node's expected shift (0 for xa_head)
    nr_slots: int = 1     # canonical slot + well-formed siblings after it

    @property
    def tree_order(self) -> Optional[int]:
        """Order implied by the tree: shift + log2(slots), or None when the
        run is not a power of two or the entry is xa_head."""
        n = self.nr_slots
        if self.node == 0 or n & (n - 1):
            return None
        return self.shift + n.bit_length() - 1

    @property
    def span(self) -> int:
        """Number of indices the entry covers in the tree."""
        return self.nr_slots << self.shift


@dataclass
class Walk:
    """Result of walking one XArray."""

    xarray: int
    head: int = 0
    flags: int = 0
    nodes: List[NodeRec] = field(default_factory=list)
    entries: List[EntryRec] = field(default_factory=list)
    problems: List[Finding] = field(default_factory=list)
    truncated: bool = False
    reads: int = 0

    def node_at(self, addr: int) -> Optional[NodeRec]:
        for n in self.nodes:
            if n.addr == addr:
                return n
        return None


def _node_unpacker(lay: Layout):
    """Build one struct.Struct that decodes a whole xa_node in one call:
    4 header bytes, parent, array, the slots and the marks.  Offsets come
    from the dump's debug info.  A layout no kernel has (a damaged
    snapshot's answers) is a :class:`LayoutError`: XA_CHUNK_SHIFT is 4 or
    6, and every field lies inside the node."""
    if not (1 <= lay.chunk_shift <= 8 and 0 < lay.max_marks <= 8
            and 0 < lay.node_size <= 1 << 16):
        raise LayoutError("impossible struct xa_node layout (%s slots, %s "
                          "marks, %s bytes): damaged debug info"
                          % (lay.chunk_size, lay.max_marks, lay.node_size))
    fields = [
        (lay.node_shift, "B"), (lay.node_offset, "B"), (lay.node_count, "B"),
        (lay.node_nr_values, "B"), (lay.node_parent, "Q"),
        (lay.node_array, "Q"), (lay.node_slots, "%dQ" % lay.chunk_size),
    ]
    mark_longs = max(1, lay.chunk_size // 64)
    fields.append((lay.node_marks, "%dQ" % (lay.max_marks * mark_longs)))
    order = sorted(range(len(fields)), key=lambda i: fields[i][0])
    fmt = "<"
    pos = 0
    for i in order:
        off, code = fields[i]
        if off < pos or off >= lay.node_size:
            raise LayoutError("impossible struct xa_node layout: fields "
                              "overlap or lie outside the node")
        fmt += ("%dx" % (off - pos) if off > pos else "") + code
        pos = off + struct.calcsize("<" + code)
    if pos > lay.node_size:
        raise LayoutError("impossible struct xa_node layout: fields lie "
                          "outside the node")
    st = struct.Struct(fmt)
    # Map unpacked positions back to field order.
    counts = []
    for off, code in fields:
        n = int(code[:-1]) if len(code) > 1 else 1
        counts.append(n)
    starts = {}
    p = 0
    for i in order:
        starts[i] = p
        p += counts[i]
    return st, starts, counts


def walk_xarray(mem: Memory, lay: Layout, xarray: int,
                max_nodes: int = MAX_NODES) -> Walk:
    """Walk the XArray at address ``xarray`` and return a :class:`Walk`.

    Never raises for bad tree contents: unreadable nodes, cycles and
    impossible shifts become findings in ``Walk.problems``.  Raises
    :class:`UnreadableMemory` only when the ``struct xarray`` itself cannot
    be read (the caller reports that as "could not analyse").
    """
    w = Walk(xarray=xarray)
    hdr = mem.read(xarray + lay.xa_flags,
                   max(lay.xa_head, lay.xa_flags) + 8 - lay.xa_flags)
    w.reads += 1
    w.flags = int.from_bytes(hdr[0:4], "little")
    w.head = head = int.from_bytes(
        hdr[lay.xa_head - lay.xa_flags:lay.xa_head - lay.xa_flags + 8], "little")
    chunk = lay.chunk_size
    cshift = lay.chunk_shift
    kind_of = E.kind_of
    k = kind_of(head, chunk)
    if k == E.EMPTY:
        return w
    if k != E.NODE:
        if k == E.SIBLING:
            w.problems.append(Finding("SIBLING_IN_HEAD", indices=(0,),
                                      found=head, slots=()))
        else:
            # A single entry at index 0 (xa_head holds it directly).
            w.entries.append(EntryRec(0, head, k, 0, -1, 0, 1))
        return w

    st, starts, counts = _node_unpacker(lay)
    unpack = st.unpack_from
    s_shift, s_off, s_cnt, s_nrv, s_par, s_arr = (starts[i] for i in range(6))
    s_slots, s_marks = starts[6], starts[7]
    n_marks = counts[7]
    node_size = max(lay.node_size, st.size)
    seen = set()
    entries = w.entries
    nodes = w.nodes
    problems = w.problems
    limit_index = 1 << 64

    # Stack of (node_addr, index, eshift, depth, holder, holder_slot).
    # The root's expected shift is what it says, if sane.
    stack = [(E.xa_to_node(head), 0, None, 0, 0, -1)]
    while stack:
        addr, base, eshift, depth, holder, hslot = stack.pop()
        if addr in seen:
            problems.append(Finding(
                "NODE_CYCLE", node=holder or None,
                slots=(hslot,) if hslot >= 0 else (),
                indices=(base,), address=addr, shift=eshift))
            continue
        if len(nodes) >= max_nodes:
            w.truncated = True
            problems.append(Finding("WALK_TRUNCATED", expected=max_nodes,
                                    found=len(nodes) + 1 + len(stack)))
            break
        seen.add(addr)
        try:
            buf = mem.read(addr, node_size)
            w.reads += 1
        except UnreadableMemory as e:
            span = (1 << (eshift + cshift)) if eshift is not None else 0
            problems.append(Finding(
                "NODE_UNREADABLE", node=holder or None,
                slots=(hslot,) if hslot >= 0 else (),
                indices=(base,), address=addr, shift=eshift,
                extra={"reason": e.reason or str(e), "span": span}))
            continue
        v = unpack(buf)
        shift = v[s_shift]
        if eshift is None:
            # Root: trust its shift only if it is a multiple of
            # XA_CHUNK_SHIFT that leaves room in an unsigned long.
            if shift % cshift == 0 and shift < 64:
                eshift = shift
            else:
                problems.append(Finding("NODE_SHIFT", node=addr, expected="multiple of %d below 64" % cshift, found=shift))
                eshift = (63 // cshift) * cshift
        slots = v[s_slots:s_slots + chunk]
        rec = NodeRec(addr, shift, v[s_off], v[s_cnt], v[s_nrv], v[s_par],
                      v[s_arr], slots, v[s_marks:s_marks + n_marks], base,
                      eshift, depth, holder, hslot)
        nodes.append(rec)
        # Decode the slots; children are pushed in reverse so the walk
        # stays in index order.
        children = []
        run = None      # EntryRec whose sibling run is open
        run_slot = -1
        for i in range(chunk):
            ent = slots[i]
            if not ent:
                run = None
                continue
            t = ent & 3
            if t == 0:
                run = EntryRec(base + (i << eshift), ent, E.POINTER, addr, i, eshift)
                run_slot = i
                entries.append(run)
                continue
            if t & 1:
                run = EntryRec(base + (i << eshift), ent, E.VALUE, addr, i, eshift)
                run_slot = i
                entries.append(run)
                continue
            kk = kind_of(ent, chunk)
            if kk == E.SIBLING:
                if run is not None and (ent >> 2) == run_slot:
                    run.nr_slots += 1
                else:
                    run = None
                continue
            run = None
            idx = base + (i << eshift)
            if kk == E.NODE:
                if eshift == 0:
                    # A node entry in a leaf: xas_descend() would never
                    # follow it; it is corruption.  Record as an entry.
                    entries.append(EntryRec(idx, ent, E.NODE, addr, i, eshift))
                    continue
                if idx >= limit_index:
                    continue
                children.append((E.xa_to_node(ent), idx, eshift - cshift,
                                 depth + 1, addr, i))
                continue
            entries.append(EntryRec(idx, ent, kk, addr, i, eshift))
        stack.extend(reversed(children))
    # Entries of a node are recorded before its children's: restore index
    # order (nearly sorted already, so this is cheap).
    entries.sort(key=_index_key)
    return w


def _index_key(e: EntryRec) -> int:
    return e.index
