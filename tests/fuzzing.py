"""Shared generators for hostile-input testing: corrupted XArray trees and
damaged snapshot files.

Used by ``tests/test_fuzz.py`` (a short hypothesis pass for CI) and
``bench/fuzz_run.py`` (a long run, 100k+ inputs).  Nothing here needs a lab
dump: a base tree comes from ``sample_dumps/*.snap`` (a real lab tree), else
from the lab (recorded through :class:`RecordingMemory`), else it is
synthesized from :data:`LAYOUT_6_1`, the debug-info answers of the 6.1 lab
kernel (6.1.0-50-amd64, read with ``RecordingMemory`` from the lab dump).

The contract being tested:

* ``SnapshotMemory.load(path)`` returns a SnapshotMemory or raises
  :class:`CrashextError` - never another exception - in bounded time and
  memory, whatever the file holds;
* ``analyze(mem, spec)`` on any tree (wild pointers, cycles, impossible
  shifts, random bytes...) returns findings or raises CrashextError, in
  bounded time.

>>> base = synth_base()
>>> mem = apply_ops(base, [("slot", 0, 3, "self", 0)])
>>> outcome, secs, err = run_analysis(mem, base.spec)
>>> outcome
'findings'
"""

from __future__ import annotations

import bisect
import glob
import gzip
import json
import os
import random
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from hypothesis import strategies as st

from crashext.memory import CrashextError, Memory, MemoryView, UnreadableMemory
from crashext.xarray import entry as E

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_dumps")
U64 = (1 << 64) - 1

#: Debug-info answers of the 6.1 lab kernel (6.1.0-50-amd64), as recorded
#: by RecordingMemory from the lab's ELF dump (``crashext capture``).
LAYOUT_6_1: Dict[str, Dict[str, Optional[int]]] = {
    "enum_value": {"PG_dirty": 3, "PG_head": 16, "PG_locked": 0,
                   "PG_uptodate": 2, "PG_writeback": 15},
    "member_offset": {
        "struct address_space\thost": 0,
        "struct address_space\ti_pages": 8,
        "struct address_space\tnrpages": 128,
        "struct file_system_type\tname": 0,
        "struct folio\t_folio_order": 81,
        "struct folio\t_refcount.counter": 52,
        "struct folio\tflags": 0,
        "struct folio\tindex": 32,
        "struct folio\tmapping": 24,
        "struct inode\ti_data": 376,
        "struct inode\ti_ino": 64,
        "struct inode\ti_mapping": 48,
        "struct inode\ti_sb": 40,
        "struct inode\ti_size": 80,
        "struct page\tcompound_head": 8,
        "struct super_block\ts_type": 40,
        "struct xa_node\tarray": 16,
        "struct xa_node\tcount": 2,
        "struct xa_node\tmarks": 552,
        "struct xa_node\tnr_values": 3,
        "struct xa_node\toffset": 1,
        "struct xa_node\tparent": 8,
        "struct xa_node\tshift": 0,
        "struct xa_node\tslots": 40,
        "struct xarray\txa_flags": 4,
        "struct xarray\txa_head": 8,
    },
    "member_size": {"struct xa_node\tmarks": 24,
                    "struct xa_node\tslots": 512},
    "struct_size": {"struct folio": 112, "struct page": 64,
                    "struct xa_node": 576},
    "symbol": {},
}
RELEASE_6_1 = "6.1.0-50-amd64"


class Hang(BaseException):
    """Raised by :func:`time_limit` (a BaseException, so no ``except
    Exception`` in the code under test swallows it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`Hang` after ``seconds`` (SIGALRM;
    main thread only - a no-op elsewhere)."""
    try:
        old = signal.signal(signal.SIGALRM, _on_alarm)
    except ValueError:          # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _on_alarm(signum, frame):
    raise Hang("time limit")


# Memories ---------------------------------------------------------------
class AnswerMemory(Memory):
    """Debug-info answers from a dict (the shape of a snapshot's
    ``answers``) over byte segments ``{address: bytes}``."""

    def __init__(self, answers: Dict[str, Dict[str, Any]],
                 segments: Dict[int, bytes], release: Optional[str] = None,
                 paths: Optional[Dict[str, int]] = None) -> None:
        self.answers = answers
        self.release_ = release
        self.paths = dict(paths or {})
        self._starts = sorted(segments)
        self._data = [segments[a] for a in self._starts]
        self.targets: List[str] = []

    def read(self, addr: int, size: int) -> bytes:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start = self._starts[i]
            d = self._data[i]
            if addr + size <= start + len(d):
                return d[addr - start:addr - start + size]
        raise UnreadableMemory(addr, size, "not in memory")

    def _get(self, q: str, key: str) -> Optional[int]:
        return self.answers.get(q, {}).get(key)

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return self._get("member_offset", struct + "\t" + member)

    def member_size(self, struct: str, member: str) -> Optional[int]:
        return self._get("member_size", struct + "\t" + member)

    def struct_size(self, struct: str) -> Optional[int]:
        return self._get("struct_size", struct)

    def symbol(self, name: str) -> Optional[int]:
        return self._get("symbol", name)

    def enum_value(self, name: str) -> Optional[int]:
        return self._get("enum_value", name)

    def release(self) -> Optional[str]:
        return self.release_

    def resolve_path(self, path: str) -> int:
        v = self.paths.get(path)
        if v is None:
            raise CrashextError("no such path: %s" % path)
        return v


