"""What a vmcore file says about itself, read from its headers without
opening it with drgn: its format, and its VMCOREINFO (kernel release,
build ID, crash time).

Formats, told by content (never by name):

* ``elf``: an ELF core (``ET_CORE``): /proc/vmcore copied by kexec-tools'
  ``cp``, QEMU's ``dump-guest-memory``, ``makedumpfile -E``;
* ``kdump``: the kdump-compressed (diskdump) format ``makedumpfile`` writes
  by default (signature ``KDUMP   ``; ``DISKDUMP`` for the old diskdump);
* ``flattened``: makedumpfile's flattened stream (``makedumpfile -F``,
  what kdump-tools pipes through ssh or a compressor; signature
  ``makedumpfile`` then ``type`` 1, big-endian).

VMCOREINFO (kernel/vmcore_info.c, crash_save_vmcoreinfo()) is a block of
``KEY=value`` lines starting with ``OSRELEASE=``; the kernel appends
``CRASHTIME=<seconds since the epoch>`` when it crashes through kexec, and
``BUILD-ID=`` (commit 44e8a5e9120b, 5.9+) names the vmlinux that fits.  It
lives in an ELF ``PT_NOTE`` segment, in the kdump sub-header
(``offset_vmcoreinfo``), or in the first bytes of a flattened stream.

>>> sniff("/var/crash/127.0.0.1-2026-11-20-03:14:07/vmcore")  # doctest: +SKIP
'kdump'
>>> header_facts(path)["release"]                           # doctest: +SKIP
'6.1.0-50-amd64'
"""

from __future__ import annotations

import os
import struct
from typing import Dict, List, Optional, Tuple

#: Bytes read from the start of a dump to find VMCOREINFO before looking
#: at the format's own pointers to it.
HEAD = 1 << 20
#: Largest VMCOREINFO block believed (the kernel's is one page).
MAX_VMCOREINFO = 64 << 10


def sniff_bytes(h: bytes) -> Optional[str]:
    """The format of a dump that starts with ``h`` (>= 20 bytes), or
    None when it is no dump."""
    if h[:4] == b"\x7fELF" and len(h) >= 18:
        little = h[5:6] != b"\x02"
        e_type = struct.unpack_from("<H" if little else ">H", h, 16)[0]
        return "elf" if e_type == 4 else None           # ET_CORE
    if h[:8] in (b"KDUMP   ", b"DISKDUMP"):
        return "kdump"
    if h[:12] == b"makedumpfile" and len(h) >= 24:
        # struct makedumpfile_header: signature[16], int64 type (BE)
        return "flattened" if struct.unpack_from(">q", h, 16)[0] == 1 \
            else None
    return None


def sniff(path: str) -> Optional[str]:
    """:func:`sniff_bytes` of a file's first bytes (None when unreadable)."""
    try:
        with open(path, "rb") as f:
            return sniff_bytes(f.read(24))
    except OSError:
        return None


def parse_vmcoreinfo(buf: bytes) -> Dict[str, str]:
    """The ``KEY=value`` lines of the VMCOREINFO block in ``buf`` (from
    its ``OSRELEASE=`` line to the first NUL), or {} when there is none."""
    i = buf.find(b"OSRELEASE=")
    if i < 0:
        return {}
    end = buf.find(b"\0", i, i + MAX_VMCOREINFO)
    block = buf[i:end if end >= 0 else i + MAX_VMCOREINFO]
    out: Dict[str, str] = {}
    for line in block.decode("ascii", "replace").splitlines():
        k, sep, v = line.partition("=")
        if sep and k and k not in out:
            out[k] = v.strip()
    return out


