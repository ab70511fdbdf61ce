"""Run triage jobs in parallel: the engines.

Every engine runs :func:`crashext.triage.worker.triage_one` once per job
and calls ``finished(i, summary)`` once per job, in completion order:

* ``process``: a local ``ProcessPoolExecutor``; a worker that dies takes
  its pool down, so the dumps it may have held are retried one per pool
  (a dump that kills its worker is told apart);
* ``dask``: an existing Dask cluster (``address``: its scheduler, e.g.
  ``tcp://10.0.0.5:8786``; or Dask's own ``DASK_SCHEDULER_ADDRESS``),
  whose workers read the dumps by path (shared storage) and write the
  results into the same folder; without an address a ``LocalCluster``
  of ``workers`` processes on this machine.  A worker lost mid-task is
  Dask's business: the scheduler runs the task again elsewhere (and the
  job itself is idempotent, see the worker);
* ``inline``: in this process, one at a time.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Optional, Sequence

from .worker import _one_line, triage_one

ENGINES = ("process", "dask", "inline")
Finished = Callable[[int, Dict[str, Any]], None]
#: Seconds a Dask run waits with no worker in the cluster before it
#: gives up on the dumps still pending.
NO_WORKER_TIMEOUT = 120.0


def crashed(job: Dict[str, Any], why: str) -> Dict[str, Any]:
    """The summary (and the result file) of a job whose worker died.  It
    is not ``complete``: a re-run tries the dump again (the death may
    have been an out-of-memory kill, not the dump)."""
    from . import results
    from .worker import new_result
    done = results.done_this_run(job)
    if done is not None:
        # the worker died after writing: the result stands
        return done
    res = new_result(job)
    res["error"] = why
    results.write_json_atomic(job["out"], res)
    return results.summary(res, job["out"], "error")


def run(engine: str, jobs: Sequence[Dict[str, Any]], idx: Sequence[int],
        workers: int, finished: Finished,
        address: Optional[str] = None) -> None:
    if engine == "inline":
        for j, i in zip(jobs, idx):
            finished(i, triage_one(j))
    elif engine == "process":
        run_process(jobs, idx, workers, finished)
    elif engine == "dask":
        run_dask(jobs, idx, workers, finished, address)
    else:
        raise ValueError("engine must be one of %s" % ", ".join(ENGINES))


def _native_threads() -> int:
    """Threads of this process, native ones included (drgn's OpenMP pool:
    ``threading.active_count()`` does not see it); 0 when unknown."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _mp_context():
    """``fork`` only while this process has a single thread, native ones
    included: after drgn has loaded debug info its OpenMP threads exist,
    and a forked child that loads debug info again deadlocks in libgomp.
    Else ``forkserver`` (or ``spawn``), whose workers start clean; these
    import the caller's ``__main__``, so a script needs the usual
    ``if __name__ == "__main__":`` guard."""
    import multiprocessing as mp
    methods = mp.get_all_start_methods()
    if "fork" in methods and _native_threads() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        return mp.get_context("forkserver")
    return mp.get_context("spawn")


#: Dumps a process pool runs before it is replaced by a fresh one (bounds
#: any leak in a worker).  Not ``max_tasks_per_child``: with it CPython
#: 3.11's pool hangs once a worker has retired (no replacement worker
#: picks up the queued tasks).
JOBS_PER_POOL_WORKER = 16


def run_process(jobs, idx, workers, finished) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    ctx = _mp_context()
    pending = list(zip(jobs, idx))
    suspects: list = []
    while pending or suspects:
        # The dumps a dead worker may have held run one per pool, so a
        # dump that kills its worker is told apart.
        one = bool(suspects)
        if one:
            n, batch, suspects = 1, suspects[:1], suspects[1:]
        else:
            n = min(workers, len(pending))
            batch = pending[:n * JOBS_PER_POOL_WORKER]
            pending = pending[len(batch):]
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as ex:
            futs = {ex.submit(triage_one, j): (j, i) for j, i in batch}
            for fut in as_completed(futs):
                j, i = futs[fut]
                try:
                    finished(i, fut.result())
                except BrokenProcessPool:
                    if not one:
                        suspects.append((j, i))
                    else:
                        finished(i, crashed(j, "worker process died "
                                               "analysing this dump"))
                except Exception as e:      # pragma: no cover - defensive
                    finished(i, crashed(j, _one_line(e)))


def dask_address(address: Optional[str] = None) -> Optional[str]:
    """The scheduler to use: ``address``, else Dask's own configuration
    (``DASK_SCHEDULER_ADDRESS``, read by dask.config as
    ``scheduler-address``), else None."""
    if address:
        return address
    env = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if env:
        return env
    try:
        import dask
        return dask.config.get("scheduler-address", None)
    except ImportError:
        return None


def run_dask(jobs, idx, workers, finished,
             address: Optional[str] = None) -> None:
    try:
        from dask.distributed import Client, LocalCluster, wait
    except ImportError:
        raise RuntimeError("engine 'dask' needs dask and distributed "
                           "(pip install 'crashext[dask]')")
    import logging
    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = None
    try:
        if address:
            try:
                client = Client(address, timeout="30s")
            except (OSError, TimeoutError) as e:
                raise RuntimeError("cannot reach the Dask scheduler at %s: "
                                   "%s" % (address, _one_line(e)))
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
        with client:
            _dask_loop(client, wait, jobs, idx, finished)
    finally:
        if cluster is not None:
            cluster.close()


def _dask_loop(client, wait, jobs, idx, finished) -> None:
    import hashlib
    where = {}
    futs = []
    for j, i in zip(jobs, idx):
        key = "crashext-triage-%s-%s" % (
            hashlib.sha1(j["dump"].encode()).hexdigest()[:12],
            j.get("run") or "")
        f = client.submit(triage_one, j, key=key, pure=False)
        futs.append(f)
        where[f.key] = (j, i)
    pending = set(futs)
    no_worker_since: Optional[float] = None
    while pending:
        done, not_done = wait(list(pending), timeout=5,
                              return_when="FIRST_COMPLETED")
        for fut in done:
            j, i = where[fut.key]
            try:
                finished(i, fut.result())
            except Exception as e:      # KilledWorker, a lost task, ...
                finished(i, crashed(j, "dask: %s" % _one_line(e)))
        pending = set(not_done)
        if done or not pending:
            no_worker_since = None
            continue
        try:
            n = len(client.scheduler_info().get("workers", {}))
        except Exception:
            n = 0
        if n:
            no_worker_since = None
        elif no_worker_since is None:
            no_worker_since = time.time()
        elif time.time() - no_worker_since > NO_WORKER_TIMEOUT:
            for fut in pending:
                j, i = where[fut.key]
                finished(i, crashed(j, "dask: no worker in the cluster for "
                                       "%d s" % NO_WORKER_TIMEOUT))
            client.cancel(list(pending))
            return