class FuzzMemory(MemoryView):
    """``base`` with whole objects replaced (``over``: address -> bytes,
    readable even where the base has nothing) and ``holes`` (addresses
    whose reads fail).  Debug info and ``resolve_path`` come from
    ``base``."""

    def __init__(self, base: Memory, over: Dict[int, bytes],
                 holes: Sequence[int] = (), layout: Any = None) -> None:
        self.base = base
        self.over = over
        self.holes = sorted(set(holes))
        self._ostarts = sorted(over)
        if layout is not None:
            self._crashext_layout = layout

    def read(self, addr: int, size: int) -> bytes:
        if size < 0 or addr < 0 or addr + size > 1 << 64:
            raise UnreadableMemory(addr & U64, size, "out of range")
        if self.holes:
            i = bisect.bisect_left(self.holes, addr)
            if i < len(self.holes) and self.holes[i] < addr + max(size, 1):
                raise UnreadableMemory(addr, size, "hole")
        d = self.over.get(addr)
        if d is not None and size <= len(d):
            return bytes(d[:size])
        end = addr + size
        hits = []
        i = bisect.bisect_right(self._ostarts, addr) - 1
        i = max(i, 0)
        while i < len(self._ostarts) and self._ostarts[i] < end:
            a = self._ostarts[i]
            if a + len(self.over[a]) > addr:
                hits.append(a)
            i += 1
        try:
            buf = bytearray(self.base.read(addr, size))
        except UnreadableMemory:
            # Readable only if the replaced objects cover it all.
            buf = None
            covered = bytearray(size)
        for a in hits:
            d = self.over[a]
            lo, hi = max(a, addr), min(a + len(d), end)
            if buf is None:
                covered[lo - addr:hi - addr] = b"\1" * (hi - lo)
                continue
            buf[lo - addr:hi - addr] = d[lo - a:hi - a]
        if buf is None:
            if not hits or not all(covered):
                raise UnreadableMemory(addr, size, "not in memory")
            buf = bytearray(size)
            for a in hits:
                d = self.over[a]
                lo, hi = max(a, addr), min(a + len(d), end)
                buf[lo - addr:hi - addr] = d[lo - a:hi - a]
        return bytes(buf)

    def resolve_path(self, path: str) -> int:
        return self.base.resolve_path(path)     # type: ignore[attr-defined]


