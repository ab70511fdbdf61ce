"""Struct offsets and sizes discovered from the dump's own debug info.

Covers ``struct xa_node``, ``struct xarray``, ``struct address_space``,
``struct inode`` and ``struct folio``/``struct page`` (flags, mapping,
index, refcount, compound_head (7.x: compound_info) and the folio order,
whose home moved across kernel versions).  Nothing here is hard-coded:
every number comes from :class:`crashext.memory.Memory` queries, so the
same code reads 6.1, 6.12 and 7.3 dumps (and any kernel with an XArray
page cache, >= 4.20).

>>> lay = Layout.discover(mem)         # doctest: +SKIP
>>> lay.chunk_shift, lay.node_size     # doctest: +SKIP
(6, 576)
"""

from __future__ import annotations

from dataclasses import dataclass, asdict, field
from typing import Any, Dict, Optional

from .memory import LayoutError, Memory, UnreadableMemory

# Folio order encodings (see FolioLayout.order_kind).
ORDER_FOLIO_ORDER = "folio._folio_order"     # 6.1 - 6.5: unsigned char
ORDER_FLAGS_1 = "folio._flags_1&0xff"        # 6.6+: commit ebc1baf5c9b4
ORDER_COMPOUND = "page[1].compound_order"    # <= 6.0


def _need(mem: Memory, struct: str, member: str) -> int:
    off = mem.member_offset(struct, member)
    if off is None:
        raise LayoutError("debug info has no %s.%s (wrong vmlinux or "
                          "unsupported kernel)" % (struct, member))
    return off


def _first(mem: Memory, struct: str, *members: str):
    """(member, offset) of the first of ``members`` present in ``struct``."""
    for m in members:
        off = mem.member_offset(struct, m)
        if off is not None:
            return m, off
    return None, None


