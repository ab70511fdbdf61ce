"""What the damage means for the file (crashext.impact, crashext.lost),
on real lab vmcores with corruption planted by tests/lab/plant.py.

Ground truth comes from the clean dump and the planted bytes, never from
crashext (tests/lab/scenarios.py): the folios each case takes out of
reach (index, order and ``enum pageflags`` state), the node cut off, the
two positions of a shared node.  What a reader sees is checked against
drgn's own ``xa_load()`` on the planted dump, index by index: it
descends the tree as ``xas_load()`` does, so the ``aliased`` / ``foreign``
/ ``stale`` ranges must be exactly the indices where ``xa_load()``
returns a folio whose own range (``folio->index``, order) or
``mapping`` is not that index's.

Cases (IMPACT_CASES): a cut-off leaf, a node shared by two slots, a
foreign folio, a stale split, and a dirty folio of dirty32 cut off - data
at risk.  One planted copy per kernel family (plant.ensure_planted:
``<planted dir>/<family>-impact.elf``).
"""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import FAMILIES, lab_manifest

from tests.lab import labdumps

_cache = {}


def planted(family):
    """(truth, DrgnMemory, drgn Program, slab nodes or the reason none)."""
    pytest.importorskip("drgn")
    if lab_manifest(family) is None:
        pytest.skip("no lab run for %s" % family)
    if family not in _cache:
        from tests.lab import plant, scenarios
        from crashext.backends.drgn import DrgnMemory
        from crashext.memory import CrashextError
        from crashext.triage.slab import walk_slab
        truth = plant.ensure_planted(family, scenarios.IMPACT_CASES)
        path = truth["planted"]
        mem = DrgnMemory.open(path, truth["vmlinux"])
        try:
            nodes = list(walk_slab(mem, check=False).nodes.values())
        except CrashextError as e:
            nodes = str(e)
        _cache[family] = (truth, mem, plant.open_dump(path, truth["vmlinux"]),
                          nodes)
    return _cache[family]


_analyses = {}


def analysis(family, path, memmap=True, slab=True):
    from crashext.analyze import analyze
    truth, mem, _prog, nodes = planted(family)
    key = (family, path, memmap, slab)
    if key not in _analyses:
        _analyses[key] = analyze(
            mem, path, memmap=memmap,
            slab_nodes=nodes if slab and isinstance(nodes, list) else None)
    return _analyses[key]


def case(family, name):
    truth = planted(family)[0]
    return next(c for c in truth["cases"] if c["case"] == name)


def clean_dump(family):
    """(manifest, DrgnMemory, Layout, scenarios.Ctx) of the clean ELF
    dump of ``family``, for tests that patch it in memory."""
    from crashext.analyze import layout_for
    from crashext.backends.drgn import DrgnMemory
    from tests.lab import scenarios as S
    m = lab_manifest(family)
    if m is None:
        pytest.skip("no lab run for %s" % family)
    mem = DrgnMemory.open(labdumps.dump_path(m, "elf"),
                          labdumps.vmlinux_path(m))
    return m, mem, layout_for(mem), S.Ctx(m, S.program_for(m))


def covered(ranges, kinds, lo, hi):
    """Indices in [lo, hi) covered by ranges of ``kinds``."""
    out = set()
    for r in ranges:
        if r.kind in kinds:
            out.update(range(max(r.first, lo), min(r.last + 1, hi)))
    return out


