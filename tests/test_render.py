"""Renderers (chat, table, JSON, dump, PNG) on real lab dumps, clean and
patched into the seed case (one folio at slots 16, 32 and 48), and on the
snapshots in sample_dumps/ (which need nothing but crashext).

The lab tests skip when the vmcore lab
(/var/cache/crashext-lab/6.1/manifest.json) or drgn is absent.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from functools import lru_cache

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from patched_memory import (LAB, PatchedMemory, lab_files,  # noqa: E402
                            lab_memory, lab_seed)

from crashext import fmt  # noqa: E402
from crashext.memory import CrashextError  # noqa: E402
from crashext.render import chat, dump, jsonout, table  # noqa: E402

from tests.lab.labdumps import FAMILIES, load_manifest  # noqa: E402

needs_lab = pytest.mark.skipif(
    load_manifest("6.1") is None,
    reason="vmcore lab absent (no 6.1 run in %s)" % LAB)


def _families():
    return [f for f in FAMILIES if load_manifest(f) is not None]


def _mem(family):
    try:
        import drgn  # noqa: F401
    except ImportError:
        pytest.skip("drgn not installed")
    got = lab_memory(family)
    if got is None:
        pytest.skip("lab run %s incomplete" % family)
    return got


@lru_cache(maxsize=None)
def clean(family, path):
    from crashext.analyze import analyze
    return analyze(_mem(family)[0], path)


@lru_cache(maxsize=None)
def seed(family, path=None):
    from crashext.analyze import analyze
    _mem(family)
    case = lab_seed(family, path)
    if case is None:
        pytest.skip("no node fit for the seed case in %s" % family)
    return case, analyze(case.mem, case.path)


@lru_cache(maxsize=None)
def stale_siblings(family):
    """Slot 0 zeroed in 30 leaf nodes whose slot 0 starts a multi-slot
    folio (30 SIBLING_TO_NULL, 30 NODE_COUNT, NRPAGES) and one other
    leaf's array pointed elsewhere.  The file is the run's own: the one
    with the most such leaves (big64 on 6.x, whose readahead makes
    order-2..4 folios; 7.3 reads it in order-9 folios)."""
    from crashext.analyze import analyze
    mem = _mem(family)[0]
    best = None
    for path in lab_files(family):
        a0 = clean(family, path)
        first = {e.node: e for e in a0.walk.entries
                 if e.node and e.slot == 0}
        leaves = [n for n in a0.walk.nodes if n.eshift == 0]
        good = [n for n in leaves
                if n.addr in first and first[n.addr].nr_slots > 1]
        if len(good) >= 30 and len(leaves) > 30 and \
                (best is None or len(good) > len(best[2])):
            best = (path, a0, good, leaves)
    assert best, "no file of the %s run has 30 leaves starting with a " \
        "multi-slot folio" % family
    path, a0, good, leaves = best
    pm = PatchedMemory(mem)
    for n in good[:30]:
        pm.patch_slot(n.addr, 0, 0, a0.layout)
    other = [n for n in leaves if n not in good[:30]][-1]
    pm.patch_u64(other.addr + a0.layout.node_array,
                 a0.target.xarray + 0x1000)
    return analyze(pm, path)


def _all_cases():
    cases = []
    for fam in _families():
        for p in lab_files(fam):
            cases.append((fam, p))
    return cases


def _body(text):
    lines = text.splitlines()
    assert lines[0] == "```" and lines[-1] == "```", text
    return lines[1:-1]


def _check_width(text, width=60):
    for ln in text.splitlines():
        assert len(ln) <= width, "%d cols: %r" % (len(ln), ln)


# Chat ----------------------------------------------------------------------
@needs_lab
@pytest.mark.parametrize("family,path", _all_cases())
def test_chat_clean_lab_files(family, path):
    a = clean(family, path)
    for grouped in (False, True):
        text = chat.render(a, grouped=grouped)
        _check_width(text)
        body = _body(text)
        assert body[0].startswith(a.verdict.upper() + " inode %d"
                                  % a.target.i_ino)
    if a.verdict == "clean":
        assert body[0].endswith("%d pages = nrpages" % a.target.nrpages)
        assert "%d entries" % a.stats.entries in body[0]


@needs_lab
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("path", [None, "/mnt/xfs/big64"])
def test_chat_seed_case(family, path):
    if family not in _families():
        pytest.skip("no %s lab run" % family)
    case, a = seed(family, path)
    assert a.verdict == "corrupt"
    for grouped in (False, True):
        text = chat.render(a, grouped=grouped)
        _check_width(text)
        body = _body(text)
        assert body[0] == "CORRUPT inode %d %s: 3 errors" % (
            a.target.i_ino, case.path)
        for i, s in zip(case.indices, (16, 32, 48)):
            assert "%s slot %d" % (fmt.idx(i), s) in text
        # Every explanation line is there (addresses grouped or not).
        for e in a.explanations:
            for ln in e.lines:
                want = chat.regroup(ln) if grouped else ln
                assert want.strip() in text
        assert "split to order 4" in text
        # The xarray index and folio->index side by side for stale copies.
        own = [i for i in case.indices
               if a.folios[case.folio].index == i]
        assert len(own) == 1
        for i in case.indices:
            if i != own[0]:
                assert re.search(r"%s slot \d+ +folio->index %s"
                                 % (re.escape(fmt.idx(i)),
                                    re.escape(fmt.idx(own[0]))), text)
    # Grouped hex: the folio (in vmemmap, wherever KASLR put it) as
    # high_low 32-bit halves.
    assert "%08x_%08x" % (case.folio >> 32, case.folio & 0xFFFFFFFF) in \
        chat.render(a, grouped=True)


@needs_lab
@pytest.mark.parametrize("family", FAMILIES)
def test_chat_groups_many_findings(family):
    if family not in _families():
        pytest.skip("no %s lab run" % family)
    a = stale_siblings(family)
    assert len(a.findings) >= 60
    text = chat.render(a)
    _check_width(text)
    body = _body(text)
    assert body[0].startswith("CORRUPT inode")
    # Groups are separated by blank lines; a group's finding lines (before
    # its "=> why") stay within 15 lines.  Before them, the impact block:
    # 30 canonical slots emptied under their siblings: what they held is
    # lost (not found without --memmap), nrpages not accounted for.
    groups = "\n".join(body).split("\n\n")[1:]
    impact = groups.pop(0).splitlines()
    lost = a.target.nrpages - a.stats.pages
    assert impact[0] == "LOST: %s, folios not found" % fmt.nbytes(lost << 12)
    assert "nrpages %d = %d reachable" % (a.target.nrpages,
                                          a.stats.pages) in impact
    assert "  + %d unexplained (not searched: memory map, slab)" % lost \
        in impact
    assert len(impact) <= 15
    codes = {f.code for f in a.findings}
    assert len(groups) == len(codes)
    for g in groups:
        ev = g.split("\n=> ")[0].splitlines()
        assert len(ev) <= chat.MAX_LINES, g
    assert "SIBLING_TO_NULL x30 (error)" in text
    assert "more in" in text
    assert len(body) < 90
    # Narrower phones.
    _check_width(chat.render(a, width=40, max_lines=8), 40)


@needs_lab
def test_chat_no_fence_and_width_option():
    a = seed("6.1")[1]
    text = chat.render(a, fence=False, width=50)
    assert not text.startswith("```")
    _check_width(text, 50)


# Table ---------------------------------------------------------------------
@needs_lab
def test_table_seed_and_clean():
    case, a = seed("6.1")
    text = table.render(a)
    assert text.splitlines()[0].startswith("CORRUPT inode")
    for h in table.HEADERS:
        assert h in text
    for key in ("target", "mapping", "xarray", "nrpages", "release",
                "stats", "orders", "verdict", "explanations"):
        assert key in text
    assert fmt.idx(case.indices[1]) in text
    assert "DUP_FOLIO" in text and "FOLIO_INDEX" in text
    assert "i_ino %d" % a.target.i_ino in text
    c = clean("6.1", "/mnt/xfs/big64")
    t2 = table.render(c, tablefmt="github", grouped=True)
    assert t2.startswith("CLEAN")
    assert "severity" not in t2          # no table for a clean tree
    assert "2:" in t2 and "_" in t2


# JSON ----------------------------------------------------------------------
@needs_lab
def test_json_round_trip_and_deterministic():
    from crashext.analyze import analyze
    case, a = seed("6.1")
    text = jsonout.render(a)
    again = jsonout.render(analyze(case.mem, case.path))
    assert text == again
    doc = jsonout.loads(text)
    assert jsonout.dumps(doc) == text
    assert doc["schema"] == "crashext.analysis/2"
    assert doc["verdict"] == "corrupt"
    assert doc["counts"]["error"] == 3
    dup = doc["findings"][0]
    assert dup["code"] == "DUP_FOLIO" and dup["slots"] == [16, 32, 48]
    assert dup["indices"] == list(case.indices)
    assert dup["folio"] == "0x%x" % case.folio
    assert dup["meaning"]
    assert doc["explanations"][0]["findings"] == [1]
    full = jsonout.render(a, full=True)
    fdoc = json.loads(full)
    assert jsonout.dumps(fdoc) == full
    assert len(fdoc["nodes"]) == a.stats.nodes
    assert len(fdoc["entries"]) == a.stats.entries
    assert all(len(n["slots"]) == 64 for n in fdoc["nodes"])
    with pytest.raises(CrashextError):
        jsonout.loads('{"schema": "other/1"}')


@needs_lab
@pytest.mark.parametrize("family,path", _all_cases())
def test_json_clean_identical(family, path):
    from crashext.analyze import analyze
    a = clean(family, path)
    b = analyze(_mem(family)[0], path)
    assert jsonout.render(a, full=True) == jsonout.render(b, full=True)
    doc = json.loads(jsonout.render(a))
    assert doc["verdict"] == "clean" and doc["findings"] == []
    assert doc["stats"]["pages"] == doc["target"]["nrpages"]


@needs_lab
def test_json_schema_documented():
    doc_path = os.path.join(os.path.dirname(HERE), "docs", "json-schema.md")
    with open(doc_path) as f:
        md = f.read()
    a = stale_siblings("6.1")
    d = jsonout.to_data(a, full=True)

    def keys(obj, out):
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.add(k)
                if k not in ("extra", "data", "orders"):
                    keys(v, out)
        elif isinstance(obj, list):
            for v in obj:
                keys(v, out)
        return out

    for k in sorted(keys(d, set())):
        assert "`%s`" % k in md, "field %s not in docs/json-schema.md" % k
    for f in a.findings + seed("6.1")[1].findings:
        for k in f.extra:
            assert "`%s`" % k in md, "extra key %s undocumented" % k


# Dump ----------------------------------------------------------------------
@needs_lab
@pytest.mark.parametrize("family,path", _all_cases())
def test_dump_tree_and_flat(family, path):
    a = clean(family, path)
    text = dump.render(a)
    lines = text.splitlines()
    assert lines[0].startswith("xarray 0x%x" % a.target.xarray)
    node_lines = [ln for ln in lines if ln.lstrip().startswith("node ")]
    assert len(node_lines) == a.stats.nodes
    entry_lines = [ln for ln in lines if ln.lstrip().startswith("0x")]
    assert len(entry_lines) == a.stats.entries      # siblings summarised
    flat = dump.render(a, flat=True).splitlines()
    assert len(flat) == a.stats.folios
    m = _mem(family)[1]
    rec = [f for f in m["files"] if f["path"] == path][0]
    want = ["%d %s %d" % (x["index"], x["folio"], x["order"])
            for x in rec.get("first_folios", []) if isinstance(x, dict)]
    assert flat[:len(want)] == want


@needs_lab
def test_dump_seed_and_stray_siblings():
    case, a = seed("6.1")
    text = dump.render(a)
    for i in case.indices[1:]:
        assert re.search(r"%s slot \d+ pointer 0x%x order 4 slots \d+-\d+ "
                         r"\[folio->index" % (re.escape(fmt.idx(i)),
                                              case.folio), text)
    b = stale_siblings("6.1")
    t2 = dump.render(b, grouped=True)
    assert "sibling(0) stray" in t2
    assert "(expected" not in t2.splitlines()[1]


# PNG -----------------------------------------------------------------------
def _dominant(img, box, inset=14):
    x0, y0, x1, y1 = box
    pts = Counter()
    for x in range(x0 + inset, x1 - inset, 4):
        for y in range(y0 + inset, y1 - inset, 4):
            pts[img.getpixel((x, y))] += 1
    return pts.most_common(1)[0][0]


@needs_lab
def test_png_seed(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from crashext.render import png
    case, a = seed("6.1")
    out = tmp_path / "seed.png"
    info = png.render_png(a, str(out))
    img = Image.open(out).convert("RGB")
    assert img.size[0] == 1080 and info["size"] == img.size
    panel = info["panels"][0]
    assert panel["node"] == case.node.addr
    cols = [_dominant(img, panel["cells"][s]) for s in (16, 32, 48)]
    assert cols[0] == cols[1] == cols[2] == tuple(panel["fills"][16])
    # The centre of each duplicated cell carries the folio colour or text,
    # and its frame is the duplicate frame.
    for s in (16, 32, 48):
        x0, y0, x1, y1 = panel["cells"][s]
        assert img.getpixel((x0 + 2, (y0 + y1) // 2)) == png.DUP_FRAME
    # Siblings are lighter than their canonical slot, others differ.
    assert _dominant(img, panel["cells"][17]) == png.lighter(cols[0])
    assert _dominant(img, panel["cells"][0]) != cols[0]
    # Caption: the verdict colour, with text on it.
    cx0, cy0, cx1, cy1 = info["caption"]
    assert cy1 == img.size[1] - 1
    assert img.getpixel((cx0 + 4, cy0 + 4)) == png.VERDICT_FILL["corrupt"]
    cap = img.crop((cx0, cy0, cx1, cy1))
    assert any(c == png.CAPTION_INK
               for _, c in cap.getcolors(maxcolors=1 << 20))
    assert info["caption_text"].startswith("CORRUPT inode")


@needs_lab
@pytest.mark.parametrize("family", FAMILIES)
def test_png_clean_and_many(tmp_path, family):
    Image = pytest.importorskip("PIL.Image")
    from crashext.render import png
    if family not in _families():
        pytest.skip("no %s lab run" % family)
    a = clean(family, "/mnt/xfs/big64")
    out = tmp_path / "clean.png"
    info = png.render_png(a, str(out))
    img = Image.open(out).convert("RGB")
    assert img.size[0] == 1080
    panel = info["panels"][0]
    cx0, cy0, _, _ = info["caption"]
    assert img.getpixel((cx0 + 4, cy0 + 4)) == png.VERDICT_FILL["clean"]
    # Each canonical folio keeps its fill; its siblings are lighter.
    cells = png.classify(a.walk.node_at(panel["node"]))
    for c in cells:
        if c["kind"] == 1:
            assert _dominant(img, panel["cells"][c["slot"]]) == \
                tuple(panel["fills"][c["slot"]])
    b = stale_siblings(family)
    info = png.render_png(b, str(tmp_path / "many.png"), width=720)
    assert info["size"][0] == 720 and len(info["panels"]) == 3


def test_png_without_pillow(monkeypatch, tmp_path):
    from crashext.render import png
    for mod in list(sys.modules):
        if mod == "PIL" or mod.startswith("PIL."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "PIL", None)
    a = sample_analyses()[0][2]
    with pytest.raises(CrashextError, match=r"Pillow is not installed: "
                       r"pip install crashext\[png\]"):
        png.render_png(a, str(tmp_path / "x.png"))


def test_cli_png_without_pillow_fails_before_output(monkeypatch, tmp_path):
    """No Pillow: one error line and exit 2, not a summary then an error."""
    from click.testing import CliRunner
    from crashext.cli import main
    for mod in list(sys.modules):
        if mod == "PIL" or mod.startswith("PIL."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "PIL", None)
    snap = os.path.join(os.path.dirname(HERE), "sample_dumps",
                        "seed-6.1.snap")
    out = tmp_path / "seed.png"
    r = CliRunner().invoke(main, ["chat", "--snapshot", snap,
                                  "--png", str(out)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Pillow is not installed" in lines[0], \
        r.output
    assert not out.exists()


# Many findings --------------------------------------------------------------
@lru_cache(maxsize=None)
def fanout_analysis():
    """The fuzz suite's endless fan-out tree, walked to 1000 nodes: ~65k
    findings (NODE_IN_LEAF, NODE_ARRAY x1000, ...) and 1000 CROSS_LINK
    explanations."""
    pytest.importorskip("hypothesis")
    import fuzzing
    from crashext.analyze import analyze
    m = fuzzing.ScriptedNodeMemory(root_shift=24)
    return analyze(m, m.spec, max_nodes=1000)


def test_table_caps_rows_and_explanations_per_code():
    a = fanout_analysis()
    per_code = Counter(f.code for f in a.findings)
    assert per_code["NODE_IN_LEAF"] > 10000 and per_code["NODE_ARRAY"] == 1000
    text = table.render(a)
    for code, n in per_code.items():
        shown = len(re.findall(r"^\s*\d+\s+\S+\s+%s\s" % code, text, re.M))
        assert shown == min(n, table.MAX_ROWS_PER_CODE), code
        if n > table.MAX_ROWS_PER_CODE:
            assert ("... %d more %s findings not shown"
                    % (n - table.MAX_ROWS_PER_CODE, code)) in text
    # row numbers stay those of the findings (explanations refer to them)
    assert re.search(r"^\s*%d\s" % (a.findings.index(
        [f for f in a.findings if f.code == "NODE_ARRAY"][0]) + 1),
        text, re.M)
    n_x = sum(e.code == "CROSS_LINK" for e in a.explanations)
    assert n_x == 1000
    assert text.count("  CROSS_LINK (findings") == \
        table.MAX_EXPLANATIONS_PER_CODE
    assert "... %d more CROSS_LINK, same reasoning" % (
        n_x - table.MAX_EXPLANATIONS_PER_CODE) in text
    assert len(text.splitlines()) < 400
    # uncapped on request: every finding has its row
    full = table.render(a, max_per_code=None)
    assert len(re.findall(r"^\s*\d+\s+error\s", full, re.M)) == \
        sum(f.severity == "error" for f in a.findings)


def test_chat_stays_short_on_many_findings():
    a = fanout_analysis()
    text = chat.render(a)
    n_groups = len({f.code for f in a.findings})
    assert text.count("=> why (CROSS_LINK)") == chat.MAX_EXPLANATIONS
    assert "=> %d more CROSS_LINK, same reasoning" % (
        1000 - chat.MAX_EXPLANATIONS) in text
    # verdict + context, then per code at most MAX_LINES (+ blank line,
    # explanations of 5 lines each, the "more" line), then the notes
    bound = 8 + n_groups * (chat.MAX_LINES + 1) + \
        chat.MAX_EXPLANATIONS * 5 + 1 + 2 * len(a.notes) + 2
    assert len(text.splitlines()) <= bound, len(text.splitlines())
    _check_width(text, chat.WIDTH)


# Layering ------------------------------------------------------------------
def test_engine_does_not_import_renderers():
    root = os.path.join(os.path.dirname(HERE), "crashext")
    front = {"render", "crash", "triage", "cli.py", "drgn_plugin.py",
             "frontdoor.py", "crashrc.py",
             "__main__.py"}
    pat = re.compile(r"^\s*(from\s+(\.+|crashext\.)render|import\s+crashext"
                     r"\.render|from\s+\.+\s+import\s+render)", re.M)
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in front:
            continue
        for fn in files:
            if not fn.endswith(".py") or (rel == "." and fn in front):
                continue
            with open(os.path.join(dirpath, fn)) as f:
                assert not pat.search(f.read()), os.path.join(rel, fn)
    # Renderers: tabulate only in table, Pillow only in png (lazily).
    rdir = os.path.join(root, "render")
    for fn in ("chat.py", "jsonout.py", "dump.py", "png.py", "table.py"):
        with open(os.path.join(rdir, fn)) as f:
            src = f.read()
        if fn != "table.py":
            assert "tabulate" not in src
        if fn != "png.py":
            assert "PIL" not in src
        assert not re.search(r"^(from PIL|import PIL)", src, re.M)


# sample_dumps/ (no lab needed) -------------------------------------------
SAMPLES = os.path.join(os.path.dirname(HERE), "sample_dumps")


@lru_cache(maxsize=None)
def sample_analyses():
    """[(snapshot name, path, Analysis, truth)] for every sample file."""
    import glob
    from crashext.analyze import analyze
    from crashext.backends.snapshot import SnapshotMemory
    out = []
    for snap in sorted(glob.glob(os.path.join(SAMPLES, "*.snap"))):
        with open(snap[:-len(".snap")] + ".truth.json") as f:
            truth = json.load(f)
        mem = SnapshotMemory.load(snap)
        for path in truth["files"]:
            out.append((os.path.basename(snap), path, analyze(mem, path),
                        truth))
    if not out:
        pytest.skip("no sample_dumps/*.snap")
    return tuple(out)


def _sample_ids():
    import glob
    return sorted(os.path.basename(p)
                  for p in glob.glob(os.path.join(SAMPLES, "*.snap")))


@pytest.mark.parametrize("snap", _sample_ids())
def test_samples_all_renderers(snap, tmp_path):
    for name, path, a, truth in sample_analyses():
        if name != snap:
            continue
        cases = [c for c in truth["cases"] if c["file"] == path]
        for grouped in (False, True):
            text = chat.render(a, grouped=grouped)
            _check_width(text)
            body = _body(text)
            assert body[0].startswith(a.verdict.upper() + " inode %d"
                                      % a.target.i_ino)
            assert body[0].startswith("CORRUPT" if cases else "CLEAN")
        for c in cases:
            if c["indices"]:
                i = c["indices"][0]
                assert fmt.idx(i) in text or fmt.runs(c["indices"]) in text
        t = table.render(a)
        assert t.startswith(a.verdict.upper())
        js = jsonout.render(a, full=True)
        assert jsonout.dumps(jsonout.loads(js)) == js
        d = dump.render(a)
        assert len([ln for ln in d.splitlines()
                    if ln.lstrip().startswith("node ")]) == a.stats.nodes
        assert len(dump.render(a, flat=True).splitlines()) == a.stats.folios
        try:
            from crashext.render import png
            import PIL  # noqa: F401
        except ImportError:
            continue
        info = png.render_png(a, str(tmp_path / "x.png"))
        assert info["size"][0] == 1080
        assert info["caption_fill"] == png.VERDICT_FILL[a.verdict]
        if cases and cases[0]["node"]:
            drawn = [p["node"] for p in info["panels"]]
            assert int(cases[0]["node"], 16) in drawn or \
                cases[0]["codes"] == ["NODE_UNREADABLE"]


def test_sample_seed_chat_and_png(tmp_path):
    got = [x for x in sample_analyses() if x[0] == "seed-6.1.snap"]
    if not got:
        pytest.skip("no seed sample")
    _, path, a, truth = got[0]
    idx = truth["cases"][0]["indices"]
    text = chat.render(a)
    for i, s in zip(idx, (16, 32, 48)):
        assert "%s slot %d" % (fmt.idx(i), s) in text
    assert "order-6 entry split to order 4" in text
    Image = pytest.importorskip("PIL.Image")
    from crashext.render import png
    info = png.render_png(a, str(tmp_path / "seed.png"))
    img = Image.open(str(tmp_path / "seed.png")).convert("RGB")
    panel = info["panels"][0]
    cols = {_dominant(img, panel["cells"][s]) for s in (16, 32, 48)}
    assert len(cols) == 1


def test_render_many_json():
    items = sample_analyses()
    text = jsonout.render_many([x[2] for x in items])
    docs = json.loads(text)
    assert isinstance(docs, list) and len(docs) == len(items)
    assert all(d["schema"] == jsonout.SCHEMA for d in docs)
