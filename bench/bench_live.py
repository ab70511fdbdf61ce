#!/usr/bin/env python3
"""Benchmark: what the live judgement (crashext/stable.py) costs on top of
a dump analysis (run by hand, not a test).

    python bench/bench_live.py [--family 6.1] [--reps 3]

On a lab dump (tests/conftest.open_lab), the same trees analysed:

* ``dump``: :func:`crashext.analyze.analyze` as on a dump (one walk);
* ``live, static``: the dump seen as a live kernel (``live()`` True) that
  does not change: a clean tree costs one walk plus the target refresh and
  the header reads before and after it;
* ``live, corrupt``: the seed case (one folio at slots 16/32/48) live: the
  finding is re-read, the tree walked again after the pause, confirmed;
* ``scan`` / ``scan, live``: every tree of the dump
  (:func:`crashext.triage.scan.scan`), as a dump and as a static live
  kernel.

The pauses between walks are not slept here (``sleep`` is a no-op): the
numbers are the CPU work.  In the guest the cost of ``crashext scan
--live`` is in the live lab's console (tests/live, SCANSUM lines: wall,
CPU and walks per scan).  Prints a table; every time is the minimum over
``--reps``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)


def best(fn, reps):
    t = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="6.1")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import pytest  # noqa: F401  (conftest uses pytest.skip)
    from conftest import open_lab
    from patched_memory import PatchedMemory, seed_case
    from crashext.analyze import analyze
    from crashext.stable import LivePolicy
    from crashext.triage.scan import scan

    m, mem = open_lab(a.family)
    pol = LivePolicy(sleep=lambda s: None)

    class Live(PatchedMemory):
        def live(self) -> bool:
            return True
    live = Live(mem)
    rows = []
    files = sorted(f["path"] for f in m["files"])
    for p in files:
        td, ad = best(lambda: analyze(mem, p), a.reps)
        tl, al = best(lambda: analyze(live, p, policy=pol), a.reps)
        rows.append((p, ad.stats.entries, td, tl, al.stability.walks,
                     al.verdict))
    case = seed_case(mem)
    if case is not None:
        lc = Live(mem)
        lc.patches.update(case.mem.patches)
        td, ad = best(lambda: analyze(case.mem, case.path), a.reps)
        tl, al = best(lambda: analyze(lc, case.path, policy=pol), a.reps)
        rows.append((case.path + " (seed case)", ad.stats.entries, td, tl,
                     al.stability.walks, al.verdict))
    print("%-34s %8s %9s %9s %6s %s" % ("tree", "entries", "dump s",
                                        "live s", "walks", "verdict"))
    for p, n, td, tl, w, v in rows:
        print("%-34s %8d %9.4f %9.4f %6d %s" % (p, n, td, tl, w, v))
    ts, rs = best(lambda: list(scan(mem)), 1)
    tl, rl = best(lambda: list(scan(live)), 1)
    print("scan: %d trees, dump %.2f s, live (static) %.2f s, walks %d"
          % (len(rs), ts, tl, sum(r.live.get("walks", 0) for r in rl)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
