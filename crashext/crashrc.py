"""``crashext crashrc``: the lines that add ``xa`` to crash (PyKdump).

PyKdump's embedded Python 3.11 sees only its own zipped standard library
and the ``PYKDUMPPATH`` directories, so the lines carry, computed here at
``crashext crashrc`` time, where this crashext and its pure-Python
dependencies (click, tabulate) are installed::

    extend /path/mpykdump.so
    epython /abs/site-packages/crashext/crash/register.py --path /abs/site-packages

``register.py`` registers ``xa`` (with its ``help xa`` page) when crash was
started with the shim directory on ``PYKDUMPPATH`` (:func:`export_line`,
or the ``crash-xa`` wrapper from :func:`write_wrapper`), and otherwise makes
``xa`` an alias of ``epython /abs/.../progs/xa.py`` (see
:mod:`crashext.crash` for why it cannot be both).

>>> print(crashrc_text("/usr/lib/crash/extensions/mpykdump.so"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import stat
from typing import List, Optional

from . import __version__
from .crash import (ENV_PATH, NAME, alias_line, package_root, progs_dir,
                    register_script, shim_path)

#: Where PyKdump's extension usually is (``crash`` also searches its
#: extension directories for a bare ``extend mpykdump.so``).
MPYKDUMP_GUESSES = (
    "/usr/lib64/crash/extensions/mpykdump.so",
    "/usr/lib/crash/extensions/mpykdump.so",
    "/usr/lib/x86_64-linux-gnu/crash/extensions/mpykdump.so",
    "~/.crash/extensions/mpykdump.so",
    "~/.crash/mpykdump.so",
)

#: Pure-Python packages the shim's renderers import.
DEPENDENCIES = ("click", "tabulate", "wcwidth")


def _root_of(module: str) -> Optional[str]:
    """The sys.path directory ``module`` is imported from, or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in",
                                                          "frozen"):
        return None
    path = os.path.realpath(spec.origin)
    if spec.submodule_search_locations:         # a package: .../pkg/__init__.py
        path = os.path.dirname(path)
    return os.path.dirname(path)


def python_path() -> List[str]:
    """Directories the embedded Python needs: crashext's root, then where
    click, tabulate (and wcwidth, if installed) are."""
    out = [package_root()]
    for mod in DEPENDENCIES:
        d = _root_of(mod)
        if d and d not in out:
            out.append(d)
    return out


def find_mpykdump() -> Optional[str]:
    for g in MPYKDUMP_GUESSES:
        p = os.path.expanduser(g)
        if os.path.isfile(p):
            return p
    return None


def extra_path() -> List[str]:
    """python_path() without crashext's root (the scripts find that from
    their own location)."""
    return python_path()[1:]


def export_line() -> str:
    """The shell line that lets PyKdump find the shim (``help xa``)."""
    return ("export PYKDUMPPATH=%s${PYKDUMPPATH:+:$PYKDUMPPATH}"
            % shlex.quote(progs_dir()))


def warnings(mpykdump: Optional[str]) -> List[str]:
    out = []
    if mpykdump and not os.path.isfile(os.path.expanduser(mpykdump)):
        out.append("%s does not exist (yet)" % mpykdump)
    if not mpykdump and not find_mpykdump():
        out.append("mpykdump.so not found: give --mpykdump PATH (the "
                   "'extend' line is left commented out)")
    for d in [register_script(), shim_path()] + python_path():
        if any(c.isspace() for c in d):
            out.append("%r contains white space: crash splits .crashrc "
                       "lines at blanks" % d)
    missing = [m for m in ("click", "tabulate") if _root_of(m) is None]
    if missing:
        out.append("%s not installed: xa's table form needs tabulate"
                   % ", ".join(missing))
    return out


def crashrc_text(mpykdump: Optional[str] = None) -> str:
    """The ~/.crashrc lines (comments explain; crash ignores # lines)."""
    mp = os.path.abspath(os.path.expanduser(mpykdump)) if mpykdump \
        else find_mpykdump()
    extend = ("extend %s" % mp) if mp else \
        "# extend /path/to/mpykdump.so    <- PyKdump (not found: add it)"
    extra = extra_path()
    reg = "epython %s" % register_script()
    if extra:
        reg += " --path %s" % os.pathsep.join(extra)
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
        "#   " + alias_line(os.pathsep.join(extra)),
    ]
    return "\n".join(lines) + "\n"


def wrapper_text(crash_bin: str = "crash") -> str:
    """A /bin/sh script that starts crash with the shim on PYKDUMPPATH."""
    extra = os.pathsep.join(extra_path())
    return (
        "#!/bin/sh\n"
        "# crash with crashext's '%s' command registered ('help %s' works).\n"
        "# Written by 'crashext crashrc --wrapper' (crashext %s).\n"
        "PYKDUMPPATH=%s${PYKDUMPPATH:+:$PYKDUMPPATH}\n"
        "%s=%s${%s:+:$%s}\n"
        "export PYKDUMPPATH %s\n"
        "exec %s \"$@\"\n"
        % (NAME, NAME, __version__, shlex.quote(progs_dir()), ENV_PATH,
           shlex.quote(extra), ENV_PATH, ENV_PATH, ENV_PATH,
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
