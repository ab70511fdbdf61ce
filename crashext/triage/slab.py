"""Every ``xa_node`` the slab allocator holds, checked against the tree
that should own it.

Engine code (Memory only).  The ``radix_tree_node`` cache
(``radix_tree_node_cachep``, SLUB) is found without its partial/full lists
(full slabs are only tracked with slub_debug): the ``struct page`` array
(vmemmap) is read in 1 MiB runs and searched, with ``bytes.find``, for the
cache's address at ``slab.slab_cache`` in pages that are slabs:

* up to 6.9, ``PG_slab`` is a page flag (``enum pageflags``);
* 6.10 - 6.11, a page type: ``(page_type & (PAGE_TYPE_BASE | PG_slab))
  == PAGE_TYPE_BASE`` (``enum pagetype``);
* 6.12+, ``page_type >> 24 == PGTY_slab``.

Everything else comes from the dump's debug info: ``struct slab`` overlays
the head ``struct page``; a slab holds ``counters.objects`` objects of
``kmem_cache.size`` bytes from ``page_to_virt()``; the free ones are on
``slab->freelist``.  A free pointer is stored at ``object + s->offset``
and, with CONFIG_SLAB_FREELIST_HARDENED (Debian: yes; seen as
``kmem_cache.random`` in the debug info), is ``ptr ^ s->random ^
swab(ptr_addr)`` (mm/slub.c ``freelist_ptr()``, 6.1;
``freelist_ptr_decode()``, 6.12 and 7.3).

Free objects also wait in per-CPU caches, and which ones a kernel has is
read from its debug info (never from the version string):

* per-CPU slabs (``kmem_cache.cpu_slab``, ``struct kmem_cache_cpu``; up
  to 6.x): each CPU's current slab has a second, lockless freelist at
  ``kmem_cache_cpu.freelist`` (6.1 include/linux/slub_def.h, 6.12 mm/slub.c
  ``struct kmem_cache_cpu``; ``___slab_alloc()``).
* per-CPU sheaves (``kmem_cache.cpu_sheaves``: opt-in per cache since
  commit 2d517aa09bbc, v6.18, next to ``cpu_slab``; every cache's only
  per-CPU cache since commit 32c894c7274b, v7.0, which removed ``struct
  kmem_cache_cpu``): ``struct slub_percpu_sheaves`` holds the ``main``,
  ``spare`` and ``rcu_free`` sheaves, and each NUMA node a ``struct
  node_barn`` with lists of full and empty sheaves
  (``kmem_cache.per_node[n].barn`` since commit 5ba6bc27b1f9, v7.1;
  ``kmem_cache_node.barn`` before; ``slub_percpu_sheaves.barn`` in the
  first posted series; commit ids as drgn's slab helper cites them, the
  6.1, 6.12 and 7.3.4 layouts read in Debian's linux-source packages).
  A sheaf's first ``size`` ``objects[]`` are free objects, stored as
  plain pointers: 7.3.4 mm/slub.c
  ``free_to_pcs()`` does ``pcs->main->objects[pcs->main->size++] =
  object`` and ``barn_put_full_sheaf()`` links a sheaf on
  ``barn->sheaves_full`` through ``sheaf->barn_list``; ``rcu_free``
  holds objects freed with kfree_rcu() (``__kfree_rcu_sheaf()``).  For
  the slab those objects are in use (``slab->inuse`` counts them), for
  their owner they are free.

Nodes parked in ``radix_tree_preloads`` are allocated but in no tree.

An allocated node with ``array == XA_RCU_FREE`` (1) is waiting for its RCU
grace period (expected); with ``array == NULL`` it is preallocated and
owned by nobody yet.  Every other allocated node names its ``struct
xarray``; it must be reachable from it: its parent (or ``xa_head`` for a
root) must hold it at ``node->offset``, the parent must be an allocated
node of the same array one level up, and so on to the root.  Each slot of
a reachable node that is a node entry must point at an allocated node that
names that slot as its parent/offset.

>>> rep = walk_slab(mem)                         # doctest: +SKIP
>>> rep.stats["allocated"], [f.code for f in rep.findings]   # doctest: +SKIP
(2101, [])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..findings import Finding
from ..layout import Layout
from ..memmap import RunTally, struct_page_runs
from ..memory import CrashextError, Memory, UnreadableMemory
from ..xarray import entry as E

#: Bytes of vmemmap read at once.
VMEMMAP_CHUNK = 1 << 20
#: Bound on findings kept (counts keep everything).
MAX_FINDINGS = 1000

XA_RCU_FREE = E.XA_RCU_FREE
M64 = (1 << 64) - 1

# Node states.
ALLOCATED = "allocated"
FREE = "free"
PRELOAD = "preload"

ProgressFn = Callable[[Dict[str, Any]], None]


def swab64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "little"), "big")


class NodeHdr:
    """The header of one slab object of the cache (an ``xa_node``).
    ``__slots__``: a big dump holds millions of these."""

    __slots__ = ("addr", "shift", "offset", "count", "parent", "array",
                 "state", "kids")

    def __init__(self, addr: int, shift: int, offset: int, count: int,
                 parent: int, array: int, state: str = ALLOCATED,
                 kids: Optional[Dict[int, int]] = None) -> None:
        self.addr = addr
        self.shift = shift
        self.offset = offset
        self.count = count
        self.parent = parent
        self.array = array
        self.state = state
        #: slot -> node entry, for the node-entry slots of interior nodes.
        self.kids = kids

    @property
    def owned(self) -> bool:
        return self.state == ALLOCATED and self.array not in (0, XA_RCU_FREE)

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return ("NodeHdr(0x%x shift=%d offset=%d count=%d parent=0x%x "
                "array=0x%x %s)" % (self.addr, self.shift, self.offset,
                                    self.count, self.parent, self.array,
                                    self.state))


@dataclass
class SlabReport:
    """What :func:`walk_slab` found."""

    cache: int = 0
    stats: Dict[str, int] = field(default_factory=dict)
    findings: List[Finding] = field(default_factory=list)
    codes: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    nodes: Dict[int, NodeHdr] = field(default_factory=dict)
    #: arrays (``struct xarray`` addresses) of the owned nodes, with counts.
    arrays: Dict[int, int] = field(default_factory=dict)
    complete: bool = True
    #: __per_cpu_offset[], read once (None: not yet; []: unavailable).
    _pco: Optional[List[int]] = field(default=None, repr=False)

    def add(self, f: Finding) -> None:
        self.codes[f.code] = self.codes.get(f.code, 0) + 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(f)

    @property
    def allocated(self) -> Set[int]:
        return {a for a, n in self.nodes.items() if n.state != FREE}

    @property
    def verdict(self) -> str:
        if any(f.severity == "error" for f in self.findings):
            return "corrupt"
        return "suspect" if self.findings else "clean"

    def to_dict(self, nodes: bool = False) -> Dict[str, Any]:
        d = {"cache": self.cache, "verdict": self.verdict,
             "stats": dict(self.stats), "codes": dict(self.codes),
             "findings": [f.to_dict() for f in self.findings],
             "notes": list(self.notes), "complete": self.complete,
             "trees": len(self.arrays)}
        if nodes:
            d["nodes"] = {hex(a): n.to_dict() for a, n in self.nodes.items()}
        return d


class _Slub:
    """Offsets and cache parameters, all from the dump's debug info."""

    def __init__(self, mem: Memory, lay: Layout) -> None:
        def off(s: str, m: str, need: bool = True) -> Optional[int]:
            o = mem.member_offset(s, m)
            if o is None and need:
                raise CrashextError("debug info has no %s.%s (not SLUB?)"
                                    % (s, m))
            return o

        sym = mem.symbol("radix_tree_node_cachep")
        if sym is None:
            raise CrashextError("no symbol radix_tree_node_cachep")
        self.cache = mem.read_u64(sym)
        if not self.cache:
            raise CrashextError("radix_tree_node_cachep is NULL")
        K = "struct kmem_cache"
        kc_fields = {m: off(K, m) for m in ("size", "offset", "oo")}
        # The per-CPU caches this kernel has (see the module docstring).
        o_cpu_slab = off(K, "cpu_slab", False)
        o_cpu_sheaves = off(K, "cpu_sheaves", False)
        o_cap = off(K, "sheaf_capacity", False)
        o_random = off(K, "random", False)
        o_rlp = off(K, "red_left_pad", False)
        o_name = off(K, "name", False)
        end = max(list(kc_fields.values()) + [
            o or 0 for o in (o_random, o_rlp, o_name, o_cpu_slab,
                             o_cpu_sheaves, o_cap)]) + 8
        kc = mem.read(self.cache, end)
        u32 = lambda o: int.from_bytes(kc[o:o + 4], "little")   # noqa: E731
        self.size = u32(kc_fields["size"])
        self.fp_offset = u32(kc_fields["offset"])
        oo = u32(kc_fields["oo"])
        self.oo_objects = oo & 0xFFFF
        self.oo_order = oo >> 16
        self.has_cpu_slab = o_cpu_slab is not None
        self.cpu_slab = _u64(kc, o_cpu_slab) if o_cpu_slab is not None else 0
        self.has_sheaves = o_cpu_sheaves is not None
        self.cpu_sheaves = (_u64(kc, o_cpu_sheaves)
                            if o_cpu_sheaves is not None else 0)
        self.sheaf_capacity = u32(o_cap) if o_cap is not None else None
        if not (self.has_cpu_slab or self.has_sheaves):
            raise CrashextError("debug info has neither kmem_cache.cpu_slab "
                                "nor kmem_cache.cpu_sheaves (not SLUB?)")
        self.hardened = o_random is not None
        self.random = _u64(kc, o_random) if o_random is not None else 0
        self.red_left_pad = u32(o_rlp) if o_rlp is not None else 0
        self.name = ""
        if o_name is not None:
            try:
                self.name = mem.read(_u64(kc, o_name), 32).split(b"\0")[0] \
                    .decode("ascii", "replace")
            except UnreadableMemory:
                pass
        if not self.size or self.size < lay.node_size:
            raise CrashextError("kmem_cache %s: object size %d < xa_node %d"
                                % (hex(self.cache), self.size, lay.node_size))
        S = "struct slab"
        if mem.struct_size(S) is None:      # before 5.17: struct page
            S = "struct page"
        self.o_slab_cache = off(S, "slab_cache")
        self.o_freelist = off(S, "freelist")
        self.o_counters = off(S, "counters")
        self.page_size = mem.struct_size("struct page") or 64
        self.o_flags = off("struct page", "flags")
        # compound_head, renamed compound_info in 7.x (bit 0: tail page).
        self.o_ch = lay.f_compound_head
        self.o_page_type = mem.member_offset("struct page", "page_type")
        # How a slab page is marked.
        self.pgty_slab = mem.enum_value("PGTY_slab")
        self.page_type_base = mem.enum_value("PAGE_TYPE_BASE")
        self.pg_slab = mem.enum_value("PG_slab")
        if self.pgty_slab is not None:
            self.slab_mark = "PGTY_slab"
        elif self.page_type_base is not None and self.pg_slab is not None:
            self.slab_mark = "page_type PG_slab"
        elif self.pg_slab is not None:
            self.slab_mark = "PG_slab flag"
        else:
            raise CrashextError("cannot tell slab pages: no PG_slab / "
                                "PGTY_slab in the debug info")
        if self.slab_mark != "PG_slab flag" and self.o_page_type is None:
            raise CrashextError("no struct page.page_type")
        self.page_shift = 12
        self.vmemmap = mem.symbol_value("vmemmap_base")
        if self.vmemmap is None:
            mm = mem.symbol_value("mem_map")            # FLATMEM
            self.vmemmap = mm
        if self.vmemmap is None:
            raise CrashextError("cannot find the struct page array "
                                "(no vmemmap_base / mem_map)")
        po = mem.symbol_value("page_offset_base")
        self.page_offset = po if po is not None else 0xFFFF888000000000
        self.max_pfn = mem.symbol_value("max_pfn") or 0
        if not self.max_pfn:
            raise CrashextError("max_pfn unknown")

    @property
    def percpu(self) -> str:
        """Which per-CPU caches the kernel has, for the report's note."""
        kinds = []
        if self.has_cpu_slab:
            kinds.append("cpu slabs")
        if self.has_sheaves:
            kinds.append("sheaves")
        return " + ".join(kinds)

    def is_slab(self, buf: bytes, o: int) -> bool:
        """Is the struct page at ``buf[o:]`` a slab page?"""
        if self.slab_mark == "PG_slab flag":
            return bool(_u64(buf, o + self.o_flags) >> self.pg_slab & 1)
        pt = int.from_bytes(buf[o + self.o_page_type:o + self.o_page_type + 4],
                            "little")
        if self.slab_mark == "PGTY_slab":
            return pt >> 24 == self.pgty_slab
        base = self.page_type_base
        return pt & (base | self.pg_slab) == base

    def decode_fp(self, stored: int, where: int) -> int:
        if not self.hardened:
            return stored
        return stored ^ self.random ^ swab64(where)


