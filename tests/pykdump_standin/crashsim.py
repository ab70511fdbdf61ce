"""A crash session with PyKdump loaded, in its own interpreter, as strict
as the real embedded Python (test code).

Run as ``python3 -I -S crashsim.py --vmlinux V --vmcore C --ext SO
[--pykdumppath DIRS] [--bootstrap DIRS] [--cmds FILE]``; ``SO`` is the
stand-in ``mpykdump.so`` of :mod:`pylib` (``pylib.build_extension``).

1. The stand-in's C module (``crash.py``, drgn behind PyKdump's API) is
   loaded with the ``--bootstrap`` directories (where drgn lives) on
   ``sys.path``: it is a built-in of the real extension.
2. Then the interpreter is made what PyKdump embeds: every module the
   bootstrap imported is dropped from ``sys.modules`` (``crash`` and the
   interpreter's own start-up modules stay), ``sys.path`` becomes
   PyKdump's (``.``, ``SO/pylib``, the PYKDUMPPATH directories, ``SO``,
   ``SO/dist-packages``; the running script's directory is put first by
   the pykdump.API enter hook), C modules import only when they are core
   built-ins or linked into the extension (:data:`pylib.COMPILED_IN`),
   frozen modules only when pylib has them, and ``encodings`` searches
   ``SO/pylib/encodings`` only.  No ``site``, no site-packages.
3. Commands are read (``--cmds FILE`` as ``crash -i FILE``, else stdin) and
   run as typed at the ``crash>`` prompt; crash's terminal is file
   descriptor 1, written the way crash and PyKdump write it (C lines at
   once, Python output through a new buffered file object per epython
   run: ``crash.standin_use_fd``).

With ``--cmds``, every command is echoed (``crash> LINE``) before its
output, as crash does when it reads commands from a file.  On stdin (the
test driver, ``tests/strict_crash.py``), commands are not echoed and each
is followed by a marker line ``\\0END <status>`` (the status of the last
``xa`` run, from ``crashext.crash.last_status`` when that module is
loaded).  Lines starting with ``!`` are driver requests (see
:func:`_request`), never crash commands.
"""

import sys

STARTUP = set(sys.modules)          # before this file imports anything

import os  # noqa: E402  (already loaded at start-up: os, io, codecs...)


