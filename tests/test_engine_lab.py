"""The engine on real lab vmcores of both kernels (6.1 and 6.12): every
file walks clean, adds up to nrpages, matches the lab manifest and drgn's
own ``xa_for_each``; the makedumpfile dump and a snapshot give the same
analysis as the ELF dump."""

from __future__ import annotations

import pytest

from crashext.analyze import analyze, layout_for
from crashext.backends.snapshot import RecordingMemory, SnapshotMemory, save
from crashext.layout import ORDER_FLAGS_1, ORDER_FOLIO_ORDER
from crashext.xarray import entry as E

from conftest import FAMILIES, lab_manifest, open_lab


def test_layout_per_kernel(lab):
    m, mem = lab
    lay = layout_for(mem)
    assert lay.chunk_shift == 6 and lay.node_size == 576
    assert lay.release == m["release"]
    if m["release"].startswith("6.1."):
        assert lay.order_kind == ORDER_FOLIO_ORDER    # folio->_folio_order
    else:
        assert lay.order_kind == ORDER_FLAGS_1        # _flags_1 & 0xff
    import drgn
    t = mem.prog.type("struct xa_node")
    assert lay.node_slots == drgn.offsetof(t, "slots")
    assert lay.pg_head == mem.prog["PG_head"].value_()


def test_every_file_clean_and_matches_manifest(lab):
    m, mem = lab
    for f in m["files"]:
        a = analyze(mem, f["path"])
        assert a.findings == [], (f["path"], a.findings[:3])
        assert a.target.nrpages == f["nrpages"]
        assert a.stats.pages == f["nrpages"], f["path"]
        hist = {int(k): v for k, v in f["folio_order_histogram"].items()}
        assert a.stats.orders == hist, f["path"]
        assert a.stats.folios == f["folios"]
        assert a.stats.values == f["value_entries"]
        assert a.stats.value_indices == f.get("value_entry_pages", 0)
        assert a.target.i_ino == f["i_ino"]


def test_walk_equals_drgn_xa_for_each(lab):
    from drgn import Object
    from drgn.helpers.linux.xarray import xa_for_each
    m, mem = lab
    for f in m["files"]:
        xa = Object(mem.prog, "struct xarray *", int(f["i_pages"], 16))
        theirs = [(i, e.value_()) for i, e in xa_for_each(xa)]
        a = analyze(mem, f["i_pages"])
        ours = [(e.index, e.raw) for e in a.walk.entries
                if e.kind in (E.POINTER, E.VALUE)]
        assert ours == theirs, f["path"]
        assert len(ours) == f["folios"] + f["value_entries"]


def test_every_target_kind_resolves(lab):
    m, mem = lab
    f = m["files"][0]
    kinds = {}
    for spec in (f["inode"], f["address_space"], f["i_pages"], f["path"],
                 "inode:" + f["inode"], f["inode"][2:]):
        a = analyze(mem, spec)
        kinds[spec] = a.target.kind
        assert a.target.xarray == int(f["i_pages"], 16)
    assert kinds[f["inode"]] == "inode"
    assert kinds[f["address_space"]] == "mapping"
    assert kinds[f["i_pages"]] == "xarray"
    assert kinds[f["path"]] == "path"
    first = analyze(mem, f["i_pages"]).walk.entries[0]
    if first.kind == E.POINTER:
        assert analyze(mem, "0x%x" % first.raw).target.kind == "folio"


@pytest.mark.parametrize("family", FAMILIES)
def test_makedumpfile_dump_equals_elf(family):
    """Every makedumpfile dump of the run (-d 31 on 6.1, -d 17 on newer
    --quick runs, all of them on full runs) analyses as its ELF dump."""
    from tests.lab.labdumps import makedumpfile_dumps
    m0 = lab_manifest(family)
    names = makedumpfile_dumps(m0) if m0 else ["makedumpfile-d31"]
    if m0 is not None:
        assert names, "lab run %s has no makedumpfile dump" % m0["_run_dir"]
    _, elf = open_lab(family, "elf")
    for name in names:
        m, kd = open_lab(family, name)
        for f in m["files"]:
            a, b = analyze(kd, f["path"]), analyze(elf, f["path"])
            assert a.findings == b.findings == [], (name, f["path"])
            assert a.stats == b.stats, (name, f["path"])


