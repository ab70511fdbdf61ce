"""The memory interface every backend implements.

The engine reads a dump only through :class:`Memory`: raw bytes at a kernel
virtual address, and the few debug-info facts (symbol addresses, struct
member offsets and sizes, enumerator values) that :mod:`crashext.layout`
needs.  Backends (drgn, PyKdump, snapshot) live in ``crashext.backends`` and
the engine never imports them.

>>> mem.read(0xffff888006cbcab8, 16)        # doctest: +SKIP
b'...'
"""

from __future__ import annotations

from typing import Optional


class CrashextError(Exception):
    """Base class of every error crashext reports to a user as one line."""


class UnreadableMemory(CrashextError):
    """Memory at ``addr`` could not be read (excluded page, truncated dump,
    unmapped or non-canonical address).  Carries the address so a finding
    can name it."""

    def __init__(self, addr: int, size: int, reason: str = "") -> None:
        self.addr = addr
        self.size = size
        self.reason = reason
        msg = "cannot read %d bytes at 0x%x" % (size, addr)
        if reason:
            msg += ": " + reason
        super().__init__(msg)


class LayoutError(CrashextError):
    """The dump's debug info lacks a struct or member crashext needs (wrong
    or missing vmlinux, unsupported kernel)."""


#: Lowest kernel virtual address on 64-bit kernels (x86-64 5-level paging
#: starts at 0xff00000000000000, 4-level at 0xffff800000000000; arm64's
#: kernel half starts higher still).  Backends refuse reads below it: the
#: engine only ever means kernel virtual addresses.
KERNEL_MIN = 0xFF00000000000000


class Memory:
    """Abstract memory + debug-info access.  Subclasses override every method.

    Unknown symbols, structs, members and enumerators give ``None``; only
    :meth:`read` raises (:class:`UnreadableMemory`).
    """

    def read(self, addr: int, size: int) -> bytes:
        """Return exactly ``size`` bytes at kernel virtual ``addr``."""
        raise NotImplementedError

    def symbol(self, name: str) -> Optional[int]:
        """Address of a global symbol, or None."""
        raise NotImplementedError

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        """Byte offset of ``member`` (dotted paths allowed) in ``struct``
        (spelled ``"struct xa_node"``), or None."""
        raise NotImplementedError

    def member_size(self, struct: str, member: str) -> Optional[int]:
        """Size in bytes of ``member`` of ``struct``, or None."""
        raise NotImplementedError

    def struct_size(self, struct: str) -> Optional[int]:
        """sizeof(struct), or None."""
        raise NotImplementedError

    def enum_value(self, name: str) -> Optional[int]:
        """Value of enumerator ``name`` (e.g. ``"PG_head"``), or None."""
        raise NotImplementedError

    def release(self) -> Optional[str]:
        """Kernel release string (``uname -r``) of the dump, or None."""
        return None

    def describe(self) -> str:
        """One short line naming the source (for reports)."""
        return type(self).__name__

    def live(self) -> bool:
        """True when the memory is a running kernel's (``/proc/kcore``):
        it changes while it is read, so the engine decides findings only
        on evidence that stays the same when read again
        (:mod:`crashext.stable`)."""
        return False

    # Convenience -----------------------------------------------------
    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def symbol_value(self, name: str, size: int = 8) -> Optional[int]:
        """The unsigned ``size``-byte value of kernel variable ``name``,
        or None when the symbol is unknown or its memory unreadable.

        >>> mem.symbol_value("max_pfn")              # doctest: +SKIP
        294912
        """
        a = self.symbol(name)
        if a is None:
            return None
        try:
            return int.from_bytes(self.read(a, size), "little")
        except UnreadableMemory:
            return None


class MemoryView(Memory):
    """A :class:`Memory` that forwards everything to ``base``; subclasses
    override :meth:`read` (patched, excluded or recorded bytes) and keep
    the debug info.  Attributes the interface does not name
    (``resolve_path``, drgn's ``prog``) are forwarded too.

    >>> class Holes(MemoryView):                     # doctest: +SKIP
    ...     def read(self, addr, size):
    ...         raise UnreadableMemory(addr, size, "hole")
    """

    def __init__(self, base: Memory) -> None:
        self.base = base

    def read(self, addr: int, size: int) -> bytes:
        return self.base.read(addr, size)

    def symbol(self, name: str) -> Optional[int]:
        return self.base.symbol(name)

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return self.base.member_offset(struct, member)

    def member_size(self, struct: str, member: str) -> Optional[int]:
        return self.base.member_size(struct, member)

    def struct_size(self, struct: str) -> Optional[int]:
        return self.base.struct_size(struct)

    def enum_value(self, name: str) -> Optional[int]:
        return self.base.enum_value(name)

    def release(self) -> Optional[str]:
        return self.base.release()

    def describe(self) -> str:
        return self.base.describe()

    def live(self) -> bool:
        return self.base.live()

    def __getattr__(self, name: str):
        if name == "base":              # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.base, name)
