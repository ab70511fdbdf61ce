#!/usr/bin/env python3
"""Benchmark: the memory-map walk (crashext.memmap) and the impact /
nrpages accounting (crashext.impact, crashext.lost) on lab vmcores (run
by hand, not a test).

    python bench/bench_memmap.py [--lab DIR] [--runs 6.1,6.12,7.3,...] [--reps 3]

For each run (family link or run directory of the lab):

* ``memmap 1``: :func:`crashext.memmap.find_folios` for one mapping (the
  manifest file with the most pages): seconds, MiB of struct pages read,
  MiB/s, folios found;
* ``memmap N``: the same for every manifest file's mapping in one pass
  (the scan's case), against N single passes;
* ``impact``: :func:`crashext.impact.assess` alone on that file's clean
  analysis (the shortcut for a clean tree) and with a planted-like
  corruption (one interior slot pointed at its neighbour's node, through
  a patched view of the dump: a shared subtree, so the accounting walks
  every entry), and ``analyze(memmap=True)`` end to end.

Times are the minimum over ``--reps`` (2-core machine shared with other
jobs).  ``--json FILE`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def best(fn, reps):
    out, t = None, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        t = dt if t is None else min(t, dt)
    return t, out


def bench_run(lab: str, run: str, reps: int) -> dict:
    from crashext.analyze import analyze, layout_for
    from crashext.backends.drgn import DrgnMemory
    from crashext.impact import assess
    from crashext.memmap import find_folios
    from patched_memory import PatchedMemory

    d = os.path.join(lab, run)
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    mem = DrgnMemory.open(os.path.join(d, "vmcore.elf"),
                          os.path.join(d, "vmlinux"))
    lay = layout_for(mem)
    files = [f for f in m["files"] if f.get("address_space")]
    big = max(files, key=lambda f: f["nrpages"])
    M = int(big["address_space"], 16)
    res = {"run": run, "release": m["release"], "file": big["path"],
           "nrpages": big["nrpages"]}
    t, r = best(lambda: find_folios(mem, lay, [M]), reps)
    res["memmap1"] = {"s": t, "mib": r.bytes_read / 2**20,
                      "mib_s": r.bytes_read / 2**20 / t, "reads": r.reads,
                      "folios": len(r.folios[M]),
                      "pages": sum(x.nr_pages for x in r.folios[M])}
    maps = [int(f["address_space"], 16) for f in files]
    t, r = best(lambda: find_folios(mem, lay, maps), reps)
    res["memmapN"] = {"n": len(maps), "s": t,
                      "folios": sum(len(v) for v in r.folios.values())}
    a = analyze(mem, big["path"])
    t, _ = best(lambda: assess(a, mem), reps)
    res["assess_clean_s"] = t
    # A shared subtree: the first interior node's second node slot := its
    # first node slot.
    inner = next(n for n in a.walk.nodes if n.eshift and sum(
        1 for s in n.slots if s & 3 == 2 and s > 4096) >= 2)
    kids = [i for i, s in enumerate(inner.slots) if s & 3 == 2 and s > 4096]
    pm = PatchedMemory(mem)
    pm.patch_u64(inner.addr + lay.node_slots + 8 * kids[1], inner.slots[kids[0]])
    b = analyze(pm, big["path"])
    t, imp = best(lambda: assess(b, pm), reps)
    res["assess_shared_s"] = t
    res["entries"] = b.stats.entries
    res["findings"] = len(b.findings)
    t, c = best(lambda: analyze(pm, big["path"], memmap=True), reps)
    res["analyze_memmap_s"] = t
    res["equation"] = c.impact.lost.line()
    t, _ = best(lambda: analyze(pm, big["path"]), reps)
    res["analyze_s"] = t
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lab", default=os.environ.get("CRASHEXT_LAB")
                    or os.environ.get("LAB") or "/var/cache/crashext-lab")
    ap.add_argument("--runs", default="6.1-big256M,6.12,7.3,6.1-many200000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    out = []
    for run in a.runs.split(","):
        if not os.path.exists(os.path.join(a.lab, run, "manifest.json")):
            print("skip %s: no manifest" % run)
            continue
        out.append(bench_run(a.lab, run, a.reps))
    print("%-22s %-16s %8s %7s %8s %7s %10s %9s %9s %9s %9s" % (
        "run", "file", "memmap1", "MiB", "MiB/s", "folios", "memmapN",
        "assess0", "assessSh", "analyze", "+memmap"))
    for r in out:
        print("%-22s %-16s %8.3f %7.1f %8.0f %7d %6.3f/%-3d %9.4f %9.3f %9.3f %9.3f"
              % (r["run"], r["file"].rsplit("/", 1)[-1], r["memmap1"]["s"],
                 r["memmap1"]["mib"], r["memmap1"]["mib_s"],
                 r["memmap1"]["folios"], r["memmapN"]["s"], r["memmapN"]["n"],
                 r["assess_clean_s"], r["assess_shared_s"], r["analyze_s"],
                 r["analyze_memmap_s"]))
        print("    %s (%d entries, %d findings)" % (r["equation"], r["entries"],
                                                     r["findings"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
