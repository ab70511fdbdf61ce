"""Reverse lookup: which slots of which trees hold a given folio.

Engine code (Memory only).  Given a folio or page address, the page is
resolved to its folio (a tail page's ``compound_head`` names the head) and
every tree is searched for an entry equal to either address:

* ``via="trees"`` (default): every page-cache tree the scan enumerates
  (:func:`crashext.triage.scan.iter_trees`), each walked once
  (:func:`crashext.xarray.walk.walk_xarray`, no checks);
* ``via="slab"``: every object of the radix_tree_node slab cache, found
  by the slab walk and searched with ``bytes.find`` - this also finds
  copies in nodes no page cache reaches (orphans, nodes of other
  XArrays, free nodes whose slots were not zeroed); indices are then
  computed from the nodes' ``parent``/``offset`` chain.

>>> for h in find_folio(mem, 0xffffea0000247800):      # doctest: +SKIP
...     print(h.tree, hex(h.index), hex(h.node), h.slot)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..layout import Layout
from ..memory import Memory, UnreadableMemory
from ..xarray import entry as E
from ..xarray.walk import walk_xarray


@dataclass
class Hit:
    """One slot that holds the folio (or the page itself)."""

    folio: int               # the folio searched for
    entry: int               # the raw entry found (folio or page address)
    index: Optional[int]     # XArray index of the slot (None: unknown)
    node: int                # node address (0: held in xa_head)
    slot: int                # slot in node (-1: xa_head)
    shift: Optional[int]
    nr_slots: int = 1        # canonical slot + its well-formed siblings
    xarray: Optional[int] = None
    mapping: Optional[int] = None
    inode: Optional[int] = None
    i_ino: Optional[int] = None
    fs_type: str = ""
    s_id: str = ""
    via: str = "trees"
    node_state: str = ""     # slab: allocated / free / preload / unknown

    @property
    def tree(self) -> str:
        if self.inode:
            return "%s %s:%s" % (self.fs_type or "?", self.s_id or "?",
                                 self.i_ino)
        return "xarray 0x%x" % (self.xarray or 0)

    @property
    def is_tail_entry(self) -> bool:
        return self.entry != self.folio

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def folio_of(mem: Memory, lay: Layout, addr: int) -> int:
    """The folio (head page) of page ``addr``; ``addr`` itself when it is a
    head or the page cannot be read."""
    if lay.f_compound_head is None:
        return addr
    try:
        ch = mem.read_u64(addr + lay.f_compound_head)
    except UnreadableMemory:
        return addr
    return lay.head_of(addr, ch)


def find_folio(mem: Memory, addr: int, via: str = "trees",
               swap: bool = True) -> Iterator[Hit]:
    """Yield a :class:`Hit` for every slot whose entry is the folio of
    ``addr`` or ``addr`` itself (a stale pointer to a tail page)."""
    from ..analyze import layout_for
    lay = layout_for(mem)
    folio = folio_of(mem, lay, addr)
    wanted = {folio, addr}
    if via == "slab":
        yield from _via_slab(mem, lay, folio, wanted)
        return
    if via != "trees":
        raise ValueError("via must be 'trees' or 'slab'")
    from .scan import iter_trees
    for row in iter_trees(mem, swap=swap):
        if row.kind == "error":
            continue
        try:
            w = walk_xarray(mem, lay, row.xarray)
        except UnreadableMemory:
            continue
        for e in w.entries:
            if e.kind == E.POINTER and e.raw in wanted:
                yield Hit(folio, e.raw, e.index, e.node, e.slot,
                          e.shift if e.node else None, e.nr_slots,
                          row.xarray, row.mapping, row.inode, row.i_ino,
                          row.fs_type, row.s_id)


def _owner(mem: Memory, lay: Layout, array: int) -> Tuple[Any, ...]:
    """(mapping, inode, i_ino, fs_type, s_id) when ``array`` is some
    mapping's i_pages, else Nones."""
    m = array - lay.as_i_pages
    try:
        host = mem.read_u64(m + lay.as_host)
        if host and mem.read_u64(host + lay.inode_i_mapping) == m:
            i_ino = mem.read_u64(host + lay.inode_i_ino)
            fs, sid = _sb_names(mem, mem.read_u64(host + lay.inode_i_sb))
            return m, host, i_ino, fs, sid
    except UnreadableMemory:
        pass
    return None, None, None, "", ""


