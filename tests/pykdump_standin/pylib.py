"""What PyKdump's embedded Python can import, as data, and a stand-in
``mpykdump.so`` built from it (test code).

The layout follows PyKdump's build (``Extension/makestdlib.py``): each
listed module byte-compiled to ``pylib/NAME.pyc`` (no sources, no
``__pycache__``), plus an empty ``site.pyc``.

Facts from ../shared/pykdump-api.md ("The embedded standard library",
verified by importing each module inside a real crash 8.0.2 + PyKdump 3.5,
Python 3.11) and PyKdump's own build lists (``Extension/minpylib-3.X.lst``
and ``Extension/Setup.local-3.X``: the pure-Python modules zipped into
``mpykdump.so/pylib``, the C modules linked into the extension).

:func:`build_extension` writes a zip archive named ``mpykdump.so`` laid
out as the real one: ``pylib/`` (those standard modules, copied from this
interpreter's standard library, which must be the same minor version),
``pykdump/`` (the stand-in API package) and ``progs/``.  crashsim.py puts
``<so>/pylib``, ``<so>`` and ``<so>/dist-packages`` on ``sys.path`` the way
PyKdump does, so a module that is not in the list cannot be imported.
"""

from __future__ import annotations

import os
import py_compile
import sys
import sysconfig
import zipfile
from typing import Dict, List

#: Python minor version of the PyKdump whose lists these are.
PYTHON = (3, 11)

#: pylib: top-level modules (file ``NAME.py``).
MODULES = """
abc argparse ast base64 bisect codecs codeop code _collections_abc
contextlib copy copyreg cProfile dataclasses datetime dis enum fnmatch
functools __future__ genericpath getopt gettext gzip heapq inspect io
keyword linecache locale ntpath operator opcode optparse os pathlib pkgutil
posixpath pprint profile pstats random reprlib runpy selectors shutil
signal socket sre_compile sre_constants sre_parse stat string _strptime
struct tempfile textwrap tokenize token traceback trace tty types typing
warnings weakref _weakrefset
""".split()

#: pylib: packages and the submodules shipped of each ("*": all of it).
PACKAGES: Dict[str, List[str]] = {
    "collections": ["__init__", "abc"],
    "encodings": ["__init__", "aliases", "ascii", "cp437", "latin_1",
                  "utf_8"],
    "importlib": ["__init__", "_abc", "abc", "machinery", "util",
                  "resources/*"],
    "re": ["*"],                      # a package since 3.11
    "urllib": ["__init__", "error", "parse", "request", "response",
               "robotparser"],
}

#: C modules linked into mpykdump.so (Setup.local) besides the
#: interpreter's core built-ins (sys.builtin_module_names).
COMPILED_IN = frozenset("""
zlib select _struct _socket math readline _sha1 _sha256 _sha512 _sha3
_md5 _blake2 _datetime array binascii _random unicodedata _lsprof _codecs
""".split())

#: What the doc lists as failing to import inside PyKdump (some because
#: they are absent, some because their own imports are).
MISSING = """
json importlib.metadata _compression gzip threading subprocess logging
zipfile shlex glob hashlib pathlib platform decimal fractions statistics
queue concurrent.futures multiprocessing ctypes pickle csv uuid
urllib.parse html xml email sqlite3 ssl lzma bz2
""".split()


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def pylib_files() -> List[str]:
    """Paths (relative to the standard library) of the pylib modules."""
    base = stdlib_dir()
    out = [m + ".py" for m in MODULES]
    for pkg, subs in PACKAGES.items():
        for sub in subs:
            if sub.endswith("*"):
                d = os.path.join(pkg, sub[:-1]) if sub != "*" else pkg
                for f in sorted(os.listdir(os.path.join(base, d))):
                    if f.endswith(".py"):
                        out.append(os.path.join(d, f))
            else:
                out.append(os.path.join(pkg, sub + ".py"))
    return out


def build_extension(path: str, api_dir: str) -> str:
    """Write the stand-in ``mpykdump.so`` zip at ``path`` (pylib, the
    pykdump package from ``api_dir``, progs/); return ``path``."""
    if sys.version_info[:2] != PYTHON:
        raise RuntimeError("the PyKdump stand-in embeds Python %d.%d; this "
                           "is %d.%d" % (PYTHON + sys.version_info[:2]))
    base = stdlib_dir()
    tmp = path + ".tmp"
    pyc = path + ".pyc.tmp"
    empty = path + ".site.py"
    with open(empty, "w"):
        pass
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for src, rel in [(os.path.join(base, r), r) for r in pylib_files()] \
                + [(empty, "site.py")]:
            py_compile.compile(src, pyc, doraise=True)
            z.write(pyc, "pylib/" + rel + "c")
        for f in sorted(os.listdir(api_dir)):
            if f.endswith(".py"):
                z.write(os.path.join(api_dir, f), "pykdump/" + f)
        z.writestr("progs/README", "PyKdump's built-in programs\n")
        z.writestr("dist-packages/README", "nothing installed\n")
    # The real extension is an ELF shared object with the zip appended.
    with open(tmp, "rb") as f:
        archive = f.read()
    with open(tmp, "wb") as f:
        f.write(b"\x7fELF\x02\x01\x01" + b"\0" * 57
                + b"PyKdump stand-in: Python %d.%d\0" % PYTHON)
        f.write(archive)
    os.replace(tmp, path)
    os.unlink(pyc)
    os.unlink(empty)
    return path
