"""Planted corruption in real lab vmcores (tests/lab/plant.py writes the
bytes into a copy of the ELF dump; tests/lab/scenarios.py derives the
ground truth from the kernel's invariants).  Every planted case must be
reported with the right code at the right index, and nothing beyond what
the truth allows may be reported for a planted file."""

from __future__ import annotations


import pytest

from crashext.analyze import analyze

from conftest import FAMILIES, lab_manifest
_cache = {}


def planted(family):
    pytest.importorskip("drgn")
    if lab_manifest(family) is None:
        pytest.skip("no lab run for %s" % family)
    if family not in _cache:
        from tests.lab import plant
        from crashext.backends.drgn import DrgnMemory
        truth = plant.ensure_planted(family)
        _cache[family] = (truth, DrgnMemory.open(truth["planted"],
                                                 truth["vmlinux"]))
    return _cache[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_planted_case_is_found(family):
    truth, mem = planted(family)
    results = {p: analyze(mem, p) for p in truth["files"]}
    for case in truth["cases"]:
        a = results[case["file"]]
        for code in case["codes"]:
            hits = [f for f in a.findings if f.code == code]
            assert hits, (case["case"], code, [f.code for f in a.findings])
            want = set(case["indices"])
            if code != "NRPAGES" and want:
                named = set()
                for f in hits:
                    named.update(f.indices)
                assert want & named, (case["case"], code, want, named)
        node = case.get("node")
        if node:
            node = int(node, 16) if isinstance(node, str) else node
            for f in a.findings:
                if f.node == node:
                    assert f.code not in case.get("must_not", []), (case, f)


@pytest.mark.parametrize("family", FAMILIES)
def test_nothing_beyond_the_truth(family):
    truth, mem = planted(family)
    for path, info in truth["files"].items():
        allowed = set(info["codes"])
        for case in truth["cases"]:
            if case["file"] == path:
                allowed |= set(case["codes"]) | set(case.get("may_also", []))
        a = analyze(mem, path)
        extra = [f for f in a.findings if f.code not in allowed]
        assert not extra, (path, extra[:3])
    # Files nobody planted stay clean.
    m = lab_manifest(family)
    for f in m["files"]:
        if f["path"] not in truth["files"]:
            assert analyze(mem, f["path"]).findings == []


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_pattern_is_explained(family):
    truth, mem = planted(family)
    seed = [c for c in truth["cases"] if c["case"] == "seed"][0]
    a = analyze(mem, seed["file"])
    dup = [f for f in a.findings if f.code == "DUP_FOLIO"]
    assert len(dup) == 1
    assert sorted(s % 64 for s in dup[0].slots) == [16, 32, 48]
    assert sorted(dup[0].indices) == sorted(seed["indices"])
    ex = [e for e in a.explanations if e.code == "STALE_SPLIT"]
    assert ex and ex[0].data == {"stride": 16, "piece_order": 4,
                                 "orig_order": 6}
    assert "order-6 entry split to order 4" in ex[0].text
