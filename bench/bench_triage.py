#!/usr/bin/env python3
"""Wall time and peak memory of the whole-dump scan, the slab walk and the
batch triage (1 vs 2 workers) on the lab vmcores.

Each measurement runs in a fresh child process, so its peak RSS
(``resource.getrusage(...).ru_maxrss``) is its own: for ``scan``/``slab``
the child's, for ``triage`` the child's (the parent of the workers) and
the largest worker's (``RUSAGE_CHILDREN`` of that child).

Usage::

    python3 bench/bench_triage.py                 # every lab family's ELF dump
    python3 bench/bench_triage.py --dump A --dump B --repeat 3 --json out.json
    python3 bench/bench_triage.py --engines process,dask

Needs drgn and the lab (``$CRASHEXT_LAB``, ``$LAB`` or
/var/cache/crashext-lab); prints a table.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab import labdumps  # noqa: E402


def lab_dir() -> str:
    """The lab directory (tests/lab/labdumps.py: $CRASHEXT_LAB, $LAB or
    the default)."""
    return str(labdumps.lab_dir())


def default_dumps():
    """The ELF dump of every lab family (tests/lab/labdumps.FAMILIES)."""
    out = []
    for fam in labdumps.FAMILIES:
        run = labdumps.elf_run(fam)
        if run is not None:
            out.append(os.path.realpath(run[1]))
    return out


def _maxrss_mib(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


# ----------------------------------------------------------------------
# Child side


def child(argv) -> None:
    what = argv[0]
    from crashext.triage import batch
    if what in ("scan", "slab"):
        from crashext.triage.debuginfo import find_vmlinux
        from crashext.triage.dumpfile import header_facts
        dump = argv[1]
        facts = header_facts(dump)
        vml = find_vmlinux(facts["release"], facts["build_id"], [lab_dir()],
                           dump=dump).path
        from crashext.backends.drgn import DrgnMemory
        t0 = time.perf_counter()
        mem = DrgnMemory.open(dump, vml)
        t1 = time.perf_counter()
        if what == "scan":
            from crashext.triage.scan import scan, summarize
            s = summarize(scan(mem))
            info = {"trees": s["rows"], "verdict": s["verdict"],
                    "pages": s["pages"]}
        else:
            from crashext.triage.slab import walk_slab
            rep = walk_slab(mem)
            info = {"objects": rep.stats["objects"],
                    "allocated": rep.stats["allocated"],
                    "verdict": rep.verdict}
        t2 = time.perf_counter()
        print(json.dumps(dict(info, open_s=t1 - t0, work_s=t2 - t1,
                              maxrss_mib=_maxrss_mib(resource.RUSAGE_SELF))))
        return
    if what == "triage":
        workers, engine = int(argv[1]), argv[2]
        dumps = argv[3:]
        out = tempfile.mkdtemp(prefix="bench-triage-")
        try:
            t0 = time.perf_counter()
            res = batch.triage(dumps, out, workers=workers, engine=engine,
                               debug_dirs=[lab_dir()], log=None, settle=0)
            t1 = time.perf_counter()
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(json.dumps({
            "wall_s": t1 - t0, "dumps": len(res),
            "status": sorted({r["status"] for r in res}),
            "per_dump_s": [r["seconds"] for r in res],
            "maxrss_mib": _maxrss_mib(resource.RUSAGE_SELF),
            "workers_maxrss_mib": _maxrss_mib(resource.RUSAGE_CHILDREN)}))
        return
    raise SystemExit("unknown child command %r" % what)


# ----------------------------------------------------------------------
# Parent side


def run_child(args):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__),
                        "--child"] + args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit("child %s failed:\n%s" % (args, p.stderr[-2000:]))
    line = [x for x in p.stdout.splitlines() if x.startswith("{")][-1]
    d = json.loads(line)
    d["process_wall_s"] = wall
    return d


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump", action="append", help="vmcore (repeatable)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--engines", default="process",
                    help="comma list of process,dask,inline")
    ap.add_argument("--json", help="write the numbers here too")
    a = ap.parse_args()
    dumps = a.dump or default_dumps()
    if not dumps:
        raise SystemExit("no lab dumps in %s" % lab_dir())
    results = {"dumps": dumps, "scan": [], "slab": [], "triage": []}
    print("dumps: %s" % ", ".join(dumps))
    print("%-34s %8s %8s %9s  %s" % ("measurement", "open s", "work s",
                                     "peak MiB", "result"))
    for d in dumps:
        name = "/".join(d.split("/")[-2:])[-26:]
        for what in ("scan", "slab"):
            best = None
            for _ in range(a.repeat):
                r = run_child([what, d])
                if best is None or r["work_s"] < best["work_s"]:
                    best = r
            best["dump"] = d
            results[what].append(best)
            extra = {k: v for k, v in best.items() if k in (
                "trees", "pages", "objects", "allocated", "verdict")}
            print("%-34s %8.2f %8.2f %9.0f  %s" % (
                "%s %s" % (what, name), best["open_s"], best["work_s"],
                best["maxrss_mib"], extra))
    print()
    print("%-34s %8s %9s %9s  %s" % ("triage (%d dumps)" % len(dumps),
                                     "wall s", "peak MiB", "worker MiB",
                                     "per dump s"))
    for engine in a.engines.split(","):
        for w in (1, 2):
            best = None
            for _ in range(a.repeat):
                r = run_child(["triage", str(w), engine] + dumps)
                if best is None or r["wall_s"] < best["wall_s"]:
                    best = r
            best.update(workers=w, engine=engine)
            results["triage"].append(best)
            print("%-34s %8.2f %9.0f %9.0f  %s" % (
                "%s, %d worker%s" % (engine, w, "" if w == 1 else "s"),
                best["wall_s"], best["maxrss_mib"],
                best["workers_maxrss_mib"],
                ", ".join("%.2f" % x for x in best["per_dump_s"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
