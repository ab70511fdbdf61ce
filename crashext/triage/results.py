"""Result files of a triage run: one JSON file per dump, written
atomically, found again on a re-run.

A dump's result lives at ``<out>/<name>__<hash8>.json`` (the hash of the
dump's real path keeps two dumps apart whatever their names) and its
picture at ``<out>/p-<hash10>.png``.  Writes go through a temporary file
in the same folder, ``fsync`` and ``os.replace``: a reader (or a run
killed half-way) never sees half a file.  A result is *done* when it is
``complete``, of this :data:`SCHEMA`, and made from the same file (size,
mtime): a re-run skips it.  The fields are documented in
``docs/triage-json.md``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional

from .dumpfile import file_state

#: Version of a per-dump result file (bumped when a field changes meaning).
SCHEMA = "crashext-triage/2"
TMP_PREFIX = ".tmp-"


def _hash(dump: str) -> str:
    return hashlib.sha1(os.path.realpath(dump).encode()).hexdigest()


def result_name(dump: str, name: Optional[str] = None) -> str:
    """File name of a dump's result: its name made file-safe, then the
    first 8 hex digits of the hash of its real path."""
    label = name or "%s/%s" % (os.path.basename(os.path.dirname(
        os.path.realpath(dump))), os.path.basename(dump))
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", label.replace("/", "__"))
    return "%s__%s.json" % (s.strip("_")[:150], _hash(dump)[:8])


def picture_name(dump: str) -> str:
    """File name of a dump's picture: short, so a Markdown line that
    references it stays within 60 columns (``p-<hash10>.png``)."""
    return "p-%s.png" % _hash(dump)[:10]


def _jsonable(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file in the same
    directory and ``os.replace`` (readers never see half a file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=_jsonable)
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


def load_result(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) else None


def is_done(res: Optional[Dict[str, Any]], dump: str,
            retry_errors: bool = False) -> bool:
    """True when ``res`` is a complete result for the current ``dump``."""
    if not res or res.get("schema") != SCHEMA or not res.get("complete"):
        return False
    if res.get("error") and retry_errors:
        return False
    st = file_state(dump)
    return (res.get("dump_size") == st["dump_size"]
            and res.get("dump_mtime") == st["dump_mtime"])


def done_this_run(job: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The "done" summary of ``job``'s result when this same run (its
    ``run`` id) already wrote it complete for the current file, else
    None (a task run twice leaves one result)."""
    out = job["out"]
    prev = load_result(out)
    if prev is not None and job.get("run") and prev.get("run") == \
            job.get("run") and is_done(prev, job["dump"]):
        return summary(prev, out, "done")
    return None


def result_files(out_dir: str) -> List[str]:
    """The result files in ``out_dir`` (temporary files left out)."""
    return sorted(p for p in glob.glob(os.path.join(out_dir, "*.json"))
                  if not os.path.basename(p).startswith(TMP_PREFIX))


def remove_stale_tmp(out_dir: str) -> int:
    """Remove temporary files a killed writer left (call when no writer
    of this folder runs); returns how many."""
    n = 0
    for p in glob.glob(os.path.join(out_dir, TMP_PREFIX + "*")) + \
            glob.glob(os.path.join(out_dir, "p-*.tmp.png")):
        try:
            os.unlink(p)
            n += 1
        except OSError:
            pass
    return n


def summary(res: Dict[str, Any], path: str, status: str) -> Dict[str, Any]:
    """The short dict a worker hands back (and a skipped dump gets)."""
    return {"dump": res.get("dump"), "name": res.get("name"),
            "result": path, "status": status,
            "verdict": res.get("verdict"), "error": res.get("error"),
            "seconds": (res.get("seconds") or {}).get("total", 0.0)
            if status != "skipped" else 0.0,
            "pid": res.get("pid"), "host": res.get("host"),
            "trees": (res.get("scan") or {}).get("rows"),
            "release": res.get("release"),
            "bucket": (res.get("primary") or {}).get("key")}
