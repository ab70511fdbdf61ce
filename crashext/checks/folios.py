"""Each folio against the slot that holds it, and the pages against
``nrpages``.

Invariants of a page-cache folio (mm/filemap.c ``__filemap_add_folio()``):
``folio->mapping`` is the mapping, ``folio->index`` the canonical index,
the index is a multiple of ``folio_nr_pages()``, the entry's order is
``folio_order()`` (``xas_set_order()``), the cache holds one reference
per page (``folio_ref_add(folio, nr)``), the entry is a head page, never
a tail, and ``mapping->nrpages`` is the sum of ``folio_nr_pages()``.
"""

from __future__ import annotations

from typing import Iterator

from ..findings import Finding
from ..xarray import entry as E
from . import CheckContext, ino_of_mapping


def check(ctx: CheckContext) -> Iterator[Finding]:
    # Swap cache folios keep anon_vma in ->mapping and the VMA offset in
    # ->index: only the page cache has the mapping/index invariants.
    pc = ctx.page_cache and not ctx.target.swap_cache
    mapping = ctx.target.mapping
    hugetlb_index = ctx.target.fs_type == "hugetlbfs"
    pages = 0
    missing = 0
    for e in ctx.walk.entries:
        if e.kind == E.NODE:
            yield Finding("NODE_IN_LEAF", node=e.node, slots=(e.slot,),
                          indices=(e.index,), found=e.raw, shift=e.shift)
            continue
        if e.kind == E.RETRY:
            yield Finding("RETRY_ENTRY", node=e.node or None,
                          slots=(e.slot,), indices=(e.index,), found=e.raw)
            continue
        if e.kind == E.ZERO:
            yield Finding("ZERO_ENTRY", node=e.node or None,
                          slots=(e.slot,), indices=(e.index,), found=e.raw)
            continue
        if e.kind == E.BAD_INTERNAL:
            yield Finding("BAD_INTERNAL", node=e.node or None,
                          slots=(e.slot,), indices=(e.index,), found=e.raw)
            continue
        if e.kind != E.POINTER:
            continue
        where = dict(node=e.node or None, slots=(e.slot,) if e.slot >= 0 else (),
                     indices=(e.index,), folio=e.raw, shift=e.shift)
        if not E.is_kernel_pointer(e.raw):
            missing += 1
            yield Finding("BAD_POINTER", found=e.raw, **where)
            continue
        f = ctx.folios.get(e.raw)
        if f is None:
            missing += 1
            err = ctx.unreadable_folios.get(e.raw)
            yield Finding("FOLIO_UNREADABLE", address=e.raw,
                          extra={"reason": err.reason if err else ""},
                          **where)
            continue
        if f.is_tail:
            missing += 1
            yield Finding("FOLIO_TAIL", expected="head page",
                          found=f.compound_head - 1, **where)
            continue
        if hugetlb_index and e.nr_slots == 1 and e.shift == 0:
            # Before 6.7 a hugetlb folio sits in one slot at its huge-page
            # index and counts 1 in nrpages (__filemap_add_folio() skipped
            # xas_set_order() for hugetlb; commit a08c7193e4f1 changed it).
            pages += 1
            if f.index != e.index and pc:
                yield Finding("FOLIO_INDEX", order=f.order, expected=e.index,
                              found=f.index, **where)
            continue
        pages += f.nr_pages
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
        if not pc:
            continue
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