def _u64(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off:off + 8], "little")


def _percpu_offsets(mem: Memory, rep: SlabReport) -> Optional[List[int]]:
    """``__per_cpu_offset[0 .. nr_cpu_ids)``, or None (noted) when the
    symbols are missing or unreadable; cached in ``rep``."""
    if rep._pco is not None:
        return rep._pco or None
    rep._pco = []
    pco = mem.symbol("__per_cpu_offset")
    ncpu_sym = mem.symbol("nr_cpu_ids")
    if pco is None or ncpu_sym is None:
        rep.notes.append("no __per_cpu_offset / nr_cpu_ids: per-cpu "
                         "caches not read, their free objects may count "
                         "as allocated")
        return None
    try:
        ncpu = int.from_bytes(mem.read(ncpu_sym, 4), "little")
        ncpu = max(1, min(ncpu, 1 << 16))
        offs = mem.read(pco, 8 * ncpu)
    except UnreadableMemory as e:
        rep.notes.append("per-cpu offsets unreadable: %s" % e)
        return None
    rep._pco = [_u64(offs, 8 * c) for c in range(ncpu)]
    rep.stats["cpus"] = ncpu
    return rep._pco


def _per_cpu(mem: Memory, rep: SlabReport, base: int, size: int,
             what: str) -> Iterator[Tuple[int, bytes]]:
    """``(cpu, first size bytes)`` of the per-cpu variable at ``base``
    (a ``__percpu`` pointer) on every CPU (``per_cpu_ptr()``: base +
    ``__per_cpu_offset[cpu]``, include/asm-generic/percpu.h); a CPU whose
    copy cannot be read is one note and makes the report incomplete."""
    offs = _percpu_offsets(mem, rep)
    for cpu, off in enumerate(offs or ()):
        try:
            yield cpu, mem.read((base + off) & M64, size)
        except UnreadableMemory:
            rep.notes.append("%s of cpu %d unreadable" % (what, cpu))
            rep.complete = False


