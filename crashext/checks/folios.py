"""Each folio against the slot that holds it, and the pages against
``nrpages``.

Invariants of a page-cache folio (mm/filemap.c ``__filemap_add_folio()``):
``folio->mapping`` is the mapping, ``folio->index`` the canonical index,
the index is a multiple of ``folio_nr_pages()``, the entry's order is
``folio_order()`` (``xas_set_order()``), the cache holds one reference
per page (``folio_ref_add(folio, nr)``), the entry is a head page, never
a tail, and ``mapping->nrpages`` is the sum of ``folio_nr_pages()``.

A folio lying wholly beyond ``i_size`` should not be cached: a truncate
writes the new size, then drops every folio past it
(``truncate_setsize()`` -> ``truncate_pagecache()``, mm/truncate.c), and
reads and faults stop at EOF.  Exceptions: shmem/tmpfs keeps folios
allocated past EOF by ``fallocate(FALLOC_FL_KEEP_SIZE)``, and a locked
folio may be a write in flight (``write_begin`` adds it before
``write_end`` moves ``i_size``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator, List, Optional, Tuple

from ..findings import Finding
from ..memory import KERNEL_MIN
from ..xarray import entry as E
from ..xarray.walk import EntryList, entry_blocks
from . import CheckContext, ino_of_mapping

_ODD = (1).__and__


def check(ctx: CheckContext) -> Iterator[Finding]:
    # Swap cache folios keep anon_vma in ->mapping and the VMA offset in
    # ->index: only the page cache has the mapping/index invariants.
    pc = ctx.page_cache and not ctx.target.swap_cache
    mapping = ctx.target.mapping
    hugetlb_index = ctx.target.fs_type == "hugetlbfs"
    get = ctx.folios.get
    rows_of = getattr(ctx.folios, "rows", None)
    head_bit = getattr(ctx.folios, "head_bit", 0)
    POINTER, VALUE = E.POINTER, E.VALUE
    kmin = KERNEL_MIN
    pages = 0
    missing = 0
    plain = plain_order0(ctx)
    if plain is not None:
        # Every entry is a clean order-0 folio: what the loop below would
        # conclude, found in bulk.
        pages = plain
    for node, block in (() if plain is not None
                        else entry_blocks(ctx.walk.entries)):
        if node is not None:
            if block == VALUE:
                continue
            if block == POINTER and rows_of is not None \
                    and not hugetlb_index and node.eshift == 0:
                # A leaf of pointers: if every folio is a readable
                # order-0 head with the right mapping/index and a
                # reference, the node is clean (same verdict as below).
                slots = node.slots
                n = len(slots)
                rows = rows_of(slots) if min(slots) >= kmin else None
                if rows is not None:
                    fl, ch, mp, ix, rc, _ob = zip(*rows)
                    if not any(map(head_bit.__and__, fl)) \
                            and not any(map(_ODD, ch)) and min(rc) >= 1 \
                            and (not pc or (
                                mp.count(mapping) == n and ix == tuple(
                                    range(node.index, node.index + n)))):
                        pages += n
                        continue
            block = EntryList.node_entries(node, block)
        for e in block:
            kind = e.kind
            if kind == VALUE:
                continue
            if kind == POINTER:
                # Fast path: a readable head folio that satisfies every
                # invariant below is counted without building any finding.
                raw = e.raw
                f = get(raw)
                if f is not None and raw >= kmin and not raw & 7 \
                        and not f.compound_head & 1 and not hugetlb_index:
                    node = e.node
                    n = e.nr_slots
                    order = f.order
                    idx = e.index
                    if node and not n & (n - 1) \
                            and e.shift + n.bit_length() - 1 == order \
                            and not idx & ((1 << order) - 1) \
                            and f.refcount >= 1 << order \
                            and (not pc or (f.mapping == mapping
                                            and f.index == idx)):
                        pages += 1 << order
                        continue
            d_pages, d_missing = yield from _entry(ctx, e, pc, mapping,
                                                   hugetlb_index)
            pages += d_pages
            missing += d_missing
    yield from _beyond_eof(ctx, pc and not hugetlb_index)
    nr = ctx.target.nrpages
    lost = sum(1 for f in ctx.walk.problems
               if f.code in ("NODE_UNREADABLE", "WALK_TRUNCATED"))
    if pc and nr is not None:
        if missing or lost:
            # An unread subtree or folio could hold the difference.
            ctx.notes.append(
                "nrpages %d not compared: %d folio(s) and %d subtree(s) "
                "could not be read" % (nr, missing, lost))
        elif pages != nr:
            yield Finding("NRPAGES", expected=nr, found=pages,
                          address=mapping)


def _entry(ctx: CheckContext, e, pc: bool, mapping, hugetlb_index: bool):
    """Every check of one entry (the general path); yields its findings
    and returns ``(pages, missing)`` it adds to the totals."""
    if e.kind == E.NODE:
        yield Finding("NODE_IN_LEAF", node=e.node, slots=(e.slot,),
                      indices=(e.index,), found=e.raw, shift=e.shift)
        return 0, 0
    if e.kind == E.RETRY:
        yield Finding("RETRY_ENTRY", node=e.node or None,
                      slots=(e.slot,), indices=(e.index,), found=e.raw)
        return 0, 0
    if e.kind == E.ZERO:
        yield Finding("ZERO_ENTRY", node=e.node or None,
                      slots=(e.slot,), indices=(e.index,), found=e.raw)
        return 0, 0
    if e.kind == E.BAD_INTERNAL:
        yield Finding("BAD_INTERNAL", node=e.node or None,
                      slots=(e.slot,), indices=(e.index,), found=e.raw)
        return 0, 0
    if e.kind != E.POINTER:
        return 0, 0
    where = dict(node=e.node or None, slots=(e.slot,) if e.slot >= 0 else (),
                 indices=(e.index,), folio=e.raw, shift=e.shift)
    if not E.is_kernel_pointer(e.raw):
        yield Finding("BAD_POINTER", found=e.raw, **where)
        return 0, 1
    f = ctx.folios.get(e.raw)
    if f is None:
        err = ctx.unreadable_folios.get(e.raw)
        yield Finding("FOLIO_UNREADABLE", address=e.raw,
                      extra={"reason": err.reason if err else ""},
                      **where)
        return 0, 1
    if f.is_tail:
        yield Finding("FOLIO_TAIL", expected="head page",
                      found=ctx.layout.head_of(e.raw, f.compound_head),
                      **where)
        return 0, 1
    if hugetlb_index and e.nr_slots == 1 and e.shift == 0:
        # Before 6.7 a hugetlb folio sits in one slot at its huge-page
        # index and counts 1 in nrpages (__filemap_add_folio() skipped
        # xas_set_order() for hugetlb; commit a08c7193e4f1 changed it).
        if f.index != e.index and pc:
            yield Finding("FOLIO_INDEX", order=f.order, expected=e.index,
                          found=f.index, **where)
        return 1, 0
    to = e.tree_order
    if to is not None and to != f.order:
        yield Finding("FOLIO_ORDER", order=f.order, expected=to,
                      found=f.order,
                      extra={"nr_slots": e.nr_slots}, **where)
    elif e.node and f.order < e.shift:
        yield Finding("FOLIO_ORDER", order=f.order,
                      expected=">= %d" % e.shift, found=f.order, **where)
    if e.index & (f.nr_pages - 1):
        yield Finding("FOLIO_ALIGN", order=f.order, expected=0,
                      found=e.index & (f.nr_pages - 1), **where)
    if f.refcount < f.nr_pages:
        yield Finding("FOLIO_REFCOUNT", order=f.order,
                      expected=">= %d" % f.nr_pages, found=f.refcount,
                      **where)
    if pc:
        if f.mapping != mapping:
            extra = {}
            if f.mapping and not f.mapping & 3:
                other = ino_of_mapping(ctx, f.mapping)
                if other is not None:
                    extra["other_ino"] = other
            yield Finding("FOLIO_MAPPING", order=f.order, expected=mapping,
                          found=f.mapping, extra=extra, **where)
        if f.index != e.index:
            yield Finding("FOLIO_INDEX", order=f.order, expected=e.index,
                          found=f.index, **where)
    return f.nr_pages, 0


#: Filesystems whose files may keep folios past EOF (shmem_fallocate()
#: with FALLOC_FL_KEEP_SIZE).
SHMEM_FS = ("tmpfs", "devtmpfs")


def eof_index(ctx: CheckContext) -> Optional[int]:
    """First index wholly past ``i_size`` (``DIV_ROUND_UP(i_size,
    PAGE_SIZE)``), or None when the check does not apply."""
    t = ctx.target
    if t.i_size is None or t.fs_type in SHMEM_FS or t.i_size < 0 \
            or t.i_size >= 1 << 62:
        return None
    sh = ctx.layout.page_shift
    return (t.i_size + (1 << sh) - 1) >> sh


def _beyond_eof(ctx: CheckContext, pc: bool) -> Iterator[Finding]:
    """FOLIO_BEYOND_EOF for every unlocked head folio whose slot starts
    at or past :func:`eof_index` (see the module docstring)."""
    eof = eof_index(ctx) if pc else None
    if eof is None:
        return
    lay = ctx.layout
    locked = 1 << lay.pg_locked if lay.pg_locked is not None else 0
    get = ctx.folios.get
    for node, block in entry_blocks(ctx.walk.entries):
        if node is not None:
            if node.index + (len(node.slots) << node.eshift) <= eof \
                    or block != E.POINTER:
                continue
            block = EntryList.node_entries(node, block)
        for e in block:
            if e.kind != E.POINTER or e.index < eof:
                continue
            f = get(e.raw)
            if f is None or f.is_tail or f.flags & locked:
                continue
            yield Finding("FOLIO_BEYOND_EOF", node=e.node or None,
                          slots=(e.slot,) if e.slot >= 0 else (),
                          indices=(e.index,), folio=e.raw, order=f.order,
                          shift=e.shift, expected="< %d" % eof,
                          found=e.index,
                          extra={"i_size": ctx.target.i_size})


def plain_order0(ctx: CheckContext) -> Optional[int]:
    """:func:`_plain_order0` once per context (``ctx.hints``), for page
    cache trees (not hugetlbfs, every folio read); None otherwise."""
    h = ctx.hints
    if "plain_order0" not in h:
        t = ctx.target
        pc = ctx.page_cache and not t.swap_cache
        h["plain_order0"] = (
            _plain_order0(ctx, t.mapping)
            if pc and t.fs_type != "hugetlbfs" and not ctx.unreadable_folios
            else None)
    return h["plain_order0"]


def _plain_order0(ctx: CheckContext, mapping: int) -> Optional[int]:
    """If every pointer entry of the page cache tree is a leaf slot
    (``nr_slots`` 1, shift 0) holding a readable order-0 head folio with
    this mapping, its own index and a reference - i.e. the loop in
    :func:`check` would find nothing - return the number of such entries
    (its page count); else None.  Bulk work: the folios are decoded in
    address order and matched to the entries through ``folio->index``.

    Why that suffices: if each of the N folios read satisfies
    ``entry_at[folio->index] == folio`` and there are N pointer entries,
    folios and entries are in bijection, so every entry's folio has the
    entry's index (and no pointer appears twice).
    """
    plain_rows = getattr(ctx.folios, "plain_rows", None)
    if plain_rows is None:
        return None
    POINTER, VALUE = E.POINTER, E.VALUE
    kmin = KERNEL_MIN
    spans: List[Tuple[int, Any]] = []       # (first index, raws)
    count = 0
    for node, block in entry_blocks(ctx.walk.entries):
        if node is not None:
            if block == VALUE:
                continue
            slots = node.slots              # all multiples of 8
            if block != POINTER or node.eshift != 0 or min(slots) < kmin:
                return None
            spans.append((node.index, slots))
            count += len(slots)
            continue
        for e in block:
            k = e.kind
            if k == VALUE:
                continue
            r = e.raw
            if k != POINTER or e.nr_slots != 1 or e.shift != 0 \
                    or not e.node or r < kmin or r & 7:
                return None
            spans.append((e.index, (r,)))
            count += 1
    if not count or len(ctx.folios) != count:
        return None
    lo = spans[0][0]
    last = spans[-1]
    hi = last[0] + len(last[1]) - 1
    if hi - lo >= 2 * count + 64:
        return None                 # sparse: not worth a flat table
    if lo <= hi - lo:
        lo = 0                      # index flat directly (no subtraction)
    # flat[i - lo] = the pointer entry at index i (None: no pointer there)
    flat: List[Any] = [None] * (hi - lo + 1)
    for first, raws in spans:
        flat[first - lo:first - lo + len(raws)] = raws
    del spans
    rows_iter = plain_rows()
    if rows_iter is None:
        return None
    at = flat.__getitem__
    for addrs, rows, mask in rows_iter:
        hb, ch, mp, ix, rc = zip(*rows)
        n = len(rows)
        # No PG_head (order 0), no tail bit: those bytes all "ok".
        if bytes(hb).translate(None, _ok_bytes(mask)) \
                or bytes(ch).translate(None, _EVEN) \
                or min(rc) < 1 or mp.count(mapping) != n \
                or min(ix) < lo or max(ix) > hi \
                or list(map(at, map(lo.__rsub__, ix) if lo else ix)) != addrs:
            return None
    return count


_EVEN = bytes(range(0, 256, 2))


@lru_cache(maxsize=None)
def _ok_bytes(mask: int) -> bytes:
    """The byte values without ``mask``'s bit."""
    return bytes(b for b in range(256) if not b & mask)