@dataclass
class Layout:
    """Everything the engine needs to know about one kernel's structs."""

    # struct xa_node
    node_size: int
    node_shift: int
    node_offset: int
    node_count: int
    node_nr_values: int
    node_parent: int
    node_array: int
    node_slots: int
    node_marks: int
    chunk_shift: int
    max_marks: int
    # struct xarray
    xa_flags: int
    xa_head: int
    # struct address_space
    as_i_pages: int
    as_host: int
    as_nrpages: int
    # struct inode
    inode_i_ino: int
    inode_i_sb: int
    inode_i_mapping: int
    inode_i_size: int
    inode_i_data: int
    # struct folio (or struct page before folios)
    folio_struct: str
    page_size: int           # sizeof(struct page)
    folio_read_size: int     # bytes to read per folio (page[0] + page[1])
    f_flags: int
    f_mapping: int
    f_index: int
    f_refcount: int
    f_compound_head: Optional[int]   # compound_head, 7.x compound_info
    order_kind: str
    f_order: int             # byte offset of the order byte from the folio
    pg_head: int
    pg_dirty: Optional[int] = None
    pg_writeback: Optional[int] = None
    pg_locked: Optional[int] = None
    pg_uptodate: Optional[int] = None
    release: Optional[str] = None
    #: A tail page's compound_info holds a mask, not the head's address.
    compound_mask: bool = False
    #: PAGE_SHIFT, from the dump's VMCOREINFO (``PAGESIZE=``); 12 when
    #: that cannot be read (``page_size_from`` then says so).
    page_shift: int = 12
    page_size_from: str = "assumed"
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_shift

    def head_of(self, page: int, info: int) -> int:
        """The head page of ``page`` whose ``compound_head`` (7.x:
        ``compound_info``) is ``info``: ``page`` itself unless bit 0
        (``PageTail()``) is set.  7.3.4 include/linux/page-flags.h
        ``_compound_head()``: with ``compound_info_has_mask()`` the rest
        of ``info`` is a mask (``page & info``), else ``info - 1``.

        >>> lay.head_of(0xffffea00003c8040, 0xffffffffffff8001)  # doctest: +SKIP
        18446719884457705472
        """
        if not info & 1:
            return page
        if self.compound_mask:
            return page & info & ~1
        return info - 1

    @classmethod
    def discover(cls, mem: Memory) -> "Layout":
        """Query ``mem``'s debug info; raise :class:`LayoutError` when the
        kernel has no XArray page cache or the vmlinux does not fit."""
        N = "struct xa_node"
        node_size = mem.struct_size(N)
        if node_size is None:
            raise LayoutError("debug info has no struct xa_node: kernel "
                              "older than 4.20 or no/wrong vmlinux")
        slots_size = mem.member_size(N, "slots")
        if not slots_size:
            raise LayoutError("cannot size xa_node.slots")
        chunk = slots_size // 8
        # XA_CHUNK_SHIFT is a #define: derive it from the slots array size.
        chunk_shift = chunk.bit_length() - 1
        if chunk < 4 or 1 << chunk_shift != chunk:
            raise LayoutError("xa_node.slots has %d entries, not a power of 2"
                              % chunk)
        marks_off = _first(mem, N, "marks", "tags")[1]
        if marks_off is None:
            raise LayoutError("debug info has no xa_node.marks")
        marks_size = mem.member_size(N, "marks") or mem.member_size(N, "tags")
        mark_longs = max(1, chunk // 64)
        max_marks = (marks_size or 24) // (8 * mark_longs)

        # struct folio exists from 5.16; before that, struct page.
        fs = "struct folio" if mem.struct_size("struct folio") else "struct page"
        page_size = mem.struct_size("struct page")
        if page_size is None:
            raise LayoutError("debug info has no struct page")
        _, f_index = _first(mem, fs, "index", "__folio_index")  # 6.16 rename
        if f_index is None:
            raise LayoutError("no %s.index / __folio_index" % fs)
        refname, f_ref = _first(mem, fs, "_refcount.counter", "_refcount")
        if f_ref is None:
            raise LayoutError("no %s._refcount" % fs)
        # Folio order: where it lives depends on the kernel version.  6.1
        # has both _flags_1 and _folio_order; _folio_order wins while it
        # exists (5.17 - 6.5).  6.6 removed it (commit ebc1baf5c9b4 "mm:
        # free up a word in the first tail page"): folio_order() is then
        # folio->_flags_1 & 0xff, the first byte on little endian.
        is_folio = fs == "struct folio"
        off = mem.member_offset(fs, "_folio_order") if is_folio else None
        if off is not None:
            order_kind, f_order = ORDER_FOLIO_ORDER, off
        else:
            off = mem.member_offset(fs, "_flags_1") if is_folio else None
            if off is not None:
                order_kind, f_order = ORDER_FLAGS_1, off
            else:
                off = mem.member_offset("struct page", "compound_order")
                if off is None:
                    raise LayoutError("cannot find the folio order field")
                order_kind, f_order = ORDER_COMPOUND, page_size + off
        read_size = max(f_order + 1, page_size)
        # struct page.compound_head was renamed compound_info in 7.x;
        # bit 0 still means PageTail().  The rest of a tail's value is a
        # mask (head = page & mask) when compound_info_has_mask(): HVO
        # (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP, whose
        # mm/hugetlb_vmemmap.c defines vmemmap_optimize_enabled) and a
        # power-of-2 sizeof(struct page) (7.3.4 page-flags.h).
        ch_name, ch = _first(mem, "struct page", "compound_head",
                             "compound_info")
        compound_mask = False
        if ch is not None:
            read_size = max(read_size, ch + 8)
            compound_mask = (ch_name == "compound_info"
                             and page_size & (page_size - 1) == 0
                             and mem.symbol("vmemmap_optimize_enabled")
                             is not None)
        pg_head = mem.enum_value("PG_head")
        if pg_head is None:
            raise LayoutError("enum pageflags has no PG_head")
        return cls(
            node_size=node_size,
            node_shift=_need(mem, N, "shift"),
            node_offset=_need(mem, N, "offset"),
            node_count=_need(mem, N, "count"),
            node_nr_values=_need(mem, N, "nr_values"),
            node_parent=_need(mem, N, "parent"),
            node_array=_need(mem, N, "array"),
            node_slots=_need(mem, N, "slots"),
            node_marks=marks_off,
            chunk_shift=chunk_shift,
            max_marks=max_marks,
            xa_flags=_need(mem, "struct xarray", "xa_flags"),
            xa_head=_need(mem, "struct xarray", "xa_head"),
            as_i_pages=_need(mem, "struct address_space", "i_pages"),
            as_host=_need(mem, "struct address_space", "host"),
            as_nrpages=_need(mem, "struct address_space", "nrpages"),
            inode_i_ino=_need(mem, "struct inode", "i_ino"),
            inode_i_sb=_need(mem, "struct inode", "i_sb"),
            inode_i_mapping=_need(mem, "struct inode", "i_mapping"),
            inode_i_size=_need(mem, "struct inode", "i_size"),
            inode_i_data=_need(mem, "struct inode", "i_data"),
            folio_struct=fs,
            page_size=page_size,
            folio_read_size=read_size,
            f_flags=_need(mem, fs, "flags"),
            f_mapping=_need(mem, fs, "mapping"),
            f_index=f_index,
            f_refcount=f_ref,
            f_compound_head=ch,
            order_kind=order_kind,
            f_order=f_order,
            pg_head=pg_head,
            pg_dirty=mem.enum_value("PG_dirty"),
            pg_writeback=mem.enum_value("PG_writeback"),
            pg_locked=mem.enum_value("PG_locked"),
            pg_uptodate=mem.enum_value("PG_uptodate"),
            release=mem.release(),
            compound_mask=compound_mask,
            **_page_shift(mem),
        ).validate()

    def validate(self) -> "Layout":
        """Refuse answers no kernel gives (a damaged snapshot, a wrong
        vmlinux): every field inside its struct, node fields apart, bit
        numbers below 64.  Raises :class:`LayoutError`."""
        def bad(why: str) -> LayoutError:
            return LayoutError("implausible struct layout in the debug "
                               "info: %s" % why)
        if not 2 <= self.chunk_shift <= 8:
            raise bad("XA_CHUNK_SHIFT %d" % self.chunk_shift)
        if not 0 < self.node_size <= 1 << 16:
            raise bad("sizeof(struct xa_node) %d" % self.node_size)
        chunk = self.chunk_size
        marks = self.max_marks * 8 * max(1, chunk // 64)
        fields = [("shift", self.node_shift, 1), ("offset", self.node_offset, 1),
                  ("count", self.node_count, 1),
                  ("nr_values", self.node_nr_values, 1),
                  ("parent", self.node_parent, 8), ("array", self.node_array, 8),
                  ("slots", self.node_slots, 8 * chunk),
                  ("marks", self.node_marks, marks)]
        if not 1 <= self.max_marks <= 8:
            raise bad("%d XArray marks" % self.max_marks)
        end = -1
        for name, off, size in sorted(fields, key=lambda f: f[1]):
            if off < 0 or off + size > self.node_size:
                raise bad("xa_node.%s at %d outside the node" % (name, off))
            if off < end:
                raise bad("xa_node.%s overlaps another field" % name)
            end = off + size
        if not 12 <= self.page_shift <= 18:
            raise bad("PAGE_SHIFT %d" % self.page_shift)
        if not 16 <= self.page_size <= 1024:
            raise bad("sizeof(struct page) %d" % self.page_size)
        if not 0 < self.folio_read_size <= 4 * self.page_size:
            raise bad("folio order byte at %d" % self.f_order)
        for name, off, size in (("flags", self.f_flags, 8),
                                ("mapping", self.f_mapping, 8),
                                ("index", self.f_index, 8),
                                ("_refcount", self.f_refcount, 4),
                                ("order", self.f_order, 1),
                                ("compound_head", self.f_compound_head or 0, 8)):
            if off < 0 or off + size > self.folio_read_size:
                raise bad("folio %s at %d outside the bytes read" % (name, off))
        for name in ("pg_head", "pg_dirty", "pg_writeback", "pg_locked",
                     "pg_uptodate"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 64:
                raise bad("%s = %d" % (name, v))
        for name in ("xa_flags", "xa_head", "as_i_pages", "as_host",
                     "as_nrpages", "inode_i_ino", "inode_i_sb",
                     "inode_i_mapping", "inode_i_size", "inode_i_data"):
            if not 0 <= getattr(self, name) < 1 << 16:
                raise bad("%s = %d" % (name, getattr(self, name)))
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


#: Bytes of VMCOREINFO read (VMCOREINFO_BYTES is PAGE_SIZE; the
#: PAGESIZE line is the third, after OSRELEASE and BUILD-ID).
_VMCOREINFO_READ = 512


def _page_shift(mem: Memory) -> Dict[str, Any]:
    """``page_shift`` and where it came from.  PAGE_SHIFT is a #define,
    not in the debug info; the kernel writes it into VMCOREINFO
    (kernel/crash_core.c: ``VMCOREINFO_PAGESIZE(PAGE_SIZE)``), whose text
    ``vmcoreinfo_data`` points at."""
    sym = mem.symbol("vmcoreinfo_data")
    if sym is None:
        return {"page_shift": 12,
                "page_size_from": "assumed 4096 (no vmcoreinfo_data)"}
    try:
        text = mem.read(mem.read_u64(sym), _VMCOREINFO_READ)
    except UnreadableMemory:
        return {"page_shift": 12,
                "page_size_from": "assumed 4096 (VMCOREINFO unreadable)"}
    for line in text.split(b"\n"):
        if line.startswith(b"PAGESIZE="):
            try:
                size = int(line[9:].split(b"\0")[0])
            except ValueError:
                break
            if size > 0 and size & (size - 1) == 0:
                return {"page_shift": size.bit_length() - 1,
                        "page_size_from": "vmcoreinfo"}
            break
    return {"page_shift": 12,
            "page_size_from": "assumed 4096 (no PAGESIZE in VMCOREINFO)"}
