"""sample_dumps/: snapshots of real lab vmcores, each with the ground truth
of what was planted (``*.truth.json``, written by
tests/lab/make_samples.py from tests/lab/scenarios.py).  These run with
nothing but crashext installed."""

from __future__ import annotations

import glob
import json
import os

import pytest
from click.testing import CliRunner

from crashext.analyze import analyze
from crashext.backends.snapshot import SnapshotMemory
from crashext.cli import main

from conftest import SAMPLES

SNAPS = sorted(glob.glob(os.path.join(SAMPLES, "*.snap")))


def _truth(snap):
    with open(snap[:-len(".snap")] + ".truth.json") as f:
        return json.load(f)


def test_samples_exist_and_are_small():
    assert len(SNAPS) >= 4
    assert sum(os.path.getsize(p) for p in SNAPS) < 5 << 20
    kernels = {_truth(p)["family"] for p in SNAPS}
    assert kernels == {"6.1", "6.12"}


@pytest.mark.parametrize("snap", SNAPS, ids=os.path.basename)
def test_sample_matches_its_truth(snap):
    truth = _truth(snap)
    mem = SnapshotMemory.load(snap)
    assert mem.targets == truth["files"]
    assert mem.release() == truth["release"]
    for path in truth["files"]:
        a = analyze(mem, path)
        cases = [c for c in truth["cases"] if c["file"] == path]
        allowed = set()
        for c in cases:
            allowed |= set(c["codes"]) | set(c.get("may_also") or [])
            for code in c["codes"]:
                hits = [f for f in a.findings if f.code == code]
                assert hits, (c["case"], code)
                if code != "NRPAGES" and c["indices"]:
                    named = {i for f in hits for i in f.indices}
                    assert named & set(c["indices"]), (c["case"], code)
        assert {f.code for f in a.findings} <= allowed, (path, a.findings[:3])
        if not cases:
            assert a.verdict == "clean" and a.stats.pages == a.target.nrpages


def test_seed_sample_chat_leads_with_verdict_and_explains():
    snap = os.path.join(SAMPLES, "seed-6.1.snap")
    r = CliRunner().invoke(main, ["chat", "--snapshot", snap])
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    body = [l for l in lines if not l.startswith("```")]
    assert body[0].startswith("CORRUPT")
    assert max(len(l) for l in lines) <= 60
    text = r.output
    for idx in _truth(snap)["cases"][0]["indices"]:
        assert "0x%x" % idx in text or "+{" in text
    assert "order-6 entry split to order 4" in text


@pytest.mark.parametrize("snap", SNAPS, ids=os.path.basename)
def test_every_sample_chat_is_narrow(snap):
    r = CliRunner().invoke(main, ["chat", "--snapshot", snap])
    assert r.exit_code in (0, 1), r.output
    assert "Traceback" not in r.output
    assert max(len(l) for l in r.output.splitlines()) <= 60
    expect = 1 if _truth(snap)["cases"] else 0
    assert r.exit_code == expect


def test_seed_sample_chat_says_which_bytes_read_wrong():
    """Second block of the seed chat: the 128 KiB that read the data of
    the slot-16 folio, in bytes (hex and KiB/MiB), pages and indices, the
    folio's state, and the nrpages line naming the searches not made."""
    from crashext import fmt
    snap = os.path.join(SAMPLES, "seed-6.1.snap")
    a = analyze(SnapshotMemory.load(snap), "/mnt/xfs/big200")
    r = CliRunner().invoke(main, ["chat", "--snapshot", snap])
    body = [ln for ln in r.output.splitlines() if not ln.startswith("```")]
    block = "\n".join(body).split("\n\n")[1].splitlines()
    idx = sorted(_truth(snap)["cases"][0]["indices"])      # 16, 32, 48
    lo, hi = idx[1], idx[2] + 15                            # stale copies
    folio = [f for f in a.findings if f.code == "DUP_FOLIO"][0].folio
    assert block[0] == "READS WRONG: %s of the file, %d pages" % (
        fmt.nbytes((hi - lo + 1) << 12), hi - lo + 1)
    assert block[1] == "aliased %s at %s" % (fmt.nbytes((hi - lo + 1) << 12),
                                             fmt.nbytes(lo << 12))
    assert block[2] == "  idx %s, %d pages" % (fmt.idx_range(lo, hi),
                                               hi - lo + 1)
    assert block[3] == "  reads idx %s" % fmt.idx_range(idx[0], idx[0] + 15)
    assert block[4] == "  folio 0x%x: uptodate" % folio
    # The two order-4 folios the stale copies replaced are not reached.
    nr = a.target.nrpages
    assert block[5] == "nrpages %d = %d reachable" % (nr, nr - 32)
    assert block[6] == "  + 32 unexplained (not searched: memory map, slab)"
    assert max(len(ln) for ln in r.output.splitlines()) <= 60


def test_readme_example_is_the_seed_chat():
    """README's chat example is what the seed sample prints (up to its
    "..." line)."""
    readme = open(os.path.join(os.path.dirname(SAMPLES), "README.md")).read()
    ex = readme.split("The first lines for the seed-like sample:")[1]
    ex = ex.split("```\n", 1)[1].split("```", 1)[0].splitlines()
    shown = ex[:ex.index(" ...")]
    r = CliRunner().invoke(main, ["chat", "--snapshot",
                                  os.path.join(SAMPLES, "seed-6.1.snap")])
    out = [ln for ln in r.output.splitlines() if not ln.startswith("```")]
    assert out[:len(shown)] == shown
