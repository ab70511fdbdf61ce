"""The triage report: buckets first (one per primary signature, see
:mod:`crashext.triage.bucket`), then the per-code index.

:func:`group` builds the JSON form (schema :data:`SCHEMA`, documented in
``docs/triage-json.md``); :func:`to_markdown` renders it for a chat:
no line longer than 60 columns, each bucket's picture under it (paths
relative to the results folder); :func:`report` does both from a
folder of result files.

>>> print(report("/tmp/triage"))                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, Dict, Iterable, List, Union

from .bucket import buckets, index, load_results

WIDTH = 60
VERDICTS = ("corrupt", "error", "suspect", "clean")
#: Version of the report's JSON form.
SCHEMA = "crashext-triage-report/2"


def group(results: Union[str, Iterable[Any]]) -> Dict[str, Any]:
    """The report as data: ``schema``, ``dumps``, ``by_verdict``,
    ``buckets`` (every dump in exactly one), ``index`` (per code)."""
    rs = load_results(results)
    by_verdict: Dict[str, int] = {}
    for r in rs:
        v = r.get("verdict") or "error"
        by_verdict[v] = by_verdict.get(v, 0) + 1
    return {"schema": SCHEMA, "dumps": len(rs), "by_verdict": by_verdict,
            "buckets": buckets(rs), "index": index(rs)}


# ----------------------------------------------------------------------
# Markdown


def _wrap(text: str, width: int, indent: str = "") -> List[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent + "  ",
                         initial_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [indent.rstrip()]


def _idx(i: Dict[str, int]) -> str:
    return "0x%x (%d) slot %d" % (i["index"], i["index"], i["slot"])


def _kernels(k: Dict[str, int]) -> str:
    return ", ".join("%s x%d" % kv if kv[1] > 1 else kv[0]
                     for kv in sorted(k.items()))


def _picture_line(ex: Dict[str, Any], width: int) -> str:
    pic = ex["picture"]
    room = width - len("![]()") - len(pic)
    alt = ex.get("tree") or ex["name"]
    if len(alt) > room:
        alt = alt[:max(room - 3, 0)] + "..."
    return "![%s](%s)" % (alt, pic)


def _example(ex: Dict[str, Any], width: int) -> List[str]:
    L = _wrap("- " + ex["name"], width)
    sub = "  "
    if ex.get("tree") and ex["tree"] != "slab":
        L += _wrap(ex["tree"], width, sub)
    elif ex.get("tree") == "slab" and ex.get("node") is not None:
        L += _wrap("slab: node 0x%x" % ex["node"], width, sub)
    for i in ex.get("indices", [])[:3]:
        L += _wrap(_idx(i), width, sub)
    if len(ex.get("indices", [])) > 3:
        L += _wrap("+%d more indices" % (len(ex["indices"]) - 3), width, sub)
    if ex.get("error"):
        L += _wrap("error: " + ex["error"], width, sub)
    facts = [x for x in (ex.get("release"), ex.get("crash_time")) if x]
    if facts:
        L += _wrap(", ".join(facts), width, sub)
    if ex.get("bug") and ex.get("bug") != ex.get("panic"):
        L += _wrap(ex["bug"], width, sub)
    if ex.get("panic"):
        L += _wrap(ex["panic"], width, sub)
    if ex.get("task"):
        ct = ex.get("crashing_task") or {}
        held = ct.get("related")
        tail = ("" if held is None else
                "; held this tree" if held else "; not in this tree")
        L += _wrap("task " + ex["task"] + tail, width, sub)
    return L


def to_markdown(g: Dict[str, Any], width: int = WIDTH,
                max_index: int = 40) -> str:
    """The report as Markdown, no line longer than ``width``: buckets
    (verdict first), each with its count, kernels, first and last crash
    time, examples and picture; then the index by finding code."""
    L: List[str] = []
    nb = len(g["buckets"])
    L += _wrap("# crashext triage: %d dump%s, %d bucket%s" % (
        g["dumps"], "" if g["dumps"] == 1 else "s", nb,
        "" if nb == 1 else "s"), width)
    bv = g["by_verdict"]
    L += _wrap(" · ".join("%s %d" % (v, bv[v]) for v in VERDICTS if bv.get(v))
               or "nothing triaged", width)
    for n, B in enumerate(g["buckets"], 1):
        L.append("")
        L += _wrap("## %d. %s" % (n, B["label"]), width)
        if B.get("at_risk"):
            L += _wrap("DATA AT RISK in %d dump%s" % (
                B["at_risk"], "" if B["at_risk"] == 1 else "s"), width)
        where = " · ".join(x for x in (B["fs"], B["shape"]) if x)
        if where:
            L += _wrap(where, width)
        L += _wrap(B["panic"], width)
        L += _wrap("%d dump%s · %s" % (B["count"], "" if B["count"] == 1
                                       else "s", _kernels(B["kernels"])),
                   width)
        if B["first"]:
            if B["first"] == B["last"]:
                L += _wrap("crashed %s" % B["first"], width)
            else:
                L += _wrap("first %s" % B["first"], width)
                L += _wrap("last  %s" % B["last"], width)
        for ex in B["examples"]:
            L += _example(ex, width)
        if B["count"] > len(B["examples"]):
            rest = B["dumps"][len(B["examples"]):]
            L += _wrap("- and %d more: %s" % (len(rest), ", ".join(rest[:6])
                                              + (", ..." if len(rest) > 6
                                                 else "")), width)
        pics = [ex for ex in B["examples"] if ex.get("picture")]
        if pics:
            L.append(_picture_line(pics[0], width))
    if g["index"]:
        L.append("")
        L += _wrap("## Index by finding code", width)
        for G in g["index"][:max_index]:
            names = [d["name"] for d in G["dumps"]]
            L += _wrap("- %s (%s): %d dump%s: %s" % (
                G["signature"], G["severity"], len(names),
                "" if len(names) == 1 else "s",
                ", ".join(names[:3]) + (" +%d" % (len(names) - 3)
                                        if len(names) > 3 else "")), width)
        if len(g["index"]) > max_index:
            L.append("- ... %d more codes" % (len(g["index"]) - max_index))
    assert all(len(x) <= width for x in L)
    return "\n".join(L) + "\n"


def to_json(g: Dict[str, Any]) -> str:
    return json.dumps(g, indent=1) + "\n"


def report(results: Union[str, Iterable[Any]], fmt: str = "md",
           width: int = WIDTH) -> str:
    """Group ``results`` (a directory of result files, or a list) and
    render as ``"md"`` or ``"json"``."""
    g = group(results)
    if fmt == "json":
        return to_json(g)
    if fmt in ("md", "markdown"):
        return to_markdown(g, width)
    raise ValueError("fmt must be 'md' or 'json'")
