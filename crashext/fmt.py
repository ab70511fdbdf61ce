"""Number formatting shared by the explanation step and the renderers:
indices in hex and decimal, compressed index lists, short addresses.

>>> idx(0x7650)
'0x7650 (30288)'
>>> runs([0x7640, 0x7641, 0x7642, 0x7643])
'0x7640-0x7643'
>>> runs([0x7650, 0x7660, 0x7670])
'base 0x7640 +{16,32,48}'
>>> size(0x20000), size(0x410000), size(1536)
('128 KiB', '4.06 MiB', '1.5 KiB')
>>> nbytes(0x20000)
'0x20000 (128 KiB)'
>>> idx_range(0x420, 0x43f)
'0x420-0x43f (1056-1087)'
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence


def idx(i: int) -> str:
    """An XArray index as hex and decimal."""
    return "0x%x (%d)" % (i, i)


def hx(v: Optional[int]) -> str:
    return "-" if v is None else "0x%x" % v


def hex_or_none(v: Optional[int]) -> Optional[str]:
    """``0x...`` for JSON, None kept (JSON null)."""
    return None if v is None else "0x%x" % v


def plural(n: int, word: str) -> str:
    """``1 page``, ``2 pages``."""
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def grouped(v: int) -> str:
    """``ffff8880_0a3c4000``: a 64-bit address grouped for reading."""
    s = "%016x" % v
    return s[:8] + "_" + s[8:]


def slot_of(i: int, shift: int = 0, chunk_shift: int = 6) -> int:
    """Slot of index ``i`` within its node of ``shift`` (i.e. mod 64)."""
    return (i >> shift) & ((1 << chunk_shift) - 1)


def runs(indices: Iterable[int], chunk: int = 64) -> str:
    """Compress an index list: contiguous runs as ``a-b``; several indices
    within one node-sized block as ``base B +{o1,o2}``."""
    xs: List[int] = sorted(set(indices))
    if not xs:
        return "-"
    if len(xs) == 1:
        return "0x%x" % xs[0]
    if xs[-1] - xs[0] + 1 == len(xs):
        return "0x%x-0x%x" % (xs[0], xs[-1])
    base = xs[0] - xs[0] % chunk
    if xs[-1] - base < chunk and len(xs) <= 16:
        return "base 0x%x +{%s}" % (base, ",".join(str(x - base) for x in xs))
    parts = []
    start = prev = xs[0]
    for x in xs[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append("0x%x" % start if start == prev else "0x%x-0x%x" % (start, prev))
        if x is not None:
            start = prev = x
    return ",".join(parts)


def slot_list(slots: Sequence[int]) -> str:
    """``16,32,48`` or ``1-15``."""
    xs = sorted(set(slots))
    if not xs:
        return "-"
    if len(xs) > 2 and xs[-1] - xs[0] + 1 == len(xs):
        return "%d-%d" % (xs[0], xs[-1])
    return ",".join(str(s) for s in xs)


def size(n: int) -> str:
    """A byte count in human units (binary, 3 significant digits):
    ``512 B``, ``1.5 KiB``, ``128 KiB``, ``4.06 MiB``."""
    if n < 1024:
        return "%d B" % n
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n_ = n / 1024.0
        if n_ < 1024 or unit == "PiB":
            if n_ == int(n_):
                return "%d %s" % (n_, unit)
            s = ("%.3g" % n_)
            return "%s %s" % (s, unit)
        n = n_
    return "%d B" % n       # not reached


def nbytes(n: int) -> str:
    """A byte offset or length in hex and human units:
    ``0x20000 (128 KiB)``; 0 is ``0x0``."""
    if not n:
        return "0x0"
    return "0x%x (%s)" % (n, size(n))


def idx_range(first: int, last: int) -> str:
    """An inclusive index range in hex and decimal:
    ``0x420-0x43f (1056-1087)``; one index: ``0x420 (1056)``."""
    if first == last:
        return idx(first)
    return "0x%x-0x%x (%d-%d)" % (first, last, first, last)
