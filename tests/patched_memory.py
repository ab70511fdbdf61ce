"""A :class:`~crashext.memory.Memory` that overlays chosen bytes on a real
dump, to turn clean lab trees into corrupted ones for tests.

The wrapper delegates every call (reads, debug info, ``resolve_path``,
``release``) to a base Memory (normally a
:class:`crashext.backends.drgn.DrgnMemory` on a lab vmcore) and replaces
the bytes at patched addresses in whatever :meth:`read` returns.

The seed case of the project (Wilcox, linux-mm, 2024-09-13: one folio at
slots 16, 32 and 48 of a leaf node) is built by :func:`seed_case`::

    case = seed_case(base_mem)                      # or lab_seed("6.1")
    a = analyze(case.mem, case.path)
    a.verdict == "corrupt"

Helpers that need the lab return None (never raise) when the lab run is
absent, so tests can ``pytest.skip`` on it.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crashext.memory import Memory, MemoryView, UnreadableMemory  # noqa: E402
from tests.lab import labdumps  # noqa: E402

LAB = str(labdumps.lab_dir())
SEED_PATH = "/mnt/xfs/big64"


class PatchedMemory(MemoryView):
    """``base`` with some bytes replaced.

    >>> pm = PatchedMemory(base)                       # doctest: +SKIP
    >>> pm.patch_u64(node.addr + lay.node_slots + 8 * 32, folio)  # doctest: +SKIP
    """

    def __init__(self, base: Memory,
                 patches: Optional[Dict[int, bytes]] = None) -> None:
        self.base = base
        self.patches: Dict[int, bytes] = {}
        for a, b in (patches or {}).items():
            self.patch(a, b)

    # Patching ---------------------------------------------------------
    def patch(self, addr: int, data: bytes) -> "PatchedMemory":
        """Make ``read`` return ``data`` at ``addr``.  Later patches win
        where they overlap earlier ones."""
        self.patches[addr] = bytes(data)
        # Keep insertion order = application order (later wins).
        return self

    def patch_u64(self, addr: int, value: int) -> "PatchedMemory":
        return self.patch(addr, (value & (1 << 64) - 1).to_bytes(8, "little"))

    def patch_u8(self, addr: int, value: int) -> "PatchedMemory":
        return self.patch(addr, bytes([value & 0xFF]))

    def patch_slot(self, node_addr: int, slot: int, value: int,
                   layout=None) -> "PatchedMemory":
        """Set ``((struct xa_node *)node_addr)->slots[slot] = value``."""
        lay = layout or self.layout()
        return self.patch_u64(node_addr + lay.node_slots + 8 * slot, value)

    def layout(self):
        from crashext.analyze import layout_for
        return layout_for(self.base)

    # Memory interface ---------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        buf = bytearray(self.base.read(addr, size))
        end = addr + size
        for pa, data in self.patches.items():
            pe = pa + len(data)
            if pe <= addr or pa >= end:
                continue
            lo, hi = max(pa, addr), min(pe, end)
            buf[lo - addr:hi - addr] = data[lo - pa:hi - pa]
        return bytes(buf)

    def describe(self) -> str:
        return "%s + %d patches" % (self.base.describe(), len(self.patches))

    def __getattr__(self, name):
        # resolve_path and any other backend extra.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


class ExcludingMemory(MemoryView):
    """``base`` with some 4 KiB pages excluded, as makedumpfile does: a
    read touching the page of an address in ``pages`` raises
    ``UnreadableMemory(addr, size, reason)``.

    >>> xm = ExcludingMemory(mem, [node.addr])             # doctest: +SKIP
    """

    PAGE = 4096

    def __init__(self, base: Memory, pages: Iterable[int],
                 reason: str = "excluded page") -> None:
        self.base = base
        self.pages = {p & ~(self.PAGE - 1) for p in pages}
        self.reason = reason

    def read(self, addr: int, size: int) -> bytes:
        p = addr & ~(self.PAGE - 1)
        while p < addr + size:
            if p in self.pages:
                raise UnreadableMemory(addr, size, self.reason)
            p += self.PAGE
        return self.base.read(addr, size)


# Lab helpers ------------------------------------------------------------
_opened: Dict[str, Tuple[Memory, dict]] = {}


def lab_manifest(family: str = "6.1") -> Optional[dict]:
    """The manifest of ``family``'s lab run (tests/lab/labdumps.py: the
    family link, its big-file or KASLR run), or None."""
    return labdumps.load_manifest(family)


def lab_memory(family: str = "6.1") -> Optional[Tuple[Memory, dict]]:
    """``(DrgnMemory, manifest)`` for the lab's ELF dump of ``family``
    (opened once per process), or None when absent or drgn is missing."""
    if family in _opened:
        return _opened[family]
    run = labdumps.elf_run(family)
    if run is None:
        return None
    m, core, vmlinux = run
    try:
        from crashext.backends.drgn import DrgnMemory
    except ImportError:
        return None
    mem = DrgnMemory.open(core, vmlinux)
    _opened[family] = (mem, m)
    return _opened[family]


def find_seed_node(analysis, order: int = 4):
    """A leaf node of ``analysis`` whose slots 0, 16, 32 and 48 hold
    distinct order-``order`` folios (each with its sibling run): the
    shape the seed corruption grew from.  None when there is none."""
    from crashext.xarray import entry as E
    stride = 1 << order
    by_node: Dict[int, Dict[int, object]] = {}
    for e in analysis.walk.entries:
        if e.kind == E.POINTER and e.node and e.shift == 0:
            by_node.setdefault(e.node, {})[e.slot] = e
    for n in analysis.walk.nodes:
        if n.eshift != 0:
            continue
        ents = by_node.get(n.addr, {})
        want = list(range(0, 64, stride))
        ok = True
        for s in want:
            e = ents.get(s)
            f = analysis.folios.get(e.raw) if e else None
            if e is None or e.nr_slots != stride or f is None \
                    or f.order != order:
                ok = False
                break
        if ok and len({ents[s].raw for s in want}) == len(want):
            return n
    return None


class SeedCase(NamedTuple):
    """A patched seed case: analyse ``path`` on ``mem``."""

    mem: "PatchedMemory"
    path: str
    node: object          # the clean NodeRec that was patched
    folio: int            # the folio now at slots 16, 32 and 48
    rewritten: bool       # True: sibling runs of slots 16-63 rewritten

    @property
    def indices(self) -> Tuple[int, ...]:
        return tuple(self.node.index + s for s in (16, 32, 48))


#: Lab files tried, in order, for a node of the seed shape.
SEED_PATHS = ("/mnt/xfs/big200", "/mnt/xfs/dirty32", "/mnt/xfs/split64",
              SEED_PATH)


def _rewrite_node(analysis):
    """A leaf node with an order-4 folio at slot 32 (16 slots): its slots
    16-63 can be rewritten into three copies of that folio."""
    from crashext.xarray import entry as E
    for e in analysis.walk.entries:
        if e.kind == E.POINTER and e.shift == 0 and e.node and \
                e.slot == 32 and e.nr_slots == 16:
            f = analysis.folios.get(e.raw)
            if f is not None and f.order == 4:
                return analysis.walk.node_at(e.node), e.raw
    return None, None


def seed_case(base: Memory, path: Optional[str] = None) -> Optional[SeedCase]:
    """Patch ``base`` into the seed case (one order-4 folio at slots 16,
    32 and 48 of a leaf node, as in the seed e-mail).

    Preferred shape: a leaf node whose slots 0, 16, 32, 48 hold order-4
    folios; the folio pointer of slot 16 is written into slots 32 and 48
    (their sibling runs stay).  ``path`` None tries :data:`SEED_PATHS`.
    When a file has no such node (``/mnt/xfs/big64`` in the lab mixes
    orders 2-4 in each node) a node with an order-4 folio at slot 32 is
    rewritten: slots 16, 32, 48 = that folio, the rest sibling runs.
    Returns None when nothing fits."""
    from crashext.analyze import analyze
    paths = [path] if path else list(SEED_PATHS)
    for p in paths:
        clean = analyze(base, p)
        lay = clean.layout
        node = find_seed_node(clean)
        pm = PatchedMemory(base)
        if node is not None:
            folio = node.slots[16]
            pm.patch_slot(node.addr, 32, folio, lay)
            pm.patch_slot(node.addr, 48, folio, lay)
            return SeedCase(pm, p, node, folio, False)
        node, folio = _rewrite_node(clean)
        if node is not None and path is not None:
            from crashext.xarray.entry import xa_mk_sibling
            for s in range(16, 64):
                pm.patch_slot(node.addr, s,
                              folio if s % 16 == 0 else xa_mk_sibling(s & ~15),
                              lay)
            return SeedCase(pm, p, node, folio, True)
    return None


def lab_seed(family: str = "6.1", path: Optional[str] = None
             ) -> Optional[SeedCase]:
    """:func:`seed_case` on the lab dump of ``family``; None when absent."""
    opened = lab_memory(family)
    if opened is None:
        return None
    return seed_case(opened[0], path)


def broken_sb_list(manifest: dict, mem: Memory) -> Tuple[PatchedMemory, int]:
    """``(pm, off)``: ``mem`` with the ``i_sb_list.next`` of the inode of
    the manifest's first xfs file overwritten with LIST_POISON1
    (0xdead000000000100, a deleted list entry), and ``off`` the offset of
    ``i_sb_list`` in ``struct inode`` (the bad entry reads at the poison
    minus ``off``)."""
    f = [f for f in manifest["files"] if f.get("fs_type") == "xfs"][0]
    ino = int(f["inode"], 16)
    off = mem.member_offset("struct inode", "i_sb_list")
    pm = PatchedMemory(mem).patch_u64(ino + off, 0xdead000000000100)
    return pm, off


def lab_files(family: str) -> Iterable[str]:
    m = lab_manifest(family)
    return [f["path"] for f in m.get("files", [])] if m else []


__all__ = ["PatchedMemory", "ExcludingMemory", "UnreadableMemory",
           "lab_memory", "lab_manifest", "broken_sb_list",
           "lab_seed", "seed_case", "SeedCase", "SEED_PATHS", "find_seed_node", "lab_files"]
