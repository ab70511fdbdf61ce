"""Live-kernel judgement (crashext/stable.py) on real lab trees that change
while they are read.

A live kernel cannot be frozen in a test on the host, so each test replays
a change the kernel really makes, in the kernel's own order, on a real
6.1 lab dump: ``ChurnMemory`` serves the dump's bytes, says it is live,
and applies a change to the bytes the moment a read touches a chosen
address - e.g. ``page_cache_delete()`` (mm/filemap.c: slot := NULL, node
count--, folio->mapping := NULL, mapping->nrpages -= nr) right after the
walk has read the leaf and before it reads the folio: the race that gave
the false ``FOLIO_MAPPING ... found 0`` of issue 16.  The same replay
without the live judgement reports the false finding (so the scenario is
real), with it the tree is clean, ``changing`` or - for real damage -
``corrupt`` with the dump's findings.  The live lab (tests/test_live.py)
runs the same engine against a running kernel.
"""

from __future__ import annotations

import json
from typing import Callable, List

import pytest

from crashext.analyze import analyze, layout_for
from crashext.memory import Memory
from crashext.stable import LivePolicy, finding_key, stable_slots
from crashext.xarray import entry as E

from conftest import open_lab
from patched_memory import PatchedMemory, seed_case

NO_WAIT = LivePolicy(sleep=lambda s: None)


class ChurnMemory(PatchedMemory):
    """A lab dump that is 'live': ``when(lo, hi, fn)`` runs ``fn(self)``
    just before the ``nth`` read that touches ``[lo, hi)`` (``every``:
    before every such read from the nth on)."""

    def __init__(self, base: Memory) -> None:
        super().__init__(base)
        self.events: List[list] = []
        self.fired = 0

    def live(self) -> bool:
        return True

    def when(self, lo: int, hi: int, fn: Callable[["ChurnMemory"], None],
             nth: int = 1, every: bool = False) -> "ChurnMemory":
        self.events.append([lo, hi, fn, nth, every])
        return self

    def read(self, addr: int, size: int) -> bytes:
        for ev in self.events:
            lo, hi, fn, nth, every = ev
            if addr < hi and addr + size > lo and nth > 0:
                ev[3] -= 1
                if ev[3] == 0:
                    self.fired += 1
                    fn(self)
                    if every:
                        ev[3] = 1
        return super().read(addr, size)


class Dump(ChurnMemory):
    """A :class:`ChurnMemory` that says it is a dump (not live): the same
    replay without the live judgement."""

    def live(self) -> bool:
        return False


def _flipping(cm: ChurnMemory, lay, f, mapping: int) -> ChurnMemory:
    """``cm`` where the mapping of folio ``f`` flips on every read of it
    (NULL, ``mapping``, NULL...: never the same twice)."""
    state = {"n": 0}

    def flip(c):
        state["n"] += 1
        c.patch_u64(f.addr + lay.f_mapping,
                    0 if state["n"] % 2 else mapping)
    return cm.when(f.addr, f.addr + lay.folio_read_size, flip, every=True)


def _lab():
    m, mem = open_lab("6.1")
    return m, mem, layout_for(mem)


def _pick(a, want: Callable = lambda e, f: True):
    """A pointer entry of ``a`` (in a leaf) and its folio."""
    for e in a.walk.entries:
        if e.kind == E.POINTER and e.node and e.shift == 0:
            f = a.folios.get(e.raw)
            if f is not None and want(e, f):
                return e, f
    raise AssertionError("no entry to pick")


def _delete(cm: ChurnMemory, lay, a, e, f, shadow: int = 0) -> None:
    """page_cache_delete() of ``f`` (mm/filemap.c, 6.1) as a reader sees
    its stores: xas_store(shadow) over the entry's slots (update_node():
    count / nr_values), folio->mapping = NULL, mapping->nrpages -= nr."""
    node = a.walk.node_at(e.node)
    slots = list(node.slots)
    count, values = node.count, node.nr_values
    for s in range(e.slot, e.slot + e.nr_slots):
        if s == e.slot:
            slots[s] = shadow
        else:
            slots[s] = E.xa_mk_sibling(e.slot) if shadow else 0
    if shadow:
        values += e.nr_slots
    else:
        count -= e.nr_slots
    for s in range(e.slot, e.slot + e.nr_slots):
        cm.patch_slot(node.addr, s, slots[s], lay)
    cm.patch_u8(node.addr + lay.node_count, count)
    cm.patch_u8(node.addr + lay.node_nr_values, values)
    cm.patch_u64(f.addr + lay.f_mapping, 0)
    nr = a.target.nrpages - f.nr_pages
    cm.patch_u64(a.target.mapping + lay.as_nrpages, nr)


