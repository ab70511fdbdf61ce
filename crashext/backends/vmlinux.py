"""Facts read from a vmlinux file itself, without its debug info (no
drgn): the kernel release in its ``linux_banner``.

>>> vmlinux_release("/usr/lib/debug/boot/vmlinux-6.1.0-50-amd64")  # doctest: +SKIP
'6.1.0-50-amd64'
"""

from __future__ import annotations

import mmap
import re
from typing import Optional

#: init/version.c: linux_banner = "Linux version " UTS_RELEASE " (" ...
BANNER = re.compile(rb"Linux version (\d[\x21-\x7e]{0,63}) \(")


def vmlinux_release(path: str) -> Optional[str]:
    """The release in a vmlinux file's ``linux_banner`` ("Linux version
    6.1.0-50-amd64 (...") without loading its debug info, or None."""
    try:
        with open(path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            m = BANNER.search(mm)
            return m.group(1).decode("ascii") if m else None
    except (OSError, ValueError):
        return None
