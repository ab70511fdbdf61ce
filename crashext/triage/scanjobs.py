"""``crashext scan -j N``: the scan of one dump over N processes.

Each worker opens the dump itself and makes the same plan
(:meth:`crashext.triage.scan.Scanner.plan`: the plan depends only on the
dump, so unit ``n`` is the same in every process; the workers check it by
the plan's fingerprint).  Workers take units from a shared counter, the
next number nobody took yet, so a worker that met big trees takes fewer
units.  With ``--slab`` each worker first walks the radix_tree_node slab
on its own (every tree counts its cut-off nodes; the walk is short next
to the trees) and the parent prints the first result.  A worker turns
each row into what the output form keeps
(:meth:`crashext.triage.scanout.Form.piece`) and sends a unit's pieces
and totals to the parent, which hands them on in plan order: the output
is the one process's output, byte for byte.  The few trees whose
analysis walks the memory map on its own (at most ``AUTO_MEMMAP_WALKS``
a dump) come both ways and the parent picks as one process would
(:meth:`crashext.triage.scan.Scanner.segments`).

A worker that dies loses the unit it was on: the parent reports it as an
error row at the unit's place (never a silent gap).

Not for PyKdump (multiprocessing): inside crash, ``xa scan`` is the one
process scan of :class:`crashext.triage.scan.LocalScan`.

>>> src = ParallelScan(lambda: open_memory(vmcore, vmlinux), 2,
...                    Form("jsonl"))                     # doctest: +SKIP
>>> for pieces, totals in src: ...                      # doctest: +SKIP
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from multiprocessing.connection import wait
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..memory import CrashextError, Memory
from .scan import ProgressFn, ScanRow, Scanner, report_progress, slab_walk
from .scanout import Form, Totals

def _worker(wid: int, open_mem: Callable[[], Memory], form: Form,
            opts: Dict[str, Any], slab: bool, counter: Any, conn: Any
            ) -> None:
    """One process: open, plan, then take units until none is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent handles ^C
    try:
        mem = open_mem()
        opts = dict(opts)
        if slab:
            # Every worker walks the slab (each tree counts its cut-off
            # nodes); the parent prints the first result it gets.
            slab_result, opts["slab_nodes"] = slab_walk(mem)
        sc = Scanner(mem, **opts)
        plan = sc.plan()
    except CrashextError as e:
        conn.send(("fail", wid, " ".join(str(e).split())))
        conn.close()
        return
    except Exception as e:              # a bug: say it, one line
        conn.send(("fail", wid, "internal error: %s: %s"
                   % (type(e).__name__, e)))
        conn.close()
        return
    conn.send(("plan", wid, plan.fingerprint(), plan.entries,
               [(u.entries, u.where()) for u in plan.units]))
    if slab:
        conn.send(("slab", wid, slab_result))

    def take() -> int:
        with counter.get_lock():
            n = counter.value
            counter.value += 1
        return n

    n = take()
    units = plan.units
    while n < len(units):
        conn.send(("unit", wid, n, sc.segments(units[n], form)))
        n = take()
    conn.send(("end", wid))
    conn.close()


