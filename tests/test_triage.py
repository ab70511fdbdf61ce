"""Batch triage on the lab vmcores (skipped when the lab is absent): the
whole-dump scan, the radix_tree_node slab walk, the reverse lookup, the
parallel batch (resumable, errors as results) and the grouped report."""

from __future__ import annotations

import json
import os

import pytest

from crashext.analyze import layout_for
from crashext.triage import batch, bucket, report
from crashext.triage.reverse import find_folio, reverse_map
from crashext.triage.scan import rank, scan, summarize
from crashext.triage.slab import walk_slab
from crashext.xarray.walk import walk_xarray

from conftest import FAMILIES, lab_dir, lab_dump, lab_manifest, open_lab
from patched_memory import ExcludingMemory

pytestmark = pytest.mark.lab

_scans = {}
_slabs = {}


def _scan(family, mem):
    if family not in _scans:
        _scans[family] = list(scan(mem))
    return _scans[family]


def _slab(family, mem):
    if family not in _slabs:
        _slabs[family] = walk_slab(mem)
    return _slabs[family]


def _family(m):
    return m["_family"]


# ----------------------------------------------------------------------
# scan


def test_scan_finds_every_manifest_file_clean(lab):
    m, mem = lab
    rows = _scan(_family(m), mem)
    by_inode = {r.inode: r for r in rows if r.kind == "inode"}
    for f in m["files"]:
        r = by_inode.get(int(f["inode"], 16))
        assert r is not None, f["path"]
        assert r.verdict == "clean" and r.codes == {}, (f["path"], r.codes)
        assert r.i_ino == f["i_ino"]
        assert r.fs_type == f.get("fs_type", r.fs_type)
        assert r.mapping == int(f["address_space"], 16)
        assert r.xarray == int(f["i_pages"], 16)
        assert r.nrpages == f["nrpages"] == r.counts["pages"]
        assert r.counts["folios"] == f["folios"]
        assert r.counts["values"] == f["value_entries"]
    # Clean dump: no finding anywhere, no enumeration error.
    assert [r.summary() for r in rows if r.verdict != "clean"] == []
    s = summarize(rows)
    assert s["verdict"] == "clean" and s["codes"] == {} and s["top"] == []
    assert s["rows"] == len(rows) >= len(m["files"])
    assert {"xfs", "tmpfs"} <= set(s["by_fs"])


def test_scan_ranks_the_seed_case_first():
    from patched_memory import seed_case
    m, mem = open_lab("6.1")
    case = seed_case(mem)
    if case is None:
        pytest.skip("no node of the seed shape in this lab run")
    rows = list(scan(case.mem, fs_types=["xfs"]))
    top = rank(rows)
    assert top and top[0].verdict == "corrupt"
    assert top[0].codes.get("DUP_FOLIO") == 1
    dup = [f for f in top[0].findings if f["code"] == "DUP_FOLIO"][0]
    assert sorted(dup["slots"]) == [16, 32, 48] and dup["order"] == 4
    assert any(e["code"] == "STALE_SPLIT" for e in top[0].explanations)
    # A row with findings is named by its path, found in the dcache.
    assert top[0].path == case.path and top[0].name.endswith(case.path)
    assert all(r.path == "" for r in rows if r.verdict == "clean")
    s = summarize(rows)
    assert s["verdict"] == "corrupt" and s["top"][0]["inode"] == top[0].inode
    # The three copies, by reverse lookup.
    hits = list(find_folio(case.mem, case.folio))
    assert sorted(h.index for h in hits) == sorted(case.indices)
    assert {h.slot for h in hits} == {16, 32, 48}


def test_scan_reports_a_broken_inode_list_and_goes_on():
    from patched_memory import broken_sb_list
    pm, _off = broken_sb_list(*open_lab("6.1"))
    progress = []
    rows = list(scan(pm, progress=progress.append))
    errs = [r for r in rows if r.kind == "error"]
    assert len(errs) == 1 and "xfs" in errs[0].where, errs
    assert any(r.fs_type == "tmpfs" for r in rows)     # other sbs scanned
    assert progress and progress[-1]["done"] is True
    assert rank(rows)[0].kind == "error"


