"""A small base for per-entry records kept by the million (one per folio
or XArray entry): ``__slots__`` classes that compare and print like the
dataclasses they stand for, without a dataclass's per-instance cost.

>>> class P(SlotsRecord):
...     __slots__ = ("a", "b")
...     def __init__(self, a, b): self.a, self.b = a, b
>>> P(1, 2) == P(1, 2), P(1, 2)
(True, P(a=1, b=2))
"""

from __future__ import annotations


class SlotsRecord:
    """Equality and repr over the fields named in ``__slots__``."""

    __slots__ = ()

    def _astuple(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._astuple() == other._astuple()  # type: ignore[attr-defined]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in self.__slots__))
