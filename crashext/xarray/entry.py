"""Decode one XArray entry, exactly as ``include/linux/xarray.h`` does.

An entry is an ``unsigned long`` stored in ``xa_head`` or ``xa_node.slots``:

* bit 0 set: a value entry (``xa_is_value``; shadow/swap entries);
* low bits ``10``: an internal entry (``xa_is_internal``):
  node pointer when ``> 4096`` (``xa_is_node``, address = entry - 2),
  sibling when its value is below ``XA_CHUNK_SIZE - 1`` (``xa_is_sibling``),
  ``XA_RETRY_ENTRY`` (internal 256 = 0x402), ``XA_ZERO_ENTRY``
  (internal 257 = 0x406), anything else is not a valid internal entry;
* low bits ``00``: a pointer (a folio, in a page cache).

>>> kind_of(0x402) == RETRY
True
>>> kind_of(xa_mk_sibling(3)) == SIBLING and xa_to_sibling(0xe) == 3
True
"""

from __future__ import annotations

from ..memory import KERNEL_MIN

# Kinds, as small ints so the hot path compares integers.
EMPTY = 0
POINTER = 1
VALUE = 2
NODE = 3
SIBLING = 4
RETRY = 5
ZERO = 6
BAD_INTERNAL = 7

KIND_NAMES = {
    EMPTY: "empty", POINTER: "pointer", VALUE: "value", NODE: "node",
    SIBLING: "sibling", RETRY: "retry", ZERO: "zero",
    BAD_INTERNAL: "bad-internal",
}

XA_CHUNK_SHIFT_DEFAULT = 6          # CONFIG_BASE_SMALL=0
XA_RETRY_ENTRY = (256 << 2) | 2      # xa_mk_internal(256)
XA_ZERO_ENTRY = (257 << 2) | 2       # xa_mk_internal(257)
XA_RCU_FREE = 1                      # ((struct xarray *)1), lib/xarray.c


def xa_mk_internal(v: int) -> int:
    return ((v << 2) | 2) & 0xFFFFFFFFFFFFFFFF


def xa_mk_sibling(offset: int) -> int:
    return xa_mk_internal(offset)


def xa_to_sibling(entry: int) -> int:
    return entry >> 2


def xa_to_value(entry: int) -> int:
    return entry >> 1


def xa_to_node(entry: int) -> int:
    return entry - 2


def kind_of(entry: int, chunk_size: int = 64) -> int:
    """Classify a raw entry (``xa_is_*`` from include/linux/xarray.h)."""
    if entry == 0:
        return EMPTY
    if entry & 1:
        return VALUE
    if entry & 3 == 2:
        if entry > 4096:                      # xa_is_node()
            return NODE
        v = entry >> 2
        if v < chunk_size - 1:                # xa_is_sibling()
            return SIBLING
        if entry == XA_RETRY_ENTRY:
            return RETRY
        if entry == XA_ZERO_ENTRY:
            return ZERO
        return BAD_INTERNAL
    return POINTER


def is_kernel_pointer(addr: int) -> bool:
    """A plausible x86-64/arm64 kernel virtual address: canonical, in the
    upper half, 8-byte aligned.  (Entries are folio pointers; folios are
    64-byte aligned in vmemmap, but the check stays lenient here and the
    read decides.)"""
    return addr >= KERNEL_MIN and addr & 7 == 0
