"""Tests of the corruption-planting tool (tests/lab): ELF offset mapping,
page-table translation, every planted case read back with drgn on the
planted copy (independently of crashext), the truth file and copy reuse.

Skips when no lab run exists (see /work/shared/lab/README.md); the family
is $CRASHEXT_PLANT_FAMILY (default 6.1).  All cases are planted once into
``<lab>/planted/<family>-all.elf`` (or $CRASHEXT_PLANTED_DIR, or a pytest
temp dir when the lab is read-only) and reused by later runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab import labdumps  # noqa: E402
from tests.lab import plant as P  # noqa: E402
from tests.lab import scenarios as S  # noqa: E402

FAMILY = os.environ.get("CRASHEXT_PLANT_FAMILY", "6.1")


# --------------------------------------------------------------------------
# No lab needed
# --------------------------------------------------------------------------


def test_lab_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CRASHEXT_LAB", raising=False)
    monkeypatch.delenv("LAB", raising=False)
    assert str(labdumps.lab_dir()) == labdumps.DEFAULT_LAB
    monkeypatch.setenv("LAB", str(tmp_path / "a"))
    assert labdumps.lab_dir() == tmp_path / "a"
    monkeypatch.setenv("CRASHEXT_LAB", str(tmp_path))
    assert labdumps.lab_dir() == tmp_path
    assert labdumps.load_manifest("6.1") is None
    (tmp_path / "6.1").mkdir()
    (tmp_path / "6.1" / "manifest.json").write_text('{"files": [{"path": "/mnt/xfs/big64",'
                                                    ' "i_pages": "0x10"}], "dumps": []}')
    m = labdumps.load_manifest("6.1")
    assert m["_run_dir"] == str(tmp_path / "6.1")
    assert labdumps.file_entry(m, "/mnt/xfs/big64")["i_pages"] == "0x10"
    assert labdumps.file_entry(m, "big64") is not None
    assert labdumps.file_entry(m, "/nope") is None
    assert labdumps.dump_path(m, "elf") is None


def test_split_and_digest():
    assert P.split_per_page(0x1ffc, b"12345678") == [(0x1ffc, b"1234"), (0x2000, b"5678")]
    assert P.split_per_page(0x1000, b"x" * 8) == [(0x1000, b"x" * 8)]
    a = P.writes_digest([(1, b"a"), (2, b"b")])
    assert a != P.writes_digest([(2, b"b"), (1, b"a")])
    assert P.normalize_writes([("0x10", "ff00")]) == [(0x10, b"\xff\x00")]
    assert P.truth_path_for("/x/NAME.elf") == "/x/NAME.truth.json"


def test_cli_list(capsys):
    assert P.main(["--list"]) == 0
    out = capsys.readouterr().out
    for c in S.CASES:
        assert c in out


def test_case_codes_are_known():
    from crashext.findings import CODES

    for c in S.CASE_DOCS:
        assert c in S.CASES or c in S.IMPACT_CASES
    for c in S.CASES + S.IMPACT_CASES:
        assert c in S.CASE_DOCS
    for name in ("DUP_FOLIO", "FOLIO_INDEX", "SIBLING_FORWARD", "SIBLING_TO_NULL",
                 "FOLIO_MAPPING", "NODE_COUNT", "NODE_ARRAY", "FOLIO_ORDER",
                 "NODE_UNREADABLE", "NODE_CYCLE", "NRPAGES"):
        assert name in CODES


# --------------------------------------------------------------------------
# Lab fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest():
    pytest.importorskip("drgn")
    m = labdumps.load_manifest(FAMILY)
    if m is None:
        pytest.skip("no lab manifest for %s under %s" % (FAMILY, labdumps.lab_dir()))
    if labdumps.dump_path(m, "elf") is None or labdumps.vmlinux_path(m) is None:
        pytest.skip("lab run %s lacks vmcore.elf or vmlinux" % m.get("_run_dir"))
    return m


@pytest.fixture(scope="module")
def src_prog(manifest):
    return S.program_for(manifest)


def _planted_dir(tmp_path_factory) -> Path:
    env = os.environ.get("CRASHEXT_PLANTED_DIR")
    if env:
        return Path(env)
    d = labdumps.lab_dir() / "planted"
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    return tmp_path_factory.mktemp("planted")


@pytest.fixture(scope="module")
def planted(manifest, tmp_path_factory):
    out = str(_planted_dir(tmp_path_factory) / ("%s-all.elf" % FAMILY))
    dst, tp, truth = P.make_planted(FAMILY, list(S.CASES), out)
    prog = P.open_dump(dst, labdumps.vmlinux_path(manifest))
    with open(tp) as f:
        on_disk = json.load(f)
    return {"dst": dst, "truth_path": tp, "truth": truth, "on_disk": on_disk, "prog": prog,
            "cases": {c["case"]: c for c in truth["cases"]}}


def _u64(prog, addr):
    return int.from_bytes(prog.read(addr, 8), "little")


# --------------------------------------------------------------------------
# Translation and ELF offsets
# --------------------------------------------------------------------------


def test_elf_offsets_match_drgn(manifest, src_prog):
    src = labdumps.dump_path(manifest, "elf")
    segs = P.elf_load_segments(src)
    assert segs and all(sz > 0 for _pa, _off, sz in segs)
    f = labdumps.file_entry(manifest, "/mnt/xfs/big64") or manifest["files"][0]
    xa = int(f["i_pages"], 16)
    head = _u64(src_prog, xa + 8)
    folio = int(f["first_folios"][0]["folio"], 16) if f.get("first_folios") else None
    addrs = [xa, int(f["inode"], 16)]
    if head & 3 == 2 and head > 4096:
        addrs.append(head - 2)                 # an xa_node (slab)
    if folio:
        addrs.append(folio)                    # a struct folio (vmemmap)
    with open(src, "rb") as fh:
        for va in addrs:
            pa = P.virt_to_phys(src_prog, va)
            fh.seek(P.elf_phys_to_offset(src, pa, segs))
            assert fh.read(64) == src_prog.read(va, 64), hex(va)
    pob = int(manifest["page_offset_base"], 16)
    assert P.virt_to_phys(src_prog, xa) == xa - pob
    if folio:
        assert not (pob <= folio < pob + (1 << 40))    # vmemmap is not direct map


def test_elf_hole_rejected(manifest):
    src = labdumps.dump_path(manifest, "elf")
    segs = P.elf_load_segments(src)
    ends = sorted((pa + sz, pa) for pa, _o, sz in segs)
    starts = {pa for pa, _o, _s in segs}
    hole = next((e for e, _pa in ends if e not in starts), None)
    assert hole is not None
    with pytest.raises(ValueError):
        P.elf_phys_to_offset(src, hole, segs)


def test_resolve_crosses_page(manifest, src_prog):
    """A write crossing a 4 KiB page is split and each piece's file bytes
    equal drgn's view (resolve_writes checks it)."""
    src = labdumps.dump_path(manifest, "elf")
    f = manifest["files"][0]
    folio = int(f["first_folios"][0]["folio"], 16)
    va = (folio | 0xFFF) - 7
    data = src_prog.read(va, 16)
    pieces = P.resolve_writes(src_prog, src, [(va, data)])
    assert [p["vaddr"] for p in pieces] == [va, va + 8]
    assert all(p["old"] == p["new"] for p in pieces)


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

