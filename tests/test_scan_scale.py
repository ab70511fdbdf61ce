"""``crashext scan`` at scale, on the real lab dumps: the plan's units
cover every inode of every ``s_inodes`` list once and in list order
(checked against drgn's own list walk), rows stream out as they are
made, the table keeps a top-K heap or a sorted spool, ``scan -j N``
prints exactly what ``-j 1`` prints (clean and planted dumps, every
form, a worker killed in the middle), ``xa scan`` runs with PyKdump's
standard library only, and the progress line shows on a terminal only.

Speed and memory are measured in bench/bench_scan.py, not here.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from crashext import frontdoor
from crashext.memory import MemoryView, UnreadableMemory
from crashext.triage import scanout
from crashext.triage.progress import Progress, clock_text
from crashext.triage.scan import (LocalScan, Scanner, rank, scan,
                                  summarize)
from crashext.triage.scanout import Form, SortedSpool

from conftest import ROOT, lab_dump, open_lab
from tests.lab import labdumps

LAB_FAMILIES = list(labdumps.FAMILIES)


def _cli(*args, env=None, stdin=None, stderr=subprocess.PIPE):
    """The crashext command as a user runs it (a real process: -j N
    forks workers)."""
    return subprocess.run(
        [sys.executable, "-c", "from crashext.cli import main; main()"]
        + list(args), stdout=subprocess.PIPE, stderr=stderr, text=True,
        cwd=ROOT, env=env, timeout=900)


def _planted():
    """(manifest, path, truth) of the planted 6.1 dump with every
    scenario (tests/lab/plant.py), or skip."""
    pytest.importorskip("drgn")
    m, _ = lab_dump("6.1")
    from tests.lab import plant
    truth = plant.ensure_planted("6.1")
    if truth is None:
        pytest.skip("no planted 6.1 dump")
    return m, truth["planted"], truth


def _manyfiles():
    """(manifest, ELF dump) of the smallest 6.1 --manyfiles lab run
    (../shared/lab/mkdump.sh --quick --manyfiles N; tests/run_all.sh
    makes one of 10000 files), or skip.  Its rows must not fit in a
    pipe: that is what the tests on it are about."""
    import re
    from tests.lab import labdumps
    root = labdumps.lab_dir()
    runs = sorted((int(mo.group(2)), mo.group(0)) for mo in (
        re.fullmatch(r"6\.1(-kaslr)?-many(\d+)", p.name)
        for p in (root.iterdir() if root.is_dir() else ())) if mo)
    for _n, name in runs:
        m = labdumps.load_manifest(name)
        if m is not None and labdumps.dump_path(m, "elf"):
            return m, labdumps.dump_path(m, "elf")
    pytest.skip("no 6.1 --manyfiles lab run (../shared/lab/mkdump.sh "
                "--quick --manyfiles 10000)")


# ----------------------------------------------------------------------
# The plan


def _drgn_trees(prog, swap=False):
    """(inode address, nrpages) of every inode with a page cache, in
    list order, by drgn's list_for_each_entry (the oracle)."""
    from drgn.helpers.linux.list import list_for_each_entry
    out = []
    for sb in list_for_each_entry("struct super_block",
                                  prog["super_blocks"].address_of_(),
                                  "s_list"):
        for ino in list_for_each_entry("struct inode",
                                       sb.s_inodes.address_of_(),
                                       "i_sb_list"):
            m = ino.i_data
            if m.nrpages or m.i_pages.xa_head:
                out.append((ino.value_(), m.nrpages.value_()))
    return out


@pytest.mark.lab
@pytest.mark.parametrize("family", LAB_FAMILIES)
@pytest.mark.parametrize("unit", [1, 7, 1000, 10 ** 9])
def test_units_cover_every_inode_once_in_list_order(family, unit):
    m, mem = open_lab(family)
    sc = Scanner(mem, swap=False, unit_entries=unit)
    plan = sc.plan()
    trees = [(r.inode, r.nrpages) for u in plan.units for r in sc.trees(u)
             if r.kind == "inode"]
    assert trees == _drgn_trees(mem.prog)
    assert not [r for u in plan.units for r in sc.trees(u)
                if r.kind == "error"]
    # Units of one list hold `unit` entries each but the last; the
    # entries add up to every inode on the lists.
    by_sb = {}
    for u in plan.units:
        by_sb.setdefault(u.sb["sb"], []).append(u)
    for us in by_sb.values():
        assert [u.last for u in us] == [False] * (len(us) - 1) + [True]
        assert all(u.entries == unit for u in us[:-1])
        assert [u.pos for u in us] == [i * unit for i in range(len(us))]
    assert plan.entries == sum(u.entries for u in plan.units)
    # Another process (another open of the dump) plans the same units.
    if unit == 7:
        from crashext.backends.drgn import DrgnMemory
        _m, path = lab_dump(family)
        other = DrgnMemory.open(path, m["vmlinux"])
        assert Scanner(other, swap=False, unit_entries=7).plan() \
            .fingerprint() == plan.fingerprint()