# ----------------------------------------------------------------------
# slab


def test_slab_walk_covers_every_manifest_tree(lab):
    m, mem = lab
    lay = layout_for(mem)
    rep = _slab(_family(m), mem)
    assert rep.complete and rep.findings == [], rep.findings[:3]
    st = rep.stats
    assert st["inuse_mismatch"] == 0 and st["unknown"] == 0
    assert st["orphans"] == 0 and st["reachable"] == st["owned"]
    alloc = rep.allocated
    walked = set()
    for f in m["files"]:
        w = walk_xarray(mem, lay, int(f["i_pages"], 16))
        nodes = {n.addr for n in w.nodes}
        assert nodes <= alloc, f["path"]
        for a in nodes:
            assert rep.nodes[a].array == int(f["i_pages"], 16)
        walked |= nodes
    assert len(alloc) >= len(walked) > 0
    assert st["allocated"] + st["free"] == st["objects"]


def _leaf_and_parent(mem, m, path="big64"):
    lay = layout_for(mem)
    f = [f for f in m["files"] if f["path"].endswith(path)][0]
    w = walk_xarray(mem, lay, int(f["i_pages"], 16))
    leaf = [n for n in w.nodes if n.eshift == 0 and n.holder][0]
    return lay, leaf


def test_slab_allocated_equals_drgn(lab):
    """Which objects are free is right on every SLUB generation: the set
    of allocated radix_tree_node objects equals drgn's own
    slab_cache_for_each_allocated_object() (per-CPU slabs and lockless
    freelists on 6.1/6.12, sheaves and barns on 7.3)."""
    from drgn.helpers.linux.slab import slab_cache_for_each_allocated_object
    m, mem = lab
    rep = _slab(_family(m), mem)
    theirs = {o.value_() for o in slab_cache_for_each_allocated_object(
        mem.prog["radix_tree_node_cachep"], "struct xa_node")}
    assert rep.allocated == theirs
    assert rep.stats["objects"] == len(rep.nodes) > len(theirs)


def test_slab_finds_an_orphaned_node(lab):
    from patched_memory import PatchedMemory
    m, mem = lab
    lay, leaf = _leaf_and_parent(mem, m)
    pm = PatchedMemory(mem).patch_slot(leaf.holder, leaf.holder_slot, 0, lay)
    rep = walk_slab(pm)
    assert rep.codes == {"SLAB_NODE_ORPHAN": 1}, rep.codes
    f = rep.findings[0]
    assert f.node == leaf.addr and f.severity == "warning"
    assert "parent slot" in f.extra["reason"]


def test_slab_finds_a_cross_linked_node(lab):
    from patched_memory import PatchedMemory
    m, mem = lab
    lay, leaf = _leaf_and_parent(mem, m)
    _, other = _leaf_and_parent(mem, m, "big200")
    pm = PatchedMemory(mem).patch_slot(leaf.holder, leaf.holder_slot,
                                       other.addr | 2, lay)
    rep = walk_slab(pm)
    assert rep.codes.get("NODE_ARRAY") == 1, rep.codes
    assert rep.codes.get("SLAB_NODE_ORPHAN") == 1
    xl = [f for f in rep.findings if f.code == "NODE_ARRAY"][0]
    assert xl.node == other.addr and xl.extra["holder"] == leaf.holder
    assert rep.verdict == "corrupt"