class ParallelScan:
    """The scan of one dump by ``jobs`` processes, as the same
    ``(pieces, totals)`` batches as :class:`crashext.triage.scan.
    LocalScan`, in plan order; ``slab`` is set after the last batch.

    ``open_mem`` opens the dump in a worker (called in each worker; see
    :func:`_start_method` for what it must be when this process has
    threads).  Raises :class:`CrashextError` (one line) when no
    worker could open or plan the dump."""

    def __init__(self, open_mem: Callable[[], Memory], jobs: int,
                 form: Form, progress: Optional[ProgressFn] = None,
                 slab: bool = False, **opts: Any) -> None:
        self.open_mem, self.jobs, self.form = open_mem, max(1, jobs), form
        self.progress, self.want_slab, self.opts = progress, slab, opts
        self.slab: Optional[Dict[str, Any]] = None
        self.lost: List[int] = []
        self._walks = 0                 # automatic walks given, in order

    def __iter__(self) -> Iterator[Tuple[Any, Totals]]:
        ctx = mp.get_context(_start_method())
        counter = ctx.Value("q", 0)
        procs, conns = [], {}
        for wid in range(self.jobs):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, name="crashext-scan-%d" % wid,
                            args=(wid, self.open_mem, self.form, self.opts,
                                  self.want_slab, counter, w), daemon=True)
            try:
                p.start()
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                for q in procs:
                    q.terminate()
                raise CrashextError("scan -j: cannot start a worker "
                                    "process from this one (%s)" % e)
            w.close()
            procs.append(p)
            conns[r] = p
        try:
            yield from self._merge(procs, conns)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join(5)

    def _merge(self, procs: List[Any], conns: Dict[Any, Any]
               ) -> Iterator[Tuple[Any, Totals]]:
        plan: Optional[Tuple[Any, int, list]] = None
        fails: List[str] = []
        pending: Dict[int, Tuple[Any, Totals]] = {}
        nxt = done = trees = 0
        progress = self.progress
        open_conns = dict(conns)
        while open_conns:
            for r in wait(list(open_conns)):
                try:
                    msg = r.recv()
                except (EOFError, OSError):
                    p = open_conns.pop(r)
                    p.join()
                    continue
                what = msg[0]
                if what == "fail":
                    fails.append(msg[2])
                elif what == "plan":
                    fp, entries, units = msg[2], msg[3], msg[4]
                    if plan is None:
                        plan = (fp, entries, units)
                        report_progress(progress, 0, entries, 0)
                    elif fp != plan[0]:
                        raise CrashextError(
                            "scan -j: the worker processes planned "
                            "different scans of the same dump (%r, %r); "
                            "use -j 1" % (plan[0], fp))
                elif what == "slab":
                    if self.slab is None:
                        self.slab = msg[2]
                elif what == "unit":
                    pending[msg[2]] = msg[3]
            if plan is None:
                continue
            units = plan[2]
            while nxt in pending:
                segs = pending.pop(nxt)
                done += units[nxt][0]
                nxt += 1
                for batch in self._resolve(segs):
                    trees += batch[1].rows
                    yield batch
                report_progress(progress, done, plan[1], trees)
        if plan is None:
            raise CrashextError(fails[0] if fails else
                                "scan -j: every worker process died "
                                "(exit codes %s)" % ", ".join(
                                    str(p.exitcode) for p in procs))
        units = plan[2]
        # Units nobody delivered: a worker died on them.
        codes = ", ".join(sorted({str(p.exitcode) for p in procs
                                  if p.exitcode}))
        while nxt < len(units):
            if nxt in pending:
                segs = pending.pop(nxt)
            else:
                self.lost.append(nxt)
                segs = [("rows",) + _lost_unit(units[nxt][1], codes,
                                               self.form)]
            done += units[nxt][0]
            nxt += 1
            yield from self._resolve(segs)
        if self.want_slab and self.slab is None:
            self.slab = {"error": "the slab walk's worker process died "
                         "(exit code %s)" % (codes or "?")}
        report_progress(progress, done, plan[1], trees, True)


    def _resolve(self, segs: List[Tuple[Any, ...]]
                 ) -> Iterator[Tuple[Any, Totals]]:
        """A unit's segments (:meth:`Scanner.segments`) as batches: each
        choice takes the walked form while the dump's automatic memory
        map walks last (in scan order, as in one process)."""
        from ..analyze import AUTO_MEMMAP_WALKS
        for seg in segs:
            if seg[0] == "rows":
                yield seg[1], seg[2]
            elif self._walks < AUTO_MEMMAP_WALKS:
                self._walks += 1
                yield seg[1]
            else:
                yield seg[2]


def _threads() -> int:
    """Threads of this process (1 when it cannot be told)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 1


def _start_method() -> str:
    """fork (the workers get ``open_mem`` and the form as they are, no
    start-up) when this process has one thread, as ``crashext scan``'s
    parent has: it never opens the dump.  A process with threads (one
    that opened a dump with drgn: its OpenMP threads) is not forked, a
    child of it can hang; workers then come from a fork server, and
    ``open_mem`` must pickle (``functools.partial(DrgnMemory.open,
    vmcore, vmlinux)``, not a lambda)."""
    return "fork" if _threads() <= 1 else "forkserver"


def _lost_unit(where: str, codes: str, form: Form) -> Tuple[Any, Totals]:
    row = ScanRow("error", "error", where=where,
                  error="not scanned: its worker process died (exit code "
                  "%s)" % (codes or "?"))
    return form.one(row)


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