def _truncation_race(path: str):
    """A fresh ChurnMemory where the folio of one entry of ``path`` is
    deleted from the page cache after the walk read its leaf and before
    the folio itself is read."""
    _m, mem, lay = _lab()
    clean = analyze(mem, path)
    assert clean.verdict == "clean"
    e, f = _pick(clean)
    cm = ChurnMemory(mem)
    cm.when(f.addr, f.addr + lay.folio_read_size,
            lambda c: _delete(c, lay, clean, e, f))
    return cm, clean, e, f


def test_truncation_race_is_a_false_alarm_on_a_dump_not_live():
    """The race of issue 16 (FOLIO_MAPPING found 0): without the live
    judgement it is reported; judged live, the re-read of the leaf shows
    the slot emptied, the second walk is clean."""
    path = "/mnt/xfs/big64"
    cm, clean, e, f = _truncation_race(path)

    dump = Dump(cm.base)
    dump.events = cm.events
    a = analyze(dump, path)
    assert dump.fired == 1
    assert "FOLIO_MAPPING" in {x.code for x in a.findings}, a.findings
    assert any(x.found == 0 and e.index in x.indices for x in a.findings
               if x.code == "FOLIO_MAPPING")

    cm, clean, e, f = _truncation_race(path)
    a = analyze(cm, path, policy=NO_WAIT)
    assert cm.fired == 1
    assert a.verdict == "clean", (a.findings, a.stability)
    assert a.stability.walks == 2
    assert a.stability.transient >= 1
    assert any("changed on re-read" in c for c in a.stability.changes)
    # The second walk saw the tree after the deletion.
    assert a.stats.entries == clean.stats.entries - 1
    assert a.target.nrpages == clean.target.nrpages - f.nr_pages


def test_folio_reused_by_another_file():
    """The folio is reclaimed (a shadow value entry takes its slot) and
    reused by another file before crashext reads it: FOLIO_MAPPING /
    FOLIO_INDEX on one walk, gone on the next."""
    _m, mem, lay = _lab()
    path, other = "/mnt/xfs/big200", "/mnt/xfs/big64"
    clean = analyze(mem, path)
    om = analyze(mem, other).target.mapping
    e, f = _pick(clean)
    cm = ChurnMemory(mem)

    def reuse(c):
        _delete(c, lay, clean, e, f, shadow=(0x1234 << 1) | 1)   # xa_mk_value()
        c.patch_u64(f.addr + lay.f_mapping, om)
        c.patch_u64(f.addr + lay.f_index, 0x77)
    cm.when(f.addr, f.addr + lay.folio_read_size, reuse)
    a = analyze(cm, path, policy=NO_WAIT)
    assert cm.fired == 1
    assert a.verdict == "clean", a.findings
    assert a.stability.transient >= 2        # mapping and index


def test_nrpages_moving_during_the_walk():
    """nrpages read before the walk and after it differ (folios added
    while walking): NRPAGES is not judged from that walk; the next walk,
    with nrpages settled and matching, is clean."""
    _m, mem, lay = _lab()
    path = "/mnt/xfs/big64"
    clean = analyze(mem, path)
    nr_addr = clean.target.mapping + lay.as_nrpages
    root = clean.walk.nodes[0].addr
    cm = ChurnMemory(mem)
    # The first node read of the first walk: nrpages jumps (a torn view),
    # then comes back before the walk ends (read of the last node).
    cm.when(root, root + 1, lambda c: c.patch_u64(
        nr_addr, clean.target.nrpages + 8))
    last = clean.walk.nodes[-1].addr
    cm.when(last, last + 1, lambda c: c.patch_u64(
        nr_addr, clean.target.nrpages), nth=1)
    a = analyze(cm, path, policy=NO_WAIT)
    assert a.verdict == "clean", (a.findings, a.stability)