def test_slab_finds_a_link_to_a_free_node(lab):
    from patched_memory import PatchedMemory
    m, mem = lab
    rep0 = _slab(_family(m), mem)
    free = [a for a, n in rep0.nodes.items() if n.state == "free"]
    assert free, "no free radix_tree_node object in this dump"
    lay, leaf = _leaf_and_parent(mem, m)
    pm = PatchedMemory(mem).patch_slot(leaf.holder, leaf.holder_slot,
                                       free[0] | 2, lay)
    rep = walk_slab(pm)
    assert rep.codes.get("SLAB_NODE_FREE_LINKED") == 1, rep.codes
    # And the slab search finds a folio in the free node when one is
    # planted there (reverse lookup via the slab).
    array = rep0.nodes[leaf.addr].array
    folio = [e for e in walk_xarray(mem, lay, array).entries
             if e.node == leaf.addr][0].raw
    pm.patch_slot(free[0], 5, folio, lay)
    hits = [h for h in find_folio(pm, folio, via="slab")
            if h.node == free[0]]
    assert len(hits) == 1 and hits[0].slot == 5
    assert hits[0].node_state == "free"


def test_slab_pages_excluded_is_one_note(lab):
    """Every slab of the cache unreadable (makedumpfile -d 31 drops them
    on 6.10+ kernels: a real 7.3 -d 31 dump loses all 60): the walk says
    so in one note with the count, is incomplete, and raises nothing."""
    m, mem = lab
    rep0 = _slab(_family(m), mem)
    pages = {a & ~4095 for a in rep0.nodes}
    rep = walk_slab(ExcludingMemory(mem, pages))
    assert not rep.complete and rep.stats["objects"] == 0
    assert rep.stats["slabs_unreadable"] == rep0.stats["slabs"]
    notes = [n for n in rep.notes if "unreadable (excluded page)" in n]
    assert notes == [n for n in rep.notes if "slab" in n and
                     "excluded" in n]
    assert len(notes) == 1 and notes[0].startswith(
        "%d slabs unreadable" % rep0.stats["slabs"]), rep.notes
    assert rep.findings == []


# ----------------------------------------------------------------------
# slab: SLUB per-CPU sheaves and barns (7.x)


def _sheaf_lab():
    """(family, manifest, mem) of the first lab family whose SLUB keeps
    free objects in sheaves (``kmem_cache.cpu_sheaves`` in its debug
    info: 7.x)."""
    for fam in FAMILIES:
        if lab_manifest(fam) is None:
            continue
        m, mem = open_lab(fam)
        if mem.member_offset("struct kmem_cache", "cpu_sheaves") is not None:
            return fam, m, mem
    pytest.skip("no lab family with SLUB sheaves in %s (boot one: "
                "mkdump.sh --quick --kernel 7.3)" % (FAMILIES,))


def _drgn_sheaves(mem):
    """[(sheaf address, where, [object addresses])] of every sheaf of
    radix_tree_node_cachep, read with drgn's own helpers: each CPU's main
    and spare sheaf and every barn's full list (7.3 layout:
    kmem_cache.per_node[n].barn)."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.percpu import per_cpu_ptr
    prog = mem.prog
    s = prog["radix_tree_node_cachep"]
    out = []

    def add(sh, where):
        objs = [sh.objects[i].value_() for i in range(sh.size.value_())]
        out.append((sh.value_(), where, objs))
    for cpu in for_each_possible_cpu(prog):
        pcs = per_cpu_ptr(s.cpu_sheaves, cpu)
        for name in ("main", "spare", "rcu_free"):
            sh = getattr(pcs, name)
            if sh:
                add(sh, "cpu%d %s" % (cpu, name))
    for n in range(prog["nr_node_ids"].value_()):
        barn = s.per_node[n].barn
        if barn:
            for sh in list_for_each_entry("struct slab_sheaf",
                                          barn.sheaves_full.address_of_(),
                                          "barn_list"):
                add(sh, "barn%d full" % n)
    return out


def _sheaf_slot(mem, sheaf, i):
    o = mem.member_offset("struct slab_sheaf", "objects")
    return sheaf + o + 8 * i


def test_slab_sheaf_objects_are_free():
    """Objects parked in sheaves are free (mm/slub.c free_to_pcs()), and
    slab->inuse counts them as in use: no inuse mismatch."""
    fam, m, mem = _sheaf_lab()
    rep = _slab(fam, mem)
    sheaves = _drgn_sheaves(mem)
    objs = [a for _s, _w, o in sheaves for a in o]
    assert objs and len(set(objs)) == len(objs)
    assert rep.stats["sheaf_objects"] == len(objs)
    assert rep.stats["sheaves"] >= len([s for s in sheaves if s[2]])
    for a in objs:
        assert rep.nodes[a].state == "free", hex(a)
    assert rep.stats["inuse_mismatch"] == 0
    assert "per-cpu sheaves" in rep.notes[0]
    assert rep.complete and rep.codes == {}


def test_slab_sheaf_holding_a_live_node():
    """A sheaf slot naming a node that is still in a tree (a double free
    or a use after free in the making): the node counts as free and its
    parent's link to it is SLAB_NODE_FREE_LINKED."""
    from patched_memory import PatchedMemory
    fam, m, mem = _sheaf_lab()
    lay, leaf = _leaf_and_parent(mem, m)
    sheaf, where, objs = [x for x in _drgn_sheaves(mem) if x[2]][0]
    pm = PatchedMemory(mem).patch_u64(_sheaf_slot(mem, sheaf, 0), leaf.addr)
    rep = walk_slab(pm)
    assert rep.nodes[leaf.addr].state == "free"
    fl = [f for f in rep.findings if f.code == "SLAB_NODE_FREE_LINKED"]
    assert len(fl) == 1 and fl[0].found == leaf.addr, rep.codes
    assert fl[0].node == leaf.holder and fl[0].slots == (leaf.holder_slot,)
    assert "SLAB_SHEAF" not in rep.codes
    assert rep.verdict == "corrupt"


