"""``struct folio`` (and ``struct page``) as the engine needs it: flags,
mapping, index, refcount, order, tail bit - read in runs.

The order lives in different places across kernels (see
:mod:`crashext.layout`): ``folio_order()`` is 0 unless PG_head is set
(``folio_test_large()``), else ``_folio_order`` (5.17-6.5),
``_flags_1 & 0xff`` (6.6+) or ``page[1].compound_order`` (before folios).
A tail page has bit 0 of ``page->compound_head`` set (``PageTail()``).

Folio structs live in vmemmap, which is virtually contiguous, so the
pointers found in one tree are sorted and read in runs: one memory read
covers many ``struct page`` (see :func:`read_folios`).

>>> recs, bad = read_folios(mem, layout, [0xffffea0000247800])  # doctest: +SKIP
>>> recs[0xffffea0000247800].order                             # doctest: +SKIP
4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

from .layout import Layout
from .memory import Memory, UnreadableMemory

#: Largest single read when coalescing struct pages (bytes).
MAX_RUN = 256 * 1024
#: Largest hole between two wanted structs that is still read through.
MAX_GAP = 1024


@dataclass
class FolioRec:
    """The fields of one folio that the checks use."""

    addr: int
    flags: int
    mapping: int
    index: int
    refcount: int
    order: int
    compound_head: int

    @property
    def is_tail(self) -> bool:
        return bool(self.compound_head & 1)

    @property
    def nr_pages(self) -> int:
        return 1 << self.order


def decode_folio(lay: Layout, addr: int, buf: bytes, off: int = 0) -> FolioRec:
    """Decode the folio at ``buf[off:]`` (``lay.folio_read_size`` bytes)."""
    fb = int.from_bytes
    flags = fb(buf[off + lay.f_flags:off + lay.f_flags + 8], "little")
    order = 0
    if flags >> lay.pg_head & 1:        # folio_test_large()
        order = buf[off + lay.f_order]
    ch = 0
    if lay.f_compound_head is not None:
        ch = fb(buf[off + lay.f_compound_head:off + lay.f_compound_head + 8], "little")
    return FolioRec(
        addr=addr,
        flags=flags,
        mapping=fb(buf[off + lay.f_mapping:off + lay.f_mapping + 8], "little"),
        index=fb(buf[off + lay.f_index:off + lay.f_index + 8], "little"),
        refcount=fb(buf[off + lay.f_refcount:off + lay.f_refcount + 4], "little", signed=True),
        order=order,
        compound_head=ch,
    )


def read_folios(mem: Memory, lay: Layout, addrs: Iterable[int]
                ) -> Tuple[Dict[int, FolioRec], Dict[int, UnreadableMemory]]:
    """Read every folio in ``addrs`` with as few reads as possible.

    Returns ``(records, unreadable)``: a record per readable folio and the
    error per folio that could not be read.  A run that fails is retried
    folio by folio, so one excluded page costs only its own folios.
    """
    size = lay.folio_read_size
    recs: Dict[int, FolioRec] = {}
    bad: Dict[int, UnreadableMemory] = {}
    todo = sorted(set(addrs))
    i = 0
    n = len(todo)
    while i < n:
        start = todo[i]
        j = i + 1
        end = start + size
        while j < n:
            a = todo[j]
            if a - end > MAX_GAP or a + size - start > MAX_RUN:
                break
            end = max(end, a + size)
            j += 1
        try:
            buf = mem.read(start, end - start)
        except UnreadableMemory:
            buf = None
        if buf is not None:
            for a in todo[i:j]:
                recs[a] = decode_folio(lay, a, buf, a - start)
        else:
            for a in todo[i:j]:
                try:
                    recs[a] = decode_folio(lay, a, mem.read(a, size))
                except UnreadableMemory as e:
                    bad[a] = e
        i = j
    return recs, bad
