"""The ``xa`` command inside crash, through PyKdump.

Two scripts crash runs (both import only the standard library until
``sys.path`` is set up, and this package is stdlib-only):

* ``register.py`` (``epython /abs/.../crashext/crash/register.py`` in
  ``~/.crashrc``, lines from ``crashext crashrc``): puts crashext and its
  pure-Python dependencies (click, tabulate) on ``sys.path`` for the
  session and makes ``xa`` a crash command, see :func:`register_main`;
* ``progs/xa.py``, the *shim*: what crash runs for ``xa ARGS``; it builds a
  :class:`~crashext.backends.pykdump.PykdumpMemory` and calls
  :func:`crashext.frontdoor.run_xa`, see :func:`shim_main`.

How ``xa`` reaches the shim (facts from crash 8.0.2 + PyKdump 3.5, see
/work/shared/pykdump-api.md and docs/crash.md):

* a registered epython command ``xa`` runs a script named ``xa``/``xa.py``
  found in ``.``, then the ``PYKDUMPPATH`` directories (read once from
  crash's environment when the extension loads: ``.crashrc`` cannot set
  it), then PyKdump's own ``progs/``; registration also gives ``help xa``;
* ``alias xa epython /abs/.../progs/xa.py`` runs the shim from anywhere,
  but crash *deletes* an alias when an extension command of the same name
  is registered ("alias "xa" deleted: name clash with extension command",
  checked with crash 8.0.2), and refuses an alias named like an existing
  command.  So the two cannot be combined: :func:`register_main`
  registers ``xa`` when PyKdump will find the shim (PYKDUMPPATH holds
  ``progs/``: the ``crash-xa`` wrapper), and otherwise makes ``xa`` an
  alias of the shim (``xa help`` then shows the help page; ``help xa``
  does not).
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

NAME = "xa"
#: Extra ``sys.path`` directories (colon-separated) for the embedded
#: Python: where click and tabulate are installed.  Set by register.py
#: from its ``--path`` argument (os.environ lives as long as crash) or by
#: the crash-xa wrapper.
ENV_PATH = "CRASHEXT_PATH"
#: Shim option (first in argv) carrying those directories, for the alias
#: route: ``alias xa epython /abs/xa.py --crashext-path DIRS`` works even
#: if os.environ did not last between epython runs.
PATH_OPT = "--crashext-path"
#: Marker line in the shim (to tell our xa.py from someone else's).
SHIM_MARK = "crashext-xa-shim"

#: Status of the last ``xa`` run in this crash session (crash has no exit
#: status for a command; scripts may look here).
last_status: Optional[int] = None


def package_dir() -> str:
    """The ``crashext`` package directory."""
    return os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def package_root() -> str:
    """The directory to put on sys.path for ``import crashext``."""
    return os.path.dirname(package_dir())


def progs_dir() -> str:
    """The directory holding the shim (put it on PYKDUMPPATH)."""
    return os.path.join(package_dir(), "crash", "progs")


def shim_path() -> str:
    return os.path.join(progs_dir(), NAME + ".py")


def register_script() -> str:
    return os.path.join(package_dir(), "crash", "register.py")


def setup_path(extra: Sequence[str] = ()) -> List[str]:
    """Append crashext's root, ``extra`` and the ``CRASHEXT_PATH``
    directories to sys.path (appended, never in front: site-packages must
    not shadow the embedded interpreter's own modules).  Returns the
    directories added."""
    dirs = [package_root()] + list(extra)
    dirs += [d for d in os.environ.get(ENV_PATH, "").split(os.pathsep)]
    added = []
    for d in dirs:
        if d and d not in sys.path and os.path.isdir(d):
            sys.path.append(d)
            added.append(d)
    return added


def alias_line(dirs: Optional[str] = None) -> str:
    """The crash ``alias`` that runs the shim by absolute path, carrying
    ``dirs`` (default: the ``CRASHEXT_PATH`` directories) in its
    arguments."""
    line = "alias %s epython %s" % (NAME, shim_path())
    if dirs is None:
        dirs = os.environ.get(ENV_PATH, "")
    if dirs:
        line += " %s %s" % (PATH_OPT, dirs)
    return line


def _is_ours(path: str) -> bool:
    try:
        if os.path.realpath(path) == os.path.realpath(shim_path()):
            return True
        with open(path, "r", errors="replace") as f:
            return SHIM_MARK in f.read(4096)
    except OSError:
        return False


def find_shim(name: str = NAME) -> Optional[str]:
    """The script PyKdump would run for ``name`` (``./NAME``,
    ``./NAME.py``, then each PYKDUMPPATH directory -- which are also on the
    embedded sys.path), or None.  PyKdump's built-in progs/ (inside
    mpykdump.so) are not searched."""
    dirs = ["."] + [d for d in os.environ.get("PYKDUMPPATH", "").split(":")
                    if d]
    dirs += [d for d in sys.path if d and d not in dirs
             and not d.endswith((".zip", ".so"))]
    for d in dirs:
        for cand in (os.path.join(d, name), os.path.join(d, name + ".py")):
            if os.path.isfile(cand):
                return cand
    return None


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def register_main(argv: Sequence[str]) -> int:
    """Body of register.py: ``register.py [--path DIRS] [--alias |
    --register] [--quiet]``.

    * ``--path DIRS``: colon-separated directories for sys.path (where
      click and tabulate live), remembered in ``$CRASHEXT_PATH`` for the
      shim's later runs;
    * default: register ``xa`` (with its ``help xa`` page) when the shim is
      where PyKdump looks for it, else make ``xa`` an alias of
      ``epython /abs/.../progs/xa.py``; ``--register`` / ``--alias`` force
      one way.
    """
    import argparse

    ap = argparse.ArgumentParser(prog="register.py", add_help=False,
                                 allow_abbrev=False)
    ap.add_argument("--path", default="")
    ap.add_argument("--alias", action="store_true")
    ap.add_argument("--register", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    try:
        args, _rest = ap.parse_known_args(list(argv))
    except SystemExit:
        _say("crashext: error: register.py [--path DIRS] [--alias|--register]")
        return 2
    extra = [d for d in args.path.split(os.pathsep) if d]
    if extra:
        old = [d for d in os.environ.get(ENV_PATH, "").split(os.pathsep) if d]
        os.environ[ENV_PATH] = os.pathsep.join(
            old + [d for d in extra if d not in old])
    setup_path(extra)
    try:
        import crash                        # PyKdump's C module
        from .. import __version__
        from ..frontdoor import HELP, SHORT, SYNOPSIS
    except Exception as e:
        _say("crashext: error: cannot set up xa: %s: %s" % (type(e).__name__, e))
        return 2

    shim = find_shim()
    ours = shim is not None and _is_ours(shim)
    use_alias = args.alias or (not args.register and not ours)
    if shim is not None and not ours and not args.alias:
        _say("crashext: warning: %s is not crashext's xa shim: making 'xa' "
             "an alias instead" % os.path.abspath(shim))
        use_alias = True
    if not use_alias:
        listed = getattr(crash, "get_epython_cmds", None)
        try:
            if listed is not None and NAME in listed():
                return 0                    # already registered (2nd .crashrc)
        except Exception:
            pass
        if crash.register_epython_prog(NAME, SHORT, SYNOPSIS, HELP):
            if not args.quiet:
                _say("crashext %s: 'xa' registered (help xa)" % __version__)
            return 0
        return 1                            # crash printed why
    line = alias_line()
    try:
        out = crash.exec_crash_command(line)
        ok = "cannot" not in str(out) and "invalid" not in str(out)
    except Exception as e:                  # crash.error, or the stand-in
        out, ok = str(e), False
    if ok:
        if not args.quiet:
            _say("crashext %s: 'xa' is an alias of epython %s (xa help; for "
                 "'help xa' start crash with PYKDUMPPATH=%s)"
                 % (__version__, shim_path(), progs_dir()))
        return 0
    _say("crashext: could not set up 'xa' (%s): add this line to "
         "~/.crashrc: %s" % (" ".join(str(out).split()) or "alias failed",
                             line))
    return 1


def shim_main(argv: Sequence[str]) -> int:
    """Body of the shim: ``xa ARGV`` on the crash session's dump."""
    global last_status
    argv = list(argv)
    extra: List[str] = []
    if argv[:1] == [PATH_OPT] and len(argv) > 1:      # the alias route
        extra = [d for d in argv[1].split(os.pathsep) if d]
        argv = argv[2:]
    setup_path(extra)
    try:
        from ..backends.pykdump import PykdumpMemory
        from ..frontdoor import EXIT_FAILED, run_xa
    except Exception as e:
        _say("xa: error: cannot import crashext: %s: %s (run 'crashext "
             "crashrc' again)" % (type(e).__name__, e))
        last_status = 2
        return 2
    try:
        last_status = run_xa(PykdumpMemory(), list(argv), sys.stdout)
    except Exception as e:                  # --traceback re-raises
        if "--traceback" in argv:
            raise
        _say("xa: error: internal error: %s: %s" % (type(e).__name__, e))
        last_status = EXIT_FAILED
    finally:
        sys.stdout.flush()
    return last_status