def _cpu_freelists(mem: Memory, sl: _Slub, rep: SlabReport
                   ) -> Dict[int, List[int]]:
    """slab (struct page address) -> lockless freelist heads of the CPUs
    whose current slab it is (kernels with ``kmem_cache.cpu_slab``)."""
    out: Dict[int, List[int]] = {}
    if not sl.has_cpu_slab:
        return out
    o_fl = mem.member_offset("struct kmem_cache_cpu", "freelist")
    o_slab = (mem.member_offset("struct kmem_cache_cpu", "slab")
              if mem.member_offset("struct kmem_cache_cpu", "slab") is not None
              else mem.member_offset("struct kmem_cache_cpu", "page"))
    if None in (o_fl, o_slab) or not sl.cpu_slab:
        rep.notes.append("per-cpu freelists not read (no kmem_cache_cpu "
                         "layout or cpu_slab NULL): CPU slabs' free "
                         "objects may count as allocated")
        return out
    for _cpu, b in _per_cpu(mem, rep, sl.cpu_slab, max(o_fl, o_slab) + 8,
                            "kmem_cache_cpu"):
        slab, fl = _u64(b, o_slab), _u64(b, o_fl)
        if slab and fl:
            out.setdefault(slab, []).append(fl)
    return out


#: Bound on the sheaves followed on one barn list (MAX_FULL_SHEAVES and
#: MAX_EMPTY_SHEAVES are 10 in 7.3.4 mm/slub.c; a list longer than this
#: is damaged or looping).
MAX_BARN_SHEAVES = 4096
#: Bound on one sheaf's size when kmem_cache.sheaf_capacity is unknown.
MAX_SHEAF_SIZE = 4096