@pytest.mark.lab
def test_a_broken_list_is_reported_at_its_place_whatever_the_units():
    from patched_memory import broken_sb_list
    pm, off = broken_sb_list(*open_lab("6.1"))
    seqs = []
    for unit in (1, 2, 1000):
        sc = Scanner(pm, unit_entries=unit)
        seqs.append([r.summary() for u in sc.plan().units
                     for r in sc.trees(u)])
    assert seqs[0] == seqs[1] == seqs[2]
    errs = [s for s in seqs[0] if ": error: " in s]
    assert len(errs) == 1 and errs[0].startswith("xfs ")
    assert "entry 0x%x unreadable" % (0xdead000000000100 - off) in errs[0]


class _Hole(MemoryView):
    """The dump with the bytes [addr, addr+size) unreadable, as a page
    missing from a dump is."""

    def __init__(self, base, addr, size):
        super().__init__(base)
        self.hole = (addr, addr + size)

    def read(self, addr, size):
        lo, hi = self.hole
        if addr < hi and addr + size > lo:
            raise UnreadableMemory(addr, size, "excluded from the dump")
        return self.base.read(addr, size)


@pytest.mark.lab
def test_an_unreadable_inode_is_one_error_row_and_the_list_goes_on():
    from crashext.analyze import layout_for
    m, mem = open_lab("6.1")
    lay = layout_for(mem)
    f = [f for f in m["files"] if f.get("fs_type") == "xfs"][0]
    ino = int(f["inode"], 16)
    # i_data unreadable, i_sb_list (the link) readable.
    hm = _Hole(mem, ino + lay.inode_i_data, 8)
    rows = list(scan(hm, fs_types=["xfs"]))
    errs = [r for r in rows if r.kind == "error"]
    assert len(errs) == 1 and errs[0].inode == ino
    assert "inode 0x%x unreadable (excluded from the dump)" % ino \
        in errs[0].error
    want = {r.inode for r in scan(mem, fs_types=["xfs"])} - {ino}
    assert {r.inode for r in rows if r.kind == "inode"} == want


class _Swapfiles(MemoryView):
    """``nr_swapfiles`` read as ``n`` (the lab guests have no swap)."""

    def __init__(self, base, n):
        self.base = base
        self.addr = base.symbol("nr_swapfiles")
        self.n = n

    def read(self, addr, size):
        data = self.base.read(addr, size)
        if addr == self.addr and size == 4:
            return self.n.to_bytes(4, "little")
        return data


@pytest.mark.lab
@pytest.mark.parametrize("family", LAB_FAMILIES)
def test_a_swap_cache_it_cannot_read_is_said(family):
    """Kernels whose swap cache is no XArray (swap tables, 6.18+: no
    swapper_spaces) get one error row naming it when swap is set up, and
    nothing when it is not; kernels with swapper_spaces scan it."""
    m, mem = open_lab(family)
    assert mem.symbol("nr_swapfiles") is not None
    tables = mem.symbol("swapper_spaces") is None
    assert tables == (family == "7.3")          # 7.3: swap tables
    none = [r for r in scan(mem, fs_types=["swap"])]
    assert none == []                           # no swap in the guest
    rows = list(scan(_Swapfiles(mem, 1), fs_types=["swap"]))
    if tables:
        assert [r.kind for r in rows] == ["error"]
        assert rows[0].where == "swap cache"
        assert "not checked" in rows[0].error \
            and "1 swap file(s)" in rows[0].error
    else:
        assert all(r.kind != "error" for r in rows), rows


# ----------------------------------------------------------------------
# Worst first, kept bounded


