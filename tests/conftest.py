"""Shared fixtures: lab vmcores (../shared/lab, found through their
manifest.json by tests/lab/labdumps.py; tests that need one skip when it is
absent) opened once per session with the drgn backend.

The lab families are ``labdumps.FAMILIES`` (6.1, 6.12, 7.3).  Under CI
(``$CI`` set, see ``labdumps.ci``) no test may skip: a skip (a missing lab
run, planted dump, tool or module) is reported as a failure, so CI cannot
pass with its lab missing."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab import labdumps  # noqa: E402
from tests.lab.labdumps import FAMILIES, ci  # noqa: E402

SAMPLES = os.path.join(ROOT, "sample_dumps")


def lab_dir() -> str:
    return str(labdumps.lab_dir())


def lab_manifest(family: str):
    """Manifest of the newest lab run of ``family`` (tests/lab/labdumps)."""
    from tests.lab.labdumps import load_manifest
    return load_manifest(family)


def lab_dump(family: str, name: str = "elf"):
    """(manifest, dump path) or skip."""
    m = lab_manifest(family)
    if m is None:
        pytest.skip("no lab run for %s in %s (run ../shared/lab/mkdump.sh "
                    "--quick --kernel %s)" % (family, lab_dir(), family))
    for d in m["dumps"]:
        if d["name"] == name and d.get("drgn_ok", True) and os.path.exists(d["path"]):
            return m, d["path"]
    pytest.skip("lab %s has no usable %s dump" % (family, name))


_open = {}


def open_lab(family: str, name: str = "elf"):
    """(manifest, DrgnMemory) for a lab dump, cached per session."""
    pytest.importorskip("drgn")
    m, path = lab_dump(family, name)
    key = (family, name)
    if key not in _open:
        from crashext.backends.drgn import DrgnMemory
        _open[key] = DrgnMemory.open(path, m["vmlinux"])
    return m, _open[key]


@pytest.fixture(params=FAMILIES)
def lab(request):
    """(manifest, DrgnMemory) of the ELF dump of each lab kernel."""
    return open_lab(request.param)


STANDIN = os.path.join(ROOT, "tests", "pykdump_standin")


def standin_crash(vmlinux: str = None, vmcore: str = None):
    """Context manager: the PyKdump stand-in's ``crash`` module (opened on
    ``vmlinux``/``vmcore`` when given), removed from sys.modules and
    sys.path afterwards so the next user starts fresh."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        sys.path.insert(0, STANDIN)
        try:
            import crash as crash_mod
            if vmlinux and vmcore:
                crash_mod.standin_open(vmlinux, vmcore)
            yield crash_mod
        finally:
            try:
                sys.modules["crash"].standin_close()
            except Exception:
                pass
            for name in ("crash", "pykdump", "pykdump.API"):
                sys.modules.pop(name, None)
            if STANDIN in sys.path:
                sys.path.remove(STANDIN)
    return cm()


# CI: a skip is a failure ------------------------------------------------
def _ci_fail(rep, what: str) -> None:
    reason = rep.longrepr
    if isinstance(reason, tuple) and len(reason) == 3:
        reason = reason[2]
    rep.outcome = "failed"
    rep.longrepr = ("CI is set: %s may not skip (%s)" % (what, reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if ci() and rep.skipped and not hasattr(rep, "wasxfail"):
        _ci_fail(rep, item.nodeid)


def pytest_configure(config):
    if ci():
        # A module that skips at import fails (below); run the rest anyway.
        config.option.continue_on_collection_errors = True


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if ci() and rep.skipped:
        _ci_fail(rep, collector.nodeid)
