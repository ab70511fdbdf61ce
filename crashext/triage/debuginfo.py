"""Find the vmlinux (with debug info) that fits a dump: by kernel release
in the layouts distributions install debug info in, and by build ID.

Where debug info lives, under each debug directory D (and, after the
directories given, under ``/``, the running system's own):

* ``D/vmlinux-<release>``, ``D/<release>/vmlinux``, ``D/boot/vmlinux-<release>``;
* ``D/usr/lib/debug/boot/vmlinux-<release>`` (Debian/Ubuntu ``-dbg`` /
  ``-dbgsym`` packages), ``D/usr/lib/debug/lib/modules/<release>/vmlinux``
  (Fedora/RHEL ``kernel-debuginfo``, Debian 7.x ``-dbg``), the same with
  D being ``/usr/lib/debug`` itself;
* ``D/.build-id/xx/yyyy.debug`` and ``D/usr/lib/debug/.build-id/...``
  (the GNU build-id tree, when the dump carries ``BUILD-ID``);
* the vmcore lab's ``D/k/<release>/usr/lib/debug/...``;
* then a hint (a lab manifest's ``vmlinux``) and ``vmlinux`` /
  ``vmlinux-<release>`` next to the dump.

A candidate is used only when it fits: its GNU build ID equals the
dump's ``BUILD-ID`` when both have one, else the release in its
``linux_banner`` equals the dump's.  A candidate that does not fit is
never used (drgn would ignore it or read wrong offsets); it is named in
the error when nothing fits.

>>> found = find_vmlinux("6.1.0-50-amd64", "06f8bd...", ["/srv/debug"])  # doctest: +SKIP
>>> found.path, found.rejected                                            # doctest: +SKIP
('/srv/debug/usr/lib/debug/boot/vmlinux-6.1.0-50-amd64', [])
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..backends.vmlinux import vmlinux_release

#: The system's own debug-info root, searched after the given directories.
SYSTEM_ROOT = "/"

def release_layouts(release: str) -> List[str]:
    """Paths, relative to a debug directory, where the vmlinux of
    ``release`` is installed by the usual tools."""
    r = release
    return [
        "vmlinux-" + r,
        os.path.join(r, "vmlinux"),
        os.path.join(r, "vmlinux-" + r),
        os.path.join("boot", "vmlinux-" + r),
        os.path.join("usr/lib/debug/boot", "vmlinux-" + r),
        os.path.join("usr/lib/debug/lib/modules", r, "vmlinux"),
        os.path.join("lib/modules", r, "vmlinux"),
        os.path.join(r, "usr/lib/debug/boot", "vmlinux-" + r),
        os.path.join("k", r, "usr/lib/debug/boot", "vmlinux-" + r),
        os.path.join("k", r, "usr/lib/debug/lib/modules", r, "vmlinux"),
    ]


def build_id_layouts(build_id: str) -> List[str]:
    """The GNU build-id tree paths of ``build_id`` under a debug
    directory (``.build-id/ab/cdef....debug``)."""
    tail = os.path.join(build_id[:2], build_id[2:] + ".debug")
    return [os.path.join(".build-id", tail),
            os.path.join("usr/lib/debug/.build-id", tail)]


def elf_build_id(path: str) -> Optional[str]:
    """The GNU build ID (``NT_GNU_BUILD_ID`` note) of an ELF file, hex,
    or None.  Reads the section headers and the note sections only."""
    try:
        with open(path, "rb") as f:
            eh = f.read(64)
            if len(eh) < 64 or eh[:4] != b"\x7fELF" or eh[4] != 2 \
                    or eh[5] != 1:
                return None
            shoff, = struct.unpack_from("<Q", eh, 40)
            shentsize, shnum = struct.unpack_from("<HH", eh, 58)
            if not shoff or shentsize < 64 or not 0 < shnum < 1 << 16:
                return None
            f.seek(shoff)
            sh = f.read(shentsize * shnum)
            for i in range(len(sh) // shentsize):
                o = i * shentsize
                if struct.unpack_from("<I", sh, o + 4)[0] != 7:  # SHT_NOTE
                    continue
                off, size = struct.unpack_from("<QQ", sh, o + 24)
                if not 0 < size <= 1 << 20:
                    continue
                f.seek(off)
                bid = _note_build_id(f.read(size))
                if bid:
                    return bid
    except OSError:
        return None
    return None


def _note_build_id(buf: bytes) -> Optional[str]:
    o = 0
    while o + 12 <= len(buf):
        namesz, descsz, ntype = struct.unpack_from("<III", buf, o)
        name_end = o + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(buf):
            return None
        if ntype == 3 and buf[o + 12:o + 12 + namesz].rstrip(b"\0") \
                == b"GNU":                            # NT_GNU_BUILD_ID
            return buf[name_end:name_end + descsz].hex()
        o = desc_end
    return None


@dataclass
class Found:
    """The outcome of a search: ``path`` (None when nothing fits), the
    places ``looked`` in, and the candidates ``rejected`` with why."""

    path: Optional[str]
    looked: List[str] = field(default_factory=list)
    rejected: List[Tuple[str, str]] = field(default_factory=list)
    how: str = ""

    def error(self, release: Optional[str], build_id: Optional[str]) -> str:
        """One line for a dump whose vmlinux was not found."""
        what = "no vmlinux for %s" % (release or "an unknown release")
        if build_id:
            what += " (build ID %s)" % build_id[:12]
        where = ", ".join(self.looked) or "nowhere (no debug dir given)"
        msg = "%s: looked in %s" % (what, where)
        if self.rejected:
            msg += "; not used: " + ", ".join(
                "%s (%s)" % rv for rv in self.rejected[:3])
        return msg


def fits(path: str, release: Optional[str], build_id: Optional[str],
         _cache: Dict[str, Optional[str]] = {}
         ) -> Tuple[bool, str]:
    """(does ``path`` fit the dump, why not).  Build IDs decide when both
    sides have one; else the banner release."""
    key = os.path.realpath(path)
    try:
        st = os.stat(key)
        ck = "%s:%d:%d" % (key, st.st_size, st.st_mtime_ns)
    except OSError as e:
        return False, "unreadable: %s" % (e.strerror or e)
    if ck not in _cache:
        _cache[ck] = elf_build_id(key)
    bid = _cache[ck]
    if build_id and bid:
        if bid == build_id:
            return True, ""
        return False, "build ID %s, dump's %s" % (bid[:12], build_id[:12])
    rel = vmlinux_release(key)      # cached there, per file state
    if release and rel and rel != release:
        return False, "release %s" % rel
    if release and not rel:
        return False, "no linux_banner: not a vmlinux"
    return True, ""


def find_vmlinux(release: Optional[str], build_id: Optional[str] = None,
                 debug_dirs: Sequence[str] = (), hint: Optional[str] = None,
                 dump: Optional[str] = None,
                 system: bool = True) -> Found:
    """Search (see the module docstring) for the vmlinux of a dump of
    ``release`` / ``build_id``; the first candidate that fits wins."""
    found = Found(None)
    dirs = [os.fspath(d) for d in debug_dirs]
    if system and SYSTEM_ROOT not in dirs:
        dirs.append(SYSTEM_ROOT)
    seen = set()

    def consider(c: str, how: str) -> bool:
        real = os.path.realpath(c)
        if real in seen or not os.path.isfile(real):
            return False
        seen.add(real)
        ok, why = fits(c, release, build_id)
        if ok:
            found.path, found.how = c, how
            return True
        found.rejected.append((c, why))
        return False

    for d in dirs:
        found.looked.append(d)
        rels = release_layouts(release) if release else []
        bids = build_id_layouts(build_id) if build_id else []
        for c in bids:
            if consider(os.path.join(d, c), "build ID"):
                return found
        for c in rels:
            if consider(os.path.join(d, c), "release"):
                return found
    if hint:
        found.looked.append("the lab manifest")
        if consider(hint, "manifest"):
            return found
    if dump:
        d = os.path.dirname(os.path.abspath(dump))
        found.looked.append("next to the dump")
        for c in ([os.path.join(d, "vmlinux-" + release)] if release
                  else []) + [os.path.join(d, "vmlinux")]:
            if consider(c, "next to the dump"):
                return found
    return found