def test_slab_sheaf_stray_pointers():
    """A sheaf slot inside an object but not at its start, and one naming
    an object that is also on a slab freelist: SLAB_SHEAF each, with the
    sheaf that holds it; nothing else."""
    from patched_memory import PatchedMemory
    fam, m, mem = _sheaf_lab()
    rep0 = _slab(fam, mem)
    lay, leaf = _leaf_and_parent(mem, m)
    sheaves = _drgn_sheaves(mem)
    in_sheaves = {a for _s, _w, o in sheaves for a in o}
    on_freelist = [a for a, n in rep0.nodes.items()
                   if n.state == "free" and a not in in_sheaves]
    assert on_freelist, "no object on a slab freelist in this dump"
    sheaf, where, objs = [x for x in sheaves if len(x[2]) >= 2][0]
    pm = PatchedMemory(mem)
    pm.patch_u64(_sheaf_slot(mem, sheaf, 0), leaf.addr + 8)
    pm.patch_u64(_sheaf_slot(mem, sheaf, 1), on_freelist[0])
    rep = walk_slab(pm)
    sh = {f.found: f for f in rep.findings if f.code == "SLAB_SHEAF"}
    assert set(sh) == {leaf.addr + 8, on_freelist[0]}, rep.findings[:4]
    assert sh[leaf.addr + 8].extra["sheaf"] == where
    assert sh[on_freelist[0]].extra["also"] == "freelist"
    # The two objects the slots held before now count as allocated, with
    # whatever their last user left: xa_node_free() sets ->array to
    # XA_RCU_FREE ("freeing"), lib/radix-tree.c radix_tree_node_free()
    # (IDR) leaves it, so such a node is an orphan of its old array.
    # Nothing else is reported.
    displaced = set(objs[:2])
    for f in rep.findings:
        assert f.code == "SLAB_SHEAF" or f.node in displaced, f
    assert rep.stats["orphans"] <= 2


def test_slab_barn_list_broken():
    """A barn list pointing at unreadable memory: one note naming the
    barn, the walk incomplete, every other result still reported."""
    from patched_memory import PatchedMemory
    fam, m, mem = _sheaf_lab()
    prog = mem.prog
    barn = prog["radix_tree_node_cachep"].per_node[0].barn
    head = barn.sheaves_full.address_of_().value_()
    pm = PatchedMemory(mem).patch_u64(head, 0xdead000000000100)
    rep = walk_slab(pm)
    assert not rep.complete
    notes = [n for n in rep.notes if "barn0" in n and "full" in n]
    assert len(notes) == 1, rep.notes
    assert "\n" not in notes[0]
    assert rep.stats["objects"] == _slab(fam, mem).stats["objects"]
    assert rep.stats["orphans"] == 0