@pytest.mark.lab
def test_top_k_heap_keeps_what_a_full_sort_keeps():
    m, path, truth = _planted()
    from crashext.backends.drgn import DrgnMemory
    rows = list(scan(DrgnMemory.open(path, m["vmlinux"])))
    bad = rank(rows)
    assert len(bad) >= 5 and bad[0].verdict == "corrupt"
    for k in range(1, len(bad) + 2):
        assert [r.inode for r in rank(rows, limit=k)] == \
            [r.inode for r in bad[:k]]
    everything = rank(rows, include_clean=True)
    assert [r.rank_key() for r in everything] == \
        sorted(r.rank_key() for r in rows)
    assert len({r.rank_key() for r in rows}) == len(rows)   # no ties
    # to_dict is asdict's data (lists for tuples), made faster
    from dataclasses import asdict
    assert all(json.loads(json.dumps(asdict(r))) == r.to_dict()
               for r in rows)
    s = summarize(rows, top=3)
    assert [d["inode"] for d in s["top"]] == [r.inode for r in bad[:3]]
    assert s["rows"] == len(rows)
    assert sum(s["by_verdict"].values()) == len(rows)


@pytest.mark.lab
def test_sorted_spool_on_disk_gives_the_table_of_memory(monkeypatch):
    m, mem = open_lab("6.1")
    outs = []
    for run in (10 ** 6, 3):
        monkeypatch.setattr(scanout, "SPOOL_RUN", run)
        buf = io.StringIO()
        made = []
        real = SortedSpool._spill

        def spill(self, real=real, made=made):
            made.append(len(self._mem))
            return real(self)
        monkeypatch.setattr(SortedSpool, "_spill", spill)
        st = frontdoor.scan(mem, frontdoor.Reporter(buf), "table",
                            include_clean=True)
        outs.append((st, buf.getvalue(), list(made)))
    assert outs[0][:2] == outs[1][:2]
    assert outs[0][2] == [] and len(outs[1][2]) >= 5     # runs on disk
    lines = outs[0][1].splitlines()
    n = int(lines[0].split()[1])
    assert len(lines) == 1 + n and all(": clean" in ln for ln in lines[1:])


@pytest.mark.lab
def test_table_shows_the_top_and_counts_the_rest():
    from crashext.backends.drgn import DrgnMemory
    from crashext.triage.scanout import VERDICT_RANK
    m, path, truth = _planted()
    args = ["scan", "-c", path, "-k", m["vmlinux"]]
    full = _cli(*args, "--top", "0")
    top3 = _cli(*args, "--top", "3")
    assert full.returncode == top3.returncode == 1, full.stderr
    fl, tl = full.stdout.splitlines(), top3.stdout.splitlines()
    bad = rank(scan(DrgnMemory.open(path, m["vmlinux"])))
    assert fl[1:] == [r.summary() for r in bad]
    assert tl[:4] == fl[:4] and len(tl) == 5
    rest = {}
    for r in bad[3:]:
        rest[r.verdict] = rest.get(r.verdict, 0) + 1
    assert tl[4] == "+ %d more not shown: %s (--top 0 shows all)" % (
        len(bad) - 3, ", ".join("%d %s" % (rest[v], v) for v in
                                sorted(rest, key=VERDICT_RANK.get)))


# ----------------------------------------------------------------------
# Streaming


@pytest.mark.lab
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_rows_are_written_before_the_next_unit_is_scanned(fmt, monkeypatch):
    """Each unit's rows are out before the next unit is read (with no
    flush threshold: the defaults only batch small writes)."""
    monkeypatch.setattr(scanout, "FLUSH_BYTES", 0)
    m, mem = open_lab("6.1")
    written = []
    rep = frontdoor.Reporter(io.StringIO())
    rep.write = written.append
    seen = []

    class Watched(LocalScan):
        def __iter__(self):
            for pieces, totals in super().__iter__():
                seen.append(("".join(written), pieces))
                yield pieces, totals
    src = Watched(mem, Form(fmt, True), fs_types=None)
    frontdoor.scan(mem, rep, fmt, include_clean=True, source=src)
    # when unit i+1 is handed over, every piece of unit i is written
    for (text, _), (_, prev) in zip(seen[1:], seen[:-1]):
        assert prev[1] in text                      # (rows, their text)
    assert sum(n for _, (n, _t) in seen) > 20
    out = "".join(written)
    if fmt == "json":
        doc = json.loads(out)
        assert len(doc["rows"]) == doc["trees"] == sum(
            doc["by_verdict"].values())
    else:
        lines = [json.loads(ln) for ln in out.splitlines()]
        assert lines[-1]["kind"] == "summary"
        assert lines[-1]["trees"] == len(lines) - 1


