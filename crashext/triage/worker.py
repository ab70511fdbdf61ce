"""Triage one dump: the unit of work every engine runs.

:func:`triage_one` takes a job (a plain dict, so it pickles to any
worker: a process of the local pool or a Dask worker on another
machine reading the dump by path) and writes the dump's result file
atomically.  It never raises: a dump that cannot be analysed gets a
result with a one-line ``error``.  A job whose result for the same run
and the same file already exists returns it without redoing the work,
so a task that a scheduler runs twice (its worker died after writing)
still leaves exactly one result.

Steps: header facts (format, release, build ID, crash time) ->
vmlinux (:mod:`crashext.triage.debuginfo`) -> open with drgn -> scan
of every page cache (:mod:`crashext.triage.scan`) and the slab walk ->
kernel log and panic (:mod:`crashext.kernlog`,
:mod:`crashext.triage.panic`; the saved ``vmcore-dmesg.txt`` when the
dump cannot be read) -> primary signature
(:mod:`crashext.triage.bucket`) and whether the crashing task held the
corrupted tree -> picture of that tree.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from typing import Any, Dict, List, Optional

from . import results
from .dumpfile import file_state, header_facts


def _one_line(e: BaseException) -> str:
    """One line for a user: the message of crashext's own errors, else
    ``Type: message``."""
    from ..memory import CrashextError
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    if not isinstance(e, CrashextError):
        msg = "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__
    return msg[:400]


def _iso(epoch: Optional[int]) -> Optional[str]:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def new_result(job: Dict[str, Any]) -> Dict[str, Any]:
    dump = job["dump"]
    res: Dict[str, Any] = {
        "schema": results.SCHEMA, "complete": False, "run": job.get("run"),
        "dump": dump, "name": job.get("name") or os.path.basename(dump),
        "layout": job.get("layout"), "format": job.get("format"),
        "dmesg": job.get("dmesg"), "release": job.get("release"),
        "build_id": None, "crash_time": None, "crash_time_source": None,
        "vmlinux": None, "error": None, "verdict": "error",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(), "pid": os.getpid(), "seconds": {},
    }
    res.update(file_state(dump))
    return res


def triage_one(job: Dict[str, Any]) -> Dict[str, Any]:
    """Analyse one dump and write its result file; return its summary
    (:func:`crashext.triage.results.summary`)."""
    out = job["out"]
    done = results.done_this_run(job)
    if done is not None:
        return done
    t0 = time.time()
    res = new_result(job)
    secs = res["seconds"]
    mem = None
    try:
        mem = _open(job, res)
        _analyse(mem, res, job)
    except Exception as e:           # one dump's failure is its result
        res["error"] = _one_line(e)
        res["verdict"] = "error"
        if job.get("debug"):
            res["traceback"] = traceback.format_exc()
    if "panic" not in res:
        _panic_from_file(res, job)
    _crash_time(res, job, mem)
    _conclude(mem, res, job)
    res["complete"] = True
    secs["total"] = round(time.time() - t0, 3)
    results.write_json_atomic(out, res)
    return results.summary(res, out, "error" if res["error"] else "done")


def _open(job: Dict[str, Any], res: Dict[str, Any]) -> Any:
    from ..memory import CrashextError
    from .debuginfo import find_vmlinux
    dump = job["dump"]
    if not os.path.isfile(dump):
        raise CrashextError("no such file: %s" % dump)
    facts = header_facts(dump)
    if facts.get("error"):
        raise CrashextError(str(facts["error"]))
    res["format"] = facts["format"]
    res["release"] = facts["release"] or res["release"]
    for k in ("build_id", "crash_time", "crash_time_source"):
        res[k] = facts[k]
    if job.get("vmlinux"):
        vml = job["vmlinux"]
        res["vmlinux_how"] = "given"
    else:
        found = find_vmlinux(res["release"], res["build_id"],
                             job.get("debug_dirs") or (),
                             job.get("vmlinux_hint"), dump,
                             system=job.get("system_debug", True))
        if found.path is None:
            if not res["release"]:
                raise CrashextError(
                    "no VMCOREINFO OSRELEASE in this %s dump, so no vmlinux "
                    "can be chosen" % (res["format"] or "unknown"))
            raise CrashextError(found.error(res["release"], res["build_id"]))
        vml = found.path
        res["vmlinux_how"] = found.how
        if found.rejected:
            res["vmlinux_rejected"] = ["%s (%s)" % rv
                                       for rv in found.rejected]
    res["vmlinux"] = vml
    from ..backends.drgn import DrgnMemory
    t = time.time()
    mem = DrgnMemory.open(dump, vml)
    res["seconds"]["open"] = round(time.time() - t, 3)
    res["release"] = mem.release() or res["release"]
    return mem


def _analyse(mem: Any, res: Dict[str, Any], job: Dict[str, Any]) -> None:
    from .scan import scan, slab_walk, summarize
    secs = res["seconds"]
    verdicts = []
    nodes = None
    if job.get("slab", True):
        # The slab walk first, as `crashext scan --slab` does: each tree
        # then counts the subtrees cut off it in its nrpages.
        t = time.time()
        res["slab"], nodes = slab_walk(mem)
        if "error" not in res["slab"]:
            verdicts.append(res["slab"]["verdict"])
        secs["slab"] = round(time.time() - t, 3)
    t = time.time()
    s = summarize(scan(mem, slab_nodes=nodes), top=job.get("top", 200))
    secs["scan"] = round(time.time() - t, 3)
    res["scan"] = s
    verdicts.insert(0, s["verdict"])
    order = ("corrupt", "error", "suspect", "clean")
    res["verdict"] = min(verdicts, key=lambda v: order.index(v)
                         if v in order else 9)
    if res["verdict"] == "error" and s["by_verdict"].get("error"):
        # Trees that could not be analysed do not make the dump an error.
        res["verdict"] = "suspect"
    t = time.time()
    _panic_from_dump(mem, res)
    secs["panic"] = round(time.time() - t, 3)


def _conclude(mem: Any, res: Dict[str, Any], job: Dict[str, Any]) -> None:
    """The primary signature; with the dump open, whether the crashing
    task held its tree, and the tree's picture.  Never raises."""
    from .bucket import primary
    try:
        res["primary"] = primary(res)
        if mem is None:
            res["primary"].pop("row", None)
            return
        _relation(mem, res)
        if job.get("png", True) and not res.get("error"):
            t = time.time()
            _picture(mem, res, job)
            if "picture" in res:
                res["seconds"]["picture"] = round(time.time() - t, 3)
    except Exception as e:              # a bug here must not lose the dump
        res.setdefault("primary", {}).pop("row", None)
        res["primary_error"] = "internal error: " + _one_line(e)