def reader_view(prog, c, truth):
    """What drgn's xa_load() gives at each index of the case's claimed
    range: index -> kind the reader's bytes have ('aliased', 'foreign',
    'stale'), for indices whose folio is not right; plus the source
    range each aliased index reads."""
    from drgn import Object
    from drgn.helpers.linux.mm import compound_order
    from drgn.helpers.linux.xarray import xa_is_value, xa_load

    from tests.lab import scenarios as S
    lay = S.Layout.of(prog)
    xa = Object(prog, "struct xarray *", int(c["xarray"], 16))
    own = int(c["xarray"], 16) - lay.as_i_pages
    kinds, sources = {}, {}
    lo, hi = c["claimed"]
    for idx in range(lo, hi):
        ent = xa_load(xa, idx)
        if not ent.value_() or xa_is_value(ent):
            continue
        f = ent.value_()
        mapping = int.from_bytes(prog.read(f + lay.f_mapping, 8), "little")
        findex = int.from_bytes(prog.read(f + lay.f_index, 8), "little")
        nr = 1 << int(compound_order(Object(prog, "struct page *", f)))
        if mapping != own:
            live = mapping and not mapping & 3
            kinds[idx] = "foreign" if live else "stale"
        elif not findex <= idx < findex + nr:
            kinds[idx] = "aliased"
            sources[idx] = (findex, findex + nr - 1)
    return kinds, sources


# ---------------------------------------------------------------------------
# Byte ranges against what readers see


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["cutoff_leaf", "shared_node", "foreign_folio",
                                  "split_stale", "dirty_cutoff"])
def test_ranges_are_what_readers_see(family, name):
    truth, _mem, prog, _nodes = planted(family)
    c = case(family, name)
    a = analysis(family, c["file"])
    lo, hi = c["claimed"]
    kinds, sources = reader_view(prog, c, truth)
    for kind in ("aliased", "foreign", "stale"):
        want = {i for i, k in kinds.items() if k == kind}
        assert covered(a.impact.ranges, (kind,), lo, hi) == want, (name, kind)
    # Every aliased range names the ranges its indices read.
    for r in a.impact.ranges:
        if r.kind == "aliased" and lo <= r.first < hi:
            for i in range(r.first, r.last + 1):
                src = sources[i]
                assert any(a_ <= src[0] and src[1] <= b_
                           for a_, b_ in r.sources), (i, src, r.sources)
    # Lost: exactly the ranges of the clean dump's folios the planted tree
    # no longer holds at their index (ground truth of the case).
    want = set()
    for x in c["impact"]["lost"]:
        want.update(range(x["index"], x["index"] + (1 << x["order"])))
    assert covered(a.impact.ranges, ("lost",), lo, hi) == want
    # The truth's expected ranges are each covered by a range of the kind.
    for r in c["impact"]["ranges"]:
        got = covered(a.impact.ranges, (r["kind"],), r["first"], r["last"] + 1)
        assert got == set(range(r["first"], r["last"] + 1)), r
    # Bytes: offset/length follow the dump's page size.
    assert a.impact.page_shift == 12 and a.layout.page_size_from == "vmcoreinfo"
    for r in a.impact.ranges:
        assert r.byte_range(12) == (r.first << 12, (r.last - r.first + 1) << 12)


@pytest.mark.parametrize("family", FAMILIES)
def test_folio_state_is_the_dumps(family):
    """The dirty/writeback/locked/uptodate counts of every lost range are
    those of its folios' flags in the dump (enum pageflags, via drgn)."""
    truth = planted(family)[0]
    for path, info in truth["files"].items():
        a = analysis(family, path)
        lost = info["lost"]["lost"]
        seen = 0
        for r in a.impact.ranges:
            if r.kind != "lost":
                continue
            mine = [x for x in lost if r.first <= x["index"] <= r.last]
            seen += len(mine)
            assert r.nr_folios == len(mine) and r.folios
            assert {"0x%x" % f for f in r.folios} <= {x["folio"] for x in mine}
            for flag in ("dirty", "writeback", "locked", "uptodate"):
                assert r.state.get(flag, 0) == sum(flag in x["state"] for x in mine)
            assert r.at_risk == any({"dirty", "writeback"} & set(x["state"])
                                    for x in mine)
        assert seen == len(lost), path


# ---------------------------------------------------------------------------
# nrpages accounted for


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["cutoff_leaf", "shared_node", "foreign_folio",
                                  "split_stale", "dirty_cutoff"])