class ScriptedNodeMemory(MemoryView):
    """An endless tree: every 576-byte-aligned address in a 2^40-byte
    window of the direct map reads as a well-formed ``xa_node`` whose 64
    slots all point at distinct further nodes (``addr * 64 + i`` inside
    the window) - a hostile fan-out that only the walker's node limit
    bounds.  Layout answers and the target (an inode/mapping at
    ``INODE``) come from :func:`synth_base`."""

    WINDOW = 0xffff900000000000
    SIZE = 1 << 40

    def __init__(self, root_shift: int = 24) -> None:
        base = synth_base()
        self.base = base.mem
        self.layout = base.layout
        self.spec = base.spec
        self.root_shift = root_shift
        self.node_size = base.layout.node_size
        self.reads = 0

    def _node(self, addr: int) -> bytes:
        lay = self.layout
        k = (addr - self.WINDOW) // self.node_size
        shift = self.root_shift if k == 0 else 0
        b = bytearray(self.node_size)
        b[lay.node_shift] = shift
        b[lay.node_count] = 64
        for i in range(64):
            child = (k * 64 + i + 1) % (self.SIZE // self.node_size)
            v = (self.WINDOW + child * self.node_size) | 2
            o = lay.node_slots + 8 * i
            b[o:o + 8] = v.to_bytes(8, "little")
        return bytes(b)

    def read(self, addr: int, size: int) -> bytes:
        if self.WINDOW <= addr < self.WINDOW + self.SIZE:
            self.reads += 1
            off = (addr - self.WINDOW) % self.node_size
            node = addr - off
            if off + size <= self.node_size:
                return self._node(node)[off:off + size]
            raise UnreadableMemory(addr, size, "straddles nodes")
        if addr == XARRAY_SYNTH + self.layout.xa_flags:
            hdr = bytearray(self.base.read(addr, size))
            o = self.layout.xa_head - self.layout.xa_flags
            hdr[o:o + 8] = (self.WINDOW | 2).to_bytes(8, "little")
            return bytes(hdr)
        return self.base.read(addr, size)


# Base trees -------------------------------------------------------------
@dataclass
class BaseTree:
    """A clean tree to mutate: a Memory, the target spec, and what a clean
    walk of it found (nodes in walk order, folio addresses)."""

    name: str
    mem: Memory
    spec: str
    layout: Any
    xarray: int
    head: int
    nodes: List[Any]                    # NodeRec of the clean walk
    folios: List[int]
    node_bytes: Dict[int, bytes] = field(default_factory=dict)
    folio_bytes: Dict[int, bytes] = field(default_factory=dict)
    inode: int = 0
    mapping: int = 0

    def ancestors(self, k: int) -> List[int]:
        """Addresses of node ``k``'s ancestors, parent first."""
        by = {n.addr: n for n in self.nodes}
        out = []
        n = self.nodes[k]
        while n.holder and n.holder in by and len(out) < 16:
            out.append(n.holder)
            n = by[n.holder]
        return out


def _make_base(name: str, mem: Memory, spec: str) -> BaseTree:
    from crashext.analyze import analyze, layout_for
    lay = layout_for(mem)
    a = analyze(mem, spec)
    if a.findings:
        raise ValueError("base tree %s is not clean: %s" % (name, a.findings[:2]))
    nodes = list(a.walk.nodes)
    node_bytes = {n.addr: mem.read(n.addr, lay.node_size) for n in nodes}
    folio_bytes = {}
    for f in a.folios:
        try:
            folio_bytes[f] = mem.read(f, lay.folio_read_size)
        except UnreadableMemory:
            pass
    return BaseTree(name, mem, spec, lay, a.target.xarray, a.walk.head,
                    nodes, sorted(a.folios), node_bytes, folio_bytes,
                    a.target.inode or 0, a.target.mapping or 0)


# Synthesized tree (6.1 layout): an inode, its mapping, a root node of
# shift 6 with four leaves and three large entries in the root itself.
INODE_SYNTH = 0xffff888001000000
MAPPING_SYNTH = INODE_SYNTH + 376
XARRAY_SYNTH = MAPPING_SYNTH + 8
NODE_BASE_SYNTH = 0xffff888002000000
VMEMMAP_SYNTH = 0xffffea0000400000
SYNTH_PATH = "/synth/file"


def synth_memory() -> Tuple[AnswerMemory, str]:
    """A small valid page-cache tree built by hand from LAYOUT_6_1."""
    mo = LAYOUT_6_1["member_offset"]
    node_size = LAYOUT_6_1["struct_size"]["struct xa_node"]
    page = LAYOUT_6_1["struct_size"]["struct page"]
    pg_head = LAYOUT_6_1["enum_value"]["PG_head"]
    o_shift = mo["struct xa_node\tshift"]
    o_off = mo["struct xa_node\toffset"]
    o_cnt = mo["struct xa_node\tcount"]
    o_nrv = mo["struct xa_node\tnr_values"]
    o_par = mo["struct xa_node\tparent"]
    o_arr = mo["struct xa_node\tarray"]
    o_slots = mo["struct xa_node\tslots"]
    o_marks = mo["struct xa_node\tmarks"]
    segs: Dict[int, bytearray] = {}
    folio_next = [VMEMMAP_SYNTH]
    pages = [0]

    def u64(buf: bytearray, off: int, v: int) -> None:
        buf[off:off + 8] = (v & U64).to_bytes(8, "little")

    def folio(index: int, order: int) -> int:
        a = folio_next[0]
        folio_next[0] += page << max(order, 1)
        b = bytearray(page * 2)
        flags = (1 << 2) | ((1 << pg_head) if order else 0)   # uptodate
        u64(b, mo["struct folio\tflags"], flags)
        u64(b, mo["struct folio\tmapping"], MAPPING_SYNTH)
        u64(b, mo["struct folio\tindex"], index)
        b[mo["struct folio\t_refcount.counter"]:
          mo["struct folio\t_refcount.counter"] + 4] = \
            ((1 << order) + 1).to_bytes(4, "little")
        if order:
            b[mo["struct folio\t_folio_order"]] = order
            u64(b, page + mo["struct page\tcompound_head"], a | 1)
        segs[a] = b
        pages[0] += 1 << order
        return a

    nodes: List[bytearray] = []

    def node(shift: int, offset: int, parent: int) -> Tuple[int, bytearray]:
        a = NODE_BASE_SYNTH + len(nodes) * node_size
        b = bytearray(node_size)
        b[o_shift], b[o_off] = shift, offset
        u64(b, o_par, parent)
        u64(b, o_arr, XARRAY_SYNTH)
        nodes.append(b)
        segs[a] = b
        return a, b

    def fill_counts(b: bytearray) -> None:
        slots = [int.from_bytes(b[o_slots + 8 * i:o_slots + 8 * i + 8],
                                "little") for i in range(64)]
        b[o_cnt] = sum(1 for s in slots if s)
        nv, canon_value = 0, False
        for s in slots:
            if not s:
                canon_value = False
            elif s & 1:
                nv, canon_value = nv + 1, True
            elif s & 3 == 2 and s < 256:
                nv += canon_value
            else:
                canon_value = False
        b[o_nrv] = nv

    def put(b: bytearray, base_index: int, shift: int, slot: int,
            order: int, value: Optional[int] = None) -> None:
        """Store an entry of ``order`` at ``slot`` (+ its siblings)."""
        n = 1 << (order - shift)
        ent = (value << 1 | 1) if value is not None else \
            folio(base_index + (slot << shift), order)
        u64(b, o_slots + 8 * slot, ent)
        for j in range(slot + 1, slot + n):
            u64(b, o_slots + 8 * j, E.xa_mk_sibling(slot))

    root, rb = node(6, 0, 0)
    # Leaf 0: sixteen order-2 folios.  Leaf 1: four order-4 folios, the
    # first dirty.  Leaf 2: shadow (value) entries of order 2 and 3.
    # Leaf 3: order-0 folios with a hole.
    for li in range(4):
        la, lb = node(0, li, root)
        u64(rb, o_slots + 8 * li, la | 2)
        base_index = li << 6
        if li == 0:
            for s in range(0, 64, 4):
                put(lb, base_index, 0, s, 2)
        elif li == 1:
            for s in range(0, 64, 16):
                put(lb, base_index, 0, s, 4)
            u64(lb, o_marks, 1)                   # mark 0 on slot 0
            u64(rb, o_marks, 1 << li)             # and on the root slot
        elif li == 2:
            for s in range(0, 32, 4):
                put(lb, base_index, 0, s, 2, value=0x3438000800 + s)
            for s in range(32, 64, 8):
                put(lb, base_index, 0, s, 3, value=0x3538000800 + s)
        else:
            for s in range(64):
                if s not in (5, 6, 40):
                    put(lb, base_index, 0, s, 0)
        fill_counts(lb)
    put(rb, 0, 6, 4, 6)              # order-6 folio: one root slot
    put(rb, 0, 6, 6, 7)              # order-7 folio: slots 6-7
    fill_counts(rb)

    inode = bytearray(1024)
    u64(inode, mo["struct inode\ti_mapping"], MAPPING_SYNTH)
    u64(inode, mo["struct inode\ti_ino"], 4242)
    u64(inode, mo["struct inode\ti_size"], 8 << 20)
    mapping = inode[376:]
    del inode[376:]
    u64(mapping, mo["struct address_space\thost"], INODE_SYNTH)
    u64(mapping, mo["struct address_space\tnrpages"], pages[0])
    # xa_lock (4 bytes), xa_flags = XA_FLAGS_LOCK_IRQ | XA_FLAGS_ACCOUNT
    x = mo["struct address_space\ti_pages"]
    mapping[x + 4:x + 8] = (33).to_bytes(4, "little")
    u64(mapping, x + 8, root | 2)
    segs[INODE_SYNTH] = inode
    segs[MAPPING_SYNTH] = mapping
    # vmemmap is virtually contiguous: one segment for all the folios.
    vm = bytearray(folio_next[0] - VMEMMAP_SYNTH)
    for a in [a for a in segs if a >= VMEMMAP_SYNTH]:
        d = segs.pop(a)
        vm[a - VMEMMAP_SYNTH:a - VMEMMAP_SYNTH + len(d)] = d
    segs[VMEMMAP_SYNTH] = vm
    mem = AnswerMemory(LAYOUT_6_1, {a: bytes(b) for a, b in segs.items()},
                       RELEASE_6_1, {SYNTH_PATH: INODE_SYNTH})
    return mem, SYNTH_PATH


_bases: Dict[str, BaseTree] = {}


def synth_base() -> BaseTree:
    if "synth" not in _bases:
        mem, spec = synth_memory()
        _bases["synth"] = _make_base("synth", mem, spec)
    return _bases["synth"]


def snapshot_base(snap: str, path: str) -> Optional[BaseTree]:
    """A base tree from one file of a sample snapshot, or None."""
    key = "%s:%s" % (os.path.basename(snap), path)
    if key in _bases:
        return _bases[key]
    if not os.path.exists(snap):
        return None
    from crashext.backends.snapshot import SnapshotMemory
    mem = SnapshotMemory.load(snap)
    if path not in mem.targets:
        return None
    _bases[key] = _make_base(key, mem, path)
    return _bases[key]


def lab_base(family: str = "6.1", path: str = "/mnt/xfs/dirty32"
             ) -> Optional[BaseTree]:
    """A base tree recorded from the lab ELF dump, or None without it."""
    key = "lab-%s:%s" % (family, path)
    if key in _bases:
        return _bases[key]
    from tests.lab import labdumps
    run = labdumps.elf_run(family)
    if run is None:
        return None
    _m, core, vmlinux = run
    try:
        import tempfile
        from crashext.analyze import analyze
        from crashext.backends.drgn import DrgnMemory
        from crashext.backends.snapshot import (RecordingMemory,
                                                SnapshotMemory, save)
        rec = RecordingMemory(DrgnMemory.open(core, vmlinux))
        analyze(rec, path)
        rec.targets.append(path)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "base.snap")
            save(rec, p)
            mem = SnapshotMemory.load(p)
    except Exception:
        return None
    _bases[key] = _make_base(key, mem, path)
    return _bases[key]


