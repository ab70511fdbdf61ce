"""Walk an XArray (``struct xarray`` + ``struct xa_node`` tree), one memory
read per node.

The walk records every node (header fields, the raw 64 slots, the marks)
and every canonical entry (pointer, value, retry, zero, bad internal) with
its XArray index and the number of slots its run of sibling entries covers.
It follows ``xas_descend()`` / ``xa_for_each`` semantics from
lib/xarray.c, but is defensive: the depth is bounded by the shift (a
child's shift is its parent's minus XA_CHUNK_SHIFT), unreadable memory
becomes a finding instead of an exception, and a node reached twice is
told apart:

* a **cycle** - the node is its own ancestor on the path from the root
  (``NODE_CYCLE``): never followed again on that path;
* a **shared subtree** - the node is reached again from another slot, not
  through itself (``NODE_SHARED``): readers that descend through either
  slot see its entries, so it is walked again at the second position (at
  most :data:`MAX_VISITS` times per node in all, so a hostile tree of
  nodes shared at every level stays linear), and the repeated
  :class:`NodeRec` has ``visit`` > 0.

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
from bisect import bisect_right
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ..findings import Finding
from ..layout import Layout
from ..record import SlotsRecord
from ..memory import LayoutError, Memory, UnreadableMemory
from . import entry as E

#: Default bound on nodes walked in one tree (about 2^30 indices of order-0
#: folios); beyond it the walk stops with WALK_TRUNCATED.
MAX_NODES = 20_000_000

#: Times one node is walked at most (its first position plus the
#: positions it is shared into); past that a NODE_SHARED finding says it
#: was not walked again.
MAX_VISITS = 4

#: Byte -> its low three bits: a node whose slots' low bytes all map to 0
#: (and that has no empty slot) holds only aligned pointers (fast path).
_LOW3 = bytes(b & 7 for b in range(256))
#: Byte -> its low bit: all 1 (and no empty slot) = only value entries.
_LOW1 = bytes(b & 1 for b in range(256))


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
    visit: int = 0        # 0: first position; >0: walked again (shared)

    def slot_index(self, slot: int) -> int:
        return self.index + (slot << self.eshift)


class EntryRec(SlotsRecord):
    """A canonical (non-sibling) entry that is not a node.

    A plain class with ``__slots__`` (not a dataclass): a tree of order-0
    folios has one record per page, and slots make each one cheap to
    create and to read.  Same constructor, fields, equality and repr as
    the dataclass it replaced.
    """

    __slots__ = ("index", "raw", "kind", "node", "slot", "shift", "nr_slots")

    def __init__(self, index: int, raw: int, kind: int, node: int,
                 slot: int, shift: int, nr_slots: int = 1) -> None:
        self.index = index        # first XArray index
        self.raw = raw            # the raw entry
        self.kind = kind          # crashext.xarray.entry kind
        self.node = node          # node address; 0 when stored in xa_head
        self.slot = slot          # slot within node (-1 for xa_head)
        self.shift = shift        # the node's expected shift (0 for xa_head)
        self.nr_slots = nr_slots  # canonical slot + well-formed siblings

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


class EntryList(Sequence):
    """The walk's entries (:class:`EntryRec`) in index order.

    Behaves as a read-only list (``len``, iteration, ``[i]``, slices,
    ``==`` with a list) plus ``append``/``sort`` for compatibility, but
    stores compactly: a node whose 64 slots all hold 8-byte aligned
    pointers (a leaf of order-0 folios) or all hold value entries is kept
    as one *block* that refers to its :class:`NodeRec`; its records are
    made when iterated.
    The checks use :meth:`blocks` to handle such nodes in bulk.  Records
    made from a block are new objects each time (equal, not identical).
    """

    __slots__ = ("_blocks", "_starts", "_len")

    def __init__(self, items: Iterable[EntryRec] = ()) -> None:
        # Each block: a list of EntryRec, or (NodeRec, kind) for a node
        # whose every slot is a canonical entry of that kind.
        self._blocks: List[Any] = []
        self._starts: Optional[List[int]] = None
        self._len = 0
        items = list(items)
        if items:
            self._blocks.append(items)
            self._len = len(items)

    # building ---------------------------------------------------------
    def append(self, e: EntryRec) -> None:
        b = self._blocks
        if not b or type(b[-1]) is not list:
            b.append([])
        b[-1].append(e)
        self._len += 1
        self._starts = None

    def extend(self, items: Iterable[EntryRec]) -> None:
        for e in items:
            self.append(e)

    def _add_list(self, items: List[EntryRec]) -> None:
        if items:
            b = self._blocks
            if b and type(b[-1]) is list:
                b[-1].extend(items)
            else:
                b.append(items)
            self._len += len(items)
            self._starts = None

    def _add_node(self, node: NodeRec, kind: int) -> None:
        self._blocks.append((node, kind))
        self._len += len(node.slots)
        self._starts = None

    def sort(self, key=None, reverse: bool = False) -> None:
        items = list(self)
        items.sort(key=key, reverse=reverse)
        self._blocks = [items] if items else []
        self._starts = None

    # reading ----------------------------------------------------------
    def blocks(self) -> Iterator[Tuple[Optional[NodeRec], Any]]:
        """``(node, kind)`` for a uniform node block (every slot of
        ``node`` is a canonical ``kind`` entry, nr_slots 1, index
        ``node.slot_index(slot)``; POINTER slots are all non-zero
        multiples of 8), or ``(None, [EntryRec, ...])``; in index
        order."""
        for b in self._blocks:
            if type(b) is list:
                yield None, b
            else:
                yield b

    @staticmethod
    def node_entries(node: NodeRec, kind: int) -> List[EntryRec]:
        """The records of a uniform node block."""
        n = len(node.slots)
        sh = node.eshift
        return list(map(EntryRec,
                        range(node.index, node.index + (n << sh), 1 << sh),
                        node.slots, repeat(kind), repeat(node.addr),
                        range(n), repeat(sh)))

    def explicit(self) -> Iterator[EntryRec]:
        """The records not in uniform node blocks (those all have
        ``nr_slots == 1``)."""
        for b in self._blocks:
            if type(b) is list:
                yield from b

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[EntryRec]:
        for b in self._blocks:
            if type(b) is list:
                yield from b
            else:
                yield from self.node_entries(*b)

    def _block_starts(self) -> List[int]:
        if self._starts is None:
            st, n = [], 0
            for b in self._blocks:
                st.append(n)
                n += len(b) if type(b) is list else len(b[0].slots)
            self._starts = st
        return self._starts

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        n = self._len
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("entry index out of range")
        st = self._block_starts()
        k = bisect_right(st, i) - 1
        b = self._blocks[k]
        j = i - st[k]
        if type(b) is list:
            return b[j]
        node, kind = b
        return EntryRec(node.slot_index(j), node.slots[j], kind, node.addr,
                        j, node.eshift)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (EntryList, list)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "EntryList(%d entries)" % self._len


def entry_blocks(entries: Any) -> Iterator[Tuple[Optional[NodeRec], Any]]:
    """:meth:`EntryList.blocks` of ``entries``; a plain list (a Walk built
    by hand) is one block of records."""
    blocks = getattr(entries, "blocks", None)
    if blocks is not None:
        return blocks()
    return iter([(None, list(entries))])


@dataclass
class Walk:
    """Result of walking one XArray."""

    xarray: int
    head: int = 0
    flags: int = 0
    nodes: List[NodeRec] = field(default_factory=list)
    entries: EntryList = field(default_factory=EntryList)
    problems: List[Finding] = field(default_factory=list)
    truncated: bool = False
    reads: int = 0

    def node_at(self, addr: int) -> Optional[NodeRec]:
        """The node at ``addr`` at its first position."""
        for n in self.nodes:
            if n.addr == addr:
                return n
        return None

    def positions(self, addr: int) -> List[NodeRec]:
        """Every position the walk met node ``addr`` at (more than one
        for a shared subtree), in walk order."""
        return [n for n in self.nodes if n.addr == addr]

    @property
    def unique_nodes(self) -> int:
        """Nodes walked, each counted once (a shared node walked at two
        positions is one node)."""
        return sum(1 for n in self.nodes if not n.visit)


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


#: The fields of a node that :func:`node_fields` and :func:`node_reader`
#: give, in order.
NODE_FIELDS = ("shift", "offset", "count", "nr_values", "parent", "array",
               "slots", "marks")


def node_fields(n: NodeRec) -> Tuple[Any, ...]:
    """A walked node's header, slots and marks as one tuple
    (:data:`NODE_FIELDS`), to compare with :func:`node_reader`'s."""
    return (n.shift, n.offset, n.count, n.nr_values, n.parent, n.array,
            n.slots, n.marks)


