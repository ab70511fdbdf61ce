#!/usr/bin/env python3
"""Benchmark: crashext's walk + checks against drgn and crash on one lab
vmcore (run by hand, not a test).

    python bench/bench_walk.py [--lab DIR] [--run 6.1-big1536M] [--reps 3]

On the run's ELF dump and its largest page-cache file (the manifest's file
with the most pages, /mnt/xfs/bigfile: 393216 order-0 folios) it times,
each measurement in a fresh child process (so every peak RSS is its own):

* ``engine-drgn``: :func:`crashext.analyze.analyze` (target resolution,
  walk, folio reads, all checks, stats, explanations) through DrgnMemory;
  also a subset of the same tree (the walk stopped after 1/8 of its
  nodes: ``max_nodes``) for the per-node cost, and the other test files;
* ``engine-pykdump``: the same through PykdumpMemory over the PyKdump
  stand-in (tests/pykdump_standin), which serves ``readmem`` from drgn:
  its times include drgn's read cost plus the stand-in's bookkeeping, not
  crash's;
* ``engine-snapshot``: capture the analysis into a snapshot file
  (RecordingMemory over drgn, save), load it, then time analysing it;
* ``drgn-script``: drgn's ``xa_for_each`` over the same ``i_pages`` plus
  ``mapping``/``index``/``flags`` of each folio read with drgn Objects
  (what a hand-written drgn script does);
* ``crash``: crash's ``tree -t xarray -r address_space.i_pages -p
  <address_space>`` on the same tree (batch mode, output to a file), minus
  the start-up of an empty session on the same dump (min of ``--reps``
  sessions each), and also timed inside one session between ``!date``
  stamps (min of ``--reps``; used for the ratio: start-up varies more than
  the command costs).  6.1 dumps only: crash 8.0.2 cannot open 6.12;
* ``scan``: :func:`crashext.triage.scan.scan` of every inode of the dump
  (when crashext/triage/scan.py exists), and ``scan-cli``: the
  ``crashext scan`` command end to end.

Every time is the minimum over ``--reps`` repetitions (the lab machine has
2 cores shared with other jobs).  Prints one table and the ratios; with
``--json FILE`` also writes every number.  Peak memory is ``ru_maxrss`` of
the child (``os.wait4`` per child); "after open" is the child's RSS once
the dump is open (drgn maps vmlinux's debug info: ~250 MB, mostly
file-backed), so peak - after open is what the measured code added.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "pykdump_standin"
DEFAULT_LAB = os.environ.get("CRASHEXT_LAB") or os.environ.get("LAB") \
    or "/var/cache/crashext-lab"


# ---------------------------------------------------------------- helpers
def _rss_kb() -> int:
    """Current RSS of this process (kB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _status_kb(keys=("RssAnon", "RssFile")) -> Dict[str, int]:
    """Fields of /proc/self/status in kB (RssAnon: private memory;
    RssFile: file pages mapped, e.g. drgn's mmap of the vmlinux)."""
    out: Dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


class _AnonPeak:
    """Samples RssAnon every 2 ms in a thread: the peak of the process's
    private memory, which ru_maxrss mixes with clean file pages (drgn maps
    the vmlinux's DWARF; the kernel can drop those pages at any time)."""

    def __init__(self) -> None:
        import threading
        self.peak = _status_kb().get("RssAnon", 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status_kb().get("RssAnon", 0))

    def __enter__(self) -> "_AnonPeak":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _status_kb().get("RssAnon", 0))


def _timed(fn, reps: int) -> Dict[str, Any]:
    """Run ``fn`` ``reps`` times; min and all times, last result."""
    times = []
    res = None
    for _ in range(reps):
        res = None          # drop the last result first (peak memory)
        t = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t)
    return {"min": min(times), "times": times, "result": res}


def _manifest(lab: str, run: str) -> Dict[str, Any]:
    p = Path(lab) / run / "manifest.json"
    with open(p) as f:
        m = json.load(f)
    m["_run_dir"] = str(p.parent.resolve())
    return m


def _elf(m: Dict[str, Any]) -> str:
    for d in m["dumps"]:
        if d["name"] == "elf":
            return d["path"]
    raise SystemExit("run %s has no ELF dump" % m["_run_dir"])


def _file(m: Dict[str, Any], path: Optional[str]) -> Dict[str, Any]:
    files = m["files"]
    if path:
        for f in files:
            if f["path"] == path:
                return f
        raise SystemExit("no %s in the manifest" % path)
    return max(files, key=lambda f: f["nrpages"])


