"""drgn backend: the :class:`~crashext.memory.Memory` interface over a
``drgn.Program`` (a vmcore + vmlinux, or a live kernel).

>>> mem = DrgnMemory.open("vmcore.elf", "vmlinux")   # doctest: +SKIP
>>> mem.struct_size("struct xa_node")                # doctest: +SKIP
576
>>> live = DrgnMemory.open_live()                    # doctest: +SKIP
>>> live.live()                                      # doctest: +SKIP
True
"""

from __future__ import annotations

import errno
import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import drgn

from ..memory import KERNEL_MIN, CrashextError, Memory, UnreadableMemory
from .vmlinux import vmlinux_release

#: The running kernel's memory, as drgn opens it for ``drgn`` without -c.
KCORE = "/proc/kcore"

#: Where distributions install the debug vmlinux of release ``{r}``, in
#: the order tried: Debian / Ubuntu (linux-image-R-dbg, -dbgsym), Fedora /
#: RHEL (kernel-debuginfo) and trixie's 7.x, SUSE (kernel-*-debuginfo),
#: a vmlinux beside the kernel, a build tree.
DEBUG_VMLINUX = (
    "/usr/lib/debug/boot/vmlinux-{r}",
    "/usr/lib/debug/lib/modules/{r}/vmlinux",
    "/usr/lib/debug/boot/vmlinux-{r}.debug",
    "/boot/vmlinux-{r}",
    "/lib/modules/{r}/build/vmlinux",
)


class DrgnMemory(Memory):
    """Memory and debug info read through drgn."""

    def __init__(self, prog: "drgn.Program", source: str = "drgn") -> None:
        self.prog = prog
        self._source = source
        self._types: Dict[str, Optional[drgn.Type]] = {}
        self._release: Optional[str] = None
        self._live: Optional[bool] = None
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

    @classmethod
    def open_live(cls, vmlinux: Optional[str] = None,
                  kcore: str = KCORE) -> "DrgnMemory":
        """The running kernel (``/proc/kcore``, as ``drgn`` with no ``-c``)
        with debug info from ``vmlinux`` or the first of
        :func:`debug_vmlinux_candidates` that exists.  Every reason it
        cannot work is one :class:`CrashextError` line: not root (no
        CAP_SYS_RAWIO: ``open_kcore()`` in fs/proc/kcore.c), kernel
        lockdown in confidentiality mode (LOCKDOWN_KCORE), no
        /proc/kcore (CONFIG_PROC_KCORE off), no debug info."""
        release = os.uname().release
        if not os.path.exists(kcore):
            raise CrashextError("live: %s does not exist (kernel built "
                                "without CONFIG_PROC_KCORE?)" % kcore)
        try:
            fd = os.open(kcore, os.O_RDONLY)
            os.close(fd)
        except OSError as e:
            raise CrashextError(_kcore_refused(kcore, e))
        if vmlinux is None:
            found = [p for p in debug_vmlinux_candidates(release)
                     if os.path.isfile(p)]
            if not found:
                raise CrashextError(
                    "live: no debug info for the running kernel %s: none "
                    "of %s exists (install linux-image-%s-dbg on Debian, "
                    "linux-image-%s-dbgsym on Ubuntu, kernel-debuginfo on "
                    "Fedora/RHEL, or give --vmlinux)"
                    % (release, ", ".join(debug_vmlinux_candidates(release)),
                       release, release))
            vmlinux = found[0]
        elif not os.path.isfile(vmlinux):
            raise CrashextError("live: vmlinux %s does not exist" % vmlinux)
        file_rel = vmlinux_release(vmlinux)
        if file_rel and file_rel != release:
            raise CrashextError("live: %s is for %s but the running kernel "
                                "is %s" % (vmlinux, file_rel, release))
        prog = drgn.Program()
        with _drgn_log() as log:
            try:
                if kcore == KCORE:
                    prog.set_kernel()
                else:
                    prog.set_core_dump(kcore)
            except OSError as e:
                raise CrashextError(_kcore_refused(kcore, e))
            except Exception as e:
                raise CrashextError("live: cannot open %s: %s" % (kcore, e))
            try:
                prog.load_debug_info([vmlinux])
            except drgn.MissingDebugInfoError as e:
                log.append(str(e))
            except Exception as e:
                raise CrashextError("live: cannot load debug info %s: %s"
                                    % (vmlinux, e))
        mem = cls(prog, "live kernel %s (%s)" % (release, kcore))
        mem.load_log = log
        mem._live = True
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
    def live(self) -> bool:
        """A running kernel: opened by :meth:`open_live`, or a Program that
        drgn itself calls live (``drgn`` without ``-c``, /proc/kcore)."""
        if self._live is None:
            try:
                self._live = bool(self.prog.flags
                                  & drgn.ProgramFlags.IS_LIVE)
            except Exception:
                self._live = False
        return self._live

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


def debug_vmlinux_candidates(release: str) -> List[str]:
    """:data:`DEBUG_VMLINUX` for ``release`` (``uname -r``)."""
    return [p.format(r=release) for p in DEBUG_VMLINUX]


def lockdown_mode(path: str = "/sys/kernel/security/lockdown"
                  ) -> Optional[str]:
    """The kernel lockdown mode in force (``none``, ``integrity``,
    ``confidentiality``: the bracketed word of securityfs's lockdown
    file), or None when it cannot be read."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _kcore_refused(kcore: str, e: OSError) -> str:
    """One line saying why ``kcore`` cannot be opened.  open_kcore()
    (fs/proc/kcore.c) refuses without CAP_SYS_RAWIO and under lockdown
    LOCKDOWN_KCORE (confidentiality mode, include/linux/security.h), both
    with EPERM."""
    if e.errno in (errno.EPERM, errno.EACCES):
        if lockdown_mode() == "confidentiality":
            return ("live: kernel lockdown (confidentiality) forbids "
                    "reading %s; a live check cannot run on this boot"
                    % kcore)
        if os.geteuid() != 0:
            return ("live: reading %s needs root (CAP_SYS_RAWIO): run "
                    "as root, e.g. with sudo" % kcore)
        return ("live: %s refused (%s): needs CAP_SYS_RAWIO and no "
                "kernel lockdown" % (kcore, e.strerror or e))
    return "live: cannot open %s: %s" % (kcore, e.strerror or e)


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
