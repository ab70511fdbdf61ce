"""crashext on a RUNNING kernel: the live lab (../shared/lab/live, one boot
of Debian's 6.1 under QEMU) run by tests/live/run_live.sh from
tests/run_all.sh; these tests read what the guest printed
(``$CRASHEXT_LIVE_OUT/console.log``, default ``$LAB/live-ci``) and skip
when the live lab did not run.

In the guest, while live-init's loops rewrite /data/churn, /data/churn2
and /mnt/thp/churn:

* live checks of the files being rewritten never give a false alarm
  (their page caches are never damaged on purpose);
* files nobody changes are clean and equal to drgn's ``xa_for_each``;
* ``crashext scan --live`` of the whole guest, again and again, is clean;
* the test module crashext_xadamage.ko (built against Debian's headers of
  the guest's kernel) holds a private XArray with the seed's damage
  patterns; the live check reports each with the code and index the
  kernel's invariants give, and exactly what the same bytes give in dump
  mode (a snapshot of them replayed);
* the errors a user meets (not root, no debug info, lockdown) are one line.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List

import pytest

from conftest import lab_dir

#: Live checks of the files being rewritten that must reach a verdict.
MIN_CHECKS = 200


def live_out() -> str:
    return os.environ.get("CRASHEXT_LIVE_OUT") or os.path.join(lab_dir(),
                                                                "live-ci")


_cache: Dict[str, Any] = {}


def console() -> Dict[str, Any]:
    """The guest's output: RESULT records by kind, SCAN lines, XAD lines."""
    if "c" in _cache:
        return _cache["c"]
    path = os.path.join(live_out(), "console.log")
    if not os.path.isfile(path) and os.path.isfile(
            os.path.join(live_out(), "attempted")):
        pytest.fail("tests/live/run_live.sh ran but left no %s (see "
                    "lab-live.log)" % path)
    if not os.path.isfile(path):
        pytest.skip("no live lab run at %s (tests/live/run_live.sh, run by "
                    "tests/run_all.sh as root)" % live_out())
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    res: Dict[str, List[dict]] = {}
    scans, sums, xad, budget, checks = [], [], [], [], []
    for line in text.splitlines():
        line = line.rstrip("\r")
        if not line.startswith("LIVEUSER "):
            if line.startswith("LIVECHECK run") and " crashext " in line:
                checks.append(line)
            continue
        body = line[len("LIVEUSER "):]
        if body.startswith("RESULT "):
            try:
                d = json.loads(body[len("RESULT "):])
            except ValueError:
                continue
            res.setdefault(d.get("kind"), []).append(d)
        elif body.startswith("SCAN "):
            scans.append(body)
        elif body.startswith("SCANSUM "):
            _, n, js = body.split(" ", 2)
            try:
                sums.append(json.loads(js))
            except ValueError:
                sums.append({"unparsed": js})
        elif body.startswith("SCANBUDGET "):
            budget.append(body)
        elif body.startswith("XAD "):
            xad.append(body[4:])
    c = {"text": text, "res": res, "scans": scans, "sums": sums, "xad": xad,
         "budget": budget, "livechecks": checks}
    if "open" not in res:
        pytest.fail("the live lab ran but the scenario printed nothing: "
                    "see %s" % path)
    _cache["c"] = c
    return c


def one(kind: str) -> dict:
    r = console()["res"].get(kind)
    assert r, "no %s result in the console log" % kind
    return r[0]


def test_live_kernel_opened():
    o = one("open")
    assert o["live"] is True
    assert o["release"] == o["uname"]
    assert re.search(r"^LIVE: .* DONE", console()["text"], re.M)


def test_files_nobody_changes_are_clean_and_equal_to_drgn():
    st = console()["res"]["static"]
    assert len(st) >= 4
    for r in st:
        assert r["verdict"] == "clean", r
        assert r["equal"] is True, r
        assert r["entries"] == r["drgn_entries"] > 0
        assert r["pages"] == r["nrpages"]
    # The same answer every time.
    for path in {r["path"] for r in st}:
        assert len({r["entries"] for r in st if r["path"] == path}) == 1