def test_nrpages_reconciled(family, name):
    truth = planted(family)[0]
    c = case(family, name)
    ft = truth["files"][c["file"]]["lost"]
    nr = c["nrpages"]["mapping"]
    # Without the searches (check's default): the tree's part, and what is
    # left unexplained says which search would find it.
    bare = analysis(family, c["file"], memmap=False, slab=False)
    lost = bare.impact.lost
    assert lost.reachable == ft["reachable"]
    assert lost.unexplained == nr - ft["reachable"]
    if lost.unexplained:
        assert lost.line().endswith(
            "+ %d unexplained (not searched: memory map, slab)" % lost.unexplained)
    # With the memory map: every lost folio found, nothing unexplained.
    a = analysis(family, c["file"], memmap=True, slab=False)
    lost = a.impact.lost
    assert sorted("0x%x" % x.folio.addr for x in lost.folios) == \
        sorted(x["folio"] for x in ft["lost"])
    assert lost.reachable + lost.memmap_pages == nr == ft["reachable"] + ft["lost_pages"]
    assert lost.unexplained == 0 and lost.memmap_complete
    folios = [x for x in lost.folios if not x.reached_at]
    if folios:
        assert lost.line() == "nrpages %d = %d reachable + %d in %d folio%s cut off " \
            "(memory map)" % (nr, ft["reachable"], ft["lost_pages"], len(folios),
                              "" if len(folios) == 1 else "s")
    lost_codes = [f for f in a.findings if f.code == "FOLIO_LOST"]
    assert sorted("0x%x" % f.folio for f in lost_codes) == \
        sorted(x["folio"] for x in ft["lost"])
    for f in lost_codes:
        x = next(y for y in ft["lost"] if y["folio"] == "0x%x" % f.folio)
        assert f.indices == (x["index"],) and f.extra["found"] == "memory map"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["cutoff_leaf", "shared_node"])
def test_cut_off_node_found_in_slab(family, name):
    """The leaf unlinked from its slot is still an allocated radix_tree_node
    whose parent/offset name that slot: the accounting names it."""
    nodes = planted(family)[3]
    if not isinstance(nodes, list):
        pytest.skip("slab walk unavailable on %s: %s" % (family, nodes))
    c = case(family, name)
    cut = c["impact"]["cutoff"]
    a = analysis(family, c["file"], memmap=True, slab=True)
    lost = a.impact.lost
    [co] = [x for x in lost.cutoffs if "0x%x" % x.node == cut["node"]]
    assert "0x%x" % co.parent == cut["parent"] and co.offset == cut["offset"]
    assert co.index == cut["first_index"] and co.pages == cut["pages"]
    f = [x for x in a.findings if x.code == "NODE_CUT_OFF"]
    assert ["0x%x" % x.node for x in f] == [cut["node"]]
    assert f[0].indices == (cut["first_index"],)
    assert ("+ %d in cut-off node %s (was slot %d of node %s)"
            % (cut["pages"], cut["node"], cut["offset"], cut["parent"])) in lost.line()
    assert lost.unexplained == 0
    assert all(x.found == "cut-off node" for x in lost.folios
               if "0x%x" % (x.node or 0) == cut["node"])


