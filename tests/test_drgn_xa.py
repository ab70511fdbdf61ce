"""``xa`` in drgn and drgn-crash (crashext.drgn_plugin, loaded through the
``drgn.plugins`` entry point) on lab dumps of both kernels: drgn's own
command runners (``drgn.commands.run_command`` and the crash namespace's
``run``) must print what the standalone CLI prints for the same target,
and return its exit status.  6.12 is the case that matters: Debian's
crash 8.0.2 cannot open those dumps, drgn-crash can.

Skipped when the lab dumps (or drgn's command API) are absent.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.lab import labdumps  # noqa: E402

drgn = pytest.importorskip("drgn")
commands = pytest.importorskip("drgn.commands")
from click.testing import CliRunner  # noqa: E402

from crashext import frontdoor  # noqa: E402
from crashext.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.lab

FAMILIES = list(labdumps.FAMILIES)
_progs = {}


def _source(key):
    """(vmlinux, vmcore, files [{path, inode}], expected status)."""
    if key.startswith("planted-"):
        from tests.lab import plant
        t = plant.ensure_planted(key[len("planted-"):-len("-all")])
        if t is None:
            pytest.skip("no lab run to plant %s into" % key)
        files = []
        for c in t["cases"]:
            if c.get("inode") and c["inode"] not in [f["inode"] for f in files]:
                files.append({"path": c["file"], "inode": c["inode"]})
        return t["vmlinux"], t["planted"], files, 1
    run = labdumps.elf_run(key)
    if run is None:
        pytest.skip("no lab run (ELF dump + vmlinux) for %s in %s"
                    % (key, labdumps.lab_dir()))
    m, elf, vmlinux = run
    return vmlinux, elf, m["files"], 0


def program(key):
    """A drgn Program on the dump, made as drgn makes one (the plugins,
    ours included, load when the core dump is set)."""
    if key not in _progs:
        vmlinux, vmcore, files, status = _source(key)
        prog = drgn.Program()
        prog.set_core_dump(vmcore)
        prog.load_debug_info([vmlinux])
        prog.config["crash_scroll"] = False        # no pager in tests
        _progs[key] = (prog, vmlinux, vmcore, files, status)
    return _progs[key]


def crash_ns():
    try:
        from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE
    except ImportError:
        pytest.skip("this drgn has no crash command namespace")
    return CRASH_COMMAND_NAMESPACE


def run(prog, line, crash=False):
    """(stdout, stderr, return value) of one drgn command."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        if crash:
            ret = crash_ns().run(prog, line, globals={})
        else:
            ret = commands.run_command(prog, line, globals={})
    return out.getvalue(), err.getvalue(), ret


def cli(vmlinux, vmcore, *args):
    r = CliRunner().invoke(cli_main, [args[0], "--vmcore", vmcore,
                                      "--vmlinux", vmlinux] + list(args[1:]))
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        r.exception
    return r.stdout, r.stderr, r.exit_code


@pytest.fixture(params=FAMILIES + ["planted-%s-all" % f for f in FAMILIES])
def dump(request):
    return program(request.param)


# ------------------------------------------------------------ the plugin
def test_plugin_registered_through_entry_point():
    import importlib.metadata
    eps = importlib.metadata.entry_points(group="drgn.plugins")
    assert any(e.name == "crashext" and e.value == "crashext.drgn_plugin"
               for e in eps)
    prog = program("6.12")[0]
    assert "crashext.drgn_plugin" in sys.modules
    from crashext import drgn_plugin
    assert "drgn" in drgn_plugin.registered
    cmd = commands.DEFAULT_COMMAND_NAMESPACE.lookup(prog, "xa")
    assert cmd.description() == frontdoor.SHORT
    assert crash_ns().lookup(prog, "xa") is cmd
    assert "crash" in drgn_plugin.registered
    # not offered for programs that are not a Linux kernel
    with pytest.raises(commands.CommandNotFoundError):
        commands.DEFAULT_COMMAND_NAMESPACE.lookup(drgn.Program(), "xa")


def test_plugin_load_prints_nothing(tmp_path):
    """drgn imports the plugin for every Program: no output, no warning
    (drgn logs a plugin that fails to load as a warning)."""
    vmlinux, vmcore, _f, _s = _source("6.12")
    code = ("import logging, drgn\n"
            "logging.basicConfig(level=logging.DEBUG)\n"
            "p = drgn.Program()\n"
            "p.set_core_dump(%r)\n"
            "import sys\n"
            "print('LOADED', 'crashext.drgn_plugin' in sys.modules)\n" % vmcore)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "LOADED True\n"
    assert "loaded entry point 'crashext = crashext.drgn_plugin'" in p.stderr
    assert "failed" not in p.stderr and "Traceback" not in p.stderr