def _sb_names(mem: Memory, sb: int) -> Tuple[str, str]:
    from .scan import _cstr
    o_type = mem.member_offset("struct super_block", "s_type")
    o_id = mem.member_offset("struct super_block", "s_id")
    o_name = mem.member_offset("struct file_system_type", "name")
    if not sb or None in (o_type, o_id, o_name):
        return "", ""
    try:
        st = mem.read_u64(sb + o_type)
        fs = _cstr(mem, mem.read_u64(st + o_name), 32) if st else ""
    except UnreadableMemory:
        fs = ""
    return fs, _cstr(mem, sb + o_id, 32)


def _via_slab(mem: Memory, lay: Layout, folio: int, wanted: set
              ) -> Iterator[Hit]:
    from .slab import SlabReport, _Slub, iter_slab_bufs, walk_slab
    rep = walk_slab(mem, check=False)
    nodes = rep.nodes
    sl = _Slub(mem, lay)
    keys = [(w, w.to_bytes(8, "little")) for w in sorted(wanted)]
    lo = lay.node_slots
    hi = lay.node_slots + 8 * lay.chunk_size
    owners: Dict[int, Tuple[Any, ...]] = {}

    def base_index(n: Any) -> Optional[int]:
        idx, cur, steps = 0, n, 0
        while cur.parent:
            p = nodes.get(cur.parent)
            if p is None or steps > 16:
                return None
            idx += cur.offset << p.shift
            cur, steps = p, steps + 1
        return idx

    for sb in iter_slab_bufs(mem, sl, SlabReport()):
        buf = sb.buf
        for w, key in keys:
            pos = buf.find(key)
            while pos >= 0:
                rel = (pos - (sb.first - sb.base)) % sb.size
                if pos % 8 == 0 and lo <= rel < hi and (rel - lo) % 8 == 0:
                    node = sb.first + (pos - (sb.first - sb.base)) // sb.size \
                        * sb.size
                    slot = (rel - lo) // 8
                    n = nodes.get(node)
                    shift = n.shift if n else None
                    bi = base_index(n) if n else None
                    index = None if bi is None else bi + (slot << shift)
                    nr = 1
                    while slot + nr < lay.chunk_size:
                        s = int.from_bytes(buf[pos + 8 * nr:pos + 8 * nr + 8],
                                           "little")
                        if s != E.xa_mk_sibling(slot):
                            break
                        nr += 1
                    arr = n.array if n else None
                    if arr and arr not in owners and arr != E.XA_RCU_FREE:
                        owners[arr] = _owner(mem, lay, arr)
                    m, ino, i_ino, fs, sid = owners.get(
                        arr, (None, None, None, "", ""))
                    yield Hit(folio, w, index, node, slot, shift, nr, arr,
                              m, ino, i_ino, fs, sid, via="slab",
                              node_state=n.state if n else "")
                pos = buf.find(key, pos + 1)


def reverse_map(mem: Memory, addrs: List[int], via: str = "trees"
                ) -> Dict[int, List[Hit]]:
    """:func:`find_folio` for several addresses with one pass over the
    trees (``via="trees"``): address -> hits."""
    from ..analyze import layout_for
    from .scan import iter_trees
    if via != "trees":
        return {a: list(find_folio(mem, a, via)) for a in addrs}
    lay = layout_for(mem)
    want: Dict[int, int] = {}       # entry -> the address asked for
    folios: Dict[int, int] = {}
    for a in addrs:
        f = folio_of(mem, lay, a)
        folios[a] = f
        want.setdefault(f, a)
        want.setdefault(a, a)
    out: Dict[int, List[Hit]] = {a: [] for a in addrs}
    for row in iter_trees(mem):
        if row.kind == "error":
            continue
        try:
            w = walk_xarray(mem, lay, row.xarray)
        except UnreadableMemory:
            continue
        for e in w.entries:
            if e.kind == E.POINTER and e.raw in want:
                for a in addrs:
                    if e.raw in (a, folios[a]):
                        out[a].append(Hit(
                            folios[a], e.raw, e.index, e.node, e.slot,
                            e.shift if e.node else None, e.nr_slots,
                            row.xarray, row.mapping, row.inode, row.i_ino,
                            row.fs_type, row.s_id))
    return out