@pytest.mark.parametrize("family", FAMILIES)
def test_triage_walks_the_slab_before_the_trees(family):
    """``crashext triage``'s analysis of one dump: the slab walk comes
    first, so the cut-off leaf's tree row names the cut-off node in its
    nrpages reconciliation, as ``scan --slab`` does."""
    from crashext.triage import worker
    truth, mem, _prog, nodes = planted(family)
    if not isinstance(nodes, list):
        pytest.skip("slab walk unavailable on %s: %s" % (family, nodes))
    c = case(family, "cutoff_leaf")
    cut = c["impact"]["cutoff"]
    res = {"seconds": {}}
    worker._analyse(mem, res, {"slab": True, "top": 1000})
    assert "error" not in res["slab"]
    [row] = [r for r in res["scan"]["top"] if r.get("path") == c["file"]]
    assert ("+ %d in cut-off node %s (was slot %d of node %s)"
            % (cut["pages"], cut["node"], cut["offset"], cut["parent"])
            ) in row["impact"]["nrpages"]
    assert row["impact"]["unexplained"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_node_told_completely(family):
    c = case(family, "shared_node")
    sh = c["impact"]["shared"]
    a = analysis(family, c["file"])
    codes = [f.code for f in a.findings]
    assert "NODE_CYCLE" not in codes
    [f] = [f for f in a.findings if f.code == "NODE_SHARED"]
    assert "0x%x" % f.node == sh["holder"] and f.slots == (sh["second_slot"],)
    assert f.indices == (sh["second_index"],) and "0x%x" % f.address == sh["node"]
    assert f.extra["first_slot"] == sh["first_slot"]
    assert f.extra["first_index"] == sh["first_index"]
    # Both positions walked: each folio of the shared leaf is a duplicate
    # at both index ranges, and folio->index is wrong at the second.
    leaf = [x for x in c["impact"]["ranges"] if x["kind"] == "aliased"]
    dups = {"0x%x" % d.folio: d for d in a.findings if d.code == "DUP_FOLIO"}
    assert set(dups) == set(x["folios"][0] for x in leaf)
    for x in leaf:
        d = dups[x["folios"][0]]
        assert sorted(d.indices) == [x["first"] - sh["delta"], x["first"]]
        assert d.node is None                   # one node, two positions
    lo, hi = c["claimed"]
    idx = [g for g in a.findings if g.code == "FOLIO_INDEX"
           and lo <= g.indices[0] < hi]
    assert {g.indices[0] for g in idx} == {x["first"] for x in leaf}
    # The story: both ranges, the delta, its own slot, the cut-off node.
    [e] = [e for e in a.explanations if e.code == "SHARED_SUBTREE"]
    d = e.data
    assert (d["first_index"], d["second_index"], d["delta"], d["own"], d["pages"]) == \
        (sh["first_index"], sh["second_index"], sh["delta"], sh["own"], sh["pages"])
    assert d["cutoff_pages"] == c["impact"]["cutoff"]["pages"]
    text = "\n".join(e.lines)
    span = sh["second_index"] - sh["first_index"]
    for lo in (sh["first_index"], sh["second_index"]):
        assert "0x%x-0x%x (%d-%d)" % (lo, lo + span - 1, lo, lo + span - 1) in text
    assert "its parent/offset name slot %d:" % sh["first_slot"] in text
    assert "slot %d is the wrong one" % sh["second_slot"] in text
    assert max(len(x) for x in e.lines) <= 60


@pytest.mark.parametrize("family", FAMILIES)
def test_foreign_folio_names_the_other_file(family):
    c = case(family, "foreign_folio")
    m = lab_manifest(family)
    other = labdumps.file_entry(m, c["other_file"])
    a = analysis(family, c["file"])
    [r] = [r for r in a.impact.ranges if r.kind == "foreign"]
    want = c["impact"]["ranges"][0]
    assert (r.first, r.last) == (want["first"], want["last"])
    assert r.other_ino == other["i_ino"] and "0x%x" % r.folios[0] == want["folios"][0]
    assert r.mapping == int(other["address_space"], 16)
    assert sorted(k for k in r.state if r.state[k]) == want["state"]


# ---------------------------------------------------------------------------
# Data at risk: dirty32 with a dirty folio cut off


@pytest.mark.parametrize("family", FAMILIES)
def test_dirty_folio_cut_off_is_data_at_risk(family):
    from crashext.render import chat, jsonout, table
    c = case(family, "dirty_cutoff")
    assert c["file"] == "/mnt/xfs/dirty32"
    [x] = c["impact"]["lost"]
    assert "dirty" in x["state"]
    a = analysis(family, c["file"], memmap=True, slab=False)
    risk = a.impact.at_risk
    assert [(r.kind, r.first, r.last) for r in risk] == \
        [("lost", x["index"], x["index"] + (1 << x["order"]) - 1)]
    assert a.impact.ranges[0] is risk[0]            # said first
    size = (1 << x["order"]) << 12
    text = chat.render(a)
    lines = text.splitlines()[1:-1]
    assert lines[0].startswith("CORRUPT inode")
    assert lines[1] == "DATA AT RISK: 0x%x (%s), 1 dirty folio lost" % (
        size, chat.fmt.size(size))
    assert max(len(ln) for ln in text.splitlines()) <= 60
    assert "AT RISK lost 0x%x" % size in text
    assert "=> dirty data never written back" in text
    doc = json.loads(jsonout.render(a))
    assert doc["impact"]["at_risk"] and doc["impact"]["risk_bytes"] == size
    assert doc["impact"]["ranges"][0]["state"]["dirty"] == 1
    assert "AT RISK" in table.render(a)
    # Without the memory map the tree shows no trace of the folio: the
    # pages are unexplained, and the line says what to search.
    bare = analysis(family, c["file"], memmap=False, slab=False)
    assert not bare.impact.at_risk
    assert bare.impact.lost.unexplained == 1 << x["order"]


# ---------------------------------------------------------------------------
# Every form


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_says_which_bytes_read_wrong(family):
    from crashext import fmt
    from crashext.render import chat
    for name in ("split_stale", "shared_node", "foreign_folio"):
        c = case(family, name)
        a = analysis(family, c["file"])
        text = chat.render(a)
        assert max(len(ln) for ln in text.splitlines()) <= 60
        body = text.splitlines()[1:-1]
        assert body[0].startswith("CORRUPT")
        wrong = a.impact.wrong_pages
        assert wrong and "READS WRONG: %s of the file, %d pages" % (
            fmt.nbytes(wrong << 12), wrong) in body
        r = next(r for r in a.impact.ranges if r.reads_wrong)
        assert "idx %s, %d page%s" % (fmt.idx_range(r.first, r.last), r.pages,
                                      "" if r.pages == 1 else "s") in text


def _keys(obj, out):
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(k)
            if k not in ("extra", "data", "orders", "state"):
                _keys(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _keys(v, out)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_json_impact_is_documented(family):
    from crashext.render import jsonout
    md = open(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "docs", "json-schema.md")).read()
    assert "`crashext.analysis/2`" in md
    for name in ("cutoff_leaf", "shared_node", "foreign_folio", "dirty_cutoff"):
        a = analysis(family, case(family, name)["file"])
        doc = jsonout.loads(jsonout.render(a))
        assert doc["schema"] == "crashext.analysis/2"
        for k in sorted(_keys(doc, set())):
            assert "`%s`" % k in md, "field %s not in docs/json-schema.md" % k
        for f in a.findings:
            for k in f.extra:
                assert "`%s`" % k in md, "extra key %s undocumented" % k


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_rows_and_triage_buckets(family):
    """scan searches the memory map by default for trees whose nrpages is
    not accounted for: the dirty32 row says data at risk, and so does its
    triage bucket."""
    from crashext.triage import bucket
    from crashext.triage.scan import scan, summarize
    truth, mem, _prog, _nodes = planted(family)
    mem._crashext_memmap_walks = 0
    rows = [r for r in scan(mem) if r.kind == "inode"]
    by_path = {r.path: r for r in rows if r.path}
    for path, info in truth["files"].items():
        r = by_path[path]
        assert r.impact, path
        assert r.impact["nrpages"].startswith("nrpages %d = " % r.nrpages)
        assert r.impact["unexplained"] == 0, (path, r.impact["nrpages"])
    d = by_path["/mnt/xfs/dirty32"]
    assert d.impact["at_risk"] and "DATA AT RISK" in d.summary()
    from crashext.triage.scan import rank
    assert rank(rows)[0] is d                     # data at risk first
    assert d.impact["ranges"][0]["kind"] == "lost"
    s = summarize(rows)
    sigs = bucket.dump_signatures({"scan": s})
    risk = [s for s in sigs if s.startswith("DATA AT RISK")]
    assert risk == ["DATA AT RISK: dirty folio lost"]
    assert "/mnt/xfs/dirty32" in " ".join(sigs[risk[0]]["where"])
    assert sigs[risk[0]]["severity"] == "error"
    assert any(s.startswith("READS WRONG: aliased") for s in sigs)
    # the dump's bucket says so too
    p = bucket.primary({"scan": s, "verdict": s["verdict"]})
    assert p["at_risk"] is True
    B = bucket.buckets([{"scan": s, "verdict": s["verdict"], "name": "d",
                         "dump": "/d"}])
    assert B[0]["at_risk"] == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_check_memmap_slab(family):
    """crashext check --memmap --slab -f chat on the planted dump."""
    from click.testing import CliRunner
    from crashext.cli import main
    truth = planted(family)[0]
    m = lab_manifest(family)
    r = CliRunner().invoke(main, ["chat", "-c", truth["planted"], "-k",
                                  labdumps.vmlinux_path(m), "--memmap", "--slab",
                                  "/mnt/xfs/dirty32"])
    assert r.exit_code == 1, r.output
    body = [ln for ln in r.stdout.splitlines() if not ln.startswith("```")]
    assert body[0].startswith("CORRUPT") and body[1].startswith("DATA AT RISK")
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 60
    # A kernel whose slab the walk cannot read says so, once, as a note.
    assert "error" not in r.stderr and len(r.stderr.splitlines()) <= 1
    r = CliRunner().invoke(main, ["check", "-c", truth["planted"], "-k",
                                  labdumps.vmlinux_path(m), "/mnt/xfs/big64"])
    assert r.exit_code == 1
    assert re.search(r"nrpages \d+ = \d+ reachable \+ \d+ unexplained "
                     r"\(not searched: memory map, slab\)", r.output)


@pytest.mark.parametrize("family", FAMILIES)
def test_folio_past_eof(family):
    """truncate_setsize() writes i_size, then truncate_pagecache() drops
    every folio past it: shrink i_size (on the clean dump) to the start of
    the last folio, and that folio - only it - is cached past EOF.  Not on
    tmpfs (fallocate KEEP_SIZE keeps such folios), not for a locked folio
    (a write in flight)."""
    from crashext.analyze import analyze
    from patched_memory import PatchedMemory
    m, mem, lay, ctx = clean_dump(family)
    for path, expect in (("/mnt/xfs/big64", True), ("/mnt/thp/thp16", False)):
        f = labdumps.file_entry(m, path)
        last = max(ctx.tree(f).folio_slots())           # highest index
        idx, folio = last[0], last[1]
        pm = PatchedMemory(mem)
        pm.patch_u64(int(f["inode"], 16) + lay.inode_i_size, idx << 12)
        a = analyze(pm, path)
        hits = [x for x in a.findings if x.code == "FOLIO_BEYOND_EOF"]
        if not expect:
            assert hits == [] and a.verdict == "clean"
            continue
        assert [(x.indices, x.folio, x.severity) for x in hits] == \
            [((idx,), folio, "warning")]
        [r] = a.impact.ranges
        assert (r.kind, r.first, r.last) == ("beyond_eof", idx,
                                             idx + (1 << ctx.order(folio)) - 1)
        assert r.beyond_eof and not r.reads_wrong and not a.impact.wrong_pages
        # The same folio locked: a write in flight, not reported.
        flags = int.from_bytes(mem.read(folio + lay.f_flags, 8), "little")
        pm.patch_u64(folio + lay.f_flags, flags | 1 << lay.pg_locked)
        assert analyze(pm, path).verdict == "clean"


@pytest.mark.parametrize("family", FAMILIES)
def test_node_under_two_trees(family):
    """A node of big64's tree also put in a slot of dirty32's tree: one
    subtree under two trees.  dirty32's analysis finds big64's tree holds
    it at its parent/offset (the index range from the clean dump), reads
    big64's folios over that slot's range (foreign), and finds its own
    folios of that range in the memory map.  A node whose ->array alone
    names another tree is told apart: that tree does not hold it."""
    from crashext.analyze import analyze
    from patched_memory import PatchedMemory
    from tests.lab import scenarios as S
    m, mem, lay, ctx = clean_dump(family)
    fa = labdumps.file_entry(m, "/mnt/xfs/big64")
    fb = labdumps.file_entry(m, "/mnt/xfs/dirty32")
    ta, tb = ctx.tree(fa), ctx.tree(fb)
    X = next(n for n in ta.nodes if n.shift == 0 and n.holder is not None
             and any(S.kind(e) == S.POINTER for e in n.slots))
    Y, i = next((n, k) for n in tb.nodes if n.shift == 6
                for k, e in enumerate(n.slots) if S.kind(e) == S.NODE)
    lo = Y.index(i)
    pm = PatchedMemory(mem)
    pm.patch_u64(Y.slot_addr(i), S.mk_node(X.addr))
    a = analyze(pm, fb["path"], memmap=True)
    [f] = [f for f in a.findings if f.code == "NODE_ARRAY"]
    assert f.node == X.addr and f.found == int(fa["i_pages"], 16)
    [e] = [e for e in a.explanations if e.code == "CROSS_LINK"]
    assert e.data == {"shared": True, "other_index": X.base, "span": 64}
    assert "slot %d of node" % X.holder_slot in e.text
    assert max(len(x) for x in e.lines) <= 60
    # What dirty32's readers get over that slot: big64's folios.
    want = set()
    for s, ent, ns in X.runs():
        if S.kind(ent) == S.POINTER:
            want.update(range(lo + s, lo + s + ns))
    assert covered(a.impact.ranges, ("foreign",), lo, lo + 64) == want
    assert {r.other_ino for r in a.impact.ranges if r.kind == "foreign"} == \
        {fa["i_ino"]}
    # Its own folios of the range: cut off, found in the memory map.
    own = [x for x in ctx.own_folios(fb, tb) if lo <= x["index"] < lo + 64]
    assert sorted("0x%x" % x.folio.addr for x in a.impact.lost.folios) == \
        sorted(x["folio"] for x in own)
    assert a.impact.lost.unexplained == 0
    # Only ->array changed: the other tree does not hold it (stale).
    Z = next(n for n in tb.nodes if n.shift == 0 and n.holder is not None)
    pm = PatchedMemory(mem)
    pm.patch_u64(Z.addr + lay.node_array, int(fa["i_pages"], 16))
    a = analyze(pm, fb["path"])
    [e] = [e for e in a.explanations if e.code == "CROSS_LINK"]
    assert e.data == {"shared": False}
    assert "that tree does not hold it: parent 0x%x names another array;" \
        % Z.holder.addr in e.text
    assert max(len(x) for x in e.lines) <= 60


@pytest.mark.parametrize("family", FAMILIES)
def test_unreadable_subtree_in_the_reconciliation(family):
    """The all-cases dump's unreadable_node case: a node slot points at
    unmapped memory, so the subtree it held cannot be read.  Without the
    memory map the nrpages line bounds what may be there; with it, the
    folios of the real (clean-dump) subtree are found and counted as
    under the unreadable node, and the range reads as unknown."""
    from tests.lab import plant, scenarios as S
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    truth = plant.ensure_planted(family)
    if truth is None:
        pytest.skip("no lab run for %s" % family)
    c = next(x for x in truth["cases"] if x["case"] == "unreadable_node")
    mem = DrgnMemory.open(truth["planted"], truth["vmlinux"])
    lo, hi = c["claimed"]
    bogus = int(c["address"], 16)
    # Ground truth: the clean dump's folios of this file in that range.
    m = lab_manifest(family)
    ctx = S.Ctx(m, S.program_for(m))
    f = labdumps.file_entry(m, c["file"])
    want = sorted(x["folio"] for x in ctx.own_folios(f, ctx.tree(f))
                  if lo <= x["index"] < hi)
    assert want
    bare = analyze(mem, c["file"])
    [u] = bare.impact.lost.unreadable
    assert (u.node, u.index, u.span) == (bogus, lo, hi - lo)
    assert "up to %d in unreadable nodes" % (hi - lo) in bare.impact.lost.line()
    assert covered(bare.impact.ranges, ("unknown",), lo, hi) == set(range(lo, hi))
    a = analyze(mem, c["file"], memmap=True)
    under = [x for x in a.impact.lost.folios if x.unreadable == bogus]
    assert sorted("0x%x" % x.folio.addr for x in under) == want
    assert "%d under unreadable nodes" % len(want) in a.impact.lost.line()
    assert a.impact.lost.unexplained == 0