def test_files_being_rewritten_never_give_a_false_alarm():
    c = console()["res"]
    churn = c["churn"]
    judged = [r for r in churn if r["verdict"] != "error"]
    assert len(judged) >= MIN_CHECKS, len(judged)
    bad = [r for r in judged if r["verdict"] not in ("clean", "changing")]
    assert not bad, bad[:3]
    # Errors are files removed between two loops (rm -f in live-init).
    for r in churn:
        if r["verdict"] == "error":
            assert "cannot resolve" in r["error"] or "no longer" in \
                r["error"] or "inode" in r["error"], r
    # Many checks saw the tree change under them and judged it anyway.
    rewalked = [r for r in judged if r["live"]["walks"] > 1]
    assert rewalked, "no check ever saw a change: the loops did not run?"
    # live-init's own checks (live_check.py: xa check on the same drgn
    # Program) are clean too.
    for line in console()["livechecks"]:
        d = json.loads(line[line.index("{"):])
        assert d.get("verdict") in ("clean", "changing"), line


def test_scan_live_again_and_again_is_clean():
    c = console()
    assert len(c["scans"]) >= 2, c["scans"]
    for line in c["scans"]:
        assert " rc=0 " in line, line
    for s in c["sums"]:
        assert s.get("kind") == "summary", s
        assert s["live"] is True and s["complete"] is True
        assert s["trees"] > 100
        assert not s["by_verdict"].get("corrupt")
        assert not s["by_verdict"].get("suspect")
        assert s["walks"]["walks"] >= s["trees"]
    for b in c["budget"]:
        d = json.loads(b.split(" ", 2)[2])
        assert d["complete"] is False and d["stopped"].startswith("time")
        assert " rc=0 " in b


# The module's damage, from the invariants of lib/xarray.c and
# include/linux/xarray.h (see tests/live/xadamage/crashext_xadamage.c):
#: pattern -> [(code, indices the finding must name exactly)]
MUST = {
    # xas_split() copied the order-6 folio into 4 order-4 entries: one
    # folio at 4 canonical slots; each run is 16 slots for an order-6
    # folio; the 3 last are not aligned to 64 pages.
    "stale_split": [("DUP_FOLIO", (0x1040, 0x1050, 0x1060, 0x1070)),
                    ("FOLIO_ORDER", (0x1040,)), ("FOLIO_ORDER", (0x1050,)),
                    ("FOLIO_ORDER", (0x1060,)), ("FOLIO_ORDER", (0x1070,)),
                    ("FOLIO_ALIGN", (0x1050,)), ("FOLIO_ALIGN", (0x1060,)),
                    ("FOLIO_ALIGN", (0x1070,))],
    # a sibling must point back at its canonical slot
    "sibling_self": [("SIBLING_FORWARD", (0x200b,)),
                     ("SIBLING_RUN_SIZE", (0x2008,))],
    "sibling_to_sibling": [("SIBLING_TO_SIBLING", (0x2013,)),
                           ("SIBLING_RUN_SIZE", (0x2010,))],
    # a folio is stored once, at its own index
    "duplicate": [("DUP_FOLIO", (0x3005, 0x3007))],
    # a node has one parent slot, the one its ->offset names: the leaf is
    # reached at its second position too (shared subtree), its offset
    # disagrees there, and its folio is met at two canonical slots - what
    # the dump tests' "shared_node" case gives (tests/lab/scenarios.py;
    # FOLIO_INDEX too there: a bare XArray has no page-cache index check)
    "node_two_slots": [("NODE_SHARED", (0x40c0,)), ("NODE_OFFSET", (0x40c0,)),
                       ("DUP_FOLIO", (0x4041, 0x40c1))],
}


def _xad() -> Dict[str, Dict[str, str]]:
    out = {}
    for line in console()["xad"]:
        w = line.split()
        if w and w[0] != "xarray":
            out[w[0]] = dict(zip(w[1::2], w[2::2]))
    return out


def _int(v: Any) -> Any:
    """JSON writes addresses as "0x..." strings (docs/json-schema.md)."""
    return int(v, 16) if isinstance(v, str) and v.startswith("0x") else v


