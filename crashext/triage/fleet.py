"""A fleet job's scan: every page cache of a machine (``--live``) or of a
dump, as JSON Lines, at low priority and within a CPU / time budget.

One line per tree worth a look (``--all``: every tree), each a
:class:`crashext.triage.scan.ScanRow` dict (``live`` says how a live
tree was judged: walks, transient and unjudged findings), then one
summary line (``"kind": "summary"``) with the totals, the cost (wall and
CPU seconds, walks) and whether the budget stopped the scan early.
The status is the fleet's alert: 0 clean (trees "changing, not judged"
included), 1 findings (corrupt or suspect), 2 could not analyse.

>>> status = fleet_scan(mem, sys.stdout.write, Budget(cpu_percent=50))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, Optional

from ..memory import Memory
from . import scan as S
from .scanout import LINES_FORMAT as FORMAT


@dataclass
class Budget:
    """``max_seconds`` wall / ``max_cpu_seconds`` CPU (0: no limit);
    ``cpu_percent``: the share of one CPU the scan may use (it sleeps
    between trees to stay below it); ``nice``: niceness to run at."""

    max_seconds: float = 0.0
    max_cpu_seconds: float = 0.0
    cpu_percent: float = 100.0
    nice: int = 0


def lower_priority(nice: int) -> int:
    """Raise this process's niceness to ``nice`` (never lower it: that
    needs privileges and is not the point); returns the niceness."""
    try:
        cur = os.nice(0)
        if nice > cur:
            cur = os.nice(nice - cur)
        return cur
    except OSError:
        return 0


def fleet_scan(mem: Memory, write: Callable[[str], Any], budget: Budget,
               include_clean: bool = False,
               fs_types: Optional[Iterable[str]] = None,
               memmap: bool = True,
               clock: Callable[[], float] = time.monotonic,
               cpu: Callable[[], float] = time.process_time,
               sleep: Callable[[float], None] = time.sleep) -> int:
    """Scan, write JSON lines through ``write`` (each ends with a
    newline), return the status (0 / 1 / 2).  ``memmap``: search the
    memory map for trees whose nrpages the tree does not account for (a
    dump; a live analysis never does, crashext.analyze)."""
    niceness = lower_priority(budget.nice)
    t0, c0 = clock(), cpu()
    by_verdict: Dict[str, int] = {}
    live = {"walks": 0, "rewalked": 0, "changing": 0, "transient": 0,
            "unjudged": 0, "confirmed": 0}
    trees = 0
    slept = 0.0
    stopped = ""
    rows = S.scan(mem, fs_types=fs_types,
                  memmap="auto" if memmap else False)
    try:
        for row in rows:
            trees += row.kind != "error"
            by_verdict[row.verdict] = by_verdict.get(row.verdict, 0) + 1
            st = row.live
            if st:
                live["walks"] += st.get("walks", 0)
                live["rewalked"] += st.get("walks", 0) > 1
                live["changing"] += not st.get("judged", True)
                for k in ("transient", "unjudged", "confirmed"):
                    live[k] += st.get(k, 0)
            if include_clean or row.verdict != "clean":
                write(json.dumps(row.to_dict(), sort_keys=True,
                                 default=str) + "\n")
            used = cpu() - c0
            wall = clock() - t0
            if budget.max_seconds and wall >= budget.max_seconds:
                stopped = "time budget (%g s)" % budget.max_seconds
                break
            if budget.max_cpu_seconds and used >= budget.max_cpu_seconds:
                stopped = "CPU budget (%g s)" % budget.max_cpu_seconds
                break
            if 0 < budget.cpu_percent < 100:
                # Sleep until CPU used / wall time is back at the share.
                due = used * 100.0 / budget.cpu_percent - wall
                if budget.max_seconds:
                    due = min(due, budget.max_seconds - wall)
                if due > 0:
                    sleep(due)
                    slept += due
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    used = cpu() - c0
    wall = clock() - t0
    summary = {
        "kind": "summary", "format": FORMAT, "live": mem.live(),
        "release": mem.release(), "source": mem.describe(),
        "trees": trees, "by_verdict": by_verdict,
        "complete": not stopped, "stopped": stopped or None,
        "seconds": round(wall, 3), "cpu_seconds": round(used, 3),
        "slept_seconds": round(slept, 3), "nice": niceness,
        "budget": asdict(budget),
    }
    if mem.live():
        summary["walks"] = live
    write(json.dumps(summary, sort_keys=True) + "\n")
    if by_verdict.get("corrupt") or by_verdict.get("suspect"):
        return 1
    if by_verdict.get("error"):
        return 2
    return 0
