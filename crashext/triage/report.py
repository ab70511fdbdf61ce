"""Group triaged dumps by what is wrong with them, for a chat or a file.

A dump's *signatures* are the shapes of its findings with addresses
left out, so the same bug in many dumps groups together::

    DUP_FOLIO order-4 at +{16,32,48}
    STALE_SPLIT order-6 -> order-4
    FOLIO_ORDER tree 6 folio 4
    SLAB_NODE_ORPHAN (parent slot holds another entry)
    error: cannot open vmcore

:func:`group` turns result files (:mod:`crashext.triage.batch`) into a
JSON-able dict; :func:`to_markdown` renders it with lines of at most 60
columns (chat on a phone); :func:`report` does both from a directory.

>>> print(report("/tmp/triage"))                     # doctest: +SKIP
"""

from __future__ import annotations

import glob
import json
import os
import re
import textwrap
from typing import Any, Dict, Iterable, List, Optional, Union

from ..findings import CODES, SEVERITY_RANK
from .scan import row_name

WIDTH = 60
VERDICTS = ("corrupt", "error", "suspect", "clean")


# ----------------------------------------------------------------------
# Shapes


def _slots(d: Dict[str, Any]) -> str:
    s = sorted(set(d.get("slots") or []))
    return ",".join(str(x) for x in s)


def finding_shape(d: Dict[str, Any]) -> str:
    """A finding dict (``Finding.to_dict()``) as an address-free shape."""
    code = d.get("code", "?")
    order = d.get("order")
    shift = d.get("shift")
    exp, found = d.get("expected"), d.get("found")
    if code == "DUP_FOLIO":
        o = "order-%s" % (order if order is not None else "?")
        if d.get("node") is not None and d.get("slots"):
            return "%s %s at +{%s}" % (code, o, _slots(d))
        return "%s %s in %d nodes" % (code, o, len(set(
            (d.get("extra") or {}).get("nodes") or [])))
    if code == "FOLIO_ORDER" and isinstance(exp, int) \
            and isinstance(found, int):
        return "%s tree %d folio %d" % (code, exp, found)
    if code.startswith("SIBLING_") or code in ("NODE_SHIFT",):
        return "%s shift %s" % (code, shift if shift is not None else "?")
    if code.startswith("SLAB_"):
        reason = (d.get("extra") or {}).get("reason")
        if reason:
            reason = re.sub(r"\d+", "N", reason)
            return "%s (%s)" % (code, reason)
        return code
    if order is not None and code.startswith("FOLIO_"):
        return "%s order-%s" % (code, order)
    return code


def explanation_shape(e: Dict[str, Any]) -> Optional[str]:
    data = e.get("data") or {}
    if e.get("code") == "STALE_SPLIT" and "orig_order" in data:
        return "STALE_SPLIT order-%s -> order-%s" % (
            data["orig_order"], data.get("piece_order", "?"))
    return None


#: Impact range kinds -> what a signature says of them.
_RISK_WORDS = {"lost": "dirty folio lost", "aliased": "dirty folio at a wrong index",
               "foreign": "dirty folio of another file",
               "stale": "dirty folio of no file"}


def impact_shapes(imp: Dict[str, Any]) -> List[tuple]:
    """``(signature, severity)`` of a row's impact (ScanRow.impact):
    data at risk first, then what reads wrong, then what was lost."""
    out: List[tuple] = []
    for r in imp.get("ranges") or []:
        k = r.get("kind")
        if r.get("at_risk"):
            s = ("DATA AT RISK: " + _RISK_WORDS.get(k, k), "error")
        elif k in ("aliased", "foreign", "stale", "unknown"):
            s = ("READS WRONG: " + k, "error")
        elif k == "lost":
            s = ("LOST: folios cut off" if r.get("nr_folios") else
                 "LOST: folios not found", "warning")
        else:
            s = ("PAST EOF: folios cached", "warning")
        if s not in out:
            out.append(s)
    return out


def error_shape(msg: str) -> str:
    """An error line without paths, addresses and numbers."""
    m = msg or "error"
    m = re.sub(r"(/[^\s:,()]+)+", "PATH", m)
    m = re.sub(r"0x[0-9a-fA-F]+", "ADDR", m)
    m = re.sub(r"\d+", "N", m)
    m = m.split(":")[0] if len(m) > 48 else m
    return "error: " + m.strip()


def _severity(code: str) -> str:
    return CODES.get(code, ("error", ""))[0]


