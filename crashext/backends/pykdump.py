"""PyKdump backend: the :class:`~crashext.memory.Memory` interface inside
the ``crash`` utility, through PyKdump's ``pykdump.API`` and ``crash``
modules.

This module must run in PyKdump's embedded Python 3.11 with only the
standard library: it imports nothing outside the stdlib and crashext, and
imports PyKdump itself lazily (when a :class:`PykdumpMemory` is created),
so it can be imported anywhere.

PyKdump conventions mapped here (verified on crash 8.0.2 + PyKdump 3.5):
``sym2addr`` gives 0, ``member_offset``/``member_size``/``struct_size``
give -1 and ``enumerator_value`` gives None for unknown names; reads fail
with ``crash.error`` (or ``IndexError('readPtr NULL pointer')`` at
address 0).  One :meth:`read` is one ``readmem`` call (read whole nodes or
runs of struct page at once: each call costs ~1 us).

>>> mem = PykdumpMemory()                    # doctest: +SKIP
>>> mem.struct_size("struct xa_node")        # doctest: +SKIP
576
"""

from __future__ import annotations

from typing import Dict, Optional

from ..memory import Memory, UnreadableMemory


class PykdumpMemory(Memory):
    """Memory and debug info read through PyKdump inside crash.

    ``api`` and ``crash_module`` default to ``pykdump.API`` and ``crash``
    (imported here, not at module import).
    """

    def __init__(self, api=None, crash_module=None) -> None:
        if api is None:
            from pykdump import API as api  # noqa: N811 (PyKdump's name)
        if crash_module is None:
            import crash as crash_module
        self._api = api
        self._crash = crash_module
        self._readmem = api.readmem
        self._sym2addr = api.sym2addr
        self._member_offset = api.member_offset
        self._member_size = api.member_size
        self._struct_size = api.struct_size
        self._enumerator_value = api.enumerator_value
        self._exec = api.exec_crash_command
        # crash.error; any Exception subclass works for the except clauses.
        self._error = getattr(crash_module, "error", None) or RuntimeError
        self._sys: Optional[Dict[str, str]] = None

    # Memory interface -------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        if size < 0:
            raise ValueError("negative size %d" % size)
        if size == 0:
            return b""
        try:
            data = self._readmem(addr, size)
        except self._error as e:
            raise UnreadableMemory(addr, size, str(e)) from None
        except IndexError as e:                 # 'readPtr NULL pointer'
            raise UnreadableMemory(addr, size, str(e)) from None
        except OverflowError as e:              # negative / > 64-bit address
            raise UnreadableMemory(addr, size, str(e)) from None
        if len(data) != size:
            raise UnreadableMemory(addr, size, "short read (%d bytes)"
                                   % len(data))
        return data if type(data) is bytes else bytes(data)

    def symbol(self, name: str) -> Optional[int]:
        addr = self._sym2addr(name)
        return addr or None

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return _known(self._member_offset(struct, member))

    def member_size(self, struct: str, member: str) -> Optional[int]:
        return _known(self._member_size(struct, member))

    def struct_size(self, struct: str) -> Optional[int]:
        return _known(self._struct_size(struct))

    def enum_value(self, name: str) -> Optional[int]:
        v = self._enumerator_value(name)
        return None if v is None else int(v)

    def release(self) -> Optional[str]:
        return self._sys_info().get("RELEASE") or None

    def live(self) -> bool:
        """crash on a running kernel: its ``sys`` names the live memory
        source (``pc->live_memsrc``: /dev/crash, /proc/kcore or /dev/mem;
        ``(remote live system)``) as DUMPFILE (display_sys_stats() in
        crash's kernel.c)."""
        dump = self._sys_info().get("DUMPFILE", "")
        return (dump.split()[:1] in (["/dev/crash"], ["/proc/kcore"],
                                     ["/dev/mem"])
                or "(remote live system)" in dump)

    def describe(self) -> str:
        info = self._sys_info()
        dump = info.get("DUMPFILE")
        rel = info.get("RELEASE")
        text = "crash/PyKdump"
        if dump:
            text += " " + dump
        if rel:
            text += " (%s)" % rel
        return text

    # Helpers ----------------------------------------------------------
    def _sys_info(self) -> Dict[str, str]:
        """crash's ``sys`` output as {KEY: value}, run once (~24 ms)."""
        if self._sys is None:
            info: Dict[str, str] = {}
            try:
                out = self._exec("sys")
            except self._error:
                out = ""
            for line in str(out).splitlines():
                key, sep, value = line.partition(":")
                if sep and key.strip() and key.strip() not in info:
                    info[key.strip()] = value.strip()
            self._sys = info
        return self._sys


def _known(v) -> Optional[int]:
    """PyKdump's -1 (unknown) -> None."""
    if v is None:
        return None
    v = int(v)
    return None if v < 0 else v
