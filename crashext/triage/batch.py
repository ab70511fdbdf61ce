"""Triage many vmcores: find them, skip what is done, run the rest.

The parts, one job each: :mod:`~crashext.triage.discover` (which files
are dumps, their names), :mod:`~crashext.triage.results` (result files,
what is done), :mod:`~crashext.triage.engines` (process pool, Dask),
:mod:`~crashext.triage.worker` (one dump), then
:mod:`~crashext.triage.bucket` and :mod:`~crashext.triage.report`
group the results.

>>> triage(["/var/crash"], "/tmp/triage", workers=2)        # doctest: +SKIP
>>> triage(["/nfs/crash"], "/nfs/triage", engine="dask",
...        scheduler="tcp://10.0.0.5:8786")                 # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from ..memory import CrashextError
from . import engines, results
from .discover import Discovery, discover

ENGINES = engines.ENGINES
SCHEMA = results.SCHEMA
PathLike = Union[str, "os.PathLike[str]"]
LogFn = Callable[[str], None]


class NoDumps(CrashextError):
    """Nothing to triage in the inputs (the message says why)."""


def _default_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _line(i: int, n: int, s: Dict[str, Any]) -> str:
    head = "[%d/%d] %s" % (i, n, s.get("name") or os.path.basename(s["dump"]))
    if s["status"] == "skipped":
        return "%s: done before (%s)" % (head, s.get("verdict"))
    if s.get("error"):
        return "%s: error: %s" % (head, s["error"])
    return "%s: %s, %s trees, %.1f s" % (head, s["verdict"],
                                         s.get("trees"), s["seconds"])


def jobs_for(found: Discovery, out_dir: str,
             debug_dirs: Sequence[str] = (), slab: bool = True,
             png: bool = True, run: Optional[str] = None,
             system_debug: bool = True) -> List[Dict[str, Any]]:
    """One job (a plain dict any worker can run) per discovered dump."""
    jobs = []
    for d in found.dumps:
        j = d.to_dict()
        j["dump"] = j.pop("path")
        j.update(out=os.path.join(out_dir, results.result_name(
            d.path, d.name)), debug_dirs=list(debug_dirs), slab=slab,
            png=png, run=run, system_debug=system_debug)
        jobs.append(j)
    return jobs


def triage(inputs: Union[PathLike, Iterable[Any]], out_dir: PathLike,
           workers: int = 2, engine: str = "process",
           debug_dirs: Union[None, PathLike, Sequence[PathLike]] = None,
           slab: bool = True, force: bool = False,
           retry_errors: bool = False,
           log: Optional[LogFn] = _default_log, png: bool = True,
           scheduler: Optional[str] = None, settle: float = 1.0,
           system_debug: bool = True,
           progress: Optional[Callable[[int, int, Dict[str, Any]], None]]
           = None) -> List[Dict[str, Any]]:
    """Triage every dump of ``inputs`` (see
    :mod:`crashext.triage.discover`) into ``out_dir``, one result file per
    dump, with ``workers`` parallel workers (``engine`` "process",
    "dask" or "inline"; ``scheduler``: the address of an existing Dask
    cluster, which implies "dask").

    Returns one summary per dump, in discovery order: ``dump``, ``name``,
    ``result`` (path), ``status`` ("done", "skipped", "error"),
    ``verdict``, ``error``, ``seconds``.  ``log`` gets one line per
    skipped path and per dump (None: quiet).  ``force`` redoes every
    dump; ``retry_errors`` redoes those whose result is an error.
    ``progress(done, total, summary)`` is called after each dump (the
    hook for a terminal progress line).  Raises :class:`NoDumps` when
    the inputs hold no dump."""
    if scheduler:
        engine = "dask"
    if engine not in ENGINES:
        raise ValueError("engine must be one of %s" % ", ".join(ENGINES))
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if debug_dirs is None:
        dd: List[str] = []
    elif isinstance(debug_dirs, (str, os.PathLike)):
        dd = [os.fspath(debug_dirs)]
    else:
        dd = [os.fspath(x) for x in debug_dirs]
    found = discover(inputs, settle=settle)
    for s in found.skipped:
        if log:
            log("skipped %s" % s.line())
    if not found.dumps:
        raise NoDumps(found.reason())
    run = uuid.uuid4().hex[:12]
    jobs = jobs_for(found, out_dir, dd, slab, png, run, system_debug)
    n = len(jobs)
    summaries: List[Optional[Dict[str, Any]]] = [None] * n
    todo = []
    done_count = 0

    def finished(i: int, s: Dict[str, Any]) -> None:
        nonlocal done_count
        if summaries[i] is not None:        # never twice
            return
        summaries[i] = s
        done_count += 1
        if log:
            log(_line(done_count, n, s))
        if progress:
            progress(done_count, n, s)

    for i, j in enumerate(jobs):
        prev = None if force else results.load_result(j["out"])
        if prev is not None and results.is_done(prev, j["dump"],
                                                retry_errors):
            finished(i, results.summary(prev, j["out"], "skipped"))
        else:
            todo.append(i)

    try:
        if todo:
            engines.run(engine, [jobs[i] for i in todo], todo,
                        max(1, int(workers)), finished,
                        address=engines.dask_address(scheduler)
                        if engine == "dask" else None)
    finally:
        results.remove_stale_tmp(out_dir)
    return [s for s in summaries if s is not None]
