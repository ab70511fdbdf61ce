"""Put each triaged dump in one bucket, keyed by its primary signature;
and index the dumps by finding code.

A dump's *primary signature* is its worst conclusion with the
filesystem and shape of the tree it was seen in, plus the panic site::

    stale split order 6 -> 4 / xfs / shift 0 slots +{16,32,48} / panic in unknown_nmi_error
    cross-linked node / xfs / shift 0 / no panic
    clean / panic in sysrq_handle_crash
    error: no vmlinux for N.N.N-N-amdN ... / panic in unknown_nmi_error

*Worst* follows :data:`CONCLUSIONS` (what the damage means, from
:mod:`crashext.explain`, most telling first), then the remaining error
codes in :data:`crashext.findings.CODES` order, then warnings.  The
shape leaves addresses out (node level, slots within the node, orders),
so the same bug in many dumps lands in one bucket.

The *index* keeps the older, per-code view: every signature of every
finding, with the dumps that show it (a dump appears under each of its
codes).

>>> buckets(load_results("/tmp/triage"))                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ..findings import CODES, SEVERITY_RANK
from .panic import site_label
from .results import load_result, result_files
from .scan import row_name

_SIB = ("SIBLING_TO_NULL", "SIBLING_FORWARD", "SIBLING_TO_SIBLING",
        "SIBLING_TO_NODE", "SIBLING_TO_SPECIAL", "SIBLING_RUN_BROKEN")

#: Conclusions, most telling first: (explanation or finding code, label,
#: the finding codes it rests on).
CONCLUSIONS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("CROSS_LINK", "cross-linked node", ("NODE_ARRAY",)),
    ("FREED_NODE", "freed node still linked", ("NODE_FREEING",)),
    ("SLAB_NODE_FREE_LINKED", "link to a free xa_node",
     ("SLAB_NODE_FREE_LINKED",)),
    ("NODE_CYCLE", "node cycle", ("NODE_CYCLE",)),
    ("STALE_SPLIT", "stale split order {orig_order} -> {piece_order}",
     ("DUP_FOLIO",)),
    ("FOREIGN_FOLIO", "foreign folio", ("FOLIO_MAPPING",)),
    ("REUSED_FOLIO", "stale entry to a reused page", ("FOLIO_MAPPING",)),
    ("STALE_ENTRY", "stale entry (folio left the cache)",
     ("FOLIO_MAPPING",)),
    ("SPLIT_UNSEEN", "folio split, tree not updated", ("FOLIO_ORDER",)),
    ("ORDER_GREW", "stale pointer to a bigger folio", ("FOLIO_ORDER",)),
    ("STALE_SIBLINGS", "stale sibling entries", _SIB),
    ("DUP", "same folio at several slots", ("DUP_FOLIO",)),
)
_RANK = {c[0]: i for i, c in enumerate(CONCLUSIONS)}
_CODE_ORDER = {c: i for i, c in enumerate(CODES)}
#: Examples shown per bucket.
EXAMPLES = 3


# ----------------------------------------------------------------------
# Shapes


def _slots(d: Dict[str, Any]) -> str:
    return ",".join(str(x) for x in sorted(set(d.get("slots") or [])))


def finding_shape(d: Dict[str, Any]) -> str:
    """A finding dict (``Finding.to_dict()``) as an address-free shape,
    code first (the index's signatures)."""
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
            return "%s (%s)" % (code, re.sub(r"\d+", "N", reason))
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


def error_shape(msg: str) -> str:
    """An error line without paths, addresses and numbers."""
    m = msg or "error"
    m = re.sub(r"(/[^\s:,()]+)+", "PATH", m)
    m = re.sub(r"0x[0-9a-fA-F]+", "ADDR", m)
    m = re.sub(r"\b[0-9a-f]{12,}\b", "ID", m)
    m = re.sub(r"\d+", "N", m)
    m = m.split(":")[0] if len(m) > 48 else m
    return "error: " + m.strip()


def tree_shape(d: Dict[str, Any]) -> str:
    """Where in a tree a finding sits, without addresses: node level
    (shift) and the slots within the node."""
    parts = []
    if d.get("shift") is not None:
        parts.append("shift %s" % d["shift"])
    if d.get("slots") and d.get("code") != "NRPAGES":
        parts.append("slots +{%s}" % _slots(d))
    code = d.get("code")
    if code == "FOLIO_ORDER" and isinstance(d.get("expected"), int):
        parts.append("tree order %s folio %s" % (d["expected"],
                                                  d.get("found")))
    elif d.get("order") is not None and code != "DUP_FOLIO":
        parts.append("order-%s folio" % d["order"])
    return " ".join(parts)


#: Impact range kinds -> what a signature says of them.
_RISK_WORDS = {"lost": "dirty folio lost",
               "aliased": "dirty folio at a wrong index",
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


def _severity(code: str) -> str:
    return CODES.get(code, ("error", ""))[0]


def _indices(f: Dict[str, Any]) -> List[Dict[str, int]]:
    """A finding's indices with their slot in the node: lib/xarray.c
    get_offset(), ``(index >> node->shift) & XA_CHUNK_MASK`` (63: the
    64-slot nodes of every 64-bit kernel, CONFIG_BASE_SMALL off)."""
    shift = f.get("shift") or 0
    out = []
    for i in (f.get("indices") or [])[:8]:
        out.append({"index": i, "slot": (i >> shift) & 63})
    return out


# ----------------------------------------------------------------------
# One dump


def _candidates(res: Dict[str, Any]) -> Iterable[Tuple[tuple, Dict[str, Any]]]:
    """(rank, conclusion dict) for every conclusion a result supports."""
    rows = (res.get("scan") or {}).get("top", [])
    for pos, row in enumerate(rows):
        if row.get("kind") == "error" or row.get("verdict") == "error":
            # A list or tree that could not be read: the dump is not
            # known clean, but this says nothing about corruption.
            label = error_shape(row.get("error", ""))[len("error: "):]
            yield (4, 0, pos), {
                "code": "SCAN_ERROR", "label": "could not scan: " + label,
                "severity": "warning", "fs": row.get("fs_type") or "",
                "shape": "", "tree": row_name(row), "finding": None,
                "node": None, "folio": None, "indices": [], "row": None}
            continue
        if row.get("kind") not in ("inode", "swap"):
            continue
        finds = row.get("findings") or []
        used = set()
        for e in row.get("explanations") or []:
            code = e.get("code")
            if code not in _RANK:
                continue
            _, label, codes = CONCLUSIONS[_RANK[code]]
            data = e.get("data") or {}
            try:
                label = label.format(**data)
            except (KeyError, IndexError):
                label = label.split(" {")[0]
            f = _finding_for(finds, codes, data)
            used.update(codes)
            yield (0, _RANK[code], pos), _conclusion(code, label, row, f)
        for code in row.get("codes") or {}:
            if code in used:
                continue
            f = _finding_for(finds, (code,), {})
            sev = _severity(code)
            if code in _RANK:
                rank: tuple = (0, _RANK[code], pos)
                label = CONCLUSIONS[_RANK[code]][1]
            else:
                rank = (1 + SEVERITY_RANK.get(sev, 2),
                        _CODE_ORDER.get(code, 99), pos)
                label = code
            yield rank, _conclusion(code, label, row, f)
    slab = res.get("slab") or {}
    for f in slab.get("findings") or []:
        code = f.get("code", "?")
        sev = f.get("severity") or _severity(code)
        if code == "NODE_ARRAY":
            yield ((0, _RANK["CROSS_LINK"], 10 ** 6),
                   _conclusion("CROSS_LINK", "cross-linked node", None, f,
                               fs="slab"))
        elif code in _RANK:
            yield ((0, _RANK[code], 10 ** 6),
                   _conclusion(code, CONCLUSIONS[_RANK[code]][1], None, f,
                               fs="slab"))
        else:
            yield ((1 + SEVERITY_RANK.get(sev, 2), _CODE_ORDER.get(code, 99),
                    10 ** 6), _conclusion(code, code, None, f, fs="slab"))


def _finding_for(finds: List[Dict[str, Any]], codes: Tuple[str, ...],
                 data: Dict[str, Any]) -> Dict[str, Any]:
    cand = [f for f in finds if f.get("code") in codes]
    if "stride" in data:
        # the DUP_FOLIO whose slots have the explanation's stride
        for f in cand:
            s = sorted(f.get("slots") or [])
            if len(s) > 1 and s[1] - s[0] == data["stride"]:
                return f
    return cand[0] if cand else {}


def _conclusion(code: str, label: str, row: Optional[Dict[str, Any]],
                f: Dict[str, Any], fs: str = "") -> Dict[str, Any]:
    sev = f.get("severity") or _severity(f.get("code") or code)
    return {"code": code, "label": label, "severity": sev,
            "fs": (row or {}).get("fs_type") or fs,
            "shape": tree_shape(f), "tree": row_name(row) if row else "slab",
            "finding": f.get("code"), "node": f.get("node"),
            "folio": f.get("folio"), "indices": _indices(f),
            "row": row}


def primary(res: Dict[str, Any]) -> Dict[str, Any]:
    """The dump's primary signature: its worst conclusion (see the
    module docstring) with ``fs``, ``shape``, ``tree``, ``indices``,
    ``panic`` (site label) and ``key``; ``row`` is the scan row of the
    tree (for the caller; not part of the key).  Clean dumps get
    ``code`` "clean", dumps that could not be analysed ``code``
    "error"."""
    psite = site_label(res.get("panic"))
    if res.get("error"):
        c = {"code": "error", "label": error_shape(res["error"]),
             "severity": "error", "fs": "", "shape": "", "tree": None,
             "indices": [], "row": None}
    else:
        best = None
        for rank, c in _candidates(res):
            if best is None or rank < best[0]:
                best = (rank, c)
        if best is None:
            c = {"code": "clean", "label": "clean", "severity": "",
                 "fs": "", "shape": "", "tree": None, "indices": [],
                 "row": None}
        else:
            c = best[1]
    c["panic"] = psite
    # data at risk (ScanRow.impact): in the primary tree, or anywhere
    c["at_risk"] = bool(((c.get("row") or {}).get("impact") or {}).get(
        "at_risk")) or any((r.get("impact") or {}).get("at_risk")
                           for r in (res.get("scan") or {}).get("top", []))
    c["key"] = " / ".join(x for x in (c["label"], c["fs"], c["shape"], psite)
                          if x)
    return c


# ----------------------------------------------------------------------
# Many dumps


def load_results(src: Union[str, Iterable[Any]]) -> List[Dict[str, Any]]:
    """Result dicts from a directory of result files, a list of file
    paths, or a list of already-loaded dicts."""
    if isinstance(src, (str, os.PathLike)):
        src = result_files(os.fspath(src))
    out = []
    for s in src:
        if isinstance(s, dict):
            out.append(s)
            continue
        r = load_result(s)
        if isinstance(r, dict) and "dump" in r and "schema" in r:
            r.setdefault("_result", os.fspath(s))
            out.append(r)
    return out


def _time_key(t: Optional[str]) -> str:
    return (t or "").replace(" ", "T")


def buckets(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One bucket per primary signature: ``key``, ``conclusion``,
    ``label``, ``severity``, ``fs``, ``shape``, ``panic``, ``count``,
    ``at_risk`` (dumps with data at risk: dirty folios the page cache
    lost or misplaces, :mod:`crashext.impact`),
    ``kernels`` (release -> dumps), ``first``/``last`` crash time,
    ``dumps`` (names), ``examples`` (up to :data:`EXAMPLES`: name, tree,
    indices, release, crash time, panic line, crashing task, picture),
    most telling conclusion first, then the biggest."""
    out: Dict[str, Dict[str, Any]] = {}
    order: Dict[str, tuple] = {}
    for r in results:
        p = primary(r)
        p.pop("row", None)
        B = out.get(p["key"])
        if B is None:
            B = out[p["key"]] = {
                "key": p["key"], "conclusion": p["code"],
                "label": p["label"], "severity": p["severity"],
                "fs": p["fs"], "shape": p["shape"], "panic": p["panic"],
                "count": 0, "at_risk": 0, "kernels": {}, "first": None,
                "last": None, "dumps": [], "examples": []}
            order[p["key"]] = _bucket_rank(p)
        B["count"] += 1
        B["at_risk"] += bool(p.get("at_risk"))
        name = r.get("name") or os.path.basename(r.get("dump", "?"))
        B["dumps"].append(name)
        rel = r.get("release") or "?"
        B["kernels"][rel] = B["kernels"].get(rel, 0) + 1
        t = r.get("crash_time")
        if t:
            if B["first"] is None or _time_key(t) < _time_key(B["first"]):
                B["first"] = t
            if B["last"] is None or _time_key(t) > _time_key(B["last"]):
                B["last"] = t
        if len(B["examples"]) < EXAMPLES:
            pan = r.get("panic") or {}
            pic = r.get("picture") or {}
            B["examples"].append({
                "name": name, "dump": r.get("dump"),
                "result": r.get("_result"), "release": r.get("release"),
                "crash_time": t, "tree": p.get("tree"),
                "indices": p.get("indices") or [],
                "node": p.get("node"), "error": r.get("error"),
                "panic": pan.get("line"), "bug": pan.get("bug"),
                "task": _task_text(pan),
                "crashing_task": (r.get("primary") or {}).get(
                    "crashing_task"),
                "picture": pic.get("file")
                if pic.get("file") and pic.get("tree") == p.get("tree")
                else None})
    return sorted(out.values(), key=lambda B: (order[B["key"]][0],
                                               order[B["key"]][1],
                                               -B["count"], B["key"]))


def _task_text(p: Dict[str, Any]) -> Optional[str]:
    if p.get("comm") is None and p.get("cpu") is None:
        return None
    return "%s pid %s CPU %s" % (p.get("comm", "?"), p.get("pid", "?"),
                                 p.get("cpu", "?"))


def _bucket_rank(p: Dict[str, Any]) -> tuple:
    code = p["code"]
    if code == "clean":
        return (9, 0)
    if code == "error":
        return (8, 0)
    if code in _RANK:
        return (0, _RANK[code])
    if code == "SCAN_ERROR":
        return (4, 0)
    return (1 + SEVERITY_RANK.get(p["severity"], 2), _CODE_ORDER.get(code, 99))


def dump_signatures(res: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """signature -> ``{"count", "severity", "where": [tree names]}`` for one
    result dict (the per-code index)."""
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


def index(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The per-code index: one entry per signature (see
    :func:`dump_signatures`) with its dumps, most severe and most
    widespread first."""
    groups: Dict[str, Dict[str, Any]] = {}
    for r in results:
        name = r.get("name") or os.path.basename(r.get("dump", "?"))
        for sig, g in dump_signatures(r).items():
            G = groups.setdefault(sig, {"signature": sig,
                                        "severity": g["severity"],
                                        "dumps": [], "releases": {}})
            if SEVERITY_RANK.get(g["severity"], 9) < \
                    SEVERITY_RANK.get(G["severity"], 9):
                G["severity"] = g["severity"]
            G["dumps"].append({"name": name, "count": g["count"],
                               "where": g["where"]})
            rel = r.get("release") or "?"
            G["releases"][rel] = G["releases"].get(rel, 0) + 1
    return sorted(groups.values(), key=lambda G: (
        G["signature"].startswith("error:"),
        SEVERITY_RANK.get(G["severity"], 9), -len(G["dumps"]),
        G["signature"]))
