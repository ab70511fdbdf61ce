"""Triage many vmcores in parallel: one dump -> one JSON result file.

A front door (it opens dumps with the drgn backend, inside the workers).
The unit of work is one dump: a worker opens it, runs the whole-dump scan
(:func:`crashext.triage.scan.scan`) and the slab walk
(:func:`crashext.triage.slab.walk_slab`), and writes
``<out_dir>/<name>.json`` atomically (temporary file + ``os.replace``).
Workers share nothing; the parent only collects one-line summaries.

* Inputs: a lab run directory (``manifest.json``: its ``dumps[]``), a
  directory holding run directories and/or dump files (``vmcore*`` or any
  file that starts as an ELF core / kdump / flattened dump), a lab
  ``manifest.json``, a ``.json`` list of paths (or of ``{"dump", "vmlinux"}``
  objects), a ``.txt``/``.list`` file of paths (one per line, ``#``
  comments), a vmcore path, or a Python list of any of these.
* The vmlinux of a dump is found by its release (VMCOREINFO
  ``OSRELEASE``, read from the file's notes without opening the dump) in
  the ``debug_dirs`` (``vmlinux-<rel>``, ``<rel>/vmlinux``,
  ``usr/lib/debug/boot/vmlinux-<rel>``, ``k/<rel>/usr/lib/debug/boot/...``
  as the vmcore lab lays them out, ...), else the run's manifest, else a
  ``vmlinux`` next to the dump.
* Resumable: a dump whose result exists, is complete and was made from
  the same file (size, mtime) is skipped (error results too, unless
  ``retry_errors``).
* A dump that cannot be opened gets a result with ``error`` (one line) and
  the batch goes on.
* Engines: ``"process"`` (``concurrent.futures.ProcessPoolExecutor``,
  spawned workers; a worker that dies is retried once in a new pool),
  ``"dask"`` (``dask.distributed.LocalCluster``, one thread per worker
  process) and ``"inline"`` (in this process, one at a time).

>>> triage(["/var/cache/crashext-lab/6.1", "/var/cache/crashext-lab/6.12"],
...        "/tmp/triage", workers=2)                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
import struct
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

SCHEMA = "crashext-triage/1"
ENGINES = ("process", "dask", "inline")

PathLike = Union[str, "os.PathLike[str]"]
LogFn = Callable[[str], None]


# ----------------------------------------------------------------------
# Dumps: release, vmlinux, inputs


def read_release(path: PathLike, limit: int = 8 << 20) -> Optional[str]:
    """The kernel release of a vmcore, from its VMCOREINFO ``OSRELEASE=``
    (ELF note, kdump sub-header, flattened stream) or the kdump header's
    utsname; None when not found.  Reads at most ``limit`` bytes from the
    start plus the ELF note segments; never opens the dump with drgn."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
            rel = _osrelease(head)
            if rel:
                return rel
            if head[:4] == b"\x7fELF" and head[4] == 2:
                for off, size in _elf_notes(head):
                    if size > 64 << 20:
                        continue
                    f.seek(off)
                    rel = _osrelease(f.read(size))
                    if rel:
                        return rel
    except OSError:
        return None
    if head[:8] == b"KDUMP   ":
        # struct disk_dump_header: signature[8], header_version (int),
        # struct new_utsname {sysname[65], nodename[65], release[65], ...}
        r = head[12 + 65 * 2:12 + 65 * 3].split(b"\0", 1)[0]
        if r:
            return r.decode("ascii", "replace")
    return None


def _osrelease(buf: bytes) -> Optional[str]:
    i = buf.find(b"OSRELEASE=")
    if i < 0:
        return None
    j = i + len(b"OSRELEASE=")
    end = j
    while end < len(buf) and end - j < 128 and buf[end] not in b"\n\0":
        end += 1
    rel = buf[j:end].decode("ascii", "replace").strip()
    return rel or None


def _elf_notes(head: bytes) -> List[tuple]:
    """(offset, size) of the PT_NOTE segments of a 64-bit LE ELF file."""
    if len(head) < 64:
        return []
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    out = []
    for i in range(min(phnum, 4096)):
        o = phoff + i * phentsize
        if o + 56 > len(head):
            break
        p_type, = struct.unpack_from("<I", head, o)
        if p_type == 4:                              # PT_NOTE
            off, = struct.unpack_from("<Q", head, o + 8)
            size, = struct.unpack_from("<Q", head, o + 32)
            out.append((off, size))
    return out