def _arg(argv, name, default=None):
    if name in argv:
        i = argv.index(name)
        return argv[i + 1]
    return default


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    vmlinux = _arg(argv, "--vmlinux")
    vmcore = _arg(argv, "--vmcore")
    so = os.path.abspath(_arg(argv, "--ext"))
    pkpath = [d for d in (_arg(argv, "--pykdumppath", "") or "").split(":")
              if d]
    boot = [d for d in (_arg(argv, "--bootstrap", "") or "").split(":") if d]
    cmds = _arg(argv, "--cmds")

    # -- 1. the C module (and, through it, drgn), with a full interpreter
    sys.path[:0] = [here] + boot
    # drgn loads its plugins (crashext's among them) lazily, by entry
    # point: not inside the emulated crash.
    os.environ["DRGN_DISABLE_PLUGINS"] = "*"
    import json                          # the driver's own (kept by reference)
    import importlib.machinery as machinery
    import crash
    crash.standin_open(vmlinux, vmcore, pykdumppath=pkpath,
                       ext_filename=so)
    crash.standin_use_fd(1)
    allowed_frozen = _pylib_names() | {"zipimport", "importlib._bootstrap",
                                       "importlib._bootstrap_external"}
    dynload = {}
    for p in sys.path:
        if p.endswith("lib-dynload") and os.path.isdir(p):
            wanted = _compiled_in()
            for f in os.listdir(p):
                name = f.split(".", 1)[0]
                if name in wanted:
                    dynload[name] = os.path.join(p, f)

    # -- 2. PyKdump's interpreter
    for name in list(sys.modules):
        if name not in STARTUP and name != "crash":
            del sys.modules[name]
    sys.path[:] = [".", so + "/pylib"] + pkpath + [so, so + "/dist-packages"]
    sys.path_importer_cache.clear()

    class Frozen(machinery.FrozenImporter):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name not in allowed_frozen:
                return None
            return super().find_spec(name, path, target)

    class CompiledIn:
        """The C modules linked into mpykdump.so (import like built-ins)."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            f = dynload.get(name)
            if f is None:
                return None
            loader = machinery.ExtensionFileLoader(name, f)
            return machinery.ModuleSpec(name, loader, origin=f)

        @staticmethod
        def invalidate_caches():
            pass

    sys.meta_path[:] = [machinery.BuiltinImporter, Frozen, CompiledIn,
                        machinery.PathFinder]
    enc = sys.modules.get("encodings")
    if enc is not None:
        enc.__path__ = [so + "/pylib/encodings"]
    for name in ("exit", "quit", "help", "copyright", "credits", "license"):
        try:
            delattr(__builtins__, name)
        except (AttributeError, TypeError):
            pass

    # -- 3. the session
    def status():
        m = sys.modules.get("crashext.crash")
        return getattr(m, "last_status", None)

    def run(line):
        try:
            out = crash.standin_command(line)
            if out:                     # a crash command's own output
                crash._show_direct(out)
        except crash.StandinCrashExit as e:
            crash._show_direct("\0EXIT %s\n" % e.code)
            raise SystemExit(e.code or 0)

    if cmds is not None:
        with open(cmds) as f:
            lines = f.read().splitlines()
        for line in lines:
            if line.strip() in ("q", "quit", "exit"):
                break
            crash._show_direct("crash> %s\n" % line)
            run(line)
        return 0
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.rstrip("\n")
        if line.startswith("!"):
            reply = _request(crash, json, line[1:])
            crash._show_direct("\0REPLY %s\n" % json.dumps(reply))
            continue
        run(line)
        crash._show_direct("\0END %s\n" % json.dumps(status()))


def _request(crash, json, req):
    """Driver requests: ``registrations``, ``pending`` (what the current
    sys.stdout object holds unflushed), ``reset [DIRS]`` (crash started
    again with PYKDUMPPATH=DIRS), ``stats reset|trace|untrace|get``,
    ``define NAME BEHAVIOUR`` (emulate crash command NAME: ``ok`` records
    the line and answers like crash's ``alias``, ``empty`` answers
    nothing, ``fail:MSG`` raises crash.error(MSG)), ``calls`` (lines the
    emulated commands got), ``setenv VAR VALUE`` / ``unsetenv VAR``."""
    word, _, rest = req.partition(" ")
    if word == "registrations":
        return {k: list(v) for k, v in crash.standin_registrations().items()}
    if word == "pending":
        crash._show_direct("\0PENDING\n")
        sys.stdout.flush()
        return None
    if word == "reset":
        dirs = [d for d in rest.split(":") if d]
        old = crash._st.pykdumppath
        crash.standin_reset(pykdumppath=dirs)
        sys.path[:] = [p for p in sys.path if p not in old]
        i = sys.path.index(crash._st.ext_filename + "/pylib") + 1
        sys.path[i:i] = dirs
        sys.path_importer_cache.clear()
        _CALLS.clear()
        return sys.path
    if word == "stats":
        st = crash.standin_stats
        if rest == "reset":
            st.reset()
        elif rest == "trace":
            st.reset()
            st.trace = True
        elif rest == "untrace":
            st.trace = False
        return {"counts": dict(st), "mem_calls": st.mem_calls,
                "log": [list(x) for x in st.log]}
    if word == "define":
        name, _, how = rest.partition(" ")

        def cmd(line, how=how):
            _CALLS.append(line)
            if how.startswith("fail:"):
                raise crash.error(how[5:])
            if how == "empty":
                return ""
            return ("ORIGIN   ALIAS    COMMAND\nruntime  %s\n"
                    % " ".join(line.split()[1:]))
        crash.standin_define_command(name, cmd)
        return None
    if word == "calls":
        return list(_CALLS)
    if word == "setenv":
        var, _, val = rest.partition(" ")
        os.environ[var] = val
        return None
    if word == "unsetenv":
        os.environ.pop(rest, None)
        return None
    return {"error": "unknown request %r" % word}


_CALLS = []


def _compiled_in():
    import pylib
    return pylib.COMPILED_IN - set(sys.builtin_module_names)


def _pylib_names():
    import pylib
    names = set()
    for rel in pylib.pylib_files():
        mod = rel[:-3].replace("/", ".")
        if mod.endswith(".__init__"):
            mod = mod[:-len(".__init__")]
        names.add(mod)
    return names


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
