"""The memory map: every folio whose ``mapping`` names a given
``address_space``, found by reading the ``struct page`` array.

A page-cache folio keeps ``folio->mapping`` and ``folio->index`` from
``__filemap_add_folio()`` (mm/filemap.c) until ``page_cache_delete()``
clears the mapping; tail pages are never page-cache entries
(``PageTail()``: bit 0 of ``compound_head``).  So the head pages whose
``mapping`` field holds the mapping's address are the folios the mapping
owns, whether its tree still reaches them or not - the ground truth for
"where did the lost pages go".

On x86-64 (SPARSEMEM_VMEMMAP) the array starts at ``vmemmap_base`` (or
``mem_map`` with FLATMEM) and holds ``max_pfn`` entries of
``sizeof(struct page)`` bytes; it is read in :data:`CHUNK` runs and
searched with ``bytes.find`` (C speed) for the mapping's address at
``offsetof(struct page, mapping)``.  Holes (sections without a memory
map, pages a dump left out) are retried in smaller pieces and counted.

>>> r = find_folios(mem, lay, [mapping])                # doctest: +SKIP
>>> [(f.index, f.order) for f in r.folios[mapping]][:2]  # doctest: +SKIP
[(0, 2), (4, 2)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Tuple)

from .folio import FolioRec, read_folios
from .layout import Layout
from .memory import CrashextError, Memory, UnreadableMemory

#: Bytes of struct pages read at once.
CHUNK = 4 << 20
#: Smallest piece retried when a chunk cannot be read.
MIN_PIECE = 4096
#: Bound on head pages kept per mapping (a hostile dump could name one
#: mapping in millions of struct pages).
MAX_PER_MAPPING = 1 << 22

#: Up to this many mappings are searched with one bytes.find each.
FIND_KEYS = 32

ProgressFn = Callable[[Dict[str, Any]], None]


@dataclass
class MemmapResult:
    """What :func:`find_folios` found."""

    #: mapping -> its folios (head pages), in address order.
    folios: Dict[int, List[FolioRec]] = field(default_factory=dict)
    start: int = 0               # first struct page read
    end: int = 0                 # end of the array (start + max_pfn pages)
    bytes_read: int = 0
    unreadable: int = 0          # bytes of struct pages that could not be read
    reads: int = 0
    #: folio heads found whose struct could not be decoded (per mapping).
    bad: Dict[int, int] = field(default_factory=dict)
    truncated: bool = False      # MAX_PER_MAPPING reached for a mapping
    notes: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every struct page was read: a folio not found is not there."""
        return not self.unreadable and not self.truncated

    def describe(self) -> str:
        """``memory map: 21 MiB of struct pages read`` (+ what was not)."""
        s = "memory map: %s of struct pages read" % _mib(self.bytes_read)
        if self.unreadable:
            s += ", %s unreadable" % _mib(self.unreadable)
        return s


def _mib(n: int) -> str:
    if n >= 1 << 20:
        return "%d MiB" % (n >> 20)
    return "%d KiB" % (n >> 10)


def memmap_bounds(mem: Memory, lay: Layout) -> Tuple[int, int]:
    """``(start, end)`` virtual addresses of the ``struct page`` array
    (pfn 0 to ``max_pfn``).  Raises :class:`CrashextError` when the dump
    does not say where it is."""
    start = mem.symbol_value("vmemmap_base")    # x86-64, RANDOMIZE_MEMORY
    if start is None:
        start = mem.symbol_value("mem_map")     # FLATMEM
    if not start:
        raise CrashextError("memory map walk: cannot find the struct page "
                            "array (no vmemmap_base / mem_map)")
    max_pfn = mem.symbol_value("max_pfn")
    if not max_pfn:
        raise CrashextError("memory map walk: max_pfn unknown")
    if max_pfn > 1 << 40:
        raise CrashextError("memory map walk: max_pfn %d implausible"
                            % max_pfn)
    return start, start + max_pfn * lay.page_size


@dataclass
class RunTally:
    """What :func:`struct_page_runs` read and could not read (bytes)."""

    bytes_read: int = 0
    unreadable: int = 0
    reads: int = 0


