"""``crashext crashrc``: the lines that add ``xa`` to crash (PyKdump), and
a check of the installation they point at.

PyKdump's embedded Python sees only its own zipped standard library (a
fixed minimal subset: no json, gzip, threading, importlib.metadata...), the
``PYKDUMPPATH`` directories and what a script adds to ``sys.path``.
crashext's ``xa`` needs nothing else: the engine is pure Python on that
subset, tables are drawn by :mod:`crashext.render.textable` when tabulate
cannot be imported, JSON by :mod:`crashext.jsontext`, snapshots with zlib.
So the lines carry only where PyKdump and this crashext are::

    extend /path/mpykdump.so
    epython /abs/site-packages/crashext/crash/register.py

``register.py`` registers ``xa`` (with its ``help xa`` page) when crash was
started with the shim directory on ``PYKDUMPPATH`` (:func:`export_line`,
or the ``crash-xa`` wrapper from :func:`write_wrapper`), and otherwise makes
``xa`` an alias of ``epython /abs/.../progs/xa.py`` (see
:mod:`crashext.crash` for why it cannot be both).

:func:`pykdump_python` reads the Python version PyKdump embeds from the
extension file (the magic number of its zipped ``.pyc`` files, else the
version string compiled into it); :func:`warnings` says when crashext's
code cannot run there.

>>> print(crashrc_text("/usr/lib/crash/extensions/mpykdump.so"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import zipfile
from typing import List, Optional, Tuple

from . import __version__
from .crash import NAME, alias_line, package_root, progs_dir, register_script, shim_path

#: Where PyKdump's extension usually is (``crash`` also searches its
#: extension directories for a bare ``extend mpykdump.so``).
MPYKDUMP_GUESSES = (
    "/usr/lib64/crash/extensions/mpykdump.so",
    "/usr/lib/crash/extensions/mpykdump.so",
    "/usr/lib/x86_64-linux-gnu/crash/extensions/mpykdump.so",
    "~/.crash/extensions/mpykdump.so",
    "~/.crash/mpykdump.so",
)

#: Oldest Python crashext's own code runs on (pyproject requires-python).
MIN_PYTHON = (3, 9)

#: ``.pyc`` magic numbers (importlib.util.MAGIC_NUMBER, first two bytes,
#: little endian) of the final releases, from CPython's
#: Lib/importlib/_bootstrap_external.py.
PYC_MAGIC = {3379: (3, 6), 3394: (3, 7), 3413: (3, 8), 3425: (3, 9),
             3439: (3, 10), 3495: (3, 11), 3531: (3, 12), 3571: (3, 13)}

#: At most this much of the extension is searched for a version string.
_MAX_SCAN = 256 << 20


def pykdump_python(mpykdump: str) -> Optional[Tuple[Tuple[int, int], str]]:
    """((major, minor), how it was found) of the Python embedded in
    ``mpykdump``, or None when it cannot be told.

    >>> pykdump_python("/usr/lib64/crash/extensions/mpykdump.so")  # doctest: +SKIP
    ((3, 11), 'pylib .pyc magic 3495')
    """
    path = os.path.expanduser(mpykdump)
    try:
        # The extension is an ELF file with its Python library appended as
        # a zip archive (zipfile finds the archive at the end).
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".pyc") and info.file_size >= 4:
                    with z.open(info) as f:
                        head = f.read(4)
                    magic = head[0] | head[1] << 8
                    if head[2:4] == b"\r\n" and magic in PYC_MAGIC:
                        return PYC_MAGIC[magic], "pylib .pyc magic %d" % magic
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        pass
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SCAN)
    except OSError:
        return None
    # libpython's version string (PY_VERSION) and its stdlib directory.
    found = {}
    for m in re.finditer(rb"(?:\x00|python)(3\.(\d{1,2}))(?:\.\d{1,2})?"
                         rb"(?:[abrc]+\d+)?[\x00/]", data):
        found[int(m.group(2))] = found.get(int(m.group(2)), 0) + 1
    if found:
        minor = max(found, key=lambda k: found[k])
        return (3, minor), "version string in the extension"
    return None


def _site_python(path: str) -> Optional[Tuple[int, int]]:
    """The Python an install directory belongs to (``.../python3.12/
    site-packages``), or None."""
    m = re.search(r"python(\d)\.(\d{1,2})", path)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_mpykdump() -> Optional[str]:
    for g in MPYKDUMP_GUESSES:
        p = os.path.expanduser(g)
        if os.path.isfile(p):
            return p
    return None


def export_line() -> str:
    """The shell line that lets PyKdump find the shim (``help xa``)."""
    return ("export PYKDUMPPATH=%s${PYKDUMPPATH:+:$PYKDUMPPATH}"
            % shlex.quote(progs_dir()))


def warnings(mpykdump: Optional[str]) -> List[str]:
    """What is wrong or worth knowing about the installation the lines
    point at (one line each; the CLI prints them on stderr)."""
    out = []
    mp = os.path.expanduser(mpykdump) if mpykdump else find_mpykdump()
    if mpykdump and not os.path.isfile(mp):
        out.append("%s does not exist (yet)" % mpykdump)
    if not mp:
        out.append("mpykdump.so not found: give --mpykdump PATH (the "
                   "'extend' line is left commented out)")
    for d in (register_script(), shim_path()):
        if any(c.isspace() for c in d):
            out.append("%r contains white space: crash splits .crashrc "
                       "lines at blanks" % d)
    if mp and os.path.isfile(mp):
        got = pykdump_python(mp)
        if got is None:
            out.append("cannot tell which Python %s embeds; crashext needs "
                       "%d.%d or newer" % (mp, MIN_PYTHON[0], MIN_PYTHON[1]))
        else:
            (major, minor), how = got
            if (major, minor) < MIN_PYTHON:
                out.append("%s embeds Python %d.%d (%s): crashext needs "
                           "%d.%d or newer, xa will not run there"
                           % ((mp, major, minor, how) + MIN_PYTHON))
            else:
                out.append("PyKdump embeds Python %d.%d (%s)"
                           % (major, minor, how))
                site = _site_python(package_root())
                if site is not None and site != (major, minor):
                    out.append(
                        "crashext is installed for Python %d.%d; inside "
                        "crash it runs on %d.%d as pure Python (it needs "
                        "no package of %s there: not click, not tabulate)"
                        % (site + (major, minor, package_root())))
    return out


def crashrc_text(mpykdump: Optional[str] = None) -> str:
    """The ~/.crashrc lines (comments explain; crash ignores # lines)."""
    mp = os.path.abspath(os.path.expanduser(mpykdump)) if mpykdump \
        else find_mpykdump()
    extend = ("extend %s" % mp) if mp else \
        "# extend /path/to/mpykdump.so    <- PyKdump (not found: add it)"
    reg = "epython %s" % register_script()
    lines = [
        "# crashext %s: the '%s' command in crash (from 'crashext crashrc')"
        % (__version__, NAME),
        extend,
        reg,
        "# register.py registers '%s' (help %s) when crash started with"
        % (NAME, NAME),
        "#   %s" % export_line(),
        "# (or through the crash-xa wrapper: crashext crashrc --wrapper "
        "FILE); otherwise",
        "# it makes '%s' this alias itself (an alias has no 'help %s' page,"
        % (NAME, NAME),
        "# and crash drops an alias when a command of that name is "
        "registered):",
        "#   " + alias_line(""),
    ]
    return "\n".join(lines) + "\n"


def wrapper_text(crash_bin: str = "crash") -> str:
    """A /bin/sh script that starts crash with the shim on PYKDUMPPATH."""
    return (
        "#!/bin/sh\n"
        "# crash with crashext's '%s' command registered ('help %s' works).\n"
        "# Written by 'crashext crashrc --wrapper' (crashext %s).\n"
        "PYKDUMPPATH=%s${PYKDUMPPATH:+:$PYKDUMPPATH}\n"
        "export PYKDUMPPATH\n"
        "exec %s \"$@\"\n"
        % (NAME, NAME, __version__, shlex.quote(progs_dir()),
           shlex.quote(crash_bin)))


def write_wrapper(path: str, crash_bin: str = "crash") -> str:
    """Write :func:`wrapper_text` to ``path`` (mode 755); return path."""
    path = os.path.expanduser(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(wrapper_text(crash_bin))
    os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IXUSR | stat.S_IXGRP
             | stat.S_IXOTH | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.replace(tmp, path)
    return path
