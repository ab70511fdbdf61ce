#!/usr/bin/env python3
"""Dumps per minute of ``crashext triage`` on a /var/crash-shaped folder
built from lab dumps, with 1, 2 and 4 workers, for the process engine
and for an existing Dask cluster (a real ``dask scheduler`` and N
``dask worker`` processes on loopback, started before the clock runs).

The folder is the test suite's (tests/lab/crashdir.py: kexec-tools and
kdump-tools layouts; clean, planted, panic and truncated dumps, a list
of two more), so every dump is real; plus ``--extra`` copies of the
small 6.1 makedumpfile dumps in kdump-tools folders.  Each measurement triages every
dump into a fresh results folder (no resume), pictures and slab walk
included, as a user's run does; the time is wall time from the call to
the last result, and the figure is ``dumps / minutes``.

Usage::

    python3 bench/bench_fleet.py                 # 1,2,4 workers, both engines, 8+16 dumps
    python3 bench/bench_fleet.py --workers 1,2 --engines process --repeat 2
    python3 bench/bench_fleet.py --json out.json

Needs drgn, dask[distributed] and the lab runs the tests need (6.1,
6.1-panic, 6.12; 7.3 when present).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_folder(base: str, extra: int):
    """The test suite's crash folder, plus ``extra`` kdump-tools folders
    holding copies of the small makedumpfile dumps of the 6.1 runs (clean
    and panic, alternately) with their kernel logs: a bigger fleet, so
    the rate is not all start-up."""
    from tests.lab import crashdir, labdumps
    planted = crashdir.make_planted_set()
    root = os.path.join(base, "var-crash")
    os.makedirs(root)
    exp = crashdir.build(root, planted)
    debug = os.path.join(base, "debug")
    crashdir.debug_tree(debug, exp["manifests"])
    srcs = []
    for fam in ("6.1", "6.1-panic"):
        m = labdumps.load_manifest(fam)
        for d in m["dumps"]:
            if d["name"].startswith("makedumpfile") and d.get("drgn_ok"):
                srcs.append((d["path"], m["_run_dir"]))
                break
    for k in range(extra if srcs else 0):
        src, run = srcs[k % len(srcs)]
        stamp = "202612%02d%02d%02d" % (1 + k // 100, k // 10 % 10, k % 10)
        d = os.path.join(root, stamp)
        os.makedirs(d)
        shutil.copyfile(src, os.path.join(d, "dump." + stamp))
        with open(os.path.join(d, "dmesg." + stamp), "w") as f:
            f.write(crashdir.kernel_log(run))
        exp["entries"]["%s/dump.%s" % (stamp, stamp)] = {"copy": src}
    return root, exp, debug


def one_run(inputs, debug, engine, workers, address=None):
    from crashext.triage import batch
    out = tempfile.mkdtemp(prefix="bench-fleet-out-")
    try:
        t0 = time.perf_counter()
        res = batch.triage(inputs, out, workers=workers, engine=engine,
                           debug_dirs=[debug], log=None, settle=0,
                           scheduler=address)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, "dumps": len(res),
            "errors": sum(1 for r in res if r.get("error")),
            "per_dump_s": sorted(r["seconds"] for r in res),
            "dumps_per_min": 60.0 * len(res) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--engines", default="process,dask")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per setting (the best is kept)")
    ap.add_argument("--extra", type=int, default=16,
                    help="copies of small 6.1 kdump dumps added (16)")
    ap.add_argument("--json", help="write the numbers here too")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-fleet-")
    rows = []
    try:
        root, exp, debug = build_folder(base, a.extra)
        inputs = [root, exp["list"]]
        n = len(exp["entries"])
        print("folder: %d dumps (%d copies of small 6.1 kdump dumps), "
              "%d cores, load %.1f" % (n, a.extra, os.cpu_count() or 0,
                                       os.getloadavg()[0]))
        print("%-8s %7s %8s %9s %s" % ("engine", "workers", "wall s",
                                       "dumps/min", "per dump s (min-max)"))
        for engine in a.engines.split(","):
            for w in [int(x) for x in a.workers.split(",")]:
                cluster = None
                address = None
                if engine == "dask":
                    from tests.lab.daskloop import LoopbackCluster
                    cdir = tempfile.mkdtemp(prefix="bench-dask-", dir=base)
                    cluster = LoopbackCluster(cdir, workers=w)
                    address = cluster.address
                try:
                    best = None
                    for _ in range(a.repeat):
                        r = one_run(inputs, debug, engine, w, address)
                        if best is None or r["wall_s"] < best["wall_s"]:
                            best = r
                finally:
                    if cluster is not None:
                        cluster.close()
                best.update(engine=engine, workers=w)
                rows.append(best)
                print("%-8s %7d %8.1f %9.1f %.1f-%.1f%s" % (
                    engine, w, best["wall_s"], best["dumps_per_min"],
                    best["per_dump_s"][0], best["per_dump_s"][-1],
                    "" if not best["errors"] else
                    "  (%d error results)" % best["errors"]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