#: Sample files used as bases, smallest trees first.
SAMPLE_BASES = (
    ("clean-6.1.snap", "/mnt/xfs/dirty32"),     # 37 nodes, dirty marks
    ("clean-6.12.snap", "/mnt/xfs/split64"),    # 6.12 layout, order 0-9
    ("clean-6.1.snap", "/mnt/xfs/shadow64"),    # value entries, 261 nodes
)


def base_trees(limit: int = 2) -> List[BaseTree]:
    """Bases to fuzz: real trees (sample snapshots, else the lab) then the
    synthesized one, which is always there."""
    out: List[BaseTree] = []
    for snap, path in SAMPLE_BASES[:limit]:
        b = snapshot_base(os.path.join(SAMPLES, snap), path)
        if b is not None:
            out.append(b)
    if not out:
        b = lab_base()
        if b is not None:
            out.append(b)
    out.append(synth_base())
    return out


# Tree mutations ---------------------------------------------------------
NODE_CHOICES = ("self", "ancestor", "node", "fake", "wild", "noncanon",
                "unaligned", "low", "top", "other")
ENTRY_CHOICES = NODE_CHOICES + (
    "sibling", "retry", "zero", "internal", "value", "folio", "tail",
    "ptr", "raw", "null")
OPS = ("slot", "slot", "slot", "shift", "count", "nr_values", "offset",
       "parent", "array", "marks", "bytes", "garbage", "zero_node", "copy",
       "hole", "head", "folio", "fake", "fanout", "chain", "folio_hole",
       "target")

FAKE_BASE = 0xffff888070000000

interesting_u64 = st.sampled_from([
    0, 1, 2, 3, 4, 6, 0x402, 0x406, 0x1000, 0x1002, 4094, 4098,
    (1 << 63), (1 << 63) | 2, U64, U64 - 1, 0xffff800000000000,
    0x0000800000000000 | 2, 0xffff888000000000 | 2, 0xffffea0000000000,
    0x00007fffffffe002, 0xdead000000000100, 0xdead000000000122,
    1 << 30, (1 << 30) - 1, 64, 63, 62, 255, 256, 24 << 2 | 2])
