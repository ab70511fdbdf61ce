"""crash 8.0.2 as an independent oracle, where it is right: on trees of
order-0 folios only (it misreads multi-index entries), its
``tree -t xarray`` must list exactly the entries the engine walked, and
``rd`` must show the same bytes for a node the engine read.  Skips when
crash or a lab dump with an order-0-only file is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from crashext.analyze import analyze
from crashext.xarray import entry as E

from conftest import lab_dir, lab_manifest

pytestmark = pytest.mark.skipif(shutil.which("crash") is None,
                                reason="crash is not installed")


def _order0_run():
    """(manifest, file) of a 6.1 lab run with a file of order-0 folios."""
    d = lab_dir()
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    for name in names:
        if not name.startswith("6.1") or name.startswith("6.12"):
            continue
        m = lab_manifest(name)
        if not m or not m["release"].startswith("6.1."):
            continue
        for f in m["files"]:
            h = f["folio_order_histogram"]
            if f["nrpages"] and set(h) == {"0"} and f["value_entries"] == 0:
                return m, f
    pytest.skip("no 6.1 lab run with an order-0-only file (mkdump.sh "
                "--quick --bigfile 256M --bigfile-ra 0)")


def _crash(m, cmds, timeout=900):
    elf = [d["path"] for d in m["dumps"] if d["name"] == "elf"][0]
    script = "\n".join(cmds + ["quit"]) + "\n"
    p = subprocess.run(["timeout", "-s", "KILL", str(timeout), "crash",
                        "-s", m["vmlinux"], elf], input=script,
                       capture_output=True, text=True)
    return p.stdout


def test_crash_tree_matches_walk_on_order0_tree():
    m, f = _order0_run()
    from crashext.backends.drgn import DrgnMemory
    elf = [d["path"] for d in m["dumps"] if d["name"] == "elf"][0]
    mem = DrgnMemory.open(elf, m["vmlinux"])
    a = analyze(mem, f["inode"])
    assert a.findings == []
    ours = {e.index: e.raw for e in a.walk.entries}
    assert all(e.kind == E.POINTER for e in a.walk.entries)
    out = _crash(m, ["tree -t xarray -r address_space.i_pages -p %s"
                     % f["address_space"]])
    theirs = {}
    for val, idx in re.findall(r"^([0-9a-f]+)\n\s+index: (\d+)\s", out, re.M):
        theirs[int(idx)] = int(val, 16)
    assert len(theirs) == f["nrpages"], out[-300:]
    assert theirs == ours


def test_crash_rd_matches_node_bytes():
    m, f = _order0_run()
    from crashext.backends.drgn import DrgnMemory
    elf = [d["path"] for d in m["dumps"] if d["name"] == "elf"][0]
    mem = DrgnMemory.open(elf, m["vmlinux"])
    a = analyze(mem, f["inode"])
    node = a.walk.nodes[-1]
    out = _crash(m, ["rd -64 0x%x 72" % node.addr])
    words = []
    for line in out.splitlines():
        mm = re.match(r"^([0-9a-f]{16}):\s+((?:[0-9a-f]{16}\s*)+)", line)
        if mm:
            words += [int(w, 16) for w in mm.group(2).split()]
    assert len(words) == 72
    raw = mem.read(node.addr, 576)
    assert words == [int.from_bytes(raw[i:i + 8], "little")
                     for i in range(0, 576, 8)]
    assert tuple(words[5:69]) == node.slots
