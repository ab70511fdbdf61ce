"""guest_live.py: crashext against the RUNNING kernel of the livelab guest.

Runs inside the guest as root (tests/live/scenario.sh), in one process on
one live drgn Program (``DrgnMemory.open_live()``, what ``crashext
--live`` opens), while live-init's background loops rewrite
/data/churn, /data/churn2 and /mnt/thp/churn.  Prints one ``RESULT
{json}`` line per observation (the host test, tests/test_live.py, reads
them from the console log):

* ``open``: how long opening the live kernel took;
* ``static``: a file nobody changes, checked live several times; its
  canonical entries (index, entry) must equal drgn's ``xa_for_each``;
* ``module``: the private XArray of crashext_xadamage.ko, checked live;
* ``churn``: one live check of a file being rewritten (verdict, walks,
  transient / unjudged findings, error);
* ``folio``: a static file's folio for ``crashext folio --live``;
* ``done``: totals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

STATIC = ("/data/big64", "/mnt/thp/thp16")
CHURN = ("/data/churn2", "/data/churn", "/mnt/thp/churn")


def emit(kind: str, **kw) -> None:
    kw["kind"] = kind
    print("RESULT " + json.dumps(kw, sort_keys=True, default=str),
          flush=True)


def drgn_entries(prog, path: str):
    """(index, entry) of every entry xa_for_each() yields (canonical
    entries: siblings skipped), and mapping->nrpages."""
    from drgn.helpers.linux.fs import path_lookup
    from drgn.helpers.linux.xarray import xa_for_each
    m = path_lookup(prog, path).dentry.d_inode.i_mapping
    ents = [(i, e.value_()) for i, e in xa_for_each(m.i_pages.address_of_())]
    return ents, m.nrpages.value_()


def crashext_entries(a):
    from crashext.xarray import entry as E
    return [(e.index, e.raw) for e in a.walk.entries
            if e.kind in (E.POINTER, E.VALUE)]


def finding_rec(f):
    return {"code": f.code, "indices": list(f.indices), "node": f.node,
            "slots": list(f.slots), "folio": f.folio,
            "expected": f.expected, "found": f.found}


def stab(a):
    st = a.stability
    return st.to_dict() if st is not None else None


def profile_scan(mem) -> None:
    """One live scan in this process under cProfile: where the time goes
    (printed as PROFILE lines), reads by kind."""
    import cProfile
    import io
    import pstats
    from crashext.memory import MemoryView
    from crashext.triage.scan import scan

    class Count(MemoryView):
        n = 0
        nbytes = 0

        def read(self, addr, size):
            Count.n += 1
            Count.nbytes += size
            return self.base.read(addr, size)
    cm = Count(mem)
    prog = {}
    pr = cProfile.Profile()
    t = time.monotonic()
    c = time.process_time()
    pr.enable()
    rows = list(scan(cm, progress=lambda p: prog.update(p)))
    pr.disable()
    emit("profile", seconds=round(time.monotonic() - t, 2),
         cpu=round(time.process_time() - c, 2), trees=len(rows),
         inodes=prog.get("inodes"), reads=Count.n, read_bytes=Count.nbytes)
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(25)
    for line in out.getvalue().splitlines():
        if line.strip():
            print("PROFILE " + line[:150], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checks", type=int, default=200,
                    help="live checks that reach a verdict (a file removed "
                    "between two loops is an error and does not count; at "
                    "most 3 times as many tries)")
    ap.add_argument("--static-runs", type=int, default=3)
    ap.add_argument("--xarray", help="the test module's XArray address")
    ap.add_argument("--folio-file", help="write a static file's folio "
                    "address there (for crashext folio --live)")
    ap.add_argument("--profile-scan", action="store_true",
                    help="profile one in-process live scan first")
    a_ = ap.parse_args()

    t0 = time.monotonic()
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    from crashext.memory import CrashextError
    mem = DrgnMemory.open_live()
    emit("open", seconds=round(time.monotonic() - t0, 2), live=mem.live(),
         release=mem.release(), uname=os.uname().release,
         source=mem.describe())

    if a_.profile_scan:
        profile_scan(mem)

    # Files nobody changes: clean, and equal to drgn, every time.
    for path in STATIC:
        for run in range(a_.static_runs):
            t = time.monotonic()
            a = analyze(mem, path)
            ce = crashext_entries(a)
            de, nrpages = drgn_entries(mem.prog, path)
            emit("static", path=path, run=run, verdict=a.verdict,
                 findings=[f.code for f in a.findings], entries=len(ce),
                 drgn_entries=len(de), equal=ce == de, pages=a.stats.pages,
                 nrpages=nrpages, live=stab(a),
                 seconds=round(time.monotonic() - t, 3))
    big = analyze(mem, STATIC[0])
    first = next(e for e in big.walk.entries if e.raw in big.folios)
    emit("folio", path=STATIC[0], folio=first.raw, index=first.index)
    if a_.folio_file:
        with open(a_.folio_file, "w") as f:
            f.write("0x%x\n" % first.raw)

    if a_.xarray:
        t = time.monotonic()
        a = analyze(mem, "xarray:" + a_.xarray)
        emit("module", verdict=a.verdict, live=stab(a),
             findings=[finding_rec(f) for f in a.findings],
             explanations=[e.code for e in a.explanations],
             seconds=round(time.monotonic() - t, 3))

    # Files being rewritten: every check must be clean or "changing",
    # never corrupt (their page caches are never damaged on purpose).
    counts = {}
    t_loop = time.monotonic()
    judged = i = 0
    while judged < a_.checks and i < 3 * a_.checks:
        path = CHURN[i % len(CHURN)]
        i += 1
        t = time.monotonic()
        try:
            a = analyze(mem, path)
        except CrashextError as e:          # rm'd between two loops
            counts["error"] = counts.get("error", 0) + 1
            emit("churn", n=i, path=path, verdict="error", error=str(e),
                 seconds=round(time.monotonic() - t, 3))
            continue
        counts[a.verdict] = counts.get(a.verdict, 0) + 1
        judged += 1
        rec = {"n": i, "path": path, "verdict": a.verdict,
               "seconds": round(time.monotonic() - t, 3),
               "entries": a.stats.entries, "nrpages": a.target.nrpages,
               "live": stab(a)}
        if a.findings:
            rec["findings"] = [finding_rec(f) for f in a.findings[:8]]
        emit("churn", **rec)
    emit("done", checks=judged, tries=i, by_verdict=counts,
         loop_seconds=round(time.monotonic() - t_loop, 2),
         seconds=round(time.monotonic() - t0, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