def is_dump_file(path: PathLike) -> bool:
    """Does the file start like a vmcore: ELF core (``ET_CORE``), kdump
    (``KDUMP   ``) or makedumpfile's flattened format?"""
    try:
        with open(path, "rb") as f:
            h = f.read(20)
    except OSError:
        return False
    if h[:4] == b"\x7fELF" and len(h) >= 18:
        return struct.unpack_from("<H", h, 16)[0] == 4      # ET_CORE
    return h[:8] == b"KDUMP   " or h[:12] == b"makedumpfile"


def vmlinux_candidates(release: str, debug_dir: PathLike) -> List[str]:
    d = os.fspath(debug_dir)
    r = release
    return [
        os.path.join(d, "vmlinux-" + r),
        os.path.join(d, r, "vmlinux"),
        os.path.join(d, r, "vmlinux-" + r),
        os.path.join(d, "boot", "vmlinux-" + r),
        os.path.join(d, "usr/lib/debug/boot", "vmlinux-" + r),
        os.path.join(d, "usr/lib/debug/lib/modules", r, "vmlinux"),
        os.path.join(d, "lib/modules", r, "vmlinux"),
        os.path.join(d, r, "usr/lib/debug/boot", "vmlinux-" + r),
        os.path.join(d, "k", r, "usr/lib/debug/boot", "vmlinux-" + r),
    ]


def find_vmlinux(release: Optional[str], debug_dirs: Sequence[PathLike] = (),
                 hint: Optional[str] = None,
                 dump: Optional[str] = None) -> Optional[str]:
    """The vmlinux for ``release``: first in ``debug_dirs`` (see
    :func:`vmlinux_candidates`), then ``hint`` (e.g. the lab manifest's),
    then ``vmlinux`` / ``vmlinux-<release>`` next to ``dump``."""
    if release:
        for d in debug_dirs:
            for c in vmlinux_candidates(release, d):
                if os.path.isfile(c):
                    return c
    if hint and os.path.isfile(hint):
        return hint
    if dump:
        d = os.path.dirname(os.path.abspath(dump))
        for c in ([os.path.join(d, "vmlinux-" + release)] if release else []) \
                + [os.path.join(d, "vmlinux")]:
            if os.path.isfile(c):
                return c
    return None


def _job(dump: str, **kw: Any) -> Dict[str, Any]:
    j = {"dump": os.path.abspath(dump)}
    j.update({k: v for k, v in kw.items() if v is not None})
    return j


def _from_manifest(m: Dict[str, Any], run_dir: str,
                   dump_names: Optional[Sequence[str]]) -> List[Dict[str, Any]]:
    out = []
    for d in m.get("dumps", []):
        if dump_names and d.get("name") not in dump_names:
            continue
        if d.get("drgn_ok") is False and not dump_names:
            continue
        p = d.get("path") or ""
        if not os.path.isfile(p):
            p = os.path.join(run_dir, "vmcore." + str(d.get("name")))
        if not os.path.isfile(p):
            continue
        out.append(_job(p, vmlinux_hint=m.get("vmlinux"),
                        release=m.get("release"),
                        name="%s/%s" % (m.get("release") or
                                        os.path.basename(run_dir),
                                        d.get("name"))))
    return out