def _sheaf_objects(mem: Memory, sl: _Slub, rep: SlabReport
                   ) -> Dict[int, str]:
    """Free objects held in the cache's sheaves (kernels with
    ``kmem_cache.cpu_sheaves``): object address -> where it was seen
    ("cpu1 main", "barn0 full", ...).  Every sheaf reached from a CPU's
    ``slub_percpu_sheaves`` (``main``, ``spare``, ``rcu_free``) and from
    every node's barn (``sheaves_full`` and ``sheaves_empty`` lists)."""
    out: Dict[int, str] = {}
    if not sl.has_sheaves:
        return out
    st = rep.stats
    st.setdefault("sheaves", 0)
    st.setdefault("sheaf_objects", 0)
    P, SH, B = ("struct slub_percpu_sheaves", "struct slab_sheaf",
                "struct node_barn")
    o_size = mem.member_offset(SH, "size")
    o_objs = mem.member_offset(SH, "objects")
    o_link = mem.member_offset(SH, "barn_list")
    o_cache = mem.member_offset(SH, "cache")
    pcs_members = [(m, mem.member_offset(P, m))
                   for m in ("main", "spare", "rcu_free")]
    pcs_members = [(m, o) for m, o in pcs_members if o is not None]
    if o_size is None or o_objs is None or not pcs_members:
        rep.notes.append("sheaves not read: no struct slab_sheaf.size/"
                         "objects or slub_percpu_sheaves.main in the debug "
                         "info; their free objects count as allocated")
        rep.complete = False
        return out
    cap = sl.sheaf_capacity
    limit = cap if cap else MAX_SHEAF_SIZE
    seen: Set[int] = set()

    def sheaf(addr: int, where: str, empty: bool = False) -> None:
        if not addr or addr in seen:
            return
        seen.add(addr)
        try:
            hdr = mem.read(addr, o_objs)
            size = int.from_bytes(hdr[o_size:o_size + 4], "little")
            if o_cache is not None and _u64(hdr, o_cache) not in (0, sl.cache):
                rep.notes.append("%s sheaf %s belongs to cache %s, not %s"
                                 % (where, hex(addr), hex(_u64(hdr, o_cache)),
                                    hex(sl.cache)))
                rep.complete = False
                return
            if size > limit:
                rep.notes.append("%s sheaf %s claims %d objects (capacity "
                                 "%d): not read" % (where, hex(addr), size,
                                                    limit))
                rep.complete = False
                return
            if empty and size:
                # barn_put_empty_sheaf() only takes sheaves of size 0.
                rep.notes.append("%s sheaf %s on the empty list holds %d "
                                 "objects: not counted as free"
                                 % (where, hex(addr), size))
                size = 0
            objs = mem.read(addr + o_objs, 8 * size) if size else b""
        except UnreadableMemory as e:
            rep.notes.append("%s sheaf %s unreadable: %s"
                             % (where, hex(addr), e.reason or "?"))
            rep.complete = False
            return
        st["sheaves"] += 1
        st["sheaf_objects"] += size
        for i in range(size):
            out.setdefault(_u64(objs, 8 * i), where)

    barns: List[Tuple[int, str]] = []
    o_pcs_barn = mem.member_offset(P, "barn")       # 6.18 layout
    if sl.cpu_sheaves:
        size = max([o for _m, o in pcs_members] + [o_pcs_barn or 0]) + 8
        for cpu, b in _per_cpu(mem, rep, sl.cpu_sheaves, size,
                               "slub_percpu_sheaves"):
            for m, o in pcs_members:
                sheaf(_u64(b, o), "cpu%d %s" % (cpu, m))
            if o_pcs_barn is not None and _u64(b, o_pcs_barn):
                barns.append((_u64(b, o_pcs_barn), "barn"))
    barns.extend(_barns(mem, sl, rep))
    o_full = mem.member_offset(B, "sheaves_full")
    o_empty = mem.member_offset(B, "sheaves_empty")
    if barns and (o_full is None or o_link is None):
        rep.notes.append("barns not read: no node_barn.sheaves_full / "
                         "slab_sheaf.barn_list in the debug info")
        rep.complete = False
        barns = []
    done: Set[int] = set()
    for barn, name in barns:
        if barn in done:
            continue
        done.add(barn)
        for lname, o in (("full", o_full), ("empty", o_empty)):
            if o is None:
                continue
            head = barn + o
            try:
                nxt = mem.read_u64(head)
            except UnreadableMemory as e:
                rep.notes.append("%s %s unreadable: %s"
                                 % (name, hex(barn), e.reason or "?"))
                rep.complete = False
                break
            n = 0
            while nxt != head:
                if n >= MAX_BARN_SHEAVES or not nxt:
                    rep.notes.append("%s %s %s list broken after %d "
                                     "sheaves" % (name, hex(barn), lname, n))
                    rep.complete = False
                    break
                try:
                    after = mem.read_u64(nxt)
                except UnreadableMemory as e:
                    rep.notes.append("%s %s %s list unreadable at %s: %s"
                                     % (name, hex(barn), lname, hex(nxt),
                                        e.reason or "?"))
                    rep.complete = False
                    break
                sheaf(nxt - o_link, "%s %s" % (name, lname),
                      empty=lname == "empty")
                n += 1
                nxt = after
    st["barns"] = len(done)
    return out