u64s = st.one_of(st.integers(0, U64), interesting_u64)

#: One mutation: (op, node selector, slot, choice, value).
op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16),
                        st.integers(0, 63), st.sampled_from(ENTRY_CHOICES),
                        u64s)
ops_strategy = st.lists(op_strategy, min_size=1, max_size=8)


class _Builder:
    """Applies ops to copies of a base tree's node and folio bytes."""

    def __init__(self, base: BaseTree) -> None:
        self.b = base
        self.lay = base.layout
        self.over: Dict[int, bytearray] = {}
        self.holes: List[int] = []
        self.fakes: List[int] = []
        self.xa_hdr: Optional[bytearray] = None

    def obj(self, addr: int, size: int) -> bytearray:
        d = self.over.get(addr)
        if d is None:
            src = (self.b.node_bytes.get(addr) or self.b.folio_bytes.get(addr))
            if src is None:
                try:
                    src = self.b.mem.read(addr, size)
                except UnreadableMemory:
                    src = bytes(size)
            d = self.over[addr] = bytearray(src)
        return d

    def node(self, sel: int) -> Tuple[int, bytearray]:
        pool = [n.addr for n in self.b.nodes] + self.fakes
        a = pool[sel % len(pool)]
        return a, self.obj(a, self.lay.node_size)

    def node_index(self, addr: int) -> int:
        for i, n in enumerate(self.b.nodes):
            if n.addr == addr:
                return i
        return -1

    def entry(self, choice: str, value: int, here: int) -> int:
        """An entry value for a slot of the node at ``here``."""
        b, lay = self.b, self.lay
        nodes = b.nodes
        if choice in NODE_CHOICES:
            if choice == "self":
                a = here
            elif choice == "ancestor":
                k = self.node_index(here)
                anc = b.ancestors(k) if k >= 0 else []
                a = anc[value % len(anc)] if anc else here
            elif choice == "node":
                a = nodes[value % len(nodes)].addr
            elif choice == "other":
                # A node of the tree that is neither this one nor one of
                # its ancestors, one level down (a shared subtree).
                k = self.node_index(here)
                anc = set(b.ancestors(k)) if k >= 0 else set()
                depth = nodes[k].depth + 1 if k >= 0 else 1
                cands = [n.addr for n in nodes if n.addr != here
                         and n.addr not in anc and n.depth == depth] or \
                    [n.addr for n in nodes if n.addr != here
                     and n.addr not in anc] or [here]
                a = cands[value % len(cands)]
            elif choice == "fake":
                a = self.fake(value)
            elif choice == "wild":
                a = value & ~3
            elif choice == "noncanon":
                a = (0x0000800000000000 | (value & 0x00007ffffffffff8))
            elif choice == "unaligned":
                a = nodes[value % len(nodes)].addr + 8 * (1 + value % 7)
            elif choice == "low":
                a = 0x1000 + (value & 0xfffff8)
            else:  # top: wraps past 2^64 when read
                a = U64 - 7 - (value & 0x1f8)
            return (a + 2) & U64
        if choice == "sibling":
            return E.xa_mk_sibling(value % 80)
        if choice == "retry":
            return E.XA_RETRY_ENTRY
        if choice == "zero":
            return E.XA_ZERO_ENTRY
        if choice == "internal":
            return E.xa_mk_internal(value % 1100)
        if choice == "value":
            return value | 1
        if choice == "folio" and b.folios:
            return b.folios[value % len(b.folios)]
        if choice == "tail" and b.folios:
            f = b.folios[value % len(b.folios)]
            return f + lay.page_size * (1 + value % 15)
        if choice == "ptr":
            return (0xffff000000000000 | value) & ~7 & U64
        if choice == "null":
            return 0
        return value

    def fake(self, value: int) -> int:
        """A readable node outside the tree (random header and slots
        drawn from ``value``)."""
        a = FAKE_BASE + (value % 4096) * self.lay.node_size
        if a not in self.over:
            rng = random.Random(value)
            d = self.obj(a, self.lay.node_size)
            d[:] = bytes(self.lay.node_size)
            d[self.lay.node_shift] = rng.choice((0, 6, 12, 18, 24, 7, 66))
            d[self.lay.node_count] = rng.randrange(256)
            for i in range(rng.randrange(1, 8)):
                s = rng.randrange(64)
                choice = rng.choice(ENTRY_CHOICES)
                if choice == "fake":
                    choice = "self"
                self.set_slot(d, s, self.entry(choice, rng.getrandbits(64), a))
            self.fakes.append(a)
        return a

    def set_slot(self, d: bytearray, slot: int, v: int) -> None:
        o = self.lay.node_slots + 8 * (slot % self.lay.chunk_size)
        d[o:o + 8] = (v & U64).to_bytes(8, "little")

    def u64(self, d: bytearray, off: int, v: int) -> None:
        d[off:off + 8] = (v & U64).to_bytes(8, "little")

    def apply(self, op: Tuple[str, int, int, str, int]) -> None:
        kind, sel, slot, choice, value = op
        lay = self.lay
        if kind == "target":
            return self.apply_target(slot, choice, value)
        if kind in ("head", "fanout", "chain") or not self.b.nodes:
            return self.apply_root(kind, sel, slot, choice, value)
        if kind in ("folio", "folio_hole"):
            if not self.b.folios:
                return
            f = self.b.folios[sel % len(self.b.folios)]
            if kind == "folio_hole":
                self.holes.append(f)
                return
            d = self.obj(f, lay.folio_read_size)
            fld = (lay.f_flags, lay.f_mapping, lay.f_index, lay.f_refcount,
                   lay.f_compound_head or 0, lay.f_order)[slot % 6]
            if fld == lay.f_order:
                d[fld] = value & 0xff
            elif fld == lay.f_refcount:
                d[fld:fld + 4] = (value & 0xffffffff).to_bytes(4, "little")
            else:
                self.u64(d, fld, value if slot % 2 else value ^ (1 << lay.pg_head))
            return
        if kind == "fake":
            self.fake(value)
            return
        addr, d = self.node(sel)
        if kind == "slot":
            self.set_slot(d, slot, self.entry(choice, value, addr))
        elif kind == "shift":
            table = (value & 0xff, d[lay.node_shift] + 6, 64, 66, 7, 255, 24,
                     max(0, d[lay.node_shift] - 6), 60)
            d[lay.node_shift] = table[slot % len(table)] & 0xff
        elif kind == "count":
            d[lay.node_count] = value & 0xff
        elif kind == "nr_values":
            d[lay.node_nr_values] = value & 0xff
        elif kind == "offset":
            d[lay.node_offset] = value & 0xff
        elif kind == "parent":
            self.u64(d, lay.node_parent,
                     self.entry(choice, value, addr) & ~3)
        elif kind == "array":
            self.u64(d, lay.node_array,
                     (0, 1, value, self.b.xarray + 8)[slot % 4])
        elif kind == "marks":
            m = slot % max(1, lay.max_marks)
            self.u64(d, lay.node_marks + 8 * m, value)
        elif kind == "bytes":
            rng = random.Random(value)
            off = value % len(d)
            n = min(len(d) - off, 1 + slot)
            d[off:off + n] = rng.randbytes(n)
        elif kind == "garbage":
            d[:] = random.Random(value).randbytes(len(d))
        elif kind == "zero_node":
            d[:] = bytes(len(d))
        elif kind == "copy":
            src, sd = self.node(value)
            d[:] = sd
        elif kind == "hole":
            self.holes.append(addr)

    def apply_target(self, slot: int, choice: str, value: int) -> None:
        """Damage what target resolution reads: the inode's i_mapping,
        i_ino, i_size, i_sb, the mapping's host and nrpages, xa_flags."""
        lay, b = self.lay, self.b
        if not b.inode or not b.mapping:
            return
        fields = ((b.inode + lay.inode_i_mapping, 8),
                  (b.inode + lay.inode_i_ino, 8),
                  (b.inode + lay.inode_i_size, 8),
                  (b.inode + lay.inode_i_sb, 8),
                  (b.mapping + lay.as_host, 8),
                  (b.mapping + lay.as_nrpages, 8),
                  (b.xarray + lay.xa_flags, 4))
        addr, size = fields[slot % len(fields)]
        v = self.entry(choice, value, 0)
        if slot % 2:
            v &= ~3
        d = self.obj(addr, size)
        d[:] = (v & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def apply_root(self, kind: str, sel: int, slot: int, choice: str,
                   value: int) -> None:
        lay = self.lay
        if self.xa_hdr is None:
            self.xa_hdr = self.obj(self.b.xarray + lay.xa_flags,
                                   max(lay.xa_head, lay.xa_flags) + 8
                                   - lay.xa_flags)
        ho = lay.xa_head - lay.xa_flags
        if kind == "head":
            here = (self.b.head - 2) if self.b.head & 3 == 2 else 0
            self.u64(self.xa_hdr, ho, self.entry(choice, value, here))
        elif kind == "fanout":
            # A root claiming a huge range (shift 24 = 2^30 indices, or
            # wilder) whose every slot points at one node, or at nodes of
            # the tree in turn.
            a = FAKE_BASE - 0x10000 - (value % 16) * lay.node_size
            d = self.obj(a, lay.node_size)
            d[:] = bytes(lay.node_size)
            d[lay.node_shift] = (24, 30, 60, 66, 18, 12)[slot % 6]
            d[lay.node_count] = 64
            pool = [n.addr for n in self.b.nodes] or [a]
            for i in range(lay.chunk_size):
                t = pool[(value + i * (slot % 3)) % len(pool)]
                self.set_slot(d, i, t | 2)
            self.u64(self.xa_hdr, ho, a | 2)
        elif kind == "chain":
            # A descending chain of fake nodes, each pointing at the next
            # (and at itself), from a root of shift 60 (11 levels).
            n = 11
            top = FAKE_BASE - 0x100000 - (value % 8) * n * lay.node_size
            for lvl in range(n):
                a = top + lvl * lay.node_size
                d = self.obj(a, lay.node_size)
                d[:] = bytes(lay.node_size)
                d[lay.node_shift] = max(0, 60 - 6 * lvl)
                d[lay.node_count] = 2
                if lvl + 1 < n:
                    self.set_slot(d, slot, (a + lay.node_size) | 2)
                self.set_slot(d, (slot + 1) % 64, a | 2)
            self.u64(self.xa_hdr, ho, top | 2)


def apply_ops(base: BaseTree, ops: Sequence[Tuple[str, int, int, str, int]]
              ) -> FuzzMemory:
    """A FuzzMemory: ``base`` with the mutations ``ops`` applied."""
    bld = _Builder(base)
    for op in ops:
        bld.apply(op)
    return FuzzMemory(base.mem, {a: bytes(d) for a, d in bld.over.items()},
                      bld.holes, layout=base.layout)


def random_node_memory(base: BaseTree, seed: int) -> FuzzMemory:
    """Every node of ``base`` replaced by random bytes (seeded)."""
    rng = random.Random(seed)
    over = {n.addr: rng.randbytes(base.layout.node_size) for n in base.nodes}
    return FuzzMemory(base.mem, over, layout=base.layout)


# Running one input ----------------------------------------------------------
def run_analysis(mem: Memory, spec: str, limit: float = 10.0,
                 render: bool = False, max_nodes: Optional[int] = None,
                 keep: Optional[list] = None
                 ) -> Tuple[str, float, Optional[str]]:
    """Analyse ``spec`` in ``mem``.  Returns ``(outcome, seconds, error)``:
    outcome ``clean``/``findings``/``error`` (a CrashextError) are the
    allowed ones; ``crash`` (any other exception) and ``hang`` (over
    ``limit`` seconds) are failures, with the traceback in ``error``.
    ``render`` also renders the analysis as JSON, chat and table (timed
    with it); ``keep``, a list, receives the Analysis."""
    from crashext.analyze import analyze
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            if max_nodes is None:
                a = analyze(mem, spec)
            else:
                a = analyze(mem, spec, max_nodes=max_nodes)
            if render:
                render_all(a)
        if keep is not None:
            keep.append(a)
        outcome, err = ("findings" if a.findings else "clean"), None
    except CrashextError as e:
        outcome, err = "error", str(e)
    except Hang:
        outcome, err = "hang", traceback.format_exc()
    except Exception:
        outcome, err = "crash", traceback.format_exc()
    return outcome, time.perf_counter() - t0, err


def run_render(a: Any, limit: float = 10.0
               ) -> Tuple[str, float, Optional[str]]:
    """Render an Analysis every way: ``("rendered"|"crash"|"hang",
    seconds, traceback)``."""
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            render_all(a)
        outcome, err = "rendered", None
    except Hang:
        outcome, err = "hang", traceback.format_exc()
    except Exception:
        outcome, err = "crash", traceback.format_exc()
    return outcome, time.perf_counter() - t0, err


def render_all(a: Any) -> None:
    from crashext.render import chat, jsonout, table
    jsonout.render(a, full=True)
    chat.render(a)
    table.render(a)


# Snapshot files -------------------------------------------------------------
def snapshot_parts(path: str) -> Tuple[Dict[str, Any], bytes]:
    """(header, blob) of a valid snapshot file."""
    raw = gzip.decompress(open(path, "rb").read())
    nl = raw.index(b"\n")
    return json.loads(raw[:nl]), raw[nl + 1:]


def pack_snapshot(header: Any, blob: bytes = b"", level: int = 1) -> bytes:
    """A snapshot file's bytes from a (possibly hostile) header and blob."""
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    return gzip.compress(text + b"\n" + blob, compresslevel=level, mtime=0)


def small_snapshot() -> Tuple[Dict[str, Any], bytes]:
    """Header and blob of a small valid snapshot (the synthesized tree)."""
    from crashext.analyze import analyze
    from crashext.backends.snapshot import RecordingMemory, save
    import tempfile
    mem, spec = synth_memory()
    rec = RecordingMemory(mem)
    analyze(rec, spec)
    rec.targets.append(spec)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "s.snap")
        save(rec, p)
        return snapshot_parts(p)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([0, -1, 1, U64, U64 + 1, 1 << 63, 1 << 31, 1 << 40,
                     1 << 30, 2, 99]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda c: st.one_of(st.lists(c, max_size=4),
                        st.dictionaries(st.text(max_size=6), c, max_size=3)),
    max_leaves=10)

