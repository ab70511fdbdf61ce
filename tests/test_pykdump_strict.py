"""The strict PyKdump stand-in itself (tests/pykdump_standin/crashsim.py),
checked against the facts of ../shared/pykdump-api.md, and what it shows:

* its interpreter imports exactly what PyKdump's does (the doc's lists),
  with PyKdump's ``sys.path`` order and no site-packages;
* run on crashext as it was at main 75f6eb4, it fails ``xa check``,
  ``xa check -f json`` and ``xa capture`` with the error lines the real
  crash 8.0.2 + PyKdump printed (the issue that made it strict);
* every ``xa`` subcommand and form works there now, output complete and
  in order with crash's own lines when crash writes to a file or a pipe
  (``crash -i CMDS > out``), and ``--ofile`` gets the whole result.

Lab dumps of every kernel family; skipped when absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("drgn")
from click.testing import CliRunner  # noqa: E402
from strict_crash import STANDIN, run_batch  # noqa: E402
from tests.lab import labdumps  # noqa: E402

import crashext.crash as xacrash  # noqa: E402
from crashext.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.lab

REGISTER = xacrash.register_script()
PROGS = xacrash.progs_dir()
TIMING = "\n ** Execution took"
OLD_MAIN = "75f6eb4"

sys.path.insert(0, STANDIN)
import pylib  # noqa: E402
sys.path.remove(STANDIN)


def _lab(family):
    m = labdumps.load_manifest(family)
    if m is None:
        pytest.skip("no lab run of %s (../shared/lab/mkdump.sh --quick "
                    "--kernel %s)" % (family, family))
    elf, vml = labdumps.dump_path(m, "elf"), labdumps.vmlinux_path(m)
    if not elf or not vml:
        pytest.skip("lab run %s lacks its ELF dump or vmlinux" % family)
    return m, vml, elf


@pytest.fixture(params=list(labdumps.FAMILIES))
def lab(request):
    return _lab(request.param)


def _sections(out):
    """crash -i output -> [(command line, what followed it)]."""
    parts = re.split(r"^crash> (.*)\n", out, flags=re.M)
    assert parts[0] == "", parts[0][:200]
    return list(zip(parts[1::2], parts[2::2]))


def _cli(vml, elf, *args):
    r = CliRunner().invoke(cli_main, [args[0], "--vmcore", elf, "--vmlinux",
                                      vml] + list(args[1:]))
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        r.exception
    return r.stdout, r.exit_code


# ---------------------------------------------------------------- strictness
PROBE = r"""
from pykdump.API import *
import sys, builtins
res = {"path": list(sys.path), "ok": [], "fail": {},
       "site_builtins": [n for n in ("exit", "quit", "help", "copyright")
                         if hasattr(builtins, n)]}
for m in NAMES:
    try:
        __import__(m)
        res["ok"].append(m)
    except Exception as e:
        res["fail"][m] = "%s: %s" % (type(e).__name__, e)