def _panic_from_dump(mem: Any, res: Dict[str, Any]) -> None:
    """The panic from the dump's own printk ring buffer; the panic CPU
    and its task from memory.  A log that cannot be read leaves the
    saved dmesg file to :func:`_panic_from_file`."""
    from .. import kernlog
    from ..memory import CrashextError
    from .panic import from_records
    try:
        recs = kernlog.read_log(mem)
    except CrashextError as e:
        res["panic_log_error"] = _one_line(e)
        return
    p = from_records(recs)
    cpu = kernlog.panic_cpu(mem)
    p["panic_cpu"] = cpu
    if cpu is not None:
        try:
            t = kernlog.cpu_task(mem, cpu)
        except CrashextError:
            t = None
        if t is not None:
            p["task"] = {"task": "0x%x" % t.task, "pid": t.pid,
                         "comm": t.comm}
            if p.get("cpu") is None:
                p["cpu"], p["pid"], p["comm"] = cpu, t.pid, t.comm
    res["panic"] = p


def _panic_from_file(res: Dict[str, Any], job: Dict[str, Any]) -> None:
    """The panic from the kernel log saved beside the dump, when the dump
    itself could not give it."""
    from .panic import parse_lines, read_dmesg_file
    path = job.get("dmesg")
    if not path:
        if "panic" not in res and res.get("panic_log_error"):
            res["panic"] = {"line": None, "error": res["panic_log_error"]}
        return
    try:
        lines = read_dmesg_file(path)
    except OSError as e:
        res["panic"] = {"line": None, "error": "cannot read %s: %s" % (
            path, e.strerror or e)}
        return
    res["panic"] = parse_lines(lines, source=os.path.basename(path))