# ----------------------------------------------------------------------
# reverse


def test_reverse_lookup_trees_and_slab_agree(lab):
    m, mem = lab
    want = {}
    for f in m["files"]:
        ff = f["first_folios"][0]
        want[int(ff["folio"], 16)] = (f["i_ino"], ff["index"])
    got = reverse_map(mem, list(want))
    for folio, (ino, index) in want.items():
        hits = got[folio]
        assert [(h.i_ino, h.index) for h in hits] == [(ino, index)]
        slab = list(find_folio(mem, folio, via="slab"))
        if hits[0].node:        # in a node, not in xa_head
            assert [(h.i_ino, h.index, h.node, h.slot) for h in slab] == \
                [(ino, index, hits[0].node, hits[0].slot)]
    # A tail page resolves to its folio.
    big = [f for f in m["files"] if f["first_folios"][0]["order"] > 0][0]
    folio = int(big["first_folios"][0]["folio"], 16)
    page_size = mem.struct_size("struct page")
    tail = list(find_folio(mem, folio + page_size))
    assert [h.folio for h in tail] == [folio]


# ----------------------------------------------------------------------
# batch + report


def _two_elf_dumps():
    _, d61 = lab_dump("6.1")
    _, d612 = lab_dump("6.12")
    return [d61, d612]


def test_release_and_inputs():
    from crashext.triage.debuginfo import find_vmlinux
    from crashext.triage.discover import discover
    from crashext.triage.dumpfile import header_facts
    m, path = lab_dump("6.1")
    assert header_facts(path)["release"] == m["release"]
    run = os.path.dirname(path)
    found = discover(run, settle=0)
    want = {os.path.realpath(d["path"]) for d in m["dumps"]
            if os.path.exists(d["path"])}
    assert {os.path.realpath(d.path) for d in found.dumps} == want
    assert all(d.layout == "lab run" and d.vmlinux_hint == m["vmlinux"]
               for d in found.dumps)
    f = find_vmlinux(m["release"], header_facts(path)["build_id"],
                     [lab_dir()], system=False)
    assert os.path.realpath(f.path) == os.path.realpath(m["vmlinux"])


def test_triage_two_dumps_resumable_with_an_error(tmp_path):
    dumps = _two_elf_dumps()
    bogus = tmp_path / "vmcore.bogus"
    bogus.write_bytes(b"this is not a vmcore\n" * 100)
    out = tmp_path / "out"
    lines = []
    # a file with a dump's name that is no dump is skipped, with a line;
    # one that starts as an ELF core but holds nothing is an error result
    bad = tmp_path / "vmcore.bad"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x04\x00"
                    + b"\0" * 4096)
    res = batch.triage(dumps + [str(bogus), str(bad)], out, workers=2,
                       debug_dirs=[lab_dir()], log=lines.append, settle=0)
    assert [r["status"] for r in res] == ["done", "done", "error"], lines
    assert len(lines) == 4
    assert [x for x in lines if "vmcore.bogus" in x] == [
        "skipped %s: neither a dump nor a list of dumps (no line names "
        "an existing file)" % bogus]
    assert [x for x in lines if "error:" in x] == \
        [x for x in lines if "vmcore.bad" in x]
    files = sorted(os.listdir(out))
    assert len(files) == 3 and not any(f.startswith(".tmp") for f in files)
    for r in res[:2]:
        with open(r["result"]) as f:
            d = json.load(f)
        assert d["complete"] and d["error"] is None
        assert d["verdict"] == "clean", d["scan"]["codes"]
        assert d["slab"]["verdict"] == "clean"
        assert d["scan"]["by_verdict"] == {"clean": d["scan"]["rows"]}
        assert d["release"] and d["release"] in d["vmlinux"]
    with open(res[2]["result"]) as f:
        e = json.load(f)
    assert e["complete"] and e["error"] and "\n" not in e["error"]
    mtimes = {f: os.stat(out / f).st_mtime_ns for f in files}
    again = batch.triage(dumps + [str(bogus), str(bad)], out, workers=2,
                         debug_dirs=[lab_dir()], log=None, settle=0)
    assert [r["status"] for r in again] == ["skipped"] * 3
    assert {f: os.stat(out / f).st_mtime_ns for f in files} == mtimes
    # The report buckets them: two clean, one error; chat width.
    md = report.report(out)
    assert all(len(x) <= 60 for x in md.splitlines())
    g = report.group(out)
    assert g["by_verdict"] == {"clean": 2, "error": 1}
    assert sorted(B["conclusion"] for B in g["buckets"]) == \
        ["clean", "error"]
    assert sum(B["count"] for B in g["buckets"]) == 3
    assert g["index"][0]["signature"].startswith("error:")