print("PROBE", repr(res))
"""


def test_standin_imports_exactly_what_pykdump_has(tmp_path):
    """PyKdump's sys.path order; every module the doc lists as failing
    fails; the pylib modules and the compiled-in C modules import (but
    those whose own imports are missing: gzip, pathlib, urllib.parse...);
    third-party packages and crashext itself are not there."""
    m, vml, elf = _lab(labdumps.FAMILIES[0])
    names = sorted(set(pylib.MISSING) | set(pylib.COMPILED_IN)
                   | {r[:-3].replace("/", ".").replace(".__init__", "")
                      for r in pylib.pylib_files()}
                   | {"drgn", "click", "tabulate", "crashext", "wcwidth",
                      "PIL", "_json", "_pickle", "_ctypes", "_decimal",
                      "site"})
    probe = tmp_path / "probe.py"
    probe.write_text("NAMES = %r\n" % names + PROBE)
    out = run_batch(vml, elf, ["epython %s" % probe], pykdumppath=["/nowhere"],
                    workdir=str(tmp_path))
    line = [ln for ln in out.splitlines() if ln.startswith("PROBE ")]
    assert line, out[-2000:]
    import ast
    res = ast.literal_eval(line[0][len("PROBE "):])
    so = res["path"][2][:-len("/pylib")]
    assert res["path"] == [str(tmp_path), ".", so + "/pylib", "/nowhere", so,
                           so + "/dist-packages"]
    assert not res["site_builtins"]
    for mod in pylib.MISSING:
        assert mod in res["fail"], mod
    for mod in ("drgn", "click", "tabulate", "crashext", "PIL", "_json",
                "_pickle", "_ctypes", "_decimal"):
        assert res["fail"].get(mod, "").startswith("ModuleNotFoundError"), \
            (mod, res["fail"].get(mod))
    for mod in ("argparse", "dataclasses", "typing", "struct", "zlib", "re",
                "textwrap", "bisect", "collections", "functools", "enum",
                "inspect", "io", "os", "array", "math", "binascii",
                "tempfile", "shutil", "random", "datetime", "optparse",
                "importlib.util", "_struct", "unicodedata", "site"):
        assert mod in res["ok"], (mod, res["fail"].get(mod))
    # What fails of PyKdump's own list fails for a missing import of its
    # own (never because the stand-in lost the module itself).
    for mod, why in res["fail"].items():
        if mod in names and mod not in pylib.MISSING and why.startswith(
                "ModuleNotFoundError"):
            missing = why.split("'")[1]
            assert missing != mod or mod not in res["ok"]


def test_standin_fails_main_75f6eb4_like_real_pykdump(tmp_path):
    """crashext at main 75f6eb4, installed as its README said (the
    ``crashext crashrc`` lines, click and tabulate on --path): under the
    strict stand-in, ``xa chat`` works and ``xa check``, ``xa check -f
    json`` and ``xa capture`` fail with the lines seen in the real crash
    8.0.2 + PyKdump (issue 11)."""
    def have():
        return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e",
                               OLD_MAIN + "^{commit}"],
                              capture_output=True).returncode == 0
    if not have():
        # a shallow clone: try to fetch the history once
        subprocess.run(["git", "-C", str(ROOT), "fetch", "-q", "--unshallow"],
                       capture_output=True, timeout=300)
    if not have():
        pytest.skip("commit %s not in this clone (shallow?)" % OLD_MAIN)
    old = tmp_path / "old"
    old.mkdir()
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_MAIN,
                           "crashext"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=arch.stdout,
                   check=True)
    text = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
         "from crashext.crashrc import crashrc_text; "
         "print(crashrc_text('/x/mpykdump.so'))" % str(old)],
        capture_output=True, text=True, check=True, cwd=str(old)).stdout
    rc = [ln for ln in text.splitlines() if ln.startswith("epython ")]
    assert len(rc) == 1 and "--path" in rc[0], text
    m, vml, elf = _lab(labdumps.FAMILIES[0])
    t = m["files"][0]["inode"]
    snap = tmp_path / "x.snap"
    out = run_batch(vml, elf, [rc[0], "xa chat %s" % t, "xa check %s" % t,
                               "xa check -f json %s" % t,
                               "xa capture -o %s %s" % (snap, t)],
                    pykdumppath=[str(old / "crashext" / "crash" / "progs")],
                    workdir=str(tmp_path))
    sec = dict(_sections(out))
    assert sec["xa chat %s" % t].startswith("```\nCLEAN ")
    want = {
        "xa check %s" % t: "xa: error: cannot import importlib.metadata: "
                           "No module named 'importlib.metadata'",
        "xa check -f json %s" % t: "xa: error: cannot import json: "
                                   "No module named 'json'",
        "xa capture -o %s %s" % (snap, t): "xa: error: cannot import "
                                           "_compression: No module named "
                                           "'_compression'",
    }
    for cmd, line in want.items():
        assert sec[cmd].startswith(line), (cmd, sec[cmd][:300])
    assert not snap.exists()


# ---------------------------------------------------------------- every form
def _forms(t, snap, ofile):
    return [
        ("xa help", None),
        ("xa check %s" % t, ("check", t)),
        ("xa check -f chat %s" % t, ("check", "-f", "chat", t)),
        ("xa check -f json %s" % t, ("check", "-f", "json", t)),
        ("xa chat %s" % t, ("chat", t)),
        ("xa dump %s" % t, ("dump", t)),
        ("xa dump --flat %s" % t, ("dump", "--flat", t)),
        ("xa dump -f json %s" % t, ("dump", "-f", "json", t)),
        ("xa scan", ("scan",)),
        ("xa scan -f json", ("scan", "-f", "json")),
        ("xa scan --all", ("scan", "--all")),
        ("xa scan --slab", ("scan", "--slab")),
        ("xa capture -o %s %s" % (snap, t), None),
        ("xa check -o %s %s" % (ofile, t), None),
        ("xa check --png /tmp/never.png %s" % t, None),
        ("sys", None),
    ]


def test_every_form_inside_pykdump_to_a_file(lab, tmp_path):
    """``crash -i CMDS > out`` (a regular file): each xa command's output
    comes right after its command line and before PyKdump's timing line,
    complete, equal to the CLI's; the capture replays; -o FILE holds the
    whole table; --png says in one line why not."""
    m, vml, elf = lab
    t = m["files"][0]["inode"]
    snap, ofile = tmp_path / "x.snap", tmp_path / "check.txt"
    forms = _forms(t, snap, ofile)
    out = run_batch(vml, elf, ["epython %s" % REGISTER]
                    + [f for f, _ in forms], pykdumppath=[PROGS],
                    out="file", workdir=str(tmp_path))
    sec = _sections(out)
    assert [c for c, _ in sec] == ["epython %s" % REGISTER] + \
        [f for f, _ in forms]
    for (cmd, text), (_f, cli_args) in zip(sec[1:], forms):
        if cmd == "sys":
            assert "RELEASE: %s" % m["release"] in text
            continue
        assert "Traceback" not in text and "cannot import" not in text, \
            (cmd, text[:500])
        # PyKdump names the command and the dump first (stdout is a file)
        banner, sep, rest = text.partition(" %s (%s) " % (elf, m["release"]))
        assert sep, (cmd, text[:300])
        body = rest.split("\n", 1)[1]
        assert body.count(TIMING) == 1 and body.endswith("(CPU)\n"), \
            (cmd, body[-300:])
        body = body.partition(TIMING)[0]
        if cli_args is None:
            continue
        ref, _code = _cli(vml, elf, *cli_args)
        assert body == ref, (cmd, body[:300], ref[:300])
    by = dict(sec)
    assert by["xa help"].count("NAME\n  xa - ") == 1
    assert "wrote %s (" % snap in by["xa capture -o %s %s" % (snap, t)]
    r = CliRunner().invoke(cli_main, ["chat", "--snapshot", str(snap)])
    assert r.exit_code == 0 and r.stdout == _cli(vml, elf, "chat", t)[0]
    assert ofile.read_text() == _cli(vml, elf, "check", t)[0]
    png = by["xa check --png /tmp/never.png %s" % t].partition(TIMING)[0]
    err = [ln for ln in png.splitlines() if ln.startswith("xa: error:")]
    assert len(err) == 1 and "--png" in err[0] and "Pillow" in err[0], png
    assert not os.path.exists("/tmp/never.png")


def test_output_order_through_a_pipe(lab, tmp_path):
    """The same through a pipe (``crash -i CMDS | less``): no banner, every
    output between its command line and its timing line."""
    m, vml, elf = lab
    ts = [f["inode"] for f in m["files"][:3]]
    lines = ["epython %s" % REGISTER]
    for t in ts:
        lines += ["xa chat %s" % t, "sys", "xa check -f json %s" % t,
                  "xa nosuch"]
    out = run_batch(vml, elf, lines, pykdumppath=[PROGS],
                    workdir=str(tmp_path))
    sec = _sections(out)
    assert [c for c, _ in sec] == lines
    for cmd, text in sec[1:]:
        if cmd == "sys":
            assert text.lstrip().startswith("KERNEL:") and TIMING not in text
            continue
        assert text.count(TIMING) == 1, (cmd, text[-300:])
        body = text.partition(TIMING)[0]
        if cmd.startswith("xa chat"):
            assert body.startswith("```\n") and body.endswith("```\n\n")
        elif cmd.startswith("xa check"):
            assert json.loads(body)["schema"].startswith("crashext.analysis/")
        else:
            assert body.startswith("xa: error: unknown command 'nosuch'")