def _barns(mem: Memory, sl: _Slub, rep: SlabReport) -> List[Tuple[int, str]]:
    """(barn address, name) of every NUMA node of the cache:
    ``kmem_cache.per_node[n].barn`` (7.3), else
    ``kmem_cache.node[n]->barn`` (``struct kmem_cache_node.barn``)."""
    K = "struct kmem_cache"
    nr = mem.symbol_value("nr_node_ids", 4) or 1
    nr = max(1, min(nr, 1 << 10))
    out: List[Tuple[int, str]] = []
    o_pn = mem.member_offset(K, "per_node")
    o_pn_barn = mem.member_offset("struct kmem_cache_per_node_ptrs", "barn")
    pn_size = mem.struct_size("struct kmem_cache_per_node_ptrs")
    try:
        if None not in (o_pn, o_pn_barn, pn_size):
            b = mem.read(sl.cache + o_pn, pn_size * nr)
            for n in range(nr):
                v = _u64(b, n * pn_size + o_pn_barn)
                if v:
                    out.append((v, "barn%d" % n))
            return out
        o_node = mem.member_offset(K, "node")
        o_kn_barn = mem.member_offset("struct kmem_cache_node", "barn")
        if None in (o_node, o_kn_barn):
            return out
        b = mem.read(sl.cache + o_node, 8 * nr)
        for n in range(nr):
            kn = _u64(b, 8 * n)
            if kn:
                v = mem.read_u64(kn + o_kn_barn)
                if v:
                    out.append((v, "barn%d" % n))
    except UnreadableMemory as e:
        rep.notes.append("per-node barns unreadable: %s" % (e.reason or "?"))
        rep.complete = False
    return out


def _preloaded(mem: Memory, lay: Layout, rep: SlabReport) -> Set[int]:
    """Nodes parked in ``radix_tree_preloads`` (per-cpu, linked through
    ``node->parent``)."""
    out: Set[int] = set()
    sym = mem.symbol("radix_tree_preloads")
    o_nodes = mem.member_offset("struct radix_tree_preload", "nodes")
    o_nr = mem.member_offset("struct radix_tree_preload", "nr")
    if None in (sym, o_nodes, o_nr):
        return out
    offs = _percpu_offsets(mem, rep)
    if offs is None:
        return out
    for off in offs:
        a = (sym + off) & M64
        try:
            b = mem.read(a, max(o_nodes, o_nr) + 8)
        except UnreadableMemory:
            continue
        nr = int.from_bytes(b[o_nr:o_nr + 4], "little")
        node = _u64(b, o_nodes)
        for _ in range(min(nr, 256)):
            if not node or node in out:
                break
            out.add(node)
            try:
                node = mem.read_u64(node + lay.node_parent)
            except UnreadableMemory:
                break
    return out