def node_reader(lay: Layout):
    """A function ``read(mem, addr)`` that reads one ``xa_node`` again
    (one read, decoded exactly as :func:`walk_xarray` decodes it) and
    returns :func:`node_fields`' tuple; it raises
    :class:`UnreadableMemory`.

    >>> read = node_reader(lay)                      # doctest: +SKIP
    >>> read(mem, node.addr) == node_fields(node)    # doctest: +SKIP
    True
    """
    st, starts, counts = _node_unpacker(lay)
    unpack = st.unpack_from
    size = max(lay.node_size, st.size)
    chunk = lay.chunk_size
    s_hdr = [starts[i] for i in range(6)]
    s_slots, s_marks, n_marks = starts[6], starts[7], counts[7]

    def read(mem: Memory, addr: int) -> Tuple[Any, ...]:
        v = unpack(mem.read(addr, size))
        return tuple(v[i] for i in s_hdr) + (
            v[s_slots:s_slots + chunk], v[s_marks:s_marks + n_marks])
    return read


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
    k = E.kind_of(head, lay.chunk_size)
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

    return _walk_nodes(mem, lay, w, (E.xa_to_node(head), 0, None, 0, 0, -1),
                       max_nodes)


def walk_subtree(mem: Memory, lay: Layout, node: int,
                 index: Optional[int] = None, shift: Optional[int] = None,
                 max_nodes: int = MAX_NODES) -> Walk:
    """Walk the subtree under ``node`` as if it sat at ``index`` with the
    expected ``shift`` (a node cut off its tree, e.g. found in the slab:
    its old place comes from its ``parent``/``offset``).  ``index`` None:
    position unknown (indices from 0); ``shift`` None: trust the node's
    own shift when sane.  Same results as :func:`walk_xarray` (``xarray``
    is 0, ``head`` the node entry)."""
    w = Walk(xarray=0, head=node | 2)
    return _walk_nodes(mem, lay, w, (node, index or 0, shift, 0, 0, -1),
                       max_nodes)