def _check_module(findings: List[dict]) -> None:
    findings = [{k: _int(v) for k, v in f.items()} for f in findings]
    xad = _xad()
    assert set(MUST) <= set(xad), xad
    got = [(f["code"], tuple(f["indices"])) for f in findings]
    want = [cw for p in MUST for cw in MUST[p]]
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for f in findings:
        assert not any(0x5000 <= i < 0x6000 for i in f["indices"]), f
    # Nodes and folios are the ones the module says it damaged.
    by = {(f["code"], tuple(f["indices"])): f for f in findings}
    dup = by[("DUP_FOLIO", (0x1040, 0x1050, 0x1060, 0x1070))]
    assert dup["folio"] == int(xad["stale_split"]["folio"], 16)
    assert dup["node"] == int(xad["stale_split"]["node"], 16)
    dup = by[("DUP_FOLIO", (0x3005, 0x3007))]
    assert dup["folio"] == int(xad["duplicate"]["folio"], 16)
    assert dup["slots"] == [5, 7]
    shared = by[("NODE_SHARED", (0x40c0,))]
    assert shared["node"] == int(xad["node_two_slots"]["node"], 16)
    assert shared["slots"] == [3]
    off = by[("NODE_OFFSET", (0x40c0,))]
    assert off["node"] == int(xad["node_two_slots"]["child"], 16)
    for p, code, idx in (("sibling_self", "SIBLING_FORWARD", 0x200b),
                         ("sibling_to_sibling", "SIBLING_TO_SIBLING",
                          0x2013)):
        f = by[(code, (idx,))]
        assert f["node"] == int(xad[p]["node"], 16)
        assert f["slots"] == [int(xad[p]["slots"])]


def test_module_damage_reported_live_with_the_right_codes():
    ins = one("insmod")
    assert ins["rc"] == 0 and ins["xarray"]
    m = one("module")
    assert m["verdict"] == "corrupt"
    assert m["live"]["judged"] is True
    assert m["live"]["walks"] == 2          # found, then confirmed
    assert m["live"]["unjudged"] == 0
    _check_module(m["findings"])
    assert "STALE_SPLIT" in m["explanations"], m["explanations"]


def test_module_live_equals_its_snapshot_in_dump_mode():
    """The CLI (check --live) and the same bytes replayed from a snapshot
    (crashext capture --live; check --snapshot: dump mode) agree."""
    c = one("cli_module")
    assert c["rc"] == 1 and c["capture_rc"] == 1 and c["snapshot_rc"] == 1
    assert c["verdict"] == c["snapshot_verdict"] == "corrupt"
    assert c["findings"] == c["snapshot_findings"]
    _check_module(c["findings"])
    assert c["live"]["walks"] == 2


def test_drgn_xa_command_live():
    rs = {r["cmd"].split()[1] + (" mod" if "xarray:" in r["cmd"] else ""): r
          for r in console()["res"].get("drgnxa", [])}
    assert rs, "drgn xa did not run"
    mod = rs["check mod"]
    assert mod["live"] is True and mod["rc"] == 1
    assert mod["verdict"] == "corrupt" and mod["live_judgement"]["walks"] == 2
    assert set(mod["codes"]) == {c for p in MUST.values() for c, _ in p}
    big = rs["check"]
    assert big["rc"] == 0 and big["verdict"] == "clean"
    sc = rs["scan"]
    assert sc["rc"] == 0 and sc["by_verdict"].get("clean", 0) >= 1


def test_folio_live_finds_one_slot():
    f = one("cli_folio")
    assert f["rc"] == 0, f
    assert re.search(r"folio %s: 1 slot\(s\)" % f["folio"], f["out"]), f


@pytest.mark.parametrize("case,words", [
    ("not_root", "needs root"),
    ("no_debuginfo", "no debug info for the running kernel"),
    ("no_debuginfo_scan", "no debug info for the running kernel"),
    ("lockdown", "lockdown"),
    ("lockdown_kcore", "lockdown"),
])
def test_errors_are_one_line(case, words):
    rs = {r["case"]: r for r in console()["res"].get("error_case", [])}
    assert case in rs, sorted(rs)
    r = rs[case]
    if r.get("skipped"):
        pytest.skip("lockdown not available in the guest: %s" % r["skipped"])
    assert r["rc"] == 2, r
    lines = r["stderr"].strip().splitlines()
    assert len(lines) == 1, r["stderr"]
    assert lines[0].startswith("crashext: error: live:"), lines
    assert words in lines[0], lines
    assert "Traceback" not in r["stderr"] + r["stdout"]
    assert r["stdout"] == ""
