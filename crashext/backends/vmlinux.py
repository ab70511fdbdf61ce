"""Facts read from a vmlinux file itself, without its debug info (no
drgn): the kernel release in its ``linux_banner``.  A file is scanned
once per process while it stays the same (real path, size, mtime).

>>> vmlinux_release("/usr/lib/debug/boot/vmlinux-6.1.0-50-amd64")  # doctest: +SKIP
'6.1.0-50-amd64'
"""

from __future__ import annotations

import mmap
import os
import re
from typing import Dict, Optional, Tuple

#: init/version.c: linux_banner = "Linux version " UTS_RELEASE " (" ...
BANNER = re.compile(rb"Linux version (\d[\x21-\x7e]{0,63}) \(")

#: (real path, size, mtime_ns) -> release found in the file (None too).
_RELEASES: Dict[Tuple[str, int, int], Optional[str]] = {}


def vmlinux_release(path: str) -> Optional[str]:
    """The release in a vmlinux file's ``linux_banner`` ("Linux version
    6.1.0-50-amd64 (...") without loading its debug info, or None."""
    try:
        real = os.path.realpath(path)
        with open(real, "rb") as f:
            st = os.fstat(f.fileno())
            key = (real, st.st_size, st.st_mtime_ns)
            if key in _RELEASES:
                return _RELEASES[key]
            try:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    m = BANNER.search(mm)
                    rel = m.group(1).decode("ascii") if m else None
            except ValueError:          # an empty file cannot be mapped
                rel = None
            _RELEASES[key] = rel
            return rel
    except (OSError, ValueError):
        return None