def test_snapshot_replays_identically(lab, tmp_path):
    m, mem = lab
    for f in m["files"]:
        rec = RecordingMemory(mem)
        a = analyze(rec, f["path"])
        p = str(tmp_path / "x.snap")
        save(rec, p)
        b = analyze(SnapshotMemory.load(p), f["path"])
        assert (a.target, a.stats, a.findings) == (b.target, b.stats, b.findings)
        assert [(e.index, e.raw, e.nr_slots) for e in a.walk.entries] == \
               [(e.index, e.raw, e.nr_slots) for e in b.walk.entries]


@pytest.mark.parametrize("mapping, code, words", [
    (0, "STALE_ENTRY", "page_cache_delete"),
    (0xffff888000001001, "REUSED_FOLIO", "anonymous"),
    (0xffff888000001003, "REUSED_FOLIO", "KSM"),
])
def test_folio_mapping_is_explained(lab, mapping, code, words):
    """folio->mapping NULL (removed from the cache, entry left) or with
    PAGE_MAPPING_ANON/KSM bits (freed and reused as anon memory): one
    FOLIO_MAPPING finding and the matching explanation."""
    from patched_memory import PatchedMemory
    m, mem = lab
    f = [x for x in m["files"] if x["path"] == "/mnt/xfs/big200"][0]
    clean = analyze(mem, f["inode"])
    lay = clean.layout
    e = next(x for x in clean.walk.entries if x.raw in clean.folios)
    pm = PatchedMemory(mem).patch_u64(e.raw + lay.f_mapping, mapping)
    a = analyze(pm, f["inode"])
    fm = [x for x in a.findings if x.code == "FOLIO_MAPPING"]
    assert len(fm) == 1 and fm[0].found == mapping
    assert fm[0].folio == e.raw
    ex = [x for x in a.explanations if x.code == code]
    assert len(ex) == 1 and words in " ".join(ex[0].lines)
    assert ex[0].findings == [a.findings.index(fm[0])]


def test_tail_page_entry_names_its_head(lab):
    """A slot pointing at a tail page (page 1 of a large folio) is
    FOLIO_TAIL and names the head page.  Up to 6.x ``compound_head`` is
    head + 1; 7.x renamed it ``compound_info`` and, with HVO and a 64-byte
    struct page, stores a mask (head = page & info, 7.3.4 page-flags.h
    ``_compound_head()``): the layout must tell which from the debug info,
    and the dump's own bytes confirm it."""
    from drgn import Object
    from drgn.helpers.linux.mm import compound_head
    from patched_memory import PatchedMemory
    m, mem = lab
    f = [x for x in m["files"] if x["first_folios"][0]["order"] > 0][0]
    clean = analyze(mem, f["path"])
    lay = clean.layout
    e = next(x for x in clean.walk.entries
             if x.node and x.kind == E.POINTER and x.nr_slots > 1)
    tail = e.raw + lay.page_size
    info = mem.read_u64(tail + lay.f_compound_head)
    assert info & 1
    assert lay.head_of(tail, info) == e.raw
    assert (info - 1 != e.raw) == lay.compound_mask
    assert lay.compound_mask == m["release"].startswith("7.")
    # drgn's compound_head() agrees.
    assert compound_head(Object(mem.prog, "struct page *", tail)).value_() \
        == e.raw
    pm = PatchedMemory(mem).patch_slot(e.node, e.slot, tail, lay)
    a = analyze(pm, f["path"])
    tails = [x for x in a.findings if x.code == "FOLIO_TAIL"]
    assert len(tails) == 1 and tails[0].found == e.raw, a.findings[:3]
    assert tails[0].indices == (e.index,)