def test_tree_that_keeps_changing_is_not_judged():
    """A folio whose mapping flips on every read (never the same twice):
    its finding is never confirmed; after the bounded walks the tree is
    'changing', never 'corrupt'."""
    _m, mem, lay = _lab()
    path = "/mnt/xfs/big64"
    clean = analyze(mem, path)
    e, f = _pick(clean)
    cm = _flipping(ChurnMemory(mem), lay, f, clean.target.mapping)
    pol = LivePolicy(attempts=5, sleep=lambda s: None)
    a = analyze(cm, path, policy=pol)
    assert a.verdict == "changing"
    assert not a.findings
    assert a.stability.walks == 5
    assert a.stability.unjudged_codes.get("FOLIO_MAPPING") == 1
    assert any("not judged" in n for n in a.notes)
    from crashext.render import chat, jsonout
    assert chat.render(a).splitlines()[1].startswith("CHANGING inode")
    assert json.loads(jsonout.render(a))["live"]["judged"] is False


def test_real_corruption_is_confirmed_live():
    """The seed case (one order-4 folio at slots 16, 32, 48) on a 'live'
    dump: confirmed in two walks with exactly the dump's findings, while
    another folio of the same tree keeps changing (unjudged, not
    reported)."""
    _m, mem, lay = _lab()
    case = seed_case(mem)
    if case is None:
        pytest.skip("no seed-shaped node in the lab dump")
    dump = analyze(case.mem, case.path)
    assert dump.verdict == "corrupt"
    cm = ChurnMemory(mem)
    cm.patches.update(case.mem.patches)
    a = analyze(cm, case.path, policy=NO_WAIT)
    assert a.verdict == "corrupt"
    assert a.stability.walks == 2
    assert [finding_key(f) for f in a.findings] == \
        [finding_key(f) for f in dump.findings]

    # Now with a folio elsewhere in the tree flipping its mapping.
    seed_node = case.node.addr
    e, f = _pick(dump, lambda e, f: e.node != seed_node)
    cm2 = ChurnMemory(mem)
    cm2.patches.update(case.mem.patches)
    _flipping(cm2, lay, f, dump.target.mapping)
    a = analyze(cm2, case.path, policy=NO_WAIT)
    assert a.verdict == "corrupt"
    assert {finding_key(x) for x in a.findings} == \
        {finding_key(x) for x in dump.findings}
    assert a.stability.unjudged >= 1
    assert a.stability.walks == NO_WAIT.attempts


def _split_in_progress(cm: ChurnMemory, lay, node, e, f, frozen: bool):
    """split_huge_page() under the xa_lock (6.1, mm/huge_memory.c):
    folio_ref_freeze() to 0, then xas_split() stores the head in every
    slot of the entry (order 0 pieces) before __split_huge_page() puts the
    tail pages in."""
    for s in range(e.slot, e.slot + e.nr_slots):
        cm.patch_slot(node.addr, s, f.addr, lay)
    if frozen:
        cm.patch(f.addr + lay.f_refcount, (0).to_bytes(4, "little"))


def test_split_in_progress_needs_one_more_walk():
    """A frozen folio (refcount 0: folio_try_get_rcu() fails, the kernel
    reader retries) seen in the split state for two walks is not reported
    (it needs three); the same state that stays is reported."""
    _m, mem, lay = _lab()
    path = "/mnt/xfs/big64"
    clean = analyze(mem, path)
    e, f = _pick(clean, lambda e, f: 2 <= f.order <= 4 and e.nr_slots > 1)
    node = clean.walk.node_at(e.node)
    cm = ChurnMemory(mem)
    _split_in_progress(cm, lay, node, e, f, frozen=True)
    # The split finishes just before the third walk reads the leaf
    # (walk 1 and its re-read, walk 2 and its re-read: 4 reads before).
    cm.when(node.addr, node.addr + 1, lambda c: c.patches.clear(), nth=5)
    a = analyze(cm, path, policy=NO_WAIT)
    assert a.verdict == "clean", (a.findings, a.stability)
    assert a.stability.walks == 3

    stuck = ChurnMemory(mem)
    _split_in_progress(stuck, lay, node, e, f, frozen=True)
    a = analyze(stuck, path, policy=NO_WAIT)
    assert a.verdict == "corrupt"
    assert a.stability.walks == 3
    assert "DUP_FOLIO" in {x.code for x in a.findings}