def iter_slabs(mem: Memory, sl: "_Slub", rep: SlabReport,
               progress: Optional[ProgressFn] = None
               ) -> Iterator[Tuple[int, int, int, int]]:
    """Yield ``(page_addr, pfn, freelist, counters)`` of every slab of the
    cache, reading vmemmap in :data:`VMEMMAP_CHUNK` runs."""
    ps = sl.page_size
    key = sl.cache.to_bytes(8, "little")
    osc = sl.o_slab_cache
    start = sl.vmemmap
    end = sl.vmemmap + sl.max_pfn * ps
    chunk = VMEMMAP_CHUNK - VMEMMAP_CHUNK % ps
    tally = RunTally()
    done = 0
    for a, buf in struct_page_runs(mem, start, end, chunk, ps, tally):
        done += len(buf)
        if progress and done % (64 << 20) < len(buf):
            progress({"stage": "vmemmap", "bytes": done,
                      "total": end - start})
        pos = buf.find(key)
        while pos >= 0:
            o = pos - osc
            if o >= 0 and o % ps == 0 and sl.is_slab(buf, o):
                page = a + o
                if sl.o_ch is None or not _u64(buf, o + sl.o_ch) & 1:
                    yield (page, (page - sl.vmemmap) // ps,
                           _u64(buf, o + sl.o_freelist),
                           _u64(buf, o + sl.o_counters))
            pos = buf.find(key, pos + 1)
    if tally.unreadable:
        rep.complete = False
        rep.notes.append("%d KiB of struct pages unreadable (holes or "
                         "excluded pages): slabs there not seen"
                         % (tally.unreadable >> 10))
    rep.stats["vmemmap_bytes"] = end - start


@dataclass
class SlabBuf:
    """One slab of the cache as read: its objects' bytes and which of them
    are free (``free`` is None when the freelist could not be decoded)."""

    page: int            # struct page (struct slab) address
    base: int            # virtual address of the slab memory
    first: int           # first object (base + red_left_pad)
    objects: int
    size: int            # object stride (kmem_cache.size)
    buf: bytes
    free: Optional[Set[int]]
    frozen: bool
    inuse: int

    def objs(self) -> Iterator[Tuple[int, int]]:
        """``(object address, offset in buf)`` of every object."""
        for i in range(self.objects):
            a = self.first + i * self.size
            yield a, a - self.base


def open_cache(mem: Memory) -> "_Slub":
    """The radix_tree_node cache's parameters (raises CrashextError)."""
    from ..analyze import layout_for
    return _Slub(mem, layout_for(mem))


def iter_slab_bufs(mem: Memory, sl: "_Slub", rep: SlabReport,
                   progress: Optional[ProgressFn] = None
                   ) -> Iterator[SlabBuf]:
    """Every slab of the cache, read in one piece, with its free objects
    (slab freelist + the lockless per-CPU freelists + the objects held in
    sheaves)."""
    cpu_fl = _cpu_freelists(mem, sl, rep)
    in_sheaves = _sheaf_objects(mem, sl, rep)
    st = rep.stats
    #: reason -> objects addresses of the slabs that could not be read
    lost: Dict[str, List[int]] = {}
    for page, pfn, freelist, counters in iter_slabs(mem, sl, rep, progress):
        st["slabs"] = st.get("slabs", 0) + 1
        objects = (counters >> 16) & 0x7FFF
        if not objects or objects > sl.oo_objects * 4:
            objects = sl.oo_objects
        inuse = counters & 0xFFFF
        frozen = bool(counters >> 31 & 1)
        base = (sl.page_offset + (pfn << sl.page_shift)) & M64
        first = base + sl.red_left_pad
        try:
            buf = mem.read(base, sl.red_left_pad + objects * sl.size)
        except UnreadableMemory as e:
            rep.complete = False
            lost.setdefault(e.reason or "?", []).append(base)
            continue
        free: Optional[Set[int]] = set()
        heads = cpu_fl.pop(page, [])
        on_freelist = 0
        for head in [freelist] + heads:
            p = head
            while p:
                i, r = divmod(p - first, sl.size)
                if r or not 0 <= i < objects or p in free:
                    rep.add(Finding("SLAB_FREELIST", address=page, found=p,
                                    extra={"freelist": head}))
                    free = None
                    break
                free.add(p)
                w = p + sl.fp_offset
                p = sl.decode_fp(_u64(buf, w - base), w)
            if free is None:
                break
            if head == freelist:
                on_freelist = len(free)
        if free is not None and not frozen and not heads:
            # A slab no CPU holds: inuse counts exactly the objects not on
            # its freelist (objects in sheaves are in use for the slab).
            if objects - inuse != on_freelist:
                st["inuse_mismatch"] = st.get("inuse_mismatch", 0) + 1
        if in_sheaves:
            end = first + objects * sl.size
            for a in range(first, end, sl.size):
                where = in_sheaves.pop(a, None)
                if where is None:
                    continue
                if free is not None and a in free:
                    # Free twice: on a freelist and in a sheaf.
                    rep.add(Finding("SLAB_SHEAF", node=a, address=page,
                                    found=a, extra={"sheaf": where,
                                                    "also": "freelist"}))
                elif free is not None:
                    free.add(a)
        yield SlabBuf(page, base, first, objects, sl.size, buf, free,
                      frozen, inuse)
    # One line per reason (makedumpfile -d 31 drops every slab page of
    # some kernels: a line per slab would bury the report).
    for reason, bases in sorted(lost.items()):
        st["slabs_unreadable"] = st.get("slabs_unreadable", 0) + len(bases)
        rep.notes.append("%d slab%s unreadable (%s): objects at %s%s"
                         % (len(bases), "s" if len(bases) > 1 else "",
                            reason, ", ".join(hex(b) for b in bases[:3]),
                            ", ..." if len(bases) > 3 else ""))
    for slab, heads in cpu_fl.items():
        rep.notes.append("cpu freelist %s of slab %s not in a scanned slab"
                         % (",".join(hex(h) for h in heads), hex(slab)))
    # Sheaf pointers that are no object of a scanned slab.
    for a, where in sorted(in_sheaves.items()):
        if rep.complete:
            rep.add(Finding("SLAB_SHEAF", address=a, found=a,
                            extra={"sheaf": where}))
    if in_sheaves and not rep.complete:
        rep.notes.append("%d sheaf pointers outside the scanned slabs "
                         "(walk incomplete)" % len(in_sheaves))


