"""The batch front doors of the CLI (scan, folio, triage, report) on real
lab dumps: exit codes, what they name, one-line errors."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from crashext.cli import main

from conftest import FAMILIES, lab_dump


def _run(args):
    r = CliRunner().invoke(main, args)
    assert "Traceback" not in r.output
    return r


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_clean_dump(family):
    m, path = lab_dump(family)
    r = _run(["scan", "-c", path, "-k", m["vmlinux"], "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["by_verdict"].get("clean", 0) >= len(m["files"])
    assert set(doc["by_verdict"]) == {"clean"}


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_slab_clean_dump(family):
    """scan --slab on a clean dump, ELF and every makedumpfile form of the
    run: exit 0, clean and complete, 0 orphans, every line fit for chat -
    on per-CPU slabs (6.1, 6.12) and sheaves (7.3)."""
    pytest.importorskip("drgn")
    from tests.lab.labdumps import makedumpfile_dumps
    m, _ = lab_dump(family)
    names = ["elf"] + makedumpfile_dumps(m)
    assert len(names) > 1, "no makedumpfile dump in %s" % m["_run_dir"]
    for name in names:
        _, path = lab_dump(family, name)
        r = _run(["scan", "-c", path, "-k", m["vmlinux"], "--slab"])
        assert r.exit_code == 0, (name, r.output)
        slab = r.output.split("slab radix_tree_node: ")[1]
        assert slab.startswith("clean\n"), (name, slab)
        assert " orphans 0," in " ".join(slab.split()), (name, slab)
        assert max(len(x) for x in r.output.splitlines()) <= 60


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_and_folio_on_planted_dump(family):
    pytest.importorskip("drgn")
    m, _ = lab_dump(family)
    from tests.lab import plant
    truth = plant.ensure_planted(family)
    path = truth["planted"]
    r = _run(["scan", "-c", path, "-k", m["vmlinux"], "--slab"])
    assert r.exit_code == 1, r.output
    inos = {f["path"]: f["i_ino"] for f in m["files"]}
    for p in truth["files"]:
        # named by device:ino and by its path (from the dcache)
        assert "vda:%d %s: corrupt" % (inos[p], p) in r.output
    assert "NODE_ARRAY" in r.output.split("slab radix_tree_node")[1]
    seed = [c for c in truth["cases"] if c["case"] == "seed"][0]
    r = _run(["folio", "-c", path, "-k", m["vmlinux"], "0x%x" % seed["folio"]
              if isinstance(seed.get("folio"), int) else seed["folio"]])
    assert r.exit_code == 1, r.output
    for i in seed["indices"]:
        assert "index 0x%x (%d)" % (i, i) in r.output


def test_triage_and_report(tmp_path):
    m, path = lab_dump("6.1")
    bogus = tmp_path / "bogus.vmcore"
    # starts as an ELF core (ET_CORE), holds nothing: an error result
    bogus.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x04\x00"
                      + b"\0" * 4096)
    lst = tmp_path / "dumps.txt"
    lst.write_text("%s\n%s\n" % (path, bogus))
    debug = os.path.dirname(m["vmlinux"])
    out = tmp_path / "out"
    r = _run(["triage", str(lst), "-o", str(out), "-d", debug, "-j", "1",
              "--engine", "inline", "--no-slab"])
    assert r.exit_code == 2, r.output       # clean dump + one unreadable
    assert len(list(out.glob("*.json"))) == 2
    assert "error: " in r.stderr and "bogus.vmcore" in r.stderr
    r2 = _run(["report", str(out), "-f", "json"])
    assert r2.exit_code == 0
    doc = json.loads(r2.output)
    assert doc
    r3 = _run(["report", str(out)])
    assert max(len(l) for l in r3.output.splitlines()) <= 60


def test_scan_without_a_dump_is_one_line():
    r = CliRunner().invoke(main, ["scan"])
    assert r.exit_code == 2
    assert r.output.strip() == ("crashext: error: no dump given: use "
                                "--vmcore FILE [--vmlinux FILE] or "
                                "--snapshot FILE")


def test_triage_draws_the_worst_tree_and_the_report_shows_it(tmp_path):
    """A corrupted dump: its worst tree drawn next to the results
    (p-<hash>.png), named in the result, referenced once in the Markdown
    report under a signature of that tree, within 60 columns; a clean dump
    gets no picture; --no-png draws nothing."""
    pytest.importorskip("drgn")
    PIL = pytest.importorskip("PIL.Image")
    m, clean_path = lab_dump("6.1")
    from tests.lab import plant, scenarios
    path, _tp, truth = plant.make_planted("6.1", ["seed"])
    debug = os.path.dirname(m["vmlinux"])
    out = tmp_path / "out"
    r = _run(["triage", path, clean_path, "-o", str(out), "-d", debug,
              "-j", "1", "--engine", "inline", "--no-slab"])
    assert r.exit_code == 1, r.output
    pics = sorted(out.glob("p-*.png"))
    assert len(pics) == 1                  # the clean dump has none
    res = [json.loads(p.read_text()) for p in out.glob("*.json")]
    drawn = [x for x in res if x.get("picture")]
    assert len(drawn) == 1 and drawn[0]["dump"] == path
    pic = drawn[0]["picture"]
    assert pic["file"] == pics[0].name
    assert truth["cases"][0]["file"] in pic["tree"]     # /mnt/xfs/big200
    img = PIL.open(str(pics[0]))
    assert img.size[0] == 1080 and img.size[1] > 400
    md = _run(["report", str(out)]).output
    refs = [ln for ln in md.splitlines() if ln.startswith("![")]
    assert refs == ["![%s](%s)" % (pic["tree"], pics[0].name)]
    assert max(len(ln) for ln in md.splitlines()) <= 60
    # under the bucket of that dump (its primary signature: the seed's
    # duplicated folio)
    from crashext.triage import report
    g = report.group(str(out))
    k = [i for i, B in enumerate(g["buckets"], 1)
         if drawn[0]["name"] in B["dumps"]][0]
    assert g["buckets"][k - 1]["examples"][0]["picture"] == pics[0].name
    before = md.split(refs[0])[0]
    assert before.rsplit("## ", 1)[1].startswith("%d. stale split" % k)
    # --no-png
    out2 = tmp_path / "out2"
    _run(["triage", path, "-o", str(out2), "-d", debug, "-j", "1",
          "--engine", "inline", "--no-slab", "--no-png"])
    assert list(out2.glob("p-*.png")) == []

