"""Long hostile-input fuzz run (not part of CI): 100k+ inputs through the
engine and the snapshot reader.

    python bench/fuzz_run.py                  # 80k trees, 10k random nodes, 20k snapshots
    python bench/fuzz_run.py --trees 1000 --random 100 --snapshots 500 --seed 7
    python bench/fuzz_run.py --render 10      # also render every 10th analysis

Every input must give findings, a clean result or one CrashextError -
never another exception - within ``--bound`` seconds (default 2).  Prints,
per kind of input: count, outcomes, failures (crash, hang, or over the
bound) and the slowest input; exits 1 when any input failed.  Inputs come
from the generators in ``tests/fuzzing.py`` (hypothesis, generate phase
only: no shrinking, so one failure does not stop the run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzzing as F  # noqa: E402


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


def timed(make_mem, spec: str, tally: F.Tally, bound: float, inp,
          rtally: F.Tally = None) -> None:
    """Analyse once; an input over the bound is run again on a fresh
    memory and counts as slow only when it is slow again (the machine
    may be busy).  Every analysis also goes to the renderers when
    ``rtally`` is given (their time is not the engine's)."""
    keep: list = []
    out = F.run_analysis(make_mem(), spec, limit=10 * bound, keep=keep)
    if out[0] in ("clean", "findings", "error") and out[1] > bound:
        again = F.run_analysis(make_mem(), spec, limit=10 * bound)
        if again[1] <= bound:
            tally.rerun_ok += 1
            tally.rerun_max = max(tally.rerun_max, out[1])
            out = again
    tally.add(*out, inp=inp, bound=bound)
    if rtally is not None and keep:
        # Renderers get a looser bound: a tree with thousands of findings
        # is a long report.  Only a crash or a hang is their failure.
        rtally.add(*F.run_render(keep[0], limit=10 * bound), inp=inp,
                   bound=5 * bound)


def run_trees(n: int, bases, tally: F.Tally, bound: float, render: int,
              rng_seed: int, rtally: F.Tally) -> None:
    count = [0]

    @seed(rng_seed)
    @_settings(n)
    @given(st.sampled_from(range(len(bases))), F.ops_strategy)
    def one(bi, ops):
        b = bases[bi]
        count[0] += 1
        r = bool(render) and count[0] % render == 0
        timed(lambda: F.apply_ops(b, ops), b.spec, tally, bound,
              (b.name, ops), rtally if r else None)

    one()


def run_random(n: int, bases, tally: F.Tally, bound: float,
               rng_seed: int) -> None:
    @seed(rng_seed)
    @_settings(n)
    @given(st.sampled_from(range(len(bases))), st.integers(0, 1 << 64))
    def one(bi, s):
        b = bases[bi]
        timed(lambda: F.random_node_memory(b, s), b.spec, tally, bound,
              (b.name, "random", s))

    one()


def run_snapshots(n: int, tally: F.Tally, bound: float, render: int,
                  rng_seed: int) -> None:
    h0, b0 = F.small_snapshot()
    tmp = tempfile.mkdtemp(prefix="crashext-fuzz-")
    path = os.path.join(tmp, "x.snap")
    count = [0]

    @seed(rng_seed)
    @_settings(n)
    @given(F.snapshot_case_layout)
    def one(case):
        hops, bops = case
        count[0] += 1
        h, blob = F.mutate_header(h0, b0, hops)
        data = F.pack_snapshot(h, blob)
        data = F.mutate_file(data, len(json.dumps(h).encode()), bops)
        with open(path, "wb") as f:
            f.write(data)
        r = bool(render) and count[0] % render == 0
        outcome, secs, err = F.run_load(path, limit=10 * bound, render=r)
        if outcome in ("loaded", "error") and secs > bound:
            again = F.run_load(path, limit=10 * bound, render=r)
            if again[1] <= bound:
                tally.rerun_ok += 1
                tally.rerun_max = max(tally.rerun_max, secs)
                outcome, secs, err = again
        tally.add(outcome, secs, err, inp=case, bound=bound)

    one()
    os.unlink(path) if os.path.exists(path) else None
    os.rmdir(tmp)


def report(name: str, t: F.Tally, secs: float) -> None:
    print("%-10s inputs %7d  failures %3d  max %.3f s/input  median %.4f"
          "  p99 %.4f  (%.0f s, %s)"
          % (name, t.n, t.failed, t.max_s, t.percentile(0.5),
             t.percentile(0.99), secs,
             ", ".join("%s %d" % kv for kv in sorted(t.outcomes.items()))))
    if t.rerun_ok:
        print("  %d input(s) over the bound once (up to %.2f s) were within "
              "it when run again" % (t.rerun_ok, t.rerun_max))
    shown = set()
    for inp, err in t.failures:
        key = err.strip().splitlines()[-1][:100]
        if key in shown:
            continue
        shown.add(key)
        print("  FAIL %s\n       input: %s" % (key, repr(inp)[:300]))
    if t.max_input is not None:
        print("  slowest input: %s" % repr(t.max_input)[:300])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", type=int, default=80_000,
                    help="mutated trees (default 80000)")
    ap.add_argument("--random", type=int, default=10_000,
                    help="trees of random node bytes (default 10000)")
    ap.add_argument("--snapshots", type=int, default=20_000,
                    help="mutated snapshot files (default 20000)")
    ap.add_argument("--bases", type=int, default=2,
                    help="real sample trees to use besides the synthesized "
                    "one (default 2)")
    ap.add_argument("--bound", type=float, default=2.0,
                    help="seconds allowed per input (default 2)")
    ap.add_argument("--render", type=int, default=20, metavar="N",
                    help="also render every Nth tree analysis as JSON, chat "
                    "and table, timed apart (0: never; default 20)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    bases = F.base_trees(a.bases)
    print("bases: %s" % ", ".join("%s (%d nodes, %d folios)"
                                  % (b.name, len(b.nodes), len(b.folios))
                                  for b in bases))
    results = []
    rtally = F.Tally()
    for name, fn in (
            ("trees", lambda t: run_trees(a.trees, bases, t, a.bound,
                                          a.render, a.seed, rtally)),
            ("random", lambda t: run_random(a.random, bases, t, a.bound,
                                            a.seed)),
            ("snapshots", lambda t: run_snapshots(a.snapshots, t, a.bound,
                                                  a.render, a.seed))):
        t = F.Tally()
        t0 = time.time()
        fn(t)
        secs = time.time() - t0
        report(name, t, secs)
        sys.stdout.flush()
        results.append(t)
    if rtally.n:
        report("render", rtally, 0)
    results.append(rtally)
    n = sum(t.n for t in results[:-1])
    failed = sum(t.failed for t in results)
    worst = max(t.max_s for t in results[:-1])
    print("total      inputs %7d  failures %3d  max %.3f s/input"
          % (n, failed, worst))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