HEADER_KEYS = ("format", "version", "segments", "faults", "answers",
               "targets", "release", "source", "note", "created_by")

#: A header mutation: (what, key or index, new value, int).
header_op = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(HEADER_KEYS), json_values),
    st.tuples(st.just("del"), st.sampled_from(HEADER_KEYS)),
    st.tuples(st.just("version"), st.integers(-3, 1 << 40)),
    st.tuples(st.just("segment"), st.integers(0, 1 << 16),
              st.integers(0, 2), st.one_of(json_scalars, u64s)),
    st.tuples(st.just("segswap"), st.integers(0, 1 << 16)),
    st.tuples(st.just("fault"), st.integers(0, 2), json_values),
    st.tuples(st.just("answers_table"), st.sampled_from(
        ("member_offset", "member_size", "struct_size", "enum_value",
         "resolve_path")), json_values),
    st.tuples(st.just("target"), json_values),
)

#: A byte-level mutation of the file: (what, position, value).
byte_op = st.tuples(
    st.sampled_from(("truncate", "flip", "insert", "delete", "garbage",
                     "blob_truncate", "blob_flip", "blob_extend", "empty")),
    st.integers(0, 1 << 20), st.integers(0, 255))

#: Replace one debug-info answer by another number: a layout no kernel
#: has (kept apart: see test_fuzz.test_hostile_layout_answers).
answer_op = st.tuples(st.just("answer"), st.sampled_from(
    ("member_offset", "member_size", "struct_size", "enum_value",
     "symbol", "resolve_path")), st.integers(0, 1 << 16),
    st.one_of(json_scalars, u64s, st.integers(0, 4096)))