def _spec(f: Dict[str, Any]) -> str:
    # i_pages resolves (by its back-pointers) to the mapping: page-cache
    # checks on, no path lookup needed (PyKdump has none).
    return "xarray:%s" % f["i_pages"]


def _analysis_summary(a) -> Dict[str, Any]:
    s = a.stats
    return {"verdict": a.verdict, "findings": len(a.findings),
            "codes": sorted({f.code for f in a.findings}),
            "nodes": s.nodes, "entries": s.entries, "folios": s.folios,
            "pages": s.pages, "node_reads": s.node_reads}


# ---------------------------------------------------------------- children
def child_engine(args, m, backend: str) -> Dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from crashext.analyze import analyze
    vmlinux, core = m["vmlinux"], _elf(m)
    big = _file(m, args.file)
    out: Dict[str, Any] = {"file": big["path"]}
    t = time.perf_counter()
    if backend == "drgn":
        from crashext.backends.drgn import DrgnMemory
        mem = DrgnMemory.open(core, vmlinux)
    elif backend == "pykdump":
        sys.path.insert(0, str(STANDIN))
        import crash  # the stand-in
        crash.standin_open(vmlinux, core)
        from crashext.backends.pykdump import PykdumpMemory
        mem = PykdumpMemory()
    elif backend == "snapshot":
        from crashext.backends.drgn import DrgnMemory
        from crashext.backends.snapshot import (RecordingMemory,
                                                SnapshotMemory, save)
        inner = DrgnMemory.open(core, vmlinux)
        out["open_s"] = time.perf_counter() - t
        rec = RecordingMemory(inner)
        t = time.perf_counter()
        analyze(rec, _spec(big))
        rec.targets.append(_spec(big))
        tmpdir = tempfile.mkdtemp(prefix="crashext-bench-")
        path = os.path.join(tmpdir, "bigfile.snap")
        out["snapshot_bytes"] = save(rec, path)
        out["capture_s"] = time.perf_counter() - t
        del rec, inner
        t = time.perf_counter()
        mem = SnapshotMemory.load(path)
        out["load_s"] = time.perf_counter() - t
        shutil.rmtree(tmpdir, ignore_errors=True)
    else:
        raise SystemExit("unknown backend " + backend)
    if "open_s" not in out:
        out["open_s"] = time.perf_counter() - t
    out["rss_after_open_kb"] = _rss_kb()
    out["maxrss_after_open_kb"] = _maxrss_kb()
    r = _timed(lambda: analyze(mem, _spec(big)), args.reps)
    out["analyze"] = dict(min=r["min"], times=r["times"],
                          **_analysis_summary(r["result"]))
    n_nodes = r["result"].stats.nodes
    del r
    if backend == "drgn":
        # Per-node cost: the same tree cut to 1/8 of its nodes (walk stops
        # after max_nodes; the folios of those nodes are read and checked).
        sub = max(1, n_nodes // 8)
        # 8x cheaper, so more repetitions for an equally stable minimum.
        r = _timed(lambda: analyze(mem, _spec(big), max_nodes=sub),
                   4 * args.reps)
        # ...and the full tree again, interleaved in time with the subset.
        r2 = _timed(lambda: analyze(mem, _spec(big)), args.reps)
        if r2["min"] < out["analyze"]["min"]:
            out["analyze"]["min"] = r2["min"]
        out["analyze"]["times"] += r2["times"]
        del r2
        out["subset"] = dict(min=r["min"], times=r["times"], max_nodes=sub,
                             **_analysis_summary(r["result"]))
        del r
        others = {}
        for f in m["files"]:
            if f["path"] == big["path"]:
                continue
            r = _timed(lambda: analyze(mem, _spec(f)), args.reps)
            others[f["path"]] = dict(min=r["min"],
                                     **_analysis_summary(r["result"]))
            del r
        out["others"] = others
    if backend == "pykdump":
        st = sys.modules["crash"].standin_stats
        out["standin_mem_calls"] = st.get("mem_calls", 0)
    out["maxrss_kb"] = _maxrss_kb()
    return out


def child_drgn_script(args, m) -> Dict[str, Any]:
    import drgn
    from drgn import Object, cast
    from drgn.helpers.linux.xarray import xa_for_each, xa_is_value
    big = _file(m, args.file)
    t = time.perf_counter()
    prog = drgn.Program()
    prog.set_core_dump(_elf(m))
    prog.load_debug_info([m["vmlinux"]])
    out: Dict[str, Any] = {"file": big["path"],
                           "open_s": time.perf_counter() - t,
                           "rss_after_open_kb": _rss_kb(),
                           "maxrss_after_open_kb": _maxrss_kb()}
    xa = Object(prog, "struct xarray *", int(big["i_pages"], 16))

    def script():
        n = 0
        for _index, entry in xa_for_each(xa):
            if xa_is_value(entry):
                continue
            folio = cast("struct folio *", entry)
            folio.mapping.value_()
            folio.index.value_()
            folio.flags.value_()
            n += 1
        return n

    def walk_only():
        return sum(1 for _ in xa_for_each(xa))

    r = _timed(script, args.drgn_reps)
    out["script"] = {"min": r["min"], "times": r["times"],
                     "entries": r["result"]}
    r = _timed(walk_only, args.drgn_reps)
    out["xa_for_each_only"] = {"min": r["min"], "times": r["times"],
                               "entries": r["result"]}
    out["maxrss_kb"] = _maxrss_kb()
    return out


def child_scan(args, m) -> Dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    if not (ROOT / "crashext" / "triage" / "scan.py").is_file():
        return {"skipped": "crashext/triage/scan.py does not exist"}
    from crashext.backends.drgn import DrgnMemory
    from crashext.triage.scan import scan
    t = time.perf_counter()
    mem = DrgnMemory.open(_elf(m), m["vmlinux"])
    out: Dict[str, Any] = {"open_s": time.perf_counter() - t,
                           "rss_after_open_kb": _rss_kb(),
                           "maxrss_after_open_kb": _maxrss_kb(),
                           "status_after_open_kb": _status_kb()}

    def run():
        rows = 0
        by: Dict[str, int] = {}
        nodes = entries = 0
        for row in scan(mem):
            rows += 1
            by[row.verdict] = by.get(row.verdict, 0) + 1
            nodes += row.counts.get("nodes", 0)
            entries += row.counts.get("entries", 0)
        return {"rows": rows, "by_verdict": by, "nodes": nodes,
                "entries": entries}

    with _AnonPeak() as anon:
        r = _timed(run, args.reps)
    out.update(min=r["min"], times=r["times"], **r["result"])
    out["maxrss_kb"] = _maxrss_kb()
    out["anon_peak_kb"] = anon.peak
    out["status_end_kb"] = _status_kb()
    return out


# ---------------------------------------------------------------- crash
def _crash_once(vmlinux: str, core: str, cmds: str,
                timeout: int) -> Dict[str, Any]:
    """One batch crash session; wall time and the child's peak RSS
    (os.wait4 on that child)."""
    with tempfile.NamedTemporaryFile("w", suffix=".cmd", delete=False) as f:
        f.write(cmds + "q\n")
        cmdfile = f.name
    try:
        t = time.perf_counter()
        p = subprocess.Popen(
            ["timeout", "-s", "KILL", str(timeout), "crash", "-s", vmlinux,
             core, "-i", cmdfile],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        out = p.stdout.read()
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.unlink(cmdfile)
    return {"wall": wall, "rc": p.returncode, "maxrss_kb": ru.ru_maxrss,
            "output_tail": out[-300:].decode(errors="replace")}


def run_crash(args, m) -> Dict[str, Any]:
    if not shutil.which("crash"):
        return {"skipped": "crash not installed"}
    if not m["release"].startswith("6.1."):
        return {"skipped": "crash 8.0.2 cannot open %s dumps" % m["release"]}
    big = _file(m, args.file)
    vmlinux, core = m["vmlinux"], _elf(m)
    with tempfile.NamedTemporaryFile("r", suffix=".out", delete=False) as f:
        lines_file = f.name
    tree = ("tree -t xarray -r address_space.i_pages -p %s > %s\n"
            % (big["address_space"], lines_file))
    empty, full = [], []
    try:
        # Interleaved, so load changes hit both alike.
        for _ in range(args.reps):
            empty.append(_crash_once(vmlinux, core, "", args.crash_timeout))
            full.append(_crash_once(vmlinux, core, tree, args.crash_timeout))
        with open(lines_file, "rb") as f:
            lines = sum(1 for _ in f)
    finally:
        os.unlink(lines_file)
    e = min(r["wall"] for r in empty)
    t = min(r["wall"] for r in full)
    # Start-up (~10-12 s of gdb reading vmlinux) varies by +-1.5 s under
    # load, more than the tree costs: also time the command inside one
    # session, between shell time stamps ('!date'), --reps times.
    with tempfile.NamedTemporaryFile("r", suffix=".ts", delete=False) as f:
        ts_file = f.name
    stamp = "!date +%%s.%%N >> %s\n" % ts_file
    try:
        cmds = stamp + stamp + "".join(tree + stamp
                                       for _ in range(args.reps))
        ins = _crash_once(vmlinux, core, cmds, args.crash_timeout)
        if ins["rc"]:
            raise RuntimeError("crash session failed: " + ins["output_tail"])
        with open(ts_file) as f:
            ts = [float(x) for x in f.read().split()]
    finally:
        os.unlink(ts_file)
    stamp_cost = ts[1] - ts[0]
    in_session = [b - a - stamp_cost for a, b in zip(ts[1:], ts[2:])]
    return {"file": big["path"], "startup_s": e, "with_tree_s": t,
            "tree_by_subtraction_s": t - e,
            "tree_in_session_times": in_session,
            "tree_in_session_s": min(in_session) if in_session else None,
            "stamp_cost_s": stamp_cost,
            "tree_s": min(in_session) if in_session else t - e,
            "startup_times": [r["wall"] for r in empty],
            "with_tree_times": [r["wall"] for r in full],
            "rc": [r["rc"] for r in full],
            "output_lines": lines, "entries": lines // 2,
            "maxrss_kb": max(r["maxrss_kb"] for r in full),
            "startup_maxrss_kb": max(r["maxrss_kb"] for r in empty)}


def run_scan_cli(args, m) -> Dict[str, Any]:
    """``crashext scan`` as a user runs it (``python -m crashext.cli scan
    -c VMCORE -k VMLINUX``): whole command, interpreter start-up and dump
    open included; min wall of ``--reps`` runs, the child's peak RSS."""
    if not (ROOT / "crashext" / "triage" / "scan.py").is_file():
        return {"skipped": "crashext/triage/scan.py does not exist"}
    cmd = [sys.executable, "-m", "crashext.cli", "scan", "-c", _elf(m),
           "-k", m["vmlinux"]]
    walls, rss, rcs = [], [], []
    tail = ""
    for _ in range(args.reps):
        t = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=str(ROOT), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = p.stdout.read()
        _pid, status, ru = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t)
        p.returncode = os.waitstatus_to_exitcode(status)
        rcs.append(p.returncode)
        rss.append(ru.ru_maxrss)
        tail = out[-400:].decode(errors="replace")
    return {"min": min(walls), "times": walls, "rc": rcs,
            "maxrss_kb": max(rss), "output_tail": tail}


# ---------------------------------------------------------------- parent
KINDS = ("engine-drgn", "engine-pykdump", "engine-snapshot", "drgn-script",
         "crash", "scan", "scan-cli")


def _child(args, kind: str) -> Dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--lab", args.lab, "--run", args.run, "--reps", str(args.reps),
           "--drgn-reps", str(args.drgn_reps)]
    if args.file:
        cmd += ["--file", args.file]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    if p.returncode:
        return {"error": err.decode(errors="replace")[-2000:]}
    res = json.loads(out.decode().strip().splitlines()[-1])
    res["child_wall_s"] = wall
    return res