def _walk_nodes(mem: Memory, lay: Layout, w: Walk, root: Tuple,
                max_nodes: int) -> Walk:
    """The walk from one node (``root``: a stack item, see below) into
    ``w``."""
    chunk = lay.chunk_size
    cshift = lay.chunk_shift
    kind_of = E.kind_of
    st, starts, counts = _node_unpacker(lay)
    unpack = st.unpack_from
    s_shift, s_off, s_cnt, s_nrv, s_par, s_arr = (starts[i] for i in range(6))
    s_slots, s_marks = starts[6], starts[7]
    n_marks = counts[7]
    node_size = max(lay.node_size, st.size)
    entries = w.entries
    nodes = w.nodes
    problems = w.problems
    limit_index = 1 << 64
    slots_off = lay.node_slots
    slots_end = slots_off + 8 * chunk
    all_zero = bytes(chunk)
    all_one = b"\x01" * chunk
    add_list = entries._add_list
    add_node = entries._add_node
    POINTER, VALUE = E.POINTER, E.VALUE

    # Stack of (node_addr, index, eshift, depth, holder, holder_slot), or
    # (None, [EntryRec...]) for a node's entries that come after one of
    # its children: popping in order emits entries in index order.
    # The root's expected shift is what it says, if sane.
    stack: List[Any] = [root]
    # seen: node -> [visits, holder, holder_slot, index, eshift, readable]
    # of its first position.  path[d]: the node being walked at depth d,
    # so path[:depth] are the ancestors of a node popped at ``depth``.
    seen: Dict[int, List[Any]] = {}
    path: List[int] = []
    while stack:
        item = stack.pop()
        if item[0] is None:
            add_list(item[1])
            continue
        addr, base, eshift, depth, holder, hslot = item
        del path[depth:]
        first = seen.get(addr)
        visit = 0
        if first is not None:
            if addr in path:
                # Its own ancestor: following it would never end.
                problems.append(Finding(
                    "NODE_CYCLE", node=holder or None,
                    slots=(hslot,) if hslot >= 0 else (),
                    indices=(base,), address=addr, shift=eshift,
                    extra={"ancestor_depth": path.index(addr)}))
                continue
            visit = first[0]
            again = visit < MAX_VISITS and first[5]
            if (holder, hslot) != (first[1], first[2]):
                # A second slot holds it (inside a shared subtree, its
                # children come again through the same slot: no finding).
                span = (1 << (eshift + cshift)) if eshift is not None else 0
                problems.append(Finding(
                    "NODE_SHARED", node=holder or None,
                    slots=(hslot,) if hslot >= 0 else (),
                    indices=(base,), address=addr, shift=eshift,
                    extra={"first_holder": first[1],
                           "first_slot": first[2],
                           "first_index": first[3],
                           "first_shift": first[4], "span": span,
                           "walked": bool(again)}))
            if not again:
                continue
            first[0] += 1
        if len(nodes) >= max_nodes:
            w.truncated = True
            problems.append(Finding("WALK_TRUNCATED", expected=max_nodes,
                                    found=len(nodes) + 1 + _pending(stack)))
            break
        if first is None:
            first = seen[addr] = [1, holder, hslot, base, eshift, False]
        path.append(addr)
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
        first[5] = True
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
                      eshift, depth, holder, hslot, visit)
        nodes.append(rec)
        if 0 not in slots:
            low = buf[slots_off:slots_end:8]
            if type(low) is not bytes:
                low = bytes(low)
            if low.translate(_LOW3) == all_zero:
                # Every slot an 8-byte aligned pointer (a leaf of order-0
                # folios, or of order-`eshift` ones): no siblings, no
                # children.
                add_node(rec, POINTER)
                continue
            if low.translate(_LOW1) == all_one:
                add_node(rec, VALUE)        # every slot a value entry
                continue
        _decode_slots(slots, chunk, cshift, base, eshift, depth, addr,
                      add_list, stack, limit_index, kind_of)
    # Truncated: the entries of nodes already read still count.
    while stack:
        item = stack.pop()
        if item[0] is None:
            add_list(item[1])
    return w