#: Damage to the file that the reader must catch (format, types, sizes).
snapshot_case = st.tuples(st.lists(header_op, max_size=4),
                          st.lists(byte_op, max_size=2))
#: The same plus wrong layout numbers (the engine must cope).
snapshot_case_layout = st.tuples(
    st.lists(st.one_of(header_op, answer_op), max_size=4),
    st.lists(byte_op, max_size=2))


def mutate_header(h: Dict[str, Any], blob: bytes, ops: Sequence[tuple]
                  ) -> Tuple[Any, bytes]:
    h = json.loads(json.dumps(h))
    for op in ops:
        kind = op[0]
        if not isinstance(h, dict):
            break
        if kind == "set":
            h[op[1]] = op[2]
        elif kind == "del":
            h.pop(op[1], None)
        elif kind == "version":
            h["version"] = op[1]
        elif kind == "segment":
            segs = h.get("segments")
            if isinstance(segs, list) and segs:
                s = segs[op[1] % len(segs)]
                if isinstance(s, list) and len(s) == 3:
                    s[op[2]] = op[3]
        elif kind == "segswap":
            segs = h.get("segments")
            if isinstance(segs, list) and len(segs) > 1:
                i = op[1] % (len(segs) - 1)
                segs[i], segs[i + 1] = segs[i + 1], segs[i]
        elif kind == "fault":
            f = h.setdefault("faults", [])
            if isinstance(f, list):
                f.append([0xffff888000000000, 8, "x"])
                f[-1][op[1]] = op[2]
        elif kind == "answer":
            ans = h.get("answers")
            if isinstance(ans, dict) and isinstance(ans.get(op[1]), dict):
                tab = ans[op[1]]
                if tab:
                    keys = sorted(tab)
                    tab[keys[op[2] % len(keys)]] = op[3]
        elif kind == "answers_table":
            ans = h.get("answers")
            if isinstance(ans, dict):
                ans[op[1]] = op[2]
        elif kind == "target":
            h["targets"] = op[1]
    return h, blob