def struct_page_runs(mem: Memory, start: int, end: int, step: int,
                     unit: int, tally: Any) -> Iterator[Tuple[int, bytes]]:
    """``(address, bytes)`` of the struct page array ``[start, end)`` in
    ``step`` runs, one memory read a run; a run that cannot be read (a
    hole, pages makedumpfile excluded) is retried in sixteenths down to
    :data:`MIN_PIECE`, and what still fails is added to
    ``tally.unreadable`` (``tally``: a :class:`RunTally` or a result with
    the same counters).  ``step`` and the pieces are whole struct pages
    (``unit`` bytes).  The memory map walk here and the slab walk
    (crashext.triage.slab) both read vmemmap through this.

    >>> t = RunTally()
    >>> for addr, buf in struct_page_runs(mem, a, a + 64 * 4096, 4096 * 64,
    ...                                   64, t): ...
    """
    todo = [(a, min(a + step, end)) for a in range(start, end, step)]
    todo.reverse()
    while todo:
        a, b = todo.pop()
        try:
            buf = mem.read(a, b - a)
        except UnreadableMemory:
            if b - a > MIN_PIECE:
                piece = max(MIN_PIECE, (b - a) // 16)
                piece = max(unit, piece - piece % unit)
                todo.extend(reversed([(x, min(x + piece, b))
                                      for x in range(a, b, piece)]))
            else:
                tally.unreadable += b - a
            continue
        tally.reads += 1
        tally.bytes_read += b - a
        yield a, buf


def find_folios(mem: Memory, lay: Layout, mappings: Iterable[int],
                progress: Optional[ProgressFn] = None) -> MemmapResult:
    """Every folio (head page or order-0 page) whose ``mapping`` is one of
    ``mappings``, read back as :class:`FolioRec` (order, index, flags,
    refcount) through :func:`crashext.folio.read_folios`.

    Never raises for what is in memory (unreadable runs are counted in
    the result); raises :class:`CrashextError` when the array cannot be
    located."""
    want = sorted({m for m in mappings if m})
    res = MemmapResult()
    if not want:
        return res
    start, end = memmap_bounds(mem, lay)
    res.start, res.end = start, end
    ps = lay.page_size
    f_map = lay.f_mapping
    ch = lay.f_compound_head
    step = max(ps, CHUNK - CHUNK % ps)
    keys = [(m.to_bytes(8, "little"), m) for m in want]
    # Many mappings: one regex pass, overlapping matches (a lookahead);
    # a few: one bytes.find pass each (faster up to a few dozen).
    pat = (re.compile(b"(?=(" + b"|".join(re.escape(k) for k, _m in keys)
                      + b"))") if len(keys) > FIND_KEYS else None)
    heads: Dict[int, List[int]] = {m: [] for m in want}
    done = 0
    for a, buf in struct_page_runs(mem, start, end, step, ps, res):
        if pat is None:
            hits = []
            for key, m in keys:
                pos = buf.find(key)
                while pos >= 0:
                    hits.append((pos, m))
                    pos = buf.find(key, pos + 1)
        else:
            hits = [(mt.start(), int.from_bytes(mt.group(1), "little"))
                    for mt in pat.finditer(buf)]
        for pos, m in hits:
            o = pos - f_map
            # The mapping field of a struct page, not a stray copy.
            if o < 0 or (a + o - start) % ps:
                continue
            if ch is not None and buf[o + ch] & 1:
                continue                # PageTail(): not an entry
            lst = heads[m]
            if len(lst) >= MAX_PER_MAPPING:
                res.truncated = True
                continue
            lst.append(a + o)
        done += len(buf)
        if progress is not None and done % (64 << 20) < len(buf):
            progress({"stage": "memmap", "bytes": done, "total": end - start})
    for m in want:
        recs, bad = read_folios(mem, lay, heads[m])
        # A head page read back with another mapping (a torn read) is
        # not counted: the first read is what was found.
        res.folios[m] = [r for r in (recs.get(x) for x in heads[m])
                         if r is not None and r.mapping == m]
        if bad:
            res.bad[m] = len(bad)
    if res.unreadable:
        res.notes.append("%s of struct pages unreadable: folios there "
                         "not seen" % _mib(res.unreadable))
    if res.truncated:
        res.notes.append("more than %d struct pages name one mapping: "
                         "the rest not kept" % MAX_PER_MAPPING)
    return res