def walk_slab(mem: Memory, progress: Optional[ProgressFn] = None,
              check: bool = True) -> SlabReport:
    """Find every object of the ``radix_tree_node`` cache, tell allocated
    from free, and (``check``) verify each owned node against its tree.

    Never raises for what it finds in memory; raises
    :class:`CrashextError` when the kernel's debug info lacks what is
    needed (no SLUB, no vmemmap)."""
    from ..analyze import layout_for
    lay = layout_for(mem)
    rep = SlabReport()
    sl = _Slub(mem, lay)
    rep.cache = sl.cache
    st = rep.stats
    st.update(slabs=0, objects=0, allocated=0, free=0, freeing=0,
              unowned=0, preloaded=0, owned=0, unknown=0, inuse_mismatch=0)
    rep.notes.append("cache %s at %s: %d-byte objects, %d per order-%d "
                     "slab, freelist %s, slab pages by %s, per-cpu %s"
                     % (sl.name or "?", hex(sl.cache), sl.size,
                        sl.oo_objects, sl.oo_order,
                        "hardened" if sl.hardened else "plain",
                        sl.slab_mark, sl.percpu))
    hdr = struct.Struct("<BBB")
    o_sh, o_par, o_arr = lay.node_shift, lay.node_parent, lay.node_array
    if not (lay.node_offset == o_sh + 1 and lay.node_count == o_sh + 2):
        hdr = None
    nodes = rep.nodes
    slots_st = struct.Struct("<%dQ" % lay.chunk_size)
    o_slots = lay.node_slots
    for sb in iter_slab_bufs(mem, sl, rep, progress):
        buf, free = sb.buf, sb.free
        for a, o in sb.objs():
            if hdr is not None:
                shift, offset, count = hdr.unpack_from(buf, o + o_sh)
            else:
                shift, offset, count = (buf[o + lay.node_shift],
                                        buf[o + lay.node_offset],
                                        buf[o + lay.node_count])
            n = NodeHdr(a, shift, offset, count, _u64(buf, o + o_par),
                        _u64(buf, o + o_arr))
            st["objects"] += 1
            if free is None:
                n.state = "unknown"
                st["unknown"] += 1
            elif a in free:
                n.state = FREE
                st["free"] += 1
            else:
                st["allocated"] += 1
            if shift and n.state != FREE:
                sl_ = slots_st.unpack_from(buf, o + o_slots)
                n.kids = {i: v for i, v in enumerate(sl_)
                          if v & 3 == 2 and v > 4096}
            nodes[a] = n
    pre = _preloaded(mem, lay, rep)
    for a in pre:
        n = nodes.get(a)
        if n is not None and n.state == ALLOCATED:
            n.state = PRELOAD
            st["preloaded"] += 1
    for n in nodes.values():
        if n.state != ALLOCATED:
            continue
        if n.array == XA_RCU_FREE:
            st["freeing"] += 1
        elif n.array == 0:
            st["unowned"] += 1
        else:
            st["owned"] += 1
            rep.arrays[n.array] = rep.arrays.get(n.array, 0) + 1
    st["trees"] = len(rep.arrays)
    if check:
        check_nodes(mem, lay, rep)
    return rep


