"""drgn backend: the :class:`~crashext.memory.Memory` interface over a
``drgn.Program`` (a vmcore + vmlinux, or a live kernel).

>>> mem = DrgnMemory.open("vmcore.elf", "vmlinux")   # doctest: +SKIP
>>> mem.struct_size("struct xa_node")                # doctest: +SKIP
576
"""

from __future__ import annotations

import logging
import mmap
import re
from typing import Any, Dict, List, Optional, Tuple

import drgn

from ..memory import KERNEL_MIN, CrashextError, Memory, UnreadableMemory


class DrgnMemory(Memory):
    """Memory and debug info read through drgn."""

    def __init__(self, prog: "drgn.Program", source: str = "drgn") -> None:
        self.prog = prog
        self._source = source
        self._types: Dict[str, Optional[drgn.Type]] = {}
        self._release: Optional[str] = None
        self.load_log: List[str] = []

    @classmethod
    def open(cls, vmcore: str, vmlinux: Optional[str] = None) -> "DrgnMemory":
        """Open ``vmcore`` with debug info from ``vmlinux`` (or drgn's
        default search when None).  Errors become :class:`CrashextError`;
        drgn's own warnings (a truncated dump's unreadable module list, a
        vmlinux it ignored) are kept in ``load_log`` instead of stderr."""
        prog = drgn.Program()
        with _drgn_log() as log:
            try:
                prog.set_core_dump(vmcore)
            except (OSError, ValueError, drgn.FaultError, Exception) as e:
                raise CrashextError("cannot open vmcore %s: %s" % (vmcore, e))
            try:
                if vmlinux:
                    prog.load_debug_info([vmlinux])
                else:
                    prog.load_default_debug_info()
            except drgn.MissingDebugInfoError as e:
                # Modules without debug info are fine; the kernel's is
                # needed (checked below).
                log.append(str(e))
            except Exception as e:
                raise CrashextError("cannot load debug info %s: %s"
                                    % (vmlinux, e))
        mem = cls(prog, "%s (drgn)" % vmcore)
        mem.load_log = log
        mem.check_release(vmlinux)
        return mem

    def check_release(self, vmlinux: Optional[str]) -> None:
        """Refuse a vmlinux that is not the dump's: its release (from the
        file's ``linux_banner``, or the banner in the dump) must be the
        dump's VMCOREINFO OSRELEASE, and drgn must have used it for the
        kernel (it ignores a vmlinux whose build ID differs)."""
        dump_rel = self.release()
        file_rel = vmlinux_release(vmlinux) if vmlinux else None
        if dump_rel and file_rel and dump_rel != file_rel:
            raise CrashextError("vmlinux %s is for %s but the dump is %s"
                                % (vmlinux, file_rel, dump_rel))
        try:
            banner_obj = self.prog["linux_banner"]
        except (LookupError, ValueError):
            if vmlinux:
                raise CrashextError(
                    "vmlinux %s (%s) does not match the dump (%s): its "
                    "build ID differs" % (vmlinux, file_rel or "release "
                                          "unknown", dump_rel or "release "
                                          "unknown"))
            raise CrashextError("no kernel debug info found for the dump "
                                "(%s): give --vmlinux" % (dump_rel or
                                                          "release unknown"))
        try:
            banner = banner_obj.string_().decode(errors="replace")
        except Exception:
            return
        parts = banner.split()
        deb_rel = parts[2] if len(parts) > 2 else None
        if dump_rel and deb_rel and dump_rel != deb_rel:
            raise CrashextError(
                "vmlinux %s is for %s but the dump is %s"
                % (vmlinux or "(default)", deb_rel, dump_rel))

    # Memory interface -------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        if addr < KERNEL_MIN or addr + size > 1 << 64:
            # drgn serves low addresses of QEMU ELF dumps from physical
            # memory; the engine only ever means kernel virtual addresses.
            raise UnreadableMemory(addr & ((1 << 64) - 1), size,
                                   "not a kernel virtual address")
        try:
            return self.prog.read(addr, size)
        except drgn.FaultError as e:
            raise UnreadableMemory(addr, size, _fault_reason(e))
        except (ValueError, OverflowError) as e:
            raise UnreadableMemory(addr, size, str(e))

    def _type(self, name: str) -> Optional["drgn.Type"]:
        if name not in self._types:
            try:
                self._types[name] = self.prog.type(name)
            except LookupError:
                self._types[name] = None
        return self._types[name]

    def _member(self, struct: str, member: str) -> Optional[Tuple[int, int]]:
        t = self._type(struct)
        if t is None:
            return None
        try:
            off = drgn.offsetof(t, member)
        except (LookupError, ValueError, TypeError):
            return None
        try:
            mt = t
            for part in member.split("."):
                mt = drgn.type_member_type(mt, part) if hasattr(drgn, "type_member_type") else mt.member(part).type
            size = drgn.sizeof(mt)
        except Exception:
            size = None
        return off, size

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        m = self._member(struct, member)
        return None if m is None else m[0]

    def member_size(self, struct: str, member: str) -> Optional[int]:
        m = self._member(struct, member)
        return None if m is None else m[1]

    def struct_size(self, struct: str) -> Optional[int]:
        t = self._type(struct)
        if t is None:
            return None
        try:
            return drgn.sizeof(t)
        except Exception:
            return None

    def symbol(self, name: str) -> Optional[int]:
        try:
            return self.prog.symbol(name).address
        except LookupError:
            return None

    def enum_value(self, name: str) -> Optional[int]:
        try:
            obj = self.prog.constant(name)
        except LookupError:
            return None
        try:
            return obj.value_()
        except Exception:
            return None

    def release(self) -> Optional[str]:
        if self._release is None:
            try:
                rel = self.prog["UTS_RELEASE"]
                self._release = rel.string_().decode()
            except Exception:
                try:
                    info = self.prog.vmcoreinfo or b""
                    for line in info.decode(errors="replace").splitlines():
                        if line.startswith("OSRELEASE="):
                            self._release = line.split("=", 1)[1]
                            break
                except Exception:
                    pass
        return self._release

    def describe(self) -> str:
        return self._source

    def resolve_path(self, path: str) -> int:
        """Address of the inode of ``path`` in the dump's mount tree."""
        from drgn.helpers.linux.fs import path_lookup
        try:
            p = path_lookup(self.prog, path)
        except Exception as e:
            raise CrashextError("cannot resolve %s in the dump: %s" % (path, e))
        return p.dentry.d_inode.value_()


