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

import struct
from bisect import bisect_right
from array import array
from itertools import compress, islice, repeat
from operator import eq, itemgetter, sub
from collections.abc import Mapping
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .layout import Layout
from .record import SlotsRecord
from .memory import Memory, UnreadableMemory

#: Largest single read when coalescing struct pages (bytes).
MAX_RUN = 256 * 1024
#: Largest hole between two wanted structs that is still read through.
MAX_GAP = 1024


class FolioRec(SlotsRecord):
    """The fields of one folio that the checks use.

    A plain class with ``__slots__`` (not a dataclass): a tree of order-0
    folios has one record per page.  Same constructor, fields, equality
    and repr as the dataclass it replaced.
    """

    __slots__ = ("addr", "flags", "mapping", "index", "refcount", "order",
                 "compound_head")

    def __init__(self, addr: int, flags: int, mapping: int, index: int,
                 refcount: int, order: int, compound_head: int) -> None:
        self.addr = addr
        self.flags = flags
        self.mapping = mapping
        self.index = index
        self.refcount = refcount
        self.order = order
        self.compound_head = compound_head

    @property
    def is_tail(self) -> bool:
        return bool(self.compound_head & 1)

    @property
    def nr_pages(self) -> int:
        return 1 << self.order


#: Folio flags that matter for data loss, in the order they are named
#: (``enum pageflags``: PG_locked, PG_uptodate, PG_dirty, PG_writeback).
STATE_FLAGS = ("dirty", "writeback", "locked", "uptodate")


def folio_state(lay: Layout, flags: int) -> Tuple[str, ...]:
    """The :data:`STATE_FLAGS` set in a folio's ``flags``, with the bit
    numbers of this kernel's ``enum pageflags`` (``folio_test_dirty()``
    and friends read the head page's flags).

    >>> folio_state(lay, 1 << lay.pg_dirty | 1 << lay.pg_uptodate)  # doctest: +SKIP
    ('dirty', 'uptodate')
    """
    out = []
    for name in STATE_FLAGS:
        bit = getattr(lay, "pg_" + name, None)
        if bit is not None and 0 <= bit < 64 and flags >> bit & 1:
            out.append(name)
    return tuple(out)


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


def _folio_unpacker(lay: Layout):
    """A function decoding every field of a folio with one
    ``struct.unpack_from(buf, off)`` call, returning ``(flags,
    compound_head, mapping, index, refcount, order byte)``; None when the
    fields overlap or the kernel has no ``compound_head`` (then
    :func:`decode_folio` is used)."""
    if lay.f_compound_head is None or not 0 <= lay.pg_head < 64:
        return None
    fields = [(lay.f_flags, "Q"), (lay.f_compound_head, "Q"),
              (lay.f_mapping, "Q"), (lay.f_index, "Q"),
              (lay.f_refcount, "i"), (lay.f_order, "B")]
    order = sorted(range(len(fields)), key=lambda i: fields[i][0])
    fmt = "<"
    pos = 0
    for i in order:
        off, code = fields[i]
        if off < pos:
            return None
        fmt += ("%dx" % (off - pos) if off > pos else "") + code
        pos = off + struct.calcsize("<" + code)
    if pos > lay.folio_read_size:
        return None
    unpack_from = struct.Struct(fmt).unpack_from
    if order == sorted(order):
        return unpack_from          # fields already in that order (6.1, 6.12)
    # perm[k] = position in the unpacked tuple of field k.
    perm = [0] * len(fields)
    for p, i in enumerate(order):
        perm[i] = p
    reorder = itemgetter(*perm)
    return lambda buf, off: reorder(unpack_from(buf, off))


def _runs(todo: List[int], size: int) -> Iterator[Tuple[int, int]]:
    """``(i, j)`` slices of the sorted, unique ``todo`` read as one run:
    a run ends before a hole of more than MAX_GAP bytes or where it would
    grow past MAX_RUN bytes (always at least one folio)."""
    n = len(todo)
    if not n:
        return
    # Holes: todo[j] - (todo[j-1] + size) > MAX_GAP, found at C speed.
    lim = MAX_GAP + size
    breaks = list(compress(range(1, n), map(lim.__lt__,
                                              map(sub, islice(todo, 1, None),
                                                  todo))))
    breaks.append(n)
    i = 0
    span = MAX_RUN - size
    for e in breaks:
        while i < e:
            j = bisect_right(todo, todo[i] + span, i + 1, e)
            yield i, j
            i = j