def dump_signatures(res: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """signature -> ``{"count", "severity", "where": [tree names]}`` for one
    result dict."""
    out: Dict[str, Dict[str, Any]] = {}

    def add(sig: str, sev: str, where: str) -> None:
        g = out.setdefault(sig, {"count": 0, "severity": sev, "where": []})
        g["count"] += 1
        if SEVERITY_RANK.get(sev, 9) < SEVERITY_RANK.get(g["severity"], 9):
            g["severity"] = sev
        if where and where not in g["where"] and len(g["where"]) < 8:
            g["where"].append(where)

    if res.get("error"):
        add(error_shape(res["error"]), "error", "")
        return out
    for row in (res.get("scan") or {}).get("top", []):
        where = row_name(row)
        if row.get("kind") == "error" or row.get("verdict") == "error":
            add(error_shape(row.get("error", "")), "warning", where)
            continue
        for f in row.get("findings") or []:
            add(finding_shape(f), f.get("severity") or
                _severity(f.get("code", "")), where)
        for e in row.get("explanations") or []:
            s = explanation_shape(e)
            if s:
                add(s, "error", where)
        for sig, sev in impact_shapes(row.get("impact") or {}):
            add(sig, sev, where)
    slab = res.get("slab") or {}
    if slab.get("error"):
        add("slab walk: " + error_shape(slab["error"]), "info", "slab")
    for f in slab.get("findings") or []:
        add(finding_shape(f), f.get("severity") or
            _severity(f.get("code", "")), "slab")
    return out


# ----------------------------------------------------------------------
# Grouping


def load_results(src: Union[str, Iterable[Any]]) -> List[Dict[str, Any]]:
    """Result dicts from a directory of result files, a list of file
    paths, or a list of already-loaded dicts."""
    if isinstance(src, (str, os.PathLike)):
        src = sorted(glob.glob(os.path.join(os.fspath(src), "*.json")))
    out = []
    for s in src:
        if isinstance(s, dict):
            out.append(s)
            continue
        try:
            with open(s) as f:
                r = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(r, dict) and "dump" in r:
            r.setdefault("_result", os.fspath(s))
            out.append(r)
    return out


def group(results: Union[str, Iterable[Any]]) -> Dict[str, Any]:
    """Dumps grouped by signature: the JSON form of the report.

    ``groups``: one per signature, most severe and most widespread first,
    each with its dumps (a dump is in every group it has a signature of);
    ``patterns``: dumps grouped by their whole set of signatures;
    ``clean``: dumps with none."""
    rs = load_results(results)
    by_verdict: Dict[str, int] = {}
    groups: Dict[str, Dict[str, Any]] = {}
    clean: List[str] = []
    patterns: Dict[str, Dict[str, Any]] = {}
    for r in rs:
        v = r.get("verdict") or "error"
        by_verdict[v] = by_verdict.get(v, 0) + 1
        name = r.get("name") or os.path.basename(r.get("dump", "?"))
        sigs = dump_signatures(r)
        if not sigs:
            clean.append(name)
            continue
        key = " + ".join(sorted(sigs))
        P = patterns.setdefault(key, {"signatures": sorted(sigs),
                                      "dumps": []})
        P["dumps"].append(name)
        for sig, g in sigs.items():
            G = groups.setdefault(sig, {"signature": sig,
                                        "severity": g["severity"],
                                        "dumps": [], "releases": {}})
            if SEVERITY_RANK.get(g["severity"], 9) < \
                    SEVERITY_RANK.get(G["severity"], 9):
                G["severity"] = g["severity"]
            pic = r.get("picture") or {}
            G["dumps"].append({"name": name, "dump": r.get("dump"),
                               "release": r.get("release"),
                               "verdict": v, "count": g["count"],
                               "where": g["where"],
                               "result": r.get("_result"),
                               # the dump's picture, when it shows a tree
                               # of this signature
                               "picture": pic.get("file")
                               if pic.get("tree") in g["where"] else None})
            rel = r.get("release") or "?"
            G["releases"][rel] = G["releases"].get(rel, 0) + 1
    ordered = sorted(groups.values(), key=lambda G: (
        G["signature"].startswith("error:"),
        SEVERITY_RANK.get(G["severity"], 9), -len(G["dumps"]),
        G["signature"]))
    # Dumps with exactly the same set of signatures: likely one bug.
    pats = sorted(patterns.values(), key=lambda P: (-len(P["dumps"]),
                                                    P["signatures"]))
    return {"dumps": len(rs), "by_verdict": by_verdict, "groups": ordered,
            "patterns": pats, "clean": sorted(clean)}


# ----------------------------------------------------------------------
# Rendering


def _wrap(text: str, width: int, indent: str = "") -> List[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent + "  ",
                         initial_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [indent.rstrip()]


def to_markdown(g: Dict[str, Any], width: int = WIDTH,
                max_dumps: int = 10) -> str:
    """The grouped report as Markdown, no line longer than ``width``."""
    L: List[str] = []
    L += _wrap("# crashext triage: %d dump%s" % (
        g["dumps"], "" if g["dumps"] == 1 else "s"), width)
    bv = g["by_verdict"]
    L += _wrap(" · ".join("%s %d" % (v, bv[v]) for v in VERDICTS if bv.get(v))
               or "nothing triaged", width)
    shown: set = set()
    for G in g["groups"]:
        L.append("")
        L += _wrap("## " + G["signature"], width)
        rels = ", ".join("%s x%d" % kv if kv[1] > 1 else kv[0]
                         for kv in sorted(G["releases"].items()))
        L += _wrap("%s; %d dump%s (%s)" % (
            G["severity"], len(G["dumps"]),
            "" if len(G["dumps"]) == 1 else "s", rels), width)
        for d in G["dumps"][:max_dumps]:
            where = ", ".join(d["where"][:3])
            more = "" if len(d["where"]) <= 3 else " +%d" % (
                len(d["where"]) - 3)
            txt = "- %s%s%s" % (d["name"],
                               " x%d" % d["count"] if d["count"] > 1 else "",
                               ": " + where + more if where else "")
            L += _wrap(txt, width)
        pics = [d for d in G["dumps"] if d.get("picture")
                and d["picture"] not in shown]
        if pics:
            # Each picture once, under the first (most severe) signature
            # it shows; its path is relative to the results directory.
            p = pics[0]
            shown.add(p["picture"])
            room = width - len("![]()") - len(p["picture"])
            alt = p["where"][0] if p["where"] else p["name"]
            if len(alt) > room:
                alt = alt[:max(room - 3, 0)] + "..."
            L.append("![%s](%s)" % (alt, p["picture"]))
        if len(G["dumps"]) > max_dumps:
            L.append("- ... %d more" % (len(G["dumps"]) - max_dumps))
    if g["clean"]:
        L.append("")
        L += _wrap("## clean", width)
        for n in g["clean"][:max_dumps]:
            L += _wrap("- " + n, width)
        if len(g["clean"]) > max_dumps:
            L.append("- ... %d more" % (len(g["clean"]) - max_dumps))
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