TRUTH_KEYS = {"case", "file", "xarray", "codes", "indices", "node", "slots", "may_also",
              "must_not", "expect", "writes", "nrpages", "claimed"}


@pytest.mark.parametrize("case", S.CASES + tuple(
    c for c in S.IMPACT_CASES if c not in S.CASES))
def test_case_builds_alone(manifest, src_prog, case):
    from crashext.findings import CODES

    writes, t = S.build_case(manifest, case, prog=src_prog)
    assert writes and TRUTH_KEYS <= set(t)
    assert t["case"] == case
    assert labdumps.file_entry(manifest, t["file"])["i_pages"] == t["xarray"]
    assert t["codes"] and set(t["codes"]) | set(t["may_also"]) | set(t["must_not"]) <= set(CODES)
    assert not set(t["codes"]) & set(t["must_not"])
    assert all(isinstance(i, int) for i in t["indices"])
    assert t["nrpages"]["baseline_ok"]
    for (va, data), rec in zip(writes, t["writes"]):
        assert int(rec["vaddr"], 16) == va and rec["new"] == data.hex()
        assert src_prog.read(va, len(data)).hex() == rec["old"] != rec["new"]
    for e in t["expect"]:
        assert e["code"] in t["codes"]


def test_cases_disjoint(planted):
    by_file = {}
    for c in planted["truth"]["cases"]:
        by_file.setdefault(c["xarray"], []).append(tuple(c["claimed"]))
    for ranges in by_file.values():
        ranges.sort()
        for (a, b), (c, d) in zip(ranges, ranges[1:]):
            assert b <= c