def test_live_scan_of_a_static_dump_equals_the_dump_scan():
    """scan() on a 'live' view of an unchanging dump: one walk per clean
    tree, the same verdict for every tree as the dump scan."""
    from crashext.triage.scan import scan
    _m, mem, lay = _lab()
    dump_rows = {(r.kind, r.i_ino, r.s_id): r.verdict for r in scan(mem)}
    live_rows = list(scan(ChurnMemory(mem)))
    assert {(r.kind, r.i_ino, r.s_id): r.verdict for r in live_rows} \
        == dump_rows
    assert all(r.live.get("walks") == 1 for r in live_rows
               if r.kind != "error" and r.verdict == "clean" and r.live)


def test_fleet_scan_lines_budget_and_duty_cycle():
    """fleet_scan: JSON Lines (rows, then one summary), the CPU share kept
    by sleeping, and the time budget stopping the scan early."""
    from crashext.triage.fleet import Budget, fleet_scan
    _m, mem, lay = _lab()
    out: List[str] = []
    status = fleet_scan(ChurnMemory(mem), out.append, Budget(),
                        include_clean=True)
    lines = [json.loads(x) for x in out]
    assert status == 0
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["complete"] is True
    rows = lines[:-1]
    assert len(rows) == summary["trees"] > 5
    assert all(r["verdict"] == "clean" for r in rows)
    assert summary["walks"]["walks"] == sum(r["live"]["walks"]
                                           for r in rows if r["live"])

    # A fake clock: each tree costs 1 s of CPU (and of wall time); at
    # 25 % the scan sleeps 3 s after each, so 4 s per tree; the 10 s
    # budget cuts the third sleep to 1 s and stops after the 4th tree.
    t = {"wall": 0.0, "cpu": 0.0}

    def write(line):
        out.append(line)
        t["cpu"] += 1.0
        t["wall"] += 1.0

    def sleep(d):
        t["wall"] += d
    out = []
    fleet_scan(ChurnMemory(mem), write,
               Budget(max_seconds=10, cpu_percent=25), include_clean=True,
               clock=lambda: t["wall"], cpu=lambda: t["cpu"], sleep=sleep)
    summary = json.loads(out[-1])
    assert summary["complete"] is False
    assert summary["stopped"].startswith("time budget")
    assert (summary["trees"], summary["cpu_seconds"], summary["slept_seconds"],
            summary["seconds"]) == (4, 4.0, 7.0, 11.0)


def test_stable_slots_drops_a_slot_that_changed():
    """folio --live: a hit whose slot no longer holds the folio when read
    again is dropped; one that holds stays."""
    from crashext.triage.reverse import find_folio
    _m, mem, lay = _lab()
    clean = analyze(mem, "/mnt/xfs/big64")
    e, f = _pick(clean)
    hits = list(find_folio(mem, f.addr))
    assert len(hits) == 1
    assert len(stable_slots(ChurnMemory(mem), hits, NO_WAIT)) == 1
    cm = ChurnMemory(mem)
    cm.patch_slot(e.node, e.slot, 0, lay)
    assert stable_slots(cm, hits, NO_WAIT) == []


class _Vanishing(ChurnMemory):
    """Every folio of ``folios`` reads with mapping NULL while ``gone``
    (a whole file's folios leaving the page cache), reads counted."""

    def __init__(self, base, lay, folios):
        super().__init__(base)
        self.lay, self.folios = lay, folios
        self.gone = False
        self.reads = 0

    def read(self, addr, size):
        self.reads += 1
        buf = super().read(addr, size)
        fs = self.folios
        if self.gone and addr <= fs[-1] and addr + size > fs[0]:
            b = bytearray(buf)
            for f in fs:
                o = f + self.lay.f_mapping - addr
                if 0 <= o and o + 8 <= size:
                    b[o:o + 8] = bytes(8)
            buf = bytes(b)
        return buf