class FolioTable(Mapping):
    """Folio address -> :class:`FolioRec`, as :func:`read_folios` read them.

    A read-only dict (``get``, ``[a]``, ``in``, ``len``, iteration in
    address order, ``items()``...; pickles as a plain dict) that keeps
    the bytes it read and, per folio, its address and offset in them
    (a list and an array in address order).  It builds its address ->
    offset dict on the first lookup and decodes a :class:`FolioRec` the
    first time one is asked for (then keeps it).  A tree of order-0
    folios has one folio per page: a clean one is checked without any
    record (:meth:`plain_rows`), keeping ~70 bytes per folio instead of
    ~270; :meth:`rows` decodes the folios of one node at once.
    """

    __slots__ = ("_addrs", "_offs", "_recs", "_where", "_made", "_blob",
                 "_unpack", "_head_bit", "_lay")

    def __init__(self, lay: Layout) -> None:
        self._addrs: List[int] = []         # sorted
        self._offs = array("Q")             # blob offset of each
        self._recs: Dict[int, FolioRec] = {}    # decoded (no unpacker)
        self._where: Optional[Dict[int, Any]] = None
        self._made: Dict[int, FolioRec] = {}    # records handed out
        self._blob = bytearray()            # the runs read, back to back
        self._lay = lay
        self._unpack = _folio_unpacker(lay)
        # PG_head as a mask (only when the bulk paths are on: a hostile
        # layout with a huge or negative PG_head uses decode_folio()).
        self._head_bit = 1 << lay.pg_head if self._unpack else 0

    # building ---------------------------------------------------------
    def _reserve(self, size: int) -> None:
        """Size the byte store for every run at once (no regrowth)."""
        if self._unpack is not None:
            self._blob = bytearray(size)

    def _add_run(self, run: List[int], start: int, buf: bytes,
                 pos: int) -> None:
        """Folios ``run`` (sorted, above any added before) at ``buf``, read
        from ``start``; ``buf`` goes to ``pos`` in the byte store."""
        if self._unpack is None:
            for a in run:
                self._recs[a] = decode_folio(self._lay, a, buf, a - start)
            return
        self._addrs.extend(run)
        self._offs.extend(map((pos - start).__add__, run))
        self._blob[pos:pos + len(buf)] = buf

    def _map(self) -> Dict[int, Any]:
        """address -> blob offset (int) or FolioRec, in address order."""
        w = self._where
        if w is None:
            if self._recs:
                w = dict(self._recs)
            else:
                w = dict(zip(self._addrs, self._offs))
            self._where = w
        return w

    # reading ----------------------------------------------------------
    def _make(self, a: int, off: int) -> FolioRec:
        fl, ch, mp, ix, rc, ob = self._unpack(self._blob, off)
        return FolioRec(a, fl, mp, ix, rc, ob if fl & self._head_bit else 0,
                        ch)

    def get(self, a: int, default: Any = None) -> Any:
        r = self._made.get(a)
        if r is not None:
            return r
        v = self._map().get(a)
        if v is None:
            return default
        if v.__class__ is int:
            v = self._made[a] = self._make(a, v)    # decoded once, kept
        return v

    def __getitem__(self, a: int) -> FolioRec:
        r = self.get(a)
        if r is None:
            raise KeyError(a)
        return r

    def __contains__(self, a: object) -> bool:
        return a in self._map()

    def __iter__(self) -> Iterator[int]:
        return iter(self._recs) if self._recs else iter(self._addrs)

    def __len__(self) -> int:
        return len(self._recs) + len(self._addrs)

    def __repr__(self) -> str:
        return "FolioTable(%d folios)" % len(self)

    def __reduce__(self):
        # Pickles (e.g. to a worker process) as the plain dict it stands for.
        return (dict, (dict(self.items()),))

    # bulk -------------------------------------------------------------
    @property
    def head_bit(self) -> int:
        """``1 << PG_head``: a folio whose flags lack it has order 0."""
        return self._head_bit

    def rows(self, addrs: Sequence[int]) -> Optional[List[tuple]]:
        """``(flags, compound_head, mapping, index, refcount, order_byte)``
        of each folio in ``addrs`` (the order byte means something only
        when ``flags`` has PG_head), or None when any of them is not in
        the table (or the table holds decoded records)."""
        if self._recs:
            return None
        offs = list(map(self._map().get, addrs))
        if None in offs:
            return None
        return list(map(self._unpack, repeat(self._blob), offs))

    def plain_rows(self, chunk: int = 4096
                   ) -> Optional[Iterator[Tuple[List[int], List[tuple], int]]]:
        """Every folio in address order, ``chunk`` at a time, as
        ``(addresses, rows, mask)``; a row is ``(byte of flags holding
        PG_head, low byte of compound_head, mapping, index, refcount)``
        and ``byte & mask`` is PG_head - enough to tell a plain order-0
        folio (no PG_head, not a tail) at two new ints per folio.  None
        when the table holds decoded records or the layout is unusual."""
        st = None if self._recs else _plain_struct(self._lay)
        if st is None:
            return None
        return self._plain_rows(st, chunk)

    def _plain_rows(self, st: struct.Struct, chunk: int
                    ) -> Iterator[Tuple[List[int], List[tuple], int]]:
        unpack = st.unpack_from
        mask = 1 << (self._lay.pg_head & 7)
        blob, addrs, offs = self._blob, self._addrs, self._offs
        for i in range(0, len(addrs), chunk):
            rows = list(map(unpack, repeat(blob), offs[i:i + chunk]))
            yield addrs[i:i + chunk], rows, mask