def _pending(stack: List[Any]) -> int:
    """Nodes still waiting on the walk stack."""
    return sum(1 for it in stack if it[0] is not None)


def _decode_slots(slots, chunk, cshift, base, eshift, depth, addr,
                  add_list, stack, limit_index, kind_of) -> None:
    """Decode one node's slots: its entries go to ``add_list`` up to its
    first child; children and the entries between and after them are
    pushed on ``stack`` in reverse, so the walk emits every entry in index
    order (a child's indices lie between its neighbour slots')."""
    pending: List[Any] = []     # in slot order: child tuples / entry lists
    cur: List[EntryRec] = []
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
            cur.append(run)
            continue
        if t & 1:
            run = EntryRec(base + (i << eshift), ent, E.VALUE, addr, i, eshift)
            run_slot = i
            cur.append(run)
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
                cur.append(EntryRec(idx, ent, E.NODE, addr, i, eshift))
                continue
            if idx >= limit_index:
                continue
            if cur:
                pending.append((None, cur))
                cur = []
            pending.append((E.xa_to_node(ent), idx, eshift - cshift,
                            depth + 1, addr, i))
            continue
        cur.append(EntryRec(idx, ent, kk, addr, i, eshift))
    if cur:
        pending.append((None, cur))
    if pending and pending[0][0] is None:
        add_list(pending.pop(0)[1])     # entries before any child: now
    stack.extend(reversed(pending))


def _index_key(e: EntryRec) -> int:
    return e.index