def test_truth_file(planted, manifest):
    t = planted["on_disk"]
    assert [c["case"] for c in t["cases"]] == list(S.CASES)
    assert t["source"] == labdumps.dump_path(manifest, "elf")
    assert os.path.samefile(t["planted"], planted["dst"])
    assert set(t["files"]) == {c["file"] for c in t["cases"]}


def test_planted_reads_back(planted, src_prog):
    prog = planted["prog"]
    for c in planted["truth"]["cases"]:
        for w in c["writes"]:
            va, new = int(w["vaddr"], 16), bytes.fromhex(w["new"])
            assert prog.read(va, len(new)) == new, (c["case"], w["what"])
            # the source dump is untouched
            assert src_prog.read(va, len(new)).hex() == w["old"]


def test_planted_still_opens(planted, manifest):
    prog = planted["prog"]
    rel = prog["init_uts_ns"].name.release.string_().decode()
    assert rel == manifest["release"]
    side = P.read_sidecar(planted["dst"])
    assert side["digest"] == planted["on_disk"]["digest"]
    assert os.path.getsize(planted["dst"]) == os.path.getsize(side["src"])


def test_reuse(planted):
    dst = planted["dst"]
    mtime = os.stat(dst).st_mtime_ns
    out, _tp, truth = P.make_planted(FAMILY, list(S.CASES), dst)
    assert truth["_reused"] and os.stat(dst).st_mtime_ns == mtime
    side = P.read_sidecar(dst)
    assert P._reusable(side["src"], dst, side["digest"]) is not None
    assert P._reusable(side["src"], dst, "0" * 64) is None


# Per-case semantics, read with drgn on the planted copy --------------------


def _lay(prog):
    return S.Layout.of(prog)


def _slot(prog, node, i):
    return _u64(prog, node + _lay(prog).slots + 8 * i)


def _xa_load(prog, xa, index):
    from drgn import Object
    from drgn.helpers.linux.xarray import xa_load

    return xa_load(Object(prog, "struct xarray *", xa), index).value_()


def test_seed(planted):
    prog, c = planted["prog"], planted["cases"]["seed"]
    node, F = int(c["node"], 16), int(c["folio"], 16)
    assert [_slot(prog, node, i) for i in (16, 32, 48)] == [F, F, F]
    assert _slot(prog, node, 33) == S.mk_sibling(32)
    base = c["indices"][0] - 16
    xa = int(c["xarray"], 16)
    for i in (16, 32, 40, 48, 63):
        assert _xa_load(prog, xa, base + i) == F
    assert _u64(prog, F + _lay(prog).f_index) == base + 16
    dup = next(e for e in c["expect"] if e["code"] == "DUP_FOLIO")
    assert dup["indices"] == [base + 16, base + 32, base + 48]