def _crash_time(res: Dict[str, Any], job: Dict[str, Any], mem: Any) -> None:
    """Crash time: VMCOREINFO CRASHTIME or the kdump header (read with
    the headers), else the dumped kernel's clock, else the crash folder's
    name, else the file's mtime."""
    if res.get("crash_time") is not None and isinstance(
            res["crash_time"], int):
        res["crash_time"] = _iso(res["crash_time"])
        return
    if mem is not None:
        from .. import kernlog
        try:
            wc = kernlog.wall_clock(mem)
        except Exception:
            wc = None
        if wc is not None:
            res["crash_time"] = _iso(wc)
            res["crash_time_source"] = "the dump's clock (timekeeper)"
            return
    if job.get("dir_time"):
        res["crash_time"] = job["dir_time"]
        res["crash_time_source"] = "crash folder name"
        return
    m = res.get("dump_mtime")
    if m is not None:
        res["crash_time"] = _iso(m)
        res["crash_time_source"] = "dump file mtime"


def _tree_addresses(mem: Any, row: Dict[str, Any]) -> List[tuple]:
    """(lo, hi, what) ranges that belong to a tree row: its inode,
    mapping, xarray, and the nodes and folios its findings name."""
    out = []
    isz = mem.struct_size("struct inode") or 8
    nsz = mem.struct_size("struct xa_node") or 8
    psz = 2 * (mem.struct_size("struct page") or 64)
    if row.get("inode"):
        out.append((row["inode"], row["inode"] + isz, "inode"))
    elif row.get("mapping"):
        out.append((row["mapping"], row["mapping"] + 8, "mapping"))
    if row.get("xarray"):
        out.append((row["xarray"], row["xarray"] + 16, "xarray"))
    for f in row.get("findings") or []:
        if isinstance(f.get("node"), int):
            out.append((f["node"], f["node"] + nsz, "xa_node"))
        if isinstance(f.get("folio"), int):
            out.append((f["folio"], f["folio"] + psz, "folio"))
    return out


def _relation(mem: Any, res: Dict[str, Any]) -> None:
    """Was the crashing task working on the corrupted tree?  Told from
    pointers into the tree (its inode, mapping, xarray, the nodes and
    folios of its findings) in the registers of the oops and in the
    crashing task's kernel stack.  ``related`` is None when it cannot be
    told (no crash, no task, no corrupted tree)."""
    from .. import kernlog
    from ..memory import CrashextError
    prim = res.get("primary") or {}
    p = res.get("panic") or {}
    row = prim.get("row")
    rel: Dict[str, Any] = {"related": None}
    prim.pop("row", None)
    if not row or not p.get("line"):
        rel["why"] = ("no corrupted tree" if not row else
                      "no panic in the kernel log")
        prim["crashing_task"] = rel
        return
    ranges = _tree_addresses(mem, row)
    words: List[tuple] = [(v, "register") for v in p.get("registers") or []]
    t = None
    if p.get("panic_cpu") is not None:
        try:
            t = kernlog.cpu_task(mem, p["panic_cpu"])
        except CrashextError:
            t = None
    if t is not None:
        words += [(w, "stack") for w in kernlog.stack_words(mem, t)]
    if not words:
        rel["why"] = "neither registers nor the task's stack could be read"
        prim["crashing_task"] = rel
        return
    hits = []
    for w, where in words:
        for lo, hi, what in ranges:
            if lo <= w < hi:
                hits.append("%s holds 0x%x (%s)" % (where, w, what))
                break
    rel["related"] = bool(hits)
    rel["evidence"] = hits[:4]
    rel["why"] = ("the crashing task held pointers into the tree"
                  if hits else "no pointer into the tree in the crashing "
                  "task's registers or stack (%d words)" % len(words))
    prim["crashing_task"] = rel


def _picture(mem: Any, res: Dict[str, Any], job: Dict[str, Any]) -> None:
    """Draw the tree of the dump's primary signature next to its result
    file: ``res["picture"]`` = {file, tree} or {error}.  No Pillow, or a
    tree that cannot be drawn, is said there; it never makes the dump an
    error."""
    from ..memory import CrashextError
    from .scan import ScanRow, row_target
    prim = res.get("primary") or {}
    tree = prim.get("tree")
    rows = [r for r in (res.get("scan") or {}).get("top", [])
            if r.get("kind") in ("inode", "swap")
            and r.get("verdict") in ("corrupt", "suspect")]
    from .scan import row_name
    pick = [r for r in rows if row_name(r) == tree] or rows[:1]
    if not pick:
        return
    names = {f.name for f in dataclasses.fields(ScanRow)}
    row = ScanRow(**{k: v for k, v in pick[0].items() if k in names})
    out = os.path.join(os.path.dirname(job["out"]),
                       results.picture_name(job["dump"]))
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