def collect_inputs(inputs: Union[PathLike, Iterable[Any]],
                   dump_names: Optional[Sequence[str]] = None
                   ) -> List[Dict[str, Any]]:
    """Expand ``inputs`` (see the module docstring) into jobs: dicts with
    ``dump`` and optionally ``vmlinux``, ``vmlinux_hint``, ``release``,
    ``name``.  Duplicates (same real path) are dropped.  A path that does
    not exist is kept, so its result says so."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    jobs: List[Dict[str, Any]] = []
    for it in inputs:
        if isinstance(it, dict):
            jobs.append(_job(it["dump"], vmlinux=it.get("vmlinux"),
                             name=it.get("name")))
            continue
        p = os.fspath(it)
        if os.path.isdir(p):
            mf = os.path.join(p, "manifest.json")
            if os.path.isfile(mf):
                jobs.extend(_load_manifest_jobs(mf, dump_names))
                continue
            for child in sorted(os.listdir(p)):
                cp = os.path.join(p, child)
                if os.path.isdir(cp) and os.path.isfile(
                        os.path.join(cp, "manifest.json")):
                    jobs.extend(_load_manifest_jobs(
                        os.path.join(cp, "manifest.json"), dump_names))
                elif os.path.isfile(cp) and (child.startswith("vmcore")
                                             or is_dump_file(cp)):
                    jobs.append(_job(cp))
            continue
        if p.endswith(".json") and os.path.isfile(p):
            try:
                with open(p) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                jobs.append(_job(p))          # its result will say why
                continue
            if isinstance(data, dict) and "dumps" in data:
                jobs.extend(_from_manifest(data, os.path.dirname(
                    os.path.abspath(p)), dump_names))
            elif isinstance(data, list):
                jobs.extend(collect_inputs(data, dump_names))
            continue
        if (p.endswith(".txt") or p.endswith(".list")) and os.path.isfile(p):
            with open(p) as f:
                lines = [ln.strip() for ln in f]
            jobs.extend(collect_inputs(
                [ln for ln in lines if ln and not ln.startswith("#")],
                dump_names))
            continue
        jobs.append(_job(p))
    seen = set()
    out = []
    for j in jobs:
        key = os.path.realpath(j["dump"])
        if key not in seen:
            seen.add(key)
            out.append(j)
    return out


def _load_manifest_jobs(mf: str, dump_names) -> List[Dict[str, Any]]:
    try:
        with open(mf) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return []
    return _from_manifest(m, os.path.dirname(os.path.abspath(mf)),
                          dump_names)


def result_name(dump: str) -> str:
    """File name of a dump's result: ``<dir>__<file>__<hash8>.json``."""
    real = os.path.realpath(dump)
    h = hashlib.sha1(real.encode()).hexdigest()[:8]
    parts = [os.path.basename(os.path.dirname(real)), os.path.basename(real)]
    s = "__".join(re.sub(r"[^A-Za-z0-9._+-]", "_", x) for x in parts if x)
    return "%s__%s.json" % (s[:150], h)


def picture_name(dump: str) -> str:
    """File name of a dump's picture: short, so a Markdown line that
    references it stays within 60 columns (``p-<hash10>.png``)."""
    real = os.path.realpath(dump)
    return "p-%s.png" % hashlib.sha1(real.encode()).hexdigest()[:10]


def _picture(mem: Any, res: Dict[str, Any], job: Dict[str, Any]) -> None:
    """Draw the dump's worst tree (the first ranked row with findings)
    next to its result file: ``res["picture"]`` = {file, tree} or
    {error}.  No Pillow, or a tree that cannot be drawn, is said there;
    it never makes the dump an error."""
    from ..memory import CrashextError
    from .scan import ScanRow, row_target
    top = [r for r in (res.get("scan") or {}).get("top", [])
           if r.get("kind") in ("inode", "swap")
           and r.get("verdict") in ("corrupt", "suspect")]
    if not top:
        return
    names = {f.name for f in dataclasses.fields(ScanRow)}
    row = ScanRow(**{k: v for k, v in top[0].items() if k in names})
    out = os.path.join(os.path.dirname(job["out"]),
                       picture_name(job["dump"]))
    try:
        from ..analyze import analyze
        from ..render.png import render_png
        a = analyze(mem, row_target(row))
        tmp = out + ".tmp.png"
        render_png(a, tmp)
        os.replace(tmp, out)
        res["picture"] = {"file": os.path.basename(out), "tree": row.name}
    except CrashextError as e:
        res["picture"] = {"error": _one_line(e), "tree": row.name}
    except Exception as e:          # a drawing bug must not lose the dump
        res["picture"] = {"error": "internal error: " + _one_line(e),
                          "tree": row.name}


def _stat(path: str) -> Dict[str, Any]:
    try:
        st = os.stat(path)
        return {"dump_size": st.st_size, "dump_mtime": int(st.st_mtime)}
    except OSError:
        return {"dump_size": None, "dump_mtime": None}


def load_result(path: PathLike) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) else None