def test_stale_sibling(planted):
    prog, c = planted["prog"], planted["cases"]["stale_sibling"]
    j = c["slots"][0]
    assert _slot(prog, int(c["node"], 16), j) == S.mk_sibling(j)


def test_sibling_to_null(planted):
    prog, c = planted["prog"], planted["cases"]["sibling_to_null"]
    node, s = int(c["node"], 16), c["slots"][0]
    assert _slot(prog, node, s) == 0
    assert _slot(prog, node, s + 1) == S.mk_sibling(s)
    assert prog.read(node + _lay(prog).count, 1)[0] == sum(
        1 for i in range(64) if _slot(prog, node, i))
    for idx in c["indices"]:
        assert _xa_load(prog, int(c["xarray"], 16), idx) == 0


def test_wrong_mapping(planted, manifest):
    prog, c = planted["prog"], planted["cases"]["wrong_mapping"]
    F = int(c["folio"], 16)
    other = labdumps.file_entry(manifest, c["other_file"])
    assert _u64(prog, F + _lay(prog).f_mapping) == int(other["address_space"], 16)
    assert _xa_load(prog, int(c["xarray"], 16), c["indices"][0]) == F


def test_wrong_index(planted):
    prog, c = planted["prog"], planted["cases"]["wrong_index"]
    F = int(c["folio"], 16)
    e = c["expect"][0]
    assert _u64(prog, F + _lay(prog).f_index) == e["found"] != e["expected"]
    assert _xa_load(prog, int(c["xarray"], 16), c["indices"][0]) == F


def test_node_count(planted):
    prog, c = planted["prog"], planted["cases"]["node_count"]
    node = int(c["node"], 16)
    real = sum(1 for i in range(64) if _slot(prog, node, i))
    assert prog.read(node + _lay(prog).count, 1)[0] == c["expect"][0]["found"] != real


def test_cross_linked(planted):
    prog, c = planted["prog"], planted["cases"]["cross_linked"]
    node = int(c["node"], 16)
    arr = _u64(prog, node + _lay(prog).array)
    assert arr == int(c["expect"][0]["found"], 16) != int(c["xarray"], 16)


def test_split_stale(planted):
    prog, c = planted["prog"], planted["cases"]["split_stale"]
    node, F = int(c["node"], 16), int(c["folio"], 16)
    assert _slot(prog, node, 0) == F
    assert all(_slot(prog, node, i) == S.mk_sibling(0) for i in range(1, 64))
    base = c["indices"][0]
    xa = int(c["xarray"], 16)
    assert {_xa_load(prog, xa, base + i) for i in (0, 5, 37, 63)} == {F}
    assert "NRPAGES" in c["codes"]
    assert c["nrpages"]["after"]["distinct"] < c["nrpages"]["mapping"]


def test_unreadable_node(planted):
    import drgn

    prog, c = planted["prog"], planted["cases"]["unreadable_node"]
    bogus = int(c["address"], 16)
    assert _slot(prog, int(c["node"], 16), c["slots"][0]) == S.mk_node(bogus)
    with pytest.raises(drgn.FaultError):
        prog.read(bogus, 8)
    with pytest.raises(drgn.FaultError):
        _xa_load(prog, int(c["xarray"], 16), c["indices"][0])


def test_cycle(planted):
    prog, c = planted["prog"], planted["cases"]["cycle"]
    node, target = int(c["node"], 16), int(c["address"], 16)
    assert _slot(prog, node, c["slots"][0]) == S.mk_node(target)
    # target is an ancestor of node (or node itself): follow parent pointers
    lay, a, seen = _lay(prog), node, []
    while a and a not in seen:
        seen.append(a)
        a = _u64(prog, a + lay.parent)
    assert target in seen
    head = _u64(prog, int(c["xarray"], 16) + lay.xa_head)
    assert head == S.mk_node(target)