def _elf_notes(f, head: bytes) -> List[Tuple[int, int]]:
    """(offset, size) of the PT_NOTE segments of a 64-bit LE ELF core."""
    if len(head) < 64 or head[4] != 2 or head[5] != 1:
        return []
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    if phentsize < 56 or phnum == 0:
        return []
    if phnum == 0xFFFF:                 # PN_XNUM: count in shdr[0].sh_info
        shoff, = struct.unpack_from("<Q", head, 40)
        f.seek(shoff + 44)
        phnum = struct.unpack("<I", f.read(4))[0]
    f.seek(phoff)
    ph = f.read(phentsize * min(phnum, 1 << 16))
    out = []
    for i in range(len(ph) // phentsize):
        o = i * phentsize
        if struct.unpack_from("<I", ph, o)[0] == 4:          # PT_NOTE
            off, = struct.unpack_from("<Q", ph, o + 8)
            size, = struct.unpack_from("<Q", ph, o + 32)
            out.append((off, size))
    return out


def _kdump_vmcoreinfo(f, head: bytes) -> bytes:
    """VMCOREINFO of a kdump-compressed file: struct disk_dump_header
    (block 0; ``status`` and ``block_size`` at 424/428, after signature,
    version, utsname and the timestamp) then struct kdump_sub_header (block 1) whose
    ``offset_vmcoreinfo``/``size_vmcoreinfo`` are at 32/40 (header
    version >= 3, makedumpfile's diskdump_mod.h)."""
    if len(head) < 440:
        return b""
    version, = struct.unpack_from("<i", head, 8)
    block_size, = struct.unpack_from("<i", head, 428)
    if version < 3 or not 0 < block_size <= 1 << 20:
        return b""
    f.seek(block_size)
    sub = f.read(48)
    if len(sub) < 48:
        return b""
    off, size = struct.unpack_from("<QQ", sub, 32)
    if not off or not 0 < size <= MAX_VMCOREINFO:
        return b""
    f.seek(off)
    return f.read(size)


def header_facts(path: str) -> Dict[str, object]:
    """Facts from a dump's headers: ``format``, ``release``, ``build_id``,
    ``crash_time`` (epoch seconds, or None) and ``crash_time_source``;
    ``error`` when the file cannot be read.  Reads the first MiB plus,
    when VMCOREINFO is not there, the blocks the format points at."""
    facts: Dict[str, object] = {"format": None, "release": None,
                                "build_id": None, "crash_time": None,
                                "crash_time_source": None}
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
            fmt = sniff_bytes(head[:24])
            facts["format"] = fmt
            info = parse_vmcoreinfo(head)
            if not info and fmt == "elf":
                for off, size in _elf_notes(f, head):
                    if 0 < size <= 64 << 20:
                        f.seek(off)
                        info = parse_vmcoreinfo(f.read(size))
                        if info:
                            break
            if not info and fmt == "kdump":
                info = parse_vmcoreinfo(_kdump_vmcoreinfo(f, head))
    except OSError as e:
        facts["error"] = "cannot read %s: %s" % (path, e.strerror or e)
        return facts
    facts["release"] = info.get("OSRELEASE") or None
    bid = (info.get("BUILD-ID") or "").lower()
    facts["build_id"] = bid if bid and all(
        c in "0123456789abcdef" for c in bid) else None
    if fmt == "kdump" and not facts["release"]:
        # struct new_utsname follows signature[8] and header_version
        r = head[12 + 65 * 2:12 + 65 * 3].split(b"\0", 1)[0]
        facts["release"] = r.decode("ascii", "replace") or None
    ct = info.get("CRASHTIME", "")
    if ct.isdigit() and int(ct) > 0:
        facts["crash_time"] = int(ct)
        facts["crash_time_source"] = "VMCOREINFO CRASHTIME"
    elif fmt == "kdump" and len(head) >= 416:
        # disk_dump_header.timestamp (struct timeval at 408): 0 when
        # makedumpfile had no crash time to copy.
        ts, = struct.unpack_from("<q", head, 408)
        if ts > 0:
            facts["crash_time"] = ts
            facts["crash_time_source"] = "kdump header timestamp"
    return facts


def file_state(path: str) -> Dict[str, Optional[int]]:
    """``dump_size`` and ``dump_mtime`` (None when the file is gone): what
    tells a finished result from one of an older file of the same name."""
    try:
        st = os.stat(path)
        return {"dump_size": st.st_size, "dump_mtime": int(st.st_mtime)}
    except OSError:
        return {"dump_size": None, "dump_mtime": None}