@pytest.mark.lab
@pytest.mark.parametrize("family", LAB_FAMILIES)
def test_json_document_and_lines_carry_the_same_rows(family):
    m, path = lab_dump(family)
    args = ["scan", "-c", path, "-k", m["vmlinux"], "--all", "-q"]
    doc = json.loads(_cli(*args, "-f", "json").stdout)
    lines = [json.loads(ln) for ln in
             _cli(*args, "-f", "jsonl").stdout.splitlines()]
    assert lines[:-1] == doc["rows"]
    tot = lines[-1]
    assert tot["kind"] == "summary" and tot["complete"] is True
    assert (tot["format"], doc["format"]) == ("crashext.scan-lines/1",
                                              "crashext.scan/1")
    for k in ("by_verdict", "by_fs", "codes", "pages", "trees", "verdict"):
        assert tot[k] == doc[k], k
    paths = {int(f["inode"], 16) for f in m["files"]}
    assert paths <= {r["inode"] for r in doc["rows"]}


# ----------------------------------------------------------------------
# scan -j N


@pytest.mark.lab
@pytest.mark.parametrize("family", LAB_FAMILIES + ["planted"])
def test_parallel_output_is_byte_identical(family):
    if family == "planted":
        m, path, _truth = _planted()
        want = 1
    else:
        m, path = lab_dump(family)
        want = 0
    base = ["scan", "-c", path, "-k", m["vmlinux"], "-q"]
    for extra in (["-f", "table"], ["-f", "table", "--all", "--slab"],
                  ["-f", "json", "--slab"], ["-f", "jsonl", "--all"]):
        one = _cli(*base, "-j", "1", *extra)
        assert one.returncode == want, (extra, one.stderr)
        for j in (("2", "3") if extra == ["-f", "jsonl", "--all"] else
                  ("2",)):
            par = _cli(*base, "-j", j, *extra)
            assert (par.returncode, par.stdout, par.stderr) == \
                (one.returncode, one.stdout, one.stderr), (j, extra)


BUDGET = r"""
import sys
import crashext.analyze as A
from crashext import frontdoor
from crashext.backends.drgn import DrgnMemory
from crashext.triage.scan import LocalScan
from crashext.triage.scanjobs import ParallelScan
from crashext.triage.scanout import Form

VMCORE, VMLINUX, BUDGET = sys.argv[1], sys.argv[2], int(sys.argv[3])
A.AUTO_MEMMAP_WALKS = BUDGET            # the workers fork with it
outs = []
for jobs in (2, 3, 1):      # one process last: the parent stays unthreaded
    out = []
    rep = frontdoor.Reporter(sys.stdout)
    rep.write = out.append
    opts = dict(unit_entries=1, memmap="auto")
    if jobs == 1:
        src = LocalScan(DrgnMemory.open(VMCORE, VMLINUX), Form("jsonl", True),
                        **opts)
    else:
        src = ParallelScan(lambda: DrgnMemory.open(VMCORE, VMLINUX), jobs,
                           Form("jsonl", True), **opts)
    frontdoor.scan(None, rep, "jsonl", True, source=src)
    outs.append("".join(out))
print(repr(outs))
"""


@pytest.mark.lab
def test_automatic_memory_map_walks_go_where_one_process_gives_them():
    """A dump whose trees walk the memory map on their own (nrpages not
    accounted for; the planted dump has 4): the first AUTO_MEMMAP_WALKS
    of them in scan order get a walk, the others a note, however the
    units are shared out (one tree a unit, 1, 2 and 3 workers)."""
    m, path, truth = _planted()
    runs = {}
    for budget in (16, 2):
        p = subprocess.run([sys.executable, "-c", BUDGET, path,
                            m["vmlinux"], str(budget)], capture_output=True,
                           text=True, cwd=ROOT, timeout=900)
        assert p.returncode == 0, p.stderr
        two, three, one = eval(p.stdout)
        assert one == two == three, budget
        runs[budget] = [json.loads(ln) for ln in one.splitlines()]
    full, two = runs[16], runs[2]
    walked = [i for i, r in enumerate(full)
              if "(memory map)" in r.get("impact", {}).get("nrpages", "")]
    assert len(walked) > 2
    for i, (a, b) in enumerate(zip(full[:-1], two[:-1])):
        if i in walked[2:]:
            assert "not searched: memory map" in b["impact"]["nrpages"]
            assert a != b
        else:
            assert a == b, a.get("path")