def test_module_import_without_drgn_commands_is_silent(tmp_path):
    """A drgn without the command API: the plugin imports and does
    nothing."""
    code = ("import sys\n"
            "sys.modules['drgn.commands'] = None\n"
            "sys.path.insert(0, %r)\n"
            "import crashext.drgn_plugin as p\n"
            "print('REGISTERED', p.registered)\n" % str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=str(tmp_path))
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == "REGISTERED []\n"


# ------------------------------------------------------------ same as CLI
VARIANTS = [("check",), ("check", "-f", "json"), ("chat",), ("dump", "--flat")]


@pytest.mark.parametrize("variant", VARIANTS, ids=" ".join)
def test_drgn_xa_prints_what_the_cli_prints(dump, variant):
    prog, vmlinux, vmcore, files, status = dump
    targets = [f["inode"] for f in files]
    line = "xa %s %s" % (" ".join(variant), " ".join(targets))
    out, err, ret = run(prog, line)
    c_out, c_err, code = cli(vmlinux, vmcore, *(variant + tuple(targets)))
    assert err == c_err == ""
    assert out == c_out
    assert ret == code == status
    # drgn-crash's namespace: the same
    out2, err2, ret2 = run(prog, line, crash=True)
    assert (out2, err2, ret2) == (out, err, ret)


@pytest.mark.parametrize("family", FAMILIES)
def test_paths_work_under_drgn(family):
    prog, vmlinux, vmcore, files, status = program(family)
    paths = [f["path"] for f in files][:3]
    out, err, ret = run(prog, "xa chat " + " ".join(paths), crash=True)
    c_out, _e, code = cli(vmlinux, vmcore, "chat", *paths)
    assert (out, ret) == (c_out, code) and err == ""
    for p in paths:
        assert p in out


def test_redirect_and_status(tmp_path):
    prog, vmlinux, vmcore, files, status = program("6.12")
    t = files[0]["inode"]
    f = tmp_path / "out.txt"
    out, err, ret = run(prog, "xa check %s > %s" % (t, f), crash=True)
    assert out == err == "" and ret == 0
    assert f.read_text() == cli(vmlinux, vmcore, "check", t)[0]


def test_errors_are_one_line_on_stderr():
    prog, vmlinux, vmcore, files, status = program("6.12")
    for line, why in [("xa check zzzz", "not an address"),
                      ("xa check 0xdead000000000000", "cannot read memory"),
                      ("xa check -f nope %s" % files[0]["inode"],
                       "invalid choice"),
                      ("xa check /no/such/file", "cannot resolve /no/such/file"),
                      ("xa nope", "unknown command")]:
        out, err, ret = run(prog, line, crash=True)
        assert ret == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("xa: error: "), err
        assert why in err


def test_help_page_in_drgn_crash():
    prog = program("6.12")[0]
    out, err, ret = run(prog, "help xa", crash=True)
    assert err == ""
    assert out.strip() == frontdoor.help_page().strip()
    out, _e, ret = run(prog, "xa help", crash=True)
    assert ret == 0 and out == frontdoor.help_page()
    out, _e, ret = run(prog, "xa check -h")
    assert ret == 0 and out.startswith("usage: xa check")


def test_capture_under_drgn(tmp_path):
    prog, vmlinux, vmcore, files, status = program("6.12")
    t = files[0]["inode"]
    snap = tmp_path / "x.snap"
    out, err, ret = run(prog, "xa capture -o %s %s" % (snap, t), crash=True)
    assert ret == 0 and "wrote %s" % snap in out
    r = CliRunner().invoke(cli_main, ["check", "--snapshot", str(snap)])
    assert r.exit_code == 0
    assert r.stdout == cli(vmlinux, vmcore, "check", t)[0]


def test_scan_under_drgn():
    prog = program("planted-6.1-all")[0]
    out, err, ret = run(prog, "xa scan --fs xfs", crash=True)
    try:
        from crashext.triage import scan as _s  # noqa: F401
        _s.scan                                  # noqa: B018
    except (ImportError, AttributeError):
        assert ret == 2 and "scan not available" in err
        return
    assert err == "" and ret == 1
    lines = out.splitlines()
    assert lines[0].startswith("scanned ") and "corrupt" in lines[0]
    assert any("corrupt (" in ln for ln in lines[1:])


def test_drgn_crash_end_to_end():
    """The real drgn-crash program on the 6.12 lab dump (crash 8.0.2
    cannot open it): stdin commands, as typed at '%crash>'."""
    import shutil
    exe = shutil.which("drgn-crash") or shutil.which(
        "drgn-crash", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("drgn-crash not installed")
    vmlinux, vmcore, files, status = _source("6.12")
    t = files[0]["inode"]
    p = subprocess.run([exe, vmlinux, vmcore],
                       input="xa check %s\nq\n" % t, capture_output=True,
                       text=True, timeout=600,
                       env=dict(os.environ, PAGER="cat"))
    assert p.returncode == 0, p.stderr
    want = cli(vmlinux, vmcore, "check", t)[0]
    assert want in p.stdout