@pytest.mark.parametrize("how", ["truncated", "moved"])
def test_thousands_of_transient_findings_cost_a_few_walks(how):
    """A whole file's folios change between the walk's node reads and
    its folio reads (live-init's loops truncate 8192-page files):
    thousands of transient findings, judged with the reads of about three
    walks.  "truncated": nrpages and xa_head move too, the walk is
    simply walked again; "moved" (in place, nrpages unchanged: every leaf
    rewritten, as migration does): each finding's evidence is re-read in
    bulk - each node once, the folios in runs - not finding by finding."""
    _m, mem, lay = _lab()
    path = "/mnt/xfs/big64"
    clean = analyze(mem, path)
    folios = sorted(clean.folios)
    spec = "inode:0x%x" % clean.target.inode
    leaves = [n for n in clean.walk.nodes if n.eshift == 0]

    def change(c):
        c.gone = True
        if how == "truncated":
            c.patch_u64(clean.target.xarray + lay.xa_head, 0)
            c.patch_u64(clean.target.mapping + lay.as_nrpages, 0)
        else:
            for n in leaves:                # the nodes' bytes change
                c.patch_u8(n.addr + lay.node_nr_values, n.nr_values + 1)

    def settle(c):                          # the next walk: as before
        c.gone = False
        c.patches.clear()

    plain = _Vanishing(mem, lay, folios)
    analyze(plain, spec)
    one_walk = plain.reads
    cm = _Vanishing(mem, lay, folios)
    cm.when(folios[0], folios[0] + lay.folio_read_size, change)
    if how == "moved":
        root = clean.walk.nodes[0].addr
        cm.when(root, root + 1, settle, nth=3)   # walk, re-read, walk 2
    a = analyze(cm, spec, policy=NO_WAIT)
    assert a.verdict == "clean", (a.stability, a.findings[:3])
    assert a.stability.walks == 2
    assert a.stability.transient >= len(folios)
    assert cm.reads <= 3 * one_walk, (cm.reads, one_walk)


def test_truncate_in_progress_is_not_beyond_eof():
    """truncate_setsize() (mm/truncate.c) writes i_size, then drops the
    folios past it, under the inode's i_rwsem held for writing
    (do_truncate(), fs/open.c); a truncate waiting on writeback keeps that
    state for as long as the I/O takes.  A dump calls those folios
    FOLIO_BEYOND_EOF; live, they are not judged while a writer holds
    i_rwsem - and are, once nobody does and they are still there."""
    _m, mem, lay = _lab()
    path = "/mnt/xfs/big64"
    clean = analyze(mem, path)
    ino = clean.target.inode
    rw = (mem.member_offset("struct inode", "i_rwsem")
          + mem.member_offset("struct rw_semaphore", "count"))
    count = mem.read_u64(ino + rw)
    assert not count & 1                    # nobody writes in the dump

    def truncating(locked: bool) -> ChurnMemory:
        cm = ChurnMemory(mem)
        cm.patch_u64(ino + lay.inode_i_size, 4096)      # i_size_write()
        if locked:                                      # RWSEM_WRITER_LOCKED
            cm.patch_u64(ino + rw, count | 1)
        return cm

    dump = Dump(mem)
    dump.patches.update(truncating(True).patches)
    d = analyze(dump, path)
    assert "FOLIO_BEYOND_EOF" in {f.code for f in d.findings}, d.findings

    a = analyze(truncating(True), path, policy=NO_WAIT)
    assert a.verdict == "changing", (a.findings, a.stability)
    assert a.stability.unjudged_codes.get("FOLIO_BEYOND_EOF")
    assert any("i_rwsem" in c for c in a.stability.changes)

    a = analyze(truncating(False), path, policy=NO_WAIT)
    assert a.verdict == d.verdict
    assert {finding_key(f) for f in a.findings} == \
        {finding_key(f) for f in d.findings}