THREADED = r"""
import functools, sys
from crashext import frontdoor
from crashext.backends.drgn import DrgnMemory
from crashext.memory import CrashextError
from crashext.triage.scanjobs import ParallelScan, _start_method
from crashext.triage.scanout import Form

VMCORE, VMLINUX = sys.argv[1], sys.argv[2]
mem = DrgnMemory.open(VMCORE, VMLINUX)       # drgn's threads, usually
# drgn's OpenMP threads were absent in one run on a loaded machine
# (METHOD fork): a thread of the caller's own makes the process threaded
# either way, as a Dask worker or a GUI is.
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
print("METHOD", _start_method())
outs = []
for opener in (functools.partial(DrgnMemory.open, VMCORE, VMLINUX), None):
    out = []
    rep = frontdoor.Reporter(sys.stdout)
    rep.write = out.append
    if opener is None:
        from crashext.triage.scan import LocalScan
        src = LocalScan(mem, Form("jsonl", True))
    else:
        src = ParallelScan(opener, 2, Form("jsonl", True))
    frontdoor.scan(None, rep, "jsonl", True, source=src)
    outs.append("".join(out))
print("SAME", outs[0] == outs[1], len(outs[0]))
try:
    list(ParallelScan(lambda: DrgnMemory.open(VMCORE, VMLINUX), 2,
                      Form("jsonl", True)))
except CrashextError as e:
    print("ERROR", e)
"""