def result_is_done(res: Optional[Dict[str, Any]], dump: str,
                   retry_errors: bool = False) -> bool:
    """True when ``res`` is a complete result for the current ``dump``."""
    if not res or res.get("schema") != SCHEMA or not res.get("complete"):
        return False
    if res.get("error") and retry_errors:
        return False
    st = _stat(dump)
    return (res.get("dump_size") == st["dump_size"]
            and res.get("dump_mtime") == st["dump_mtime"])


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file in the same
    directory and ``os.replace`` (readers never see half a file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _jsonable(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


# ----------------------------------------------------------------------
# One dump (runs in a worker)


def _one_line(e: BaseException) -> str:
    """One line for a user: the message of crashext's own errors, else
    ``Type: message``."""
    from ..memory import CrashextError
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    if not isinstance(e, CrashextError):
        msg = "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__
    return msg[:300]


def triage_one(job: Dict[str, Any]) -> Dict[str, Any]:
    """Analyse one dump and write its result file; return a short summary
    (``dump``, ``result``, ``status``, ``verdict``, ``error``, ``seconds``).
    Never raises: every failure becomes an error result."""
    t0 = time.time()
    dump = job["dump"]
    out = job["out"]
    res: Dict[str, Any] = {
        "schema": SCHEMA, "complete": False, "dump": dump,
        "name": job.get("name") or "%s/%s" % (
            os.path.basename(os.path.dirname(dump)), os.path.basename(dump)),
        "release": None, "vmlinux": None, "error": None,
        "verdict": "error", "started": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "pid": os.getpid(), "seconds": {},
    }
    res.update(_stat(dump))
    secs = res["seconds"]
    try:
        from ..memory import CrashextError
        if not os.path.isfile(dump):
            raise CrashextError("no such file: %s" % dump)
        rel = job.get("release") or read_release(dump)
        res["release"] = rel
        vml = job.get("vmlinux") or find_vmlinux(
            rel, job.get("debug_dirs") or (), job.get("vmlinux_hint"), dump)
        if vml is None and rel is None:
            raise CrashextError("not a vmcore? no VMCOREINFO OSRELEASE in "
                                "%s, so no vmlinux can be chosen" % dump)
        if vml is None:
            raise CrashextError("no vmlinux-%s in %s" % (
                rel, ", ".join(job.get("debug_dirs") or [])
                or "(no debug dir given) nor next to the dump"))
        res["vmlinux"] = vml
        from ..backends.drgn import DrgnMemory
        t = time.time()
        mem = DrgnMemory.open(dump, vml)
        secs["open"] = round(time.time() - t, 3)
        res["release"] = mem.release() or rel
        if not job.get("name"):
            res["name"] = "%s/%s" % (res["release"], os.path.basename(dump))
        _analyse(mem, res, job)
        res["complete"] = True
    except Exception as e:           # one dump's failure is its result
        res["error"] = _one_line(e)
        res["verdict"] = "error"
        res["complete"] = True
        if job.get("debug"):
            res["traceback"] = traceback.format_exc()
    secs["total"] = round(time.time() - t0, 3)
    write_json_atomic(out, res)
    return {"dump": dump, "name": res["name"], "result": out,
            "status": "error" if res["error"] else "done",
            "verdict": res["verdict"], "error": res["error"],
            "seconds": secs["total"], "pid": os.getpid(),
            "trees": res.get("scan", {}).get("rows"),
            "release": res["release"]}


def _analyse(mem: Any, res: Dict[str, Any], job: Dict[str, Any]) -> None:
    from ..memory import CrashextError
    from .scan import scan, summarize
    from .slab import walk_slab
    secs = res["seconds"]
    t = time.time()
    s = summarize(scan(mem), top=job.get("top", 200))
    secs["scan"] = round(time.time() - t, 3)
    res["scan"] = s
    verdicts = [s["verdict"]]
    if job.get("slab", True):
        t = time.time()
        try:
            rep = walk_slab(mem)
            res["slab"] = rep.to_dict()
            verdicts.append(rep.verdict)
        except CrashextError as e:
            res["slab"] = {"error": _one_line(e)}
        secs["slab"] = round(time.time() - t, 3)
    order = ("corrupt", "error", "suspect", "clean")
    res["verdict"] = min(verdicts, key=lambda v: order.index(v)
                         if v in order else 9)
    if job.get("png", True):
        t = time.time()
        _picture(mem, res, job)
        if "picture" in res:
            secs["picture"] = round(time.time() - t, 3)
    if res["verdict"] == "error" and s["by_verdict"].get("error"):
        # Trees that could not be analysed do not make the dump an error.
        res["verdict"] = "suspect"


# ----------------------------------------------------------------------
# Many dumps


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


def triage(inputs: Union[PathLike, Iterable[Any]], out_dir: PathLike,
           workers: int = 2, engine: str = "process",
           debug_dirs: Union[None, PathLike, Sequence[PathLike]] = None,
           dump_names: Optional[Sequence[str]] = None, slab: bool = True,
           force: bool = False, retry_errors: bool = False,
           log: Optional[LogFn] = _default_log,
           png: bool = True) -> List[Dict[str, Any]]:
    """Triage every dump of ``inputs`` into ``out_dir`` (one
    ``<name>.json`` per dump) with ``workers`` parallel workers.

    Returns one summary dict per dump, in input order: ``dump``,
    ``result`` (path), ``status`` ("done", "skipped", "error"),
    ``verdict``, ``error``, ``seconds``.  ``log`` gets one line per dump
    (None: quiet).  ``force`` redoes every dump; ``retry_errors`` redoes
    those whose earlier result is an error.  ``png``: draw each dump's
    worst tree next to its result (``p-<hash>.png``, needs Pillow; the
    Markdown report shows it).
    """
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
    jobs = collect_inputs(inputs, dump_names)
    n = len(jobs)
    summaries: List[Optional[Dict[str, Any]]] = [None] * n
    todo = []
    done_count = 0
    for i, j in enumerate(jobs):
        j["out"] = os.path.join(out_dir, result_name(j["dump"]))
        j["debug_dirs"] = dd
        j["slab"] = slab
        j["png"] = png
        prev = None if force else load_result(j["out"])
        if prev is not None and result_is_done(prev, j["dump"], retry_errors):
            summaries[i] = {"dump": j["dump"], "name": prev.get("name"),
                            "result": j["out"], "status": "skipped",
                            "verdict": prev.get("verdict"),
                            "error": prev.get("error"), "seconds": 0.0}
            done_count += 1
            if log:
                log(_line(done_count, n, summaries[i]))
        else:
            todo.append(i)

    def finished(i: int, s: Dict[str, Any]) -> None:
        nonlocal done_count
        summaries[i] = s
        done_count += 1
        if log:
            log(_line(done_count, n, s))

    if todo:
        run = {"process": _run_process, "dask": _run_dask,
               "inline": _run_inline}[engine]
        run([jobs[i] for i in todo], todo, max(1, int(workers)), finished)
    return [s for s in summaries if s is not None]


def _crashed(job: Dict[str, Any], why: str) -> Dict[str, Any]:
    """Write an error result for a job whose worker died.  It is not
    ``complete``: a later run tries the dump again (the death may have
    been an out-of-memory kill, not the dump)."""
    res = {"schema": SCHEMA, "complete": False, "dump": job["dump"],
           "name": job.get("name") or os.path.basename(job["dump"]),
           "error": why, "verdict": "error", "release": job.get("release"),
           "vmlinux": job.get("vmlinux")}
    res.update(_stat(job["dump"]))
    write_json_atomic(job["out"], res)
    return {"dump": job["dump"], "name": res["name"], "result": job["out"],
            "status": "error", "verdict": "error", "error": why,
            "seconds": 0.0}


def _run_inline(jobs, idx, workers, finished) -> None:
    for j, i in zip(jobs, idx):
        finished(i, triage_one(j))


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


def _run_process(jobs, idx, workers, finished) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    ctx = _mp_context()
    pending = list(zip(jobs, idx))
    first = True
    while pending:
        # After a worker died, the dumps it may have held are retried one
        # per pool, so a dump that kills its worker is told apart.
        n = min(workers, len(pending)) if first else 1
        kw: Dict[str, Any] = {"max_workers": n, "mp_context": ctx}
        if sys.version_info >= (3, 11) and ctx.get_start_method() != "fork":
            kw["max_tasks_per_child"] = 16   # bound any leak in a worker
        batch = pending if first else pending[:1]
        rest = [] if first else pending[1:]
        retry = []
        with ProcessPoolExecutor(**kw) as ex:
            futs = {ex.submit(triage_one, j): (j, i) for j, i in batch}
            for fut in as_completed(futs):
                j, i = futs[fut]
                try:
                    finished(i, fut.result())
                except BrokenProcessPool:
                    if first:
                        retry.append((j, i))
                    else:
                        finished(i, _crashed(j, "worker process died "
                                                "analysing this dump"))
                except Exception as e:      # pragma: no cover - defensive
                    finished(i, _crashed(j, _one_line(e)))
        pending = retry + rest
        first = False


def _run_dask(jobs, idx, workers, finished) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError("engine 'dask' needs dask and distributed "
                           "(pip install dask distributed)")
    import logging
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with LocalCluster(n_workers=workers, threads_per_worker=1,
                      processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        futs = client.map(triage_one, jobs, pure=False, retries=1)
        where = {f.key: (j, i) for f, j, i in zip(futs, jobs, idx)}
        for fut in as_completed(futs):
            j, i = where[fut.key]
            try:
                finished(i, fut.result())
            except Exception as e:
                finished(i, _crashed(j, "dask worker failed: %s"
                                     % _one_line(e)))