def mutate_file(data: bytes, header_len: int, ops: Sequence[tuple]) -> bytes:
    """Byte-level damage.  ``blob_*`` ops act on the decompressed blob
    (then recompress), the others on the gzip bytes."""
    for kind, pos, val in ops:
        if kind == "empty":
            data = b""
        elif kind.startswith("blob_"):
            try:
                plain = bytearray(gzip.decompress(data))
            except Exception:
                continue
            p = header_len + 1 + pos % max(1, len(plain) - header_len)
            if kind == "blob_truncate":
                del plain[p:]
            elif kind == "blob_flip" and p < len(plain):
                plain[p] ^= val or 1
            elif kind == "blob_extend":
                plain += bytes(val) * 64
            data = gzip.compress(bytes(plain), compresslevel=1, mtime=0)
        elif not data:
            continue
        else:
            p = pos % len(data)
            b = bytearray(data)
            if kind == "truncate":
                del b[p:]
            elif kind == "flip":
                b[p] ^= val or 1
            elif kind == "insert":
                b[p:p] = bytes([val]) * (1 + pos % 7)
            elif kind == "delete":
                del b[p:p + 1 + val % 16]
            elif kind == "garbage":
                b[p:] = random.Random(pos * 256 + val).randbytes(
                    min(4096, len(b) - p + 16))
            data = bytes(b)
    return data


def run_load(path: str, limit: float = 10.0, analyse: bool = True,
             render: bool = False) -> Tuple[str, float, Optional[str]]:
    """Load a snapshot file and (``analyse``) analyse its targets.
    Outcomes as in :func:`run_analysis`; ``loaded`` when the file loads
    and each target analyses or fails with CrashextError."""
    from crashext.analyze import analyze
    from crashext.backends.snapshot import SnapshotMemory
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            mem = SnapshotMemory.load(path)
            if analyse:
                for spec in list(mem.targets)[:4]:
                    if not isinstance(spec, str):
                        raise TypeError("target list holds %r" % (spec,))
                    try:
                        a = analyze(mem, spec)
                        if render:
                            render_all(a)
                    except CrashextError:
                        pass
        outcome, err = "loaded", None
    except CrashextError as e:
        outcome, err = "error", str(e)
    except Hang:
        outcome, err = "hang", traceback.format_exc()
    except Exception:
        outcome, err = "crash", traceback.format_exc()
    return outcome, time.perf_counter() - t0, err


@dataclass
class Tally:
    """Counts for a fuzz run."""

    n: int = 0
    outcomes: Dict[str, int] = field(default_factory=dict)
    max_s: float = 0.0
    max_input: Any = None
    failures: List[Tuple[Any, str]] = field(default_factory=list)
    #: Inputs over the bound once that were within it when run again
    #: (a loaded machine), and the time of their first run.
    rerun_ok: int = 0
    rerun_max: float = 0.0
    times: List[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the per-input times."""
        if not self.times:
            return 0.0
        t = sorted(self.times)
        return t[min(len(t) - 1, int(q * len(t)))]

    def add(self, outcome: str, secs: float, err: Optional[str],
            inp: Any = None, bound: float = 2.0) -> None:
        self.n += 1
        self.times.append(secs)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if secs > self.max_s:
            self.max_s, self.max_input = secs, inp
        if outcome in ("crash", "hang") or secs > bound:
            if len(self.failures) < 50:
                self.failures.append((inp, err or "slow: %.2fs" % secs))

    @property
    def failed(self) -> int:
        return len(self.failures)