def _mb(kb: Optional[int]) -> str:
    return "-" if kb is None else "%.0f" % (kb / 1024)


def report(res: Dict[str, Any], m: Dict[str, Any]) -> str:
    L: List[str] = []
    big = next((v["file"] for v in res.values()
                if isinstance(v, dict) and v.get("file")), "?")
    L.append("crashext bench: run %s (%s), ELF dump, file %s"
             % (Path(m["_run_dir"]).name, m["release"], big))
    L.append("times: min of repetitions; rss in MB (peak of that child; "
             "'open' = right after opening the dump)")
    L.append("")
    L.append("%-40s %9s %11s %9s %7s %7s" % ("what", "seconds", "entries/s",
                                              "entries", "open", "peak"))
    rows = []

    def add(name, secs, entries, r, open_kb=None):
        if secs is None:
            return
        eps = entries / secs if secs and entries else 0
        rows.append((name, secs))
        L.append("%-40s %9.3f %11.0f %9s %7s %7s" % (
            name, secs, eps, entries if entries is not None else "-",
            _mb(open_kb), _mb(r.get("maxrss_kb"))))

    ed = res.get("engine-drgn", {})
    if "analyze" in ed:
        add("crashext analyze, drgn backend", ed["analyze"]["min"],
            ed["analyze"]["entries"], ed, ed.get("rss_after_open_kb"))
    ep = res.get("engine-pykdump", {})
    if "analyze" in ep:
        add("crashext analyze, PyKdump stand-in*", ep["analyze"]["min"],
            ep["analyze"]["entries"], ep, ep.get("rss_after_open_kb"))
    es = res.get("engine-snapshot", {})
    if "analyze" in es:
        add("crashext analyze, snapshot backend", es["analyze"]["min"],
            es["analyze"]["entries"], es, es.get("rss_after_open_kb"))
    ds = res.get("drgn-script", {})
    if "script" in ds:
        add("drgn xa_for_each + folio Objects", ds["script"]["min"],
            ds["script"]["entries"], ds, ds.get("rss_after_open_kb"))
        add("drgn xa_for_each only", ds["xa_for_each_only"]["min"],
            ds["xa_for_each_only"]["entries"], ds,
            ds.get("rss_after_open_kb"))
    cr = res.get("crash", {})
    if "tree_s" in cr:
        add("crash tree -t xarray (start-up excl.)", cr["tree_s"],
            cr["entries"], cr)
    L.append("")
    if es.get("capture_s") is not None:
        L.append("snapshot: capture %.2f s, %.1f MB file, load %.2f s"
                 % (es["capture_s"], es["snapshot_bytes"] / 1e6,
                    es["load_s"]))
    if "startup_s" in cr:
        L.append("crash: empty session %.2f s, with tree %.2f s (min of "
                 "%d each): tree by subtraction %.2f s; tree timed inside "
                 "one session %s s (min used); %d output lines, peak %s MB"
                 % (cr["startup_s"], cr["with_tree_s"],
                    len(cr["startup_times"]), cr["tree_by_subtraction_s"],
                    "/".join("%.2f" % x for x in
                             cr["tree_in_session_times"]),
                    cr["output_lines"], _mb(cr["maxrss_kb"])))
    elif cr.get("skipped"):
        L.append("crash: skipped (%s)" % cr["skipped"])
    if ep.get("standin_mem_calls") is not None:
        L.append("* stand-in: readmem served by drgn (its cost included), "
                 "%d memory calls per analysis"
                 % (ep["standin_mem_calls"] // max(1, len(
                     ep["analyze"]["times"]))))
    L.append("")
    eng = ed.get("analyze", {}).get("min")
    if eng:
        L.append("ratios ours / theirs (same dump, same tree, one run):")
        if "script" in ds:
            r = eng / ds["script"]["min"]
            L.append("  crashext(drgn) / drgn script        = %6.3f  = %5.1fx "
                     "faster (target >= 10x: %s)"
                     % (r, 1 / r, "holds" if r <= 0.1 else "MISSED"))
            r = eng / ds["xa_for_each_only"]["min"]
            L.append("  crashext(drgn) / drgn xa_for_each   = %6.3f  = %5.1fx "
                     "faster (walk alone, no folio reads)" % (r, 1 / r))
        if "tree_s" in cr and cr["tree_s"] > 0:
            r = eng / cr["tree_s"]
            L.append("  crashext(drgn) / crash tree         = %6.3f  = %5.1fx "
                     "faster (target <= 1.0: %s)"
                     % (r, 1 / r, "holds" if r <= 1.0 else "MISSED"))
            if "analyze" in ep:
                r = ep["analyze"]["min"] / cr["tree_s"]
                L.append("  crashext(PyKdump*) / crash tree     = %6.3f"
                         % r)
        if "analyze" in ep:
            L.append("  crashext(PyKdump*) / crashext(drgn) = %6.3f"
                     % (ep["analyze"]["min"] / eng))
        if "analyze" in es:
            L.append("  crashext(snapshot) / crashext(drgn) = %6.3f"
                     % (es["analyze"]["min"] / eng))
    if "subset" in ed:
        a, s = ed["analyze"], ed["subset"]
        pa = a["min"] / a["nodes"] * 1e6
        ps = s["min"] / s["nodes"] * 1e6
        L.append("")
        L.append("per node (linearity), drgn backend:")
        L.append("  full tree   %6d nodes %7d entries %8.3f s  %6.1f us/node"
                 % (a["nodes"], a["entries"], a["min"], pa))
        L.append("  first 1/8   %6d nodes %7d entries %8.3f s  %6.1f us/node"
                 "  (walk cut by max_nodes: %s)"
                 % (s["nodes"], s["entries"], s["min"], ps,
                    ", ".join(s["codes"]) or "clean"))
        L.append("  ratio of per-node costs %.2f (1.0 = linear)" % (pa / ps))
        for path, o in sorted(ed.get("others", {}).items(),
                              key=lambda kv: -kv[1]["nodes"]):
            L.append("  %-12s %6d nodes %7d entries %8.4f s  %6.1f us/node"
                     "  %s" % (Path(path).name, o["nodes"], o["entries"],
                               o["min"], o["min"] / max(1, o["nodes"]) * 1e6,
                               o["verdict"]))
    sc = res.get("scan", {})
    L.append("")
    if "min" in sc:
        L.append("scan of every inode: %.2f s, %d trees (%s), %d nodes, %d "
                 "entries; peak %s MB (%s MB after open: +%s MB)"
                 % (sc["min"], sc["rows"], sc["by_verdict"], sc["nodes"],
                    sc["entries"], _mb(sc["maxrss_kb"]),
                    _mb(sc["rss_after_open_kb"]),
                    _mb(sc["maxrss_kb"] - sc["rss_after_open_kb"])))
        L.append("  targets: <= 30 s: %s; peak < 200 MB: %s (process), "
                 "%s (added by the scan)"
                 % ("holds" if sc["min"] <= 30 else "MISSED",
                    "holds" if sc["maxrss_kb"] < 200 * 1024 else "MISSED",
                    "holds" if sc["maxrss_kb"] - sc["rss_after_open_kb"]
                    < 200 * 1024 else "MISSED"))
        if sc.get("anon_peak_kb"):
            so = sc.get("status_after_open_kb", {})
            L.append("  private (RssAnon) peak %s MB, %s MB after open; "
                     "file pages mapped (RssFile) %s MB after open: "
                     "private peak < 200 MB: %s"
                     % (_mb(sc["anon_peak_kb"]), _mb(so.get("RssAnon")),
                        _mb(so.get("RssFile")),
                        "holds" if sc["anon_peak_kb"] < 200 * 1024
                        else "MISSED"))
    elif sc.get("skipped"):
        L.append("scan: skipped (%s)" % sc["skipped"])
    scc = res.get("scan-cli", {})
    if "min" in scc:
        L.append("crashext scan (CLI: start-up, dump open, scan, table): "
                 "%.2f s, peak %s MB, exit %s"
                 % (scc["min"], _mb(scc["maxrss_kb"]), scc["rc"][-1]))
    for k, v in res.items():
        if isinstance(v, dict) and v.get("error"):
            L.append("")
            L.append("%s FAILED:\n%s" % (k, v["error"]))
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", default=DEFAULT_LAB,
                    help="lab output directory (default %(default)s)")
    ap.add_argument("--run", default="6.1-big1536M",
                    help="run directory or family link (default %(default)s)")
    ap.add_argument("--file", help="file of the manifest to analyse "
                    "(default: the one with the most pages)")
    ap.add_argument("--reps", type=int, default=3,
                    help="repetitions per timing (min is reported)")
    ap.add_argument("--drgn-reps", type=int, default=2,
                    help="repetitions of the (slow) drgn script")
    ap.add_argument("--crash-timeout", type=int, default=900)
    ap.add_argument("--only", help="comma list of: " + ",".join(KINDS))
    ap.add_argument("--skip", default="", help="comma list to leave out")
    ap.add_argument("--json", help="also write every number to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    m = _manifest(args.lab, args.run)

    if args.child:
        if args.child == "drgn-script":
            res = child_drgn_script(args, m)
        elif args.child == "scan":
            res = child_scan(args, m)
        else:
            res = child_engine(args, m, args.child.split("-", 1)[1])
        print(json.dumps(res))
        return 0

    kinds = args.only.split(",") if args.only else list(KINDS)
    kinds = [k for k in kinds if k not in args.skip.split(",")]
    res: Dict[str, Any] = {"run": m["_run_dir"], "release": m["release"],
                           "reps": args.reps, "kinds": kinds,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for k in kinds:
        print("... %s" % k, file=sys.stderr, flush=True)
        if k == "crash":
            res[k] = run_crash(args, m)
        elif k == "scan-cli":
            res[k] = run_scan_cli(args, m)
        else:
            res[k] = _child(args, k)
    text = report(res, m)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