@pytest.mark.lab
def test_a_threaded_caller_gets_workers_from_a_fork_server():
    """ParallelScan from a process that opened a dump with drgn (threads:
    a fork of it can hang) starts its workers from a fork server: same
    output; an opener that cannot be sent there is one error."""
    m, path = lab_dump("6.1")
    p = subprocess.run([sys.executable, "-c", THREADED, path, m["vmlinux"]],
                       capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "METHOD forkserver"
    assert lines[1].startswith("SAME True ") and int(lines[1].split()[2]) \
        > 1000
    assert lines[2].startswith("ERROR scan -j: cannot start a worker "
                               "process from this one (")


DYING = r"""
import os, sys
from crashext import frontdoor
from crashext.backends.drgn import DrgnMemory
from crashext.memory import MemoryView
from crashext.triage.scanjobs import ParallelScan
from crashext.triage.scanout import Form

VMCORE, VMLINUX, VICTIM, SIZE = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

class Dying(MemoryView):
    # The worker process that reads this inode whole is killed.
    def read(self, addr, size):
        if addr == VICTIM and size == SIZE:
            os.kill(os.getpid(), 9)
        return self.base.read(addr, size)

src = ParallelScan(lambda: Dying(DrgnMemory.open(VMCORE, VMLINUX)), 2,
                   Form("jsonl", True), unit_entries=1)
st = frontdoor.scan(None, frontdoor.Reporter(sys.stdout), "jsonl", True,
                    source=src)
print("LOST", src.lost, file=sys.stderr)
sys.exit(st)
"""


@pytest.mark.lab
def test_a_killed_worker_loses_its_unit_and_says_so():
    from crashext.analyze import layout_for
    from crashext.triage.scan import _Offsets
    m, mem = open_lab("6.1")
    _m, path = lab_dump("6.1")
    off = _Offsets(mem, layout_for(mem))
    f = [f for f in m["files"] if f.get("fs_type") == "xfs"][0]
    victim = int(f["inode"], 16)
    p = subprocess.run([sys.executable, "-c", DYING, path, m["vmlinux"],
                        str(victim), str(off.inode_read)],
                       capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 2, p.stderr
    rows = [json.loads(ln) for ln in p.stdout.splitlines()]
    lost = [r for r in rows if r["kind"] == "error"]
    assert len(lost) == 1 and "worker process died (exit code -9)" \
        in lost[0]["error"], lost
    assert lost[0]["where"].startswith("xfs ") and "s_inodes entries" \
        in lost[0]["where"]
    # Every other tree is there, in the order of one process; the lost
    # unit (the victim inode alone) has its error row in its place.
    sc = Scanner(mem, unit_entries=1)
    want = [r.inode for u in sc.plan().units for r in sc.trees(u)]
    got = [r.get("inode") for r in rows[:-1]]
    assert got == [None if i == victim else i for i in want]
    assert rows[-1]["kind"] == "summary"
    assert rows[-1]["by_verdict"] == {"clean": len(want) - 1, "error": 1}
    assert "LOST [%d]" % [u.n for u in sc.plan().units if any(
        r.inode == victim for r in sc.trees(u))][0] in p.stderr


@pytest.mark.lab
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_reader_that_leaves_is_no_error(jobs):
    """``crashext scan -f jsonl --all | head -1``: the first row comes
    out, the scan stops quietly when the reader goes (workers too).
    On a --manyfiles lab run: its rows do not fit in a pipe."""
    m, path = _manyfiles()
    p = subprocess.Popen(
        [sys.executable, "-c", "from crashext.cli import main; main()",
         "scan", "-c", path, "-k", m["vmlinux"], "-f", "jsonl", "--all",
         "-j", jobs], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=ROOT)
    first = json.loads(p.stdout.readline())
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 2
    assert first["kind"] in ("inode", "error") and err == ""


@pytest.mark.lab
def test_ctrl_c_ends_the_workers_with_one_line():
    """^C on a terminal (SIGINT to the whole process group) during
    ``scan -j 2``: one line, exit 2, no worker left behind."""
    import signal
    m, path = _manyfiles()
    p = subprocess.Popen(
        [sys.executable, "-c", "from crashext.cli import main; main()",
         "scan", "-c", path, "-k", m["vmlinux"], "-f", "jsonl", "--all",
         "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=ROOT, start_new_session=True)
    p.stdout.readline()                         # the scan is under way
    with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
        workers = [int(x) for x in f.read().split()]
    assert len(workers) == 2
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.decode() == "crashext: error: interrupted\n"
    for w in workers:
        assert not os.path.exists("/proc/%d" % w) or \
            open("/proc/%d/stat" % w).read().split()[2] == "Z"


def test_parallel_bad_input_is_one_line(tmp_path):
    bogus = tmp_path / "bogus.vmcore"
    bogus.write_bytes(b"\x7fELF" + b"\0" * 4096)
    r = _cli("scan", "-c", str(tmp_path / "nope"), "-j", "2")
    assert r.returncode == 2 and r.stderr == \
        "crashext: error: vmcore %s does not exist\n" % (tmp_path / "nope")
    r = _cli("scan", "-c", str(bogus), "-j", "2")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and \
        r.stderr.startswith("crashext: error: ")
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------
# Inside crash: PyKdump's standard library only

#: PyKdump's pylib and compiled-in modules (shared/pykdump-api.md, "The
#: embedded standard library"), plus CPython's bootstrap built-ins.
PYLIB = set("""abc argparse ast base64 bisect codecs codeop code
_collections_abc collections contextlib copy copyreg cProfile dataclasses
datetime dis encodings enum fnmatch functools __future__ genericpath
getopt gettext gzip heapq importlib inspect io keyword linecache locale
ntpath operator opcode optparse os pathlib pkgutil posixpath pprint
profile pstats random re reprlib runpy selectors shutil signal socket
sre_compile sre_constants sre_parse stat string _strptime struct tempfile
textwrap tokenize token traceback trace tty types typing urllib warnings
weakref _weakrefset zlib select _struct _socket math readline _sha1
_sha256 _sha512 _sha3 _md5 _blake2 _datetime array binascii _random
unicodedata _lsprof _codecs""".split())
BUILTINS = set("""sys builtins _imp _warnings marshal _frozen_importlib
_frozen_importlib_external posix errno pwd _sre _weakref _functools
_operator _collections _abc itertools atexit _signal _stat time _thread
_locale _io faulthandler _tracemalloc gc _string _ast _opcode _tokenize
_typing _bisect _heapq _contextvars _json""".split()) - {"_json"}

RESTRICTED = r"""
import os, sys
ALLOWED = set(sys.argv[1].split())
# The backend (drgn stands in for PyKdump's readmem) loads first ...
from crashext.backends.drgn import DrgnMemory
mem = DrgnMemory.open(sys.argv[2], sys.argv[3])
# ... then every standard module PyKdump lacks is made unimportable.
for name in list(sys.modules):
    top = name.split(".")[0]
    if top in sys.stdlib_module_names and top not in ALLOWED:
        sys.modules[name] = None

class Guard:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names and top not in ALLOWED:
            raise ModuleNotFoundError("No module named %r (PyKdump)" % name)
        return None
sys.meta_path.insert(0, Guard())
import crashext.frontdoor as fd
import crashext.triage.scanout as so
so.SPOOL_RUN = 50
st = fd.run_xa(mem, sys.argv[4:], sys.stdout, sys.stderr)
bad = {"json", "threading", "multiprocessing", "pickle"} & {
    k for k, v in sys.modules.items() if v is not None}
if bad:
    print("LOADED", sorted(bad), file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
os._exit(st)        # no interpreter shutdown: threading is None here
"""


@pytest.mark.lab
@pytest.mark.parametrize("args", [["-f", "table"], ["-f", "table", "--all"],
                                  ["-f", "json"], ["-f", "jsonl", "--all"]])
def test_xa_scan_runs_with_pykdumps_stdlib_only(args):
    """xa scan inside crash: every form, the table of every tree sorted
    through runs on disk (SPOOL_RUN 50), with only the modules PyKdump's
    Python has; the text is the CLI's."""
    m, path, _truth = _planted()
    allowed = " ".join(sorted(PYLIB | BUILTINS))
    p = subprocess.run([sys.executable, "-c", RESTRICTED, allowed, path,
                        m["vmlinux"], "scan"] + args,
                       capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 1, p.stderr
    assert p.stderr == ""
    cli = _cli("scan", "-c", path, "-k", m["vmlinux"], "-q", *args)
    assert p.stdout == cli.stdout


STRICT_FORMS = [["scan", "-f", "jsonl"], ["scan", "-f", "jsonl", "--all"],
                ["scan", "--top", "2"], ["scan", "--top", "0", "--slab"],
                ["scan", "-f", "json", "--slab"]]


@pytest.mark.lab
def test_xa_scan_forms_in_the_strict_pykdump_standin(tmp_path):
    """The same through ``crash -i CMDS | ...`` in the strict stand-in
    (tests/pykdump_standin/crashsim.py: PyKdump's zipped pylib and
    sys.path): each form's output, between its command line and
    PyKdump's timing line, is the CLI's."""
    import re
    if os.path.join(ROOT, "tests") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
    from strict_crash import run_batch
    import crashext.crash as xacrash
    m, path, _truth = _planted()
    lines = ["epython %s" % xacrash.register_script()] + [
        "xa " + " ".join(f) for f in STRICT_FORMS]
    out = run_batch(m["vmlinux"], path, lines,
                    pykdumppath=[xacrash.progs_dir()], workdir=str(tmp_path))
    parts = re.split(r"^crash> (.*)\n", out, flags=re.M)
    sec = list(zip(parts[1::2], parts[2::2]))
    assert [c for c, _ in sec] == lines
    for (cmd, text), form in zip(sec[1:], STRICT_FORMS):
        assert text.count("\n ** Execution took") == 1, (cmd, text[-300:])
        body = text.partition("\n ** Execution took")[0]
        cli = _cli(form[0], "-c", path, "-k", m["vmlinux"], "-q", *form[1:])
        # Only why memory was unreadable is the backend's own wording
        # (drgn: "address is not mapped"; PyKdump: "readmem error at ...")
        same = re.compile(r'"reason": "[^"]*"')
        assert cli.returncode == 1 and same.sub("R", body) == \
            same.sub("R", cli.stdout), (cmd, body[:300], cli.stdout[:300])
    assert '"reason": "readmem error at addr' in sec[1][1]


# ----------------------------------------------------------------------
# Progress


def test_progress_line_text():
    t = [100.0]
    out = io.StringIO()
    p = Progress("scan", total=200_000, unit="inodes", stream=out,
                 clock=lambda: t[0])
    assert not p.active                      # a StringIO is no terminal
    t[0] = 110.0
    p.done = 50_000
    assert p.line() == "scan: 50,000/200,000 inodes 25% 5,000/s ETA 0:30"
    t[0] = 100.2
    assert p.line() == "scan: 50,000/200,000 inodes 25%"   # no rate yet
    p = Progress("triage", unit="dumps", stream=out, clock=lambda: t[0])
    t[0] = 160.2
    p.done = 3
    assert p.line() == "triage: 3 dumps 3.0/min"
    assert clock_text(3725) == "1:02:05" and clock_text(59.6) == "1:00"
    assert out.getvalue() == ""


PTY = r"""
import os, pty, subprocess, sys, time
master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=slave)
os.close(slave)
err = b""
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:
        break
    if not chunk:
        break
    err += chunk
out = p.stdout.read()
p.wait()
sys.stdout.write(repr((p.returncode, out.decode(), err.decode())))
"""


@pytest.mark.lab
def test_progress_on_a_terminal_only():
    m, path = lab_dump("6.1")
    cmd = [sys.executable, "-c", "from crashext.cli import main; main()",
           "scan", "-c", path, "-k", m["vmlinux"]]

    def on_pty(*extra):
        p = subprocess.run([sys.executable, "-c", PTY] + cmd + list(extra),
                           capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
        return eval(p.stdout)

    rc, out, err = on_pty()
    assert rc == 0 and out.startswith("scanned ")
    assert "\rscan: " in err and " inodes " in err and "/" in err
    assert err.endswith("\r")                 # the line is erased at the end
    total = int(err.split("\rscan: ")[-1].split()[0].split("/")[1]
                .replace(",", ""))
    assert total >= len(m["files"])
    rc, out2, err = on_pty("--quiet")
    assert (rc, out2, err) == (0, out, "")
    # not a terminal: nothing on stderr
    r = _cli("scan", "-c", path, "-k", m["vmlinux"])
    assert (r.returncode, r.stdout, r.stderr) == (0, out, "")


@pytest.mark.lab
def test_triage_progress_on_a_terminal_only(tmp_path):
    """crashext triage: 'triage: N/M dumps' on a terminal's stderr between
    its log lines, erased at the end; nothing with --quiet."""
    m, path = lab_dump("6.1")
    _m, planted, _truth = _planted()
    lst = tmp_path / "dumps.txt"
    lst.write_text("%s\n%s\n" % (path, planted))
    debug = os.path.dirname(m["vmlinux"])

    def on_pty(out, *extra):
        cmd = [sys.executable, "-c", "from crashext.cli import main; main()",
               "triage", str(lst), "-o", str(tmp_path / out), "-d", debug,
               "-j", "1", "--engine", "inline", "--no-slab", "--no-png"]
        p = subprocess.run([sys.executable, "-c", PTY] + cmd + list(extra),
                           capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
        return eval(p.stdout)

    rc, out, err = on_pty("a")
    assert rc == 1 and out.startswith("# crashext triage: 2 dumps")
    assert "\rtriage: 1/2 dumps 50%" in err or "\rtriage: 2/2 dumps 100%" \
        in err, err
    assert err.endswith("\r")
    logs = [ln.split("\r")[-1] for ln in
            err.replace("\r\n", "\n").split("\n")]
    assert [ln.split(":")[0] for ln in logs if ln.startswith("[")] == \
        ["[1/2] vmcore.elf", "[2/2] 6.1-all.elf"]   # every log line, whole
    rc, out2, err = on_pty("b", "--quiet")
    err = err.replace("\r\n", "\n")          # the terminal's line ends
    assert rc == 1 and "\r" not in err and "triage:" not in err
    assert len([ln for ln in err.split("\n") if ln]) == 2


class _Changing(MemoryView):
    """A 'running kernel' (live) whose list link at ``addr`` reads as a
    stale pointer the first ``times`` times, as an inode evicted under
    the walk leaves it (inode_sb_list_del() in fs/inode.c), then right."""

    def __init__(self, base, addr, times):
        super().__init__(base)
        self.addr, self.left = addr, times

    def live(self):
        return True

    def read(self, addr, size):
        data = self.base.read(addr, size)
        if self.left and addr <= self.addr < addr + size:
            self.left -= 1
            o = self.addr - addr
            data = data[:o] + (0xdead000000000100).to_bytes(8, "little") \
                + data[o + 8:]
        return data


@pytest.mark.lab
def test_a_live_list_is_one_unit_read_again_when_it_changes():
    """On a running kernel the plan does not walk the lists (one unit
    each); a list that changes under the walk is walked again from its
    head, each inode once; after 5 restarts it is an error row."""
    m, mem = open_lab("6.1")
    f = [f for f in m["files"] if f.get("fs_type") == "xfs"][0]
    link = int(f["inode"], 16) + mem.member_offset("struct inode",
                                                   "i_sb_list")
    sc0 = Scanner(mem, swap=False)
    want = [(r.inode, r.kind) for u in sc0.plan().units for r in sc0.trees(u)]
    for times, broken in ((2, False), (6, True)):
        sc = Scanner(_Changing(mem, link, times), swap=False)
        plan = sc.plan()
        assert sc.live and plan.entries == 0
        assert len(plan.units) == len({u.sb["sb"] for u in sc0.plan().units})
        rows = [r for u in plan.units for r in sc.trees(u)]
        got = [(r.inode, r.kind) for r in rows if r.kind != "error"]
        errs = [r for r in rows if r.kind == "error"]
        if not broken:
            assert got == want and errs == []
        else:
            assert len(errs) == 1 and "changed 5 times while read" in \
                errs[0].error and errs[0].fs_type == "xfs"
            # every tree before the change, once; the other lists whole
            assert set(got) < set(want) and len(got) == len(set(got))
            assert [w for w in want if w in got] == got