_BANNER = re.compile(rb"Linux version (\d[\x21-\x7e]{0,63}) \(")


def vmlinux_release(path: str) -> Optional[str]:
    """The release in a vmlinux file's ``linux_banner`` ("Linux version
    6.1.0-50-amd64 (...") without loading its debug info, or None."""
    try:
        with open(path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            m = _BANNER.search(mm)
            return m.group(1).decode("ascii") if m else None
    except (OSError, ValueError):
        return None


class _drgn_log:
    """Collect the ``drgn`` logger's messages (a list) instead of letting
    Python's last-resort handler print them on stderr."""

    def __enter__(self) -> List[str]:
        self.logger = logging.getLogger("drgn")
        self.records: List[str] = []
        records = self.records

        class _Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    records.append(record.getMessage())
                except Exception:
                    pass

        self.handler = _Keep()
        self.propagate = self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        return records

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate


def _fault_reason(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    if "Excluded" in msg:
        return "excluded page"
    if "short read" in msg:
        # An ELF dump cut short: the page lies past the end of the file.
        return "past the end of the dump file (truncated dump?)"
    if "Decompresion failed" in msg or "Decompression failed" in msg:
        # libkdumpfile on a kdump file cut short, or damaged page data.
        return "page data missing or damaged (truncated dump?)"
    return msg.split(":")[-1].strip()