def test_report_groups_the_seed_signature():
    from patched_memory import seed_case
    m, mem = open_lab("6.1")
    case = seed_case(mem)
    if case is None:
        pytest.skip("no node of the seed shape in this lab run")
    s = summarize(scan(case.mem, fs_types=["xfs"]))
    res = [{"schema": batch.SCHEMA, "complete": True, "dump": "/d/%d" % i,
            "name": "dump%d" % i, "release": m["release"],
            "verdict": s["verdict"], "scan": s} for i in range(3)]
    g = report.group(res)
    sigs = [G["signature"] for G in g["index"]]
    assert sigs[0] == "DUP_FOLIO order-4 at +{16,32,48}", sigs
    assert "STALE_SPLIT order-6 -> order-4" in sigs
    assert len(g["index"][0]["dumps"]) == 3
    # one bucket: the explanation's orders, the node level and slots
    assert [B["key"] for B in g["buckets"]] == [
        "stale split order 6 -> 4 / xfs / shift 0 slots +{16,32,48} / "
        "no panic"]
    assert g["buckets"][0]["count"] == 3
    md = report.to_markdown(g)
    assert "## 1. stale split order 6 -> 4" in md
    assert all(len(x) <= 60 for x in md.splitlines())
    assert json.loads(report.to_json(g))["dumps"] == 3


def test_triage_dask_engine(tmp_path):
    pytest.importorskip("distributed")
    dumps = _two_elf_dumps()
    res = batch.triage(dumps, tmp_path, workers=2, engine="dask",
                       debug_dirs=[lab_dir()], log=None, settle=0)
    assert [r["status"] for r in res] == ["done", "done"]
    assert {r["verdict"] for r in res} == {"clean"}
    assert len({r["pid"] for r in res}) >= 1


@pytest.mark.parametrize("mod", ["scan", "slab", "reverse", "report",
                                 "bucket", "panic", "discover"])
def test_engine_modules_need_no_drgn_or_click(mod):
    """scan/slab/reverse run inside crash's PyKdump Python: importable with
    drgn and click unavailable."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.modules['drgn'] = None; "
            "sys.modules['click'] = None; sys.path.insert(0, %r); "
            "import crashext.triage.%s" % (root, mod))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_names_trees_as_scan_does():
    """The report's tree names are the scan's own (so a triage picture,
    named after a ScanRow, is found under its signature), swap included."""
    from crashext.triage.scan import ScanRow
    rows = [ScanRow("swap", "corrupt", swap_type=0, i_ino=2,
                    codes={"NRPAGES": 1},
                    findings=[{"code": "NRPAGES", "severity": "error"}]),
            ScanRow("inode", "corrupt", i_ino=132, fs_type="xfs",
                    s_id="vda", path="/mnt/xfs/big200",
                    codes={"NRPAGES": 1},
                    findings=[{"code": "NRPAGES", "severity": "error"}])]
    res = {"dump": "/d", "verdict": "corrupt",
           "scan": {"top": [r.to_dict() for r in rows]}}
    where = bucket.dump_signatures(res)["NRPAGES"]["where"]
    assert where == [r.name for r in rows] == \
        ["swap 0:2", "xfs vda:132 /mnt/xfs/big200"]