def _plain_struct(lay: Layout) -> Optional[struct.Struct]:
    """``struct.Struct`` of (byte of flags holding PG_head, low byte of
    compound_head, mapping, index, refcount) of one folio; None unless
    the fields come in that order without overlap (true of 6.1 - 6.12)."""
    if lay.f_compound_head is None or not 0 <= lay.pg_head < 64:
        return None
    fields = [(lay.f_flags + (lay.pg_head >> 3), "B"),
              (lay.f_compound_head, "B"), (lay.f_mapping, "Q"),
              (lay.f_index, "Q"), (lay.f_refcount, "i")]
    fmt = "<"
    pos = 0
    for off, code in fields:
        if off < pos:
            return None
        fmt += ("%dx" % (off - pos) if off > pos else "") + code
        pos = off + struct.calcsize("<" + code)
    if pos > lay.folio_read_size:
        return None
    return struct.Struct(fmt)


def read_folios(mem: Memory, lay: Layout, addrs: Iterable[int]
                ) -> Tuple[FolioTable, Dict[int, UnreadableMemory]]:
    """Read every folio in ``addrs`` with as few reads as possible.

    Returns ``(records, unreadable)``: a :class:`FolioTable` (a mapping
    address -> :class:`FolioRec`) of every readable folio and the error
    per folio that could not be read.  A run that fails is retried folio
    by folio, so one excluded page costs only its own folios.
    """
    size = lay.folio_read_size
    recs = FolioTable(lay)
    bad: Dict[int, UnreadableMemory] = {}
    todo = sorted(addrs)
    if any(map(eq, islice(todo, 1, None), todo)):
        todo = sorted(set(todo))    # duplicates (rare): drop them
    runs = list(_runs(todo, size))
    recs._reserve(sum(todo[j - 1] + size - todo[i] for i, j in runs))
    pos = 0
    for i, j in runs:
        start = todo[i]
        run = todo[i:j]
        length = run[-1] + size - start
        try:
            buf = mem.read(start, length)
        except UnreadableMemory:
            buf = None
        if buf is not None:
            recs._add_run(run, start, buf, pos)
        else:
            for a in run:
                try:
                    recs._add_run([a], a, mem.read(a, size),
                                  pos + a - start)
                except UnreadableMemory as e:
                    bad[a] = e
        pos += length
    return recs, bad
