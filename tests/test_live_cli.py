"""``--live`` on this machine (the host, not the live lab): whatever stops
a live check here (no /proc/kcore, not root, no debug info for ``uname
-r``, a vmlinux of another release) is one ``crashext: error: live:``
line and exit 2; contradictory options are refused before anything is
opened.  The guest side is tests/test_live.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crashext.backends.drgn import debug_vmlinux_candidates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crashext(*args: str):
    p = subprocess.run([sys.executable, "-m", "crashext.cli", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def one_error(rc, out, err, prefix="crashext: error: "):
    assert rc == 2, (rc, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def _host_state() -> str:
    if not os.path.exists("/proc/kcore"):
        return "no kcore"
    if os.geteuid() != 0:
        return "not root"
    rel = os.uname().release
    if not any(os.path.isfile(p) for p in debug_vmlinux_candidates(rel)):
        return "no debug info"
    return "ok"


@pytest.mark.parametrize("cmd", [["check", "--live", "/etc/hostname"],
                                 ["scan", "--live"],
                                 ["folio", "--live", "0xffffea0000000000"],
                                 ["check", "--vmcore", "/proc/kcore",
                                  "/etc/hostname"]])
def test_live_here_is_one_line(cmd):
    state = _host_state()
    if state == "ok":
        pytest.skip("this host can run live checks (tests/test_live.py "
                    "covers a live kernel)")
    line = one_error(*crashext(*cmd))
    assert line.startswith("crashext: error: live: ")
    want = {"no kcore": "/proc/kcore does not exist",
            "not root": "needs root",
            "no debug info": "no debug info for the running kernel %s"
                             % os.uname().release}[state]
    assert want in line, line


def test_contradictory_live_options():
    line = one_error(*crashext("check", "--live", "--snapshot",
                               "sample_dumps/seed-6.1.snap"))
    assert "--live reads the running kernel" in line
    line = one_error(*crashext("check", "--live", "--vmcore",
                               "sample_dumps/seed-6.1.snap", "/x"))
    assert "give no --vmcore" in line


def test_drgn_xa_live_refused_on_a_dump():
    """``xa --live`` on a dump's drgn program: one xa error line."""
    from conftest import open_lab
    import io
    from crashext.frontdoor import run_xa
    _m, mem = open_lab("6.1")
    out = io.StringIO()
    rc = run_xa(mem, ["check", "--live", "/mnt/xfs/big64"], out, out)
    assert rc == 2
    assert out.getvalue().startswith("xa: error: --live: ")