def check_nodes(mem: Memory, lay: Layout, rep: SlabReport) -> None:
    """Each owned node against its tree (see the module docstring)."""
    nodes = rep.nodes
    cshift = lay.chunk_shift
    heads: Dict[int, Optional[int]] = {}

    def xa_head(array: int) -> Optional[int]:
        if array not in heads:
            try:
                heads[array] = mem.read_u64(array + lay.xa_head)
            except UnreadableMemory:
                heads[array] = None
        return heads[array]

    def slot(node: int, off: int) -> Optional[int]:
        try:
            return mem.read_u64(node + lay.node_slots + 8 * off)
        except UnreadableMemory:
            return None

    # Reachability, memoised: addr -> (ok, reason, detail).
    reach: Dict[int, Tuple[bool, str, Dict[str, Any]]] = {}

    def why(n: NodeHdr) -> Tuple[bool, str, Dict[str, Any]]:
        if n.parent == 0:
            h = xa_head(n.array)
            if h is None:
                return False, "array unreadable", {}
            if h != n.addr | 2:
                return False, "xa_head holds another entry", {"head": h}
            return True, "", {}
        p = nodes.get(n.parent)
        if p is None:
            return False, "parent is no radix_tree_node object", {}
        if p.state == FREE:
            return False, "parent is free", {}
        if p.array != n.array:
            return False, "parent names another array", \
                {"parent_array": p.array}
        if p.shift != n.shift + cshift:
            return False, "parent shift %d, node shift %d" % (
                p.shift, n.shift), {}
        if (p.kids or {}).get(n.offset) != n.addr | 2:
            s = slot(p.addr, n.offset) if n.offset < lay.chunk_size else None
            return False, "parent slot %d holds another entry" % n.offset, \
                {"slot_entry": s}
        return True, "", {}

    for a, n in nodes.items():
        if not n.owned or a in reach:
            continue
        chain = []
        cur: Optional[NodeHdr] = n
        while cur is not None and cur.addr not in reach:
            chain.append(cur)
            if len(chain) > 64:
                break
            ok, reason, det = why(cur)
            if not ok or cur.parent == 0:
                reach[cur.addr] = (ok, reason, det)
                chain.pop()
                break
            cur = nodes.get(cur.parent)
        # Propagate down the chain: a node is reachable iff its parent is.
        for c in reversed(chain):
            pr = reach.get(c.parent, (False, "chain too long", {}))
            if pr[0]:
                reach[c.addr] = (True, "", {})
            else:
                reach[c.addr] = (False, "ancestor not reachable",
                                 {"ancestor": c.parent})

    orphans = 0
    reachable = 0
    for a, n in nodes.items():
        if not n.owned:
            continue
        ok, reason, det = reach[a]
        if ok:
            reachable += 1
            continue
        orphans += 1
        if reason == "parent names another array":
            rep.add(Finding("NODE_ARRAY", node=a, shift=n.shift,
                            expected=det["parent_array"], found=n.array,
                            extra={"parent": n.parent, "source": "slab"}))
            continue
        rep.add(Finding("SLAB_NODE_ORPHAN", node=a, shift=n.shift,
                        address=n.array, expected=n.addr | 2,
                        found=det.get("head", det.get("slot_entry")),
                        extra=dict(reason=reason, parent=n.parent,
                                   offset=n.offset, **{
                                       k: v for k, v in det.items()
                                       if k not in ("head", "slot_entry")})))
    rep.stats["reachable"] = reachable
    rep.stats["orphans"] = orphans

    # Links from reachable nodes: every node entry must be an allocated
    # node that names this slot as its place.
    if not rep.complete:
        rep.notes.append("slab walk incomplete: node entries pointing "
                         "outside the scanned slabs are not reported")
    for a, n in nodes.items():
        if not (n.owned and reach[a][0]) or not n.kids:
            continue
        for i, ent in sorted(n.kids.items()):
            c = nodes.get(ent - 2)
            if c is None:
                if rep.complete:
                    rep.add(Finding("SLAB_LINK_NOT_NODE", node=a, slots=(i,),
                                    shift=n.shift, found=ent))
                continue
            if c.state == FREE:
                rep.add(Finding("SLAB_NODE_FREE_LINKED", node=a, slots=(i,),
                                shift=n.shift, found=c.addr,
                                extra={"array": n.array}))
            elif c.state == ALLOCATED and c.array == XA_RCU_FREE:
                rep.add(Finding("NODE_FREEING", node=c.addr, slots=(i,),
                                expected=n.array, found=c.array,
                                extra={"holder": a, "source": "slab"}))
            elif c.array != n.array:
                if c.addr in reach and reach[c.addr][1] == \
                        "parent names another array":
                    continue            # reported once, as an orphan above
                rep.add(Finding("NODE_ARRAY", node=c.addr, shift=c.shift,
                                expected=n.array, found=c.array,
                                extra={"holder": a, "slot": i,
                                       "source": "slab"}))
            elif c.parent != a or c.offset != i:
                rep.add(Finding("NODE_PARENT", node=c.addr, shift=c.shift,
                                expected=a, found=c.parent,
                                extra={"slot": i, "offset": c.offset,
                                       "source": "slab"}))


def slab_nodes(mem: Memory) -> Set[int]:
    """Addresses of every allocated (not free) object of the
    radix_tree_node cache."""
    return walk_slab(mem, check=False).allocated
