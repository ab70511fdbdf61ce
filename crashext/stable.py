"""Judge a running kernel's tree only on stable evidence.

A live kernel changes its page cache while crashext reads it through
``/proc/kcore``, without the RCU read lock and without the ``xa_lock``.
The kernel's own lockless readers cope with that by a protocol, which
this module follows (Linux 6.1.192 as Debian builds 6.1.0-57, the live
lab's kernel; the same code in 6.1.176):

* lib/xarray.c: an RCU walker (``xas_load()`` -> ``xas_descend()``) can
  reach a node being freed: ``xas_shrink()`` and ``xas_free_nodes()`` zero
  its ``count`` / ``nr_values`` and put ``XA_RETRY_ENTRY`` in its slots,
  ``xa_node_free()`` sets ``node->array = XA_RCU_FREE`` before
  ``call_rcu()``, and ``xas_descend()`` turns a sibling that points at a
  node entry (``xas_split()`` at work) into a retry; ``xas_retry()`` then
  restarts the walk from the head.  A reader without RCU (crashext) can
  even see a node freed and reused by another tree.
* mm/filemap.c, "Lockless page cache protocol" (above
  ``mapping_get_entry()``): load the folio from ``i_pages``, take a
  reference only if the refcount is not zero (``folio_try_get_rcu()``: a
  frozen folio is being split, migrated or removed), then check that the
  slot still holds it (``xas_reload()``), else retry.
  ``__filemap_get_folio()`` re-checks ``folio->mapping`` once the folio
  is locked ("Has the page been truncated?").  ``page_cache_delete()``
  stores the shadow entry, then clears ``folio->mapping`` and lowers
  ``mapping->nrpages``, inside one ``xa_lock`` section: between two
  locked sections the tree, the folios and ``nrpages`` agree, inside one
  they need not.

crashext takes neither references nor locks, so it reads again instead:

1. analyse once (the one :func:`crashext.analyze.analyze` path); a walk
   without findings is the answer (nothing to judge).
2. at once, read again what each finding rests on (its *evidence*): the
   node(s) it names, the slot of every ancestor on the path down from
   ``xa_head`` (what ``xas_reload()`` re-checks), its folio(s) (mapping,
   index, order, compound_head, refcount zero / below the page count),
   and ``nrpages`` / ``i_size`` / ``xa_head`` before and after the walk
   (for findings about the whole tree: ``NRPAGES``, ``NODE_CYCLE``...).
   A finding whose evidence changed is not judged from this walk.  The
   evidence of all findings is read in bulk (each node once, the folios
   in runs); a walk during which ``nrpages`` or ``xa_head`` moved and
   that found more than :data:`MAX_JUDGED` findings (a file truncated
   under it) is simply walked again.
3. walk again after a pause (doubling, bounded), at most ``attempts``
   walks in all; a finding is reported only when ``confirm`` consecutive
   walks found it with the same evidence, each time unchanged on re-read.
   One ``xa_lock`` section lasts microseconds, so a state seen twice,
   milliseconds apart, is not half of one: it is the tree.  Evidence in a
   state the kernel's readers retry on (a retry or zero entry, a node
   being freed, a sibling pointing at a node, a folio with refcount 0)
   needs one confirmation more.
4. findings gone in a later walk were transient and are dropped; when
   the walks run out, findings never confirmed leave the tree "changing,
   not judged" (verdict ``changing``), never ``corrupt``.

>>> a = analyze(live_mem, "/data/churn2")        # doctest: +SKIP
>>> a.verdict, a.stability.walks                 # doctest: +SKIP
('clean', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .findings import Finding
from .folio import read_folios
from .layout import Layout
from .memory import CrashextError, Memory, UnreadableMemory
from .targets import Target, TargetState, read_state, refresh_target
from .xarray import entry as E
from .xarray.walk import node_fields, node_reader

#: Findings about the whole tree: their evidence is every node, every
#: folio and the mapping's header.
TREE_WIDE = frozenset(("NRPAGES", "WALK_TRUNCATED", "NODE_CYCLE",
                       "SIBLING_IN_HEAD"))

#: Findings that compare the tree with ``i_size``.  A truncate writes
#: i_size, then drops the folios past it; a write adds a folio, then moves
#: i_size; both hold the inode's ``i_rwsem`` for writing (``do_truncate()``
#: in fs/open.c -> ``truncate_setsize()`` in mm/truncate.c; buffered
#: writes): judged only on walks during which no writer held it
#: (:attr:`crashext.targets.TargetState.writer_locked`).
I_SIZE_CODES = frozenset(("FOLIO_BEYOND_EOF",))

#: States a lockless kernel reader retries on (``xas_retry()``,
#: ``xas_descend()``, ``xa_node_free()``, ``xas_shrink()``): confirmed
#: only by one walk more.
TRANSITIONAL = frozenset(("RETRY_ENTRY", "ZERO_ENTRY", "NODE_FREEING",
                          "NODE_EMPTY", "SIBLING_TO_NODE"))

#: Change descriptions kept per tree.
MAX_CHANGES = 4

#: A walk during which nrpages or xa_head moved and that found more than
#: this many findings is not judged finding by finding: it is walked
#: again (its findings count as unconfirmed).
MAX_JUDGED = 256


@dataclass
class LivePolicy:
    """How hard to try before a live tree is "changing, not judged".

    ``attempts`` walks at most; a finding needs ``confirm`` consecutive
    walks with the same evidence; the pause before walk k is ``pause *
    2**(k-2)`` seconds, at most ``max_pause``.  ``sleep`` defaults to
    ``time.sleep`` (tests pass their own)."""

    attempts: int = 6
    confirm: int = 2
    pause: float = 0.02
    max_pause: float = 0.25
    sleep: Optional[Callable[[float], None]] = None

    def pause_before(self, walk: int) -> float:
        return min(self.pause * 2 ** max(walk - 2, 0), self.max_pause)


@dataclass
class Stability:
    """How a live tree was judged (``Analysis.stability``)."""

    walks: int = 0
    judged: bool = True         # False: verdict "changing, not judged"
    confirmed: int = 0          # findings reported
    unjudged: int = 0           # findings of the last walk never confirmed
    transient: int = 0          # findings gone in a later walk
    unjudged_codes: Dict[str, int] = field(default_factory=dict)
    changes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"walks": self.walks, "judged": self.judged,
                "confirmed": self.confirmed, "unjudged": self.unjudged,
                "transient": self.transient,
                "unjudged_codes": dict(self.unjudged_codes),
                "changes": list(self.changes)}


# ----------------------------------------------------------------------
# Evidence: what a finding rests on


@dataclass(frozen=True)
class Evidence:
    """Nodes read whole, ``(holder, slot)`` path links up to ``xa_head``,
    folios; ``whole``: the whole tree and the mapping's header."""

    nodes: Tuple[int, ...] = ()
    paths: Tuple[Tuple[int, int], ...] = ()
    folios: Tuple[int, ...] = ()
    whole: bool = False


def finding_key(f: Finding) -> Tuple[Any, ...]:
    """What must be equal for two walks to have found the same thing."""
    return (f.code, f.node, tuple(f.slots), tuple(f.indices), f.folio,
            _hashable(f.expected), _hashable(f.found), f.shift, f.order,
            f.address)


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (int, str, type(None))) else repr(v)


def evidence_of(f: Finding, by_addr: Dict[int, Any],
                paths_of: Optional[Callable[[int], Tuple[Any, ...]]] = None
                ) -> Evidence:
    """The :class:`Evidence` of ``f`` in a walk whose nodes are
    ``by_addr`` (address -> NodeRec); ``paths_of(node)`` (a cache of
    :func:`path_links`) speeds up many findings of one walk."""
    if f.code in TREE_WIDE:
        return Evidence(whole=True)
    nodes = set()
    if f.node:
        nodes.add(f.node)
    extra = f.extra
    if extra:
        for n in extra.get("nodes") or ():
            if n:
                nodes.add(n)
        if extra.get("parent"):
            nodes.add(extra["parent"])
    paths_of = paths_of or (lambda a: path_links(by_addr, a))
    if len(nodes) == 1:
        (a,) = nodes
        ns, paths = (a,), paths_of(a)
    else:
        ns = tuple(sorted(nodes))
        paths = tuple(sorted({p for a in ns for p in paths_of(a)}))
    folios: Tuple[int, ...] = ()
    if f.folio:
        folios = (f.folio,)
    if f.code == "FOLIO_UNREADABLE" and f.address and f.address != f.folio:
        folios = tuple(sorted(folios + (f.address,)))
    return Evidence(ns, paths, folios)


def path_links(by_addr: Dict[int, Any], addr: int) -> Tuple[Any, ...]:
    """``(holder, slot)`` of node ``addr`` and of each ancestor up to the
    root (whose link is ``xa_head``), sorted."""
    paths = []
    rec = by_addr.get(addr)
    seen = 0
    while rec is not None and rec.holder and seen < 64:
        paths.append((rec.holder, rec.holder_slot))
        rec = by_addr.get(rec.holder)
        seen += 1
    return tuple(sorted(paths))


def folio_sig(f: Any, pg_head: int) -> Any:
    """The folio fields a finding can rest on: mapping, index, order,
    compound_head, PG_head, and whether the refcount is 0, below the
    page count or not (its exact value moves with every reader)."""
    if f is None:
        return None
    rc = f.refcount
    ref = 0 if rc <= 0 else (1 if rc < f.nr_pages else 2)
    head = f.flags >> pg_head & 1 if 0 <= pg_head < 64 else 0
    return (f.mapping, f.index, f.order, f.compound_head, head, ref)


class _FirstRead:
    """Evidence signatures from what the walk itself read (each node,
    path and folio computed once per walk)."""

    def __init__(self, a: Any, lay: Layout, header: Tuple[Any, ...]) -> None:
        self.a = a
        self.lay = lay
        self.header = header
        self.by_addr = {n.addr: n for n in a.walk.nodes}
        self._tree: Optional[int] = None
        self._nodes: Dict[int, Any] = {}
        self._paths: Dict[int, Tuple[Any, ...]] = {}
        self._folios: Dict[int, Any] = {}

    def paths_of(self, addr: int) -> Tuple[Any, ...]:
        p = self._paths.get(addr)
        if p is None:
            p = self._paths[addr] = path_links(self.by_addr, addr)
        return p

    def evidence(self, f: Finding) -> Evidence:
        return evidence_of(f, self.by_addr, self.paths_of)

    def node(self, addr: int) -> Any:
        if addr not in self._nodes:
            n = self.by_addr.get(addr)
            self._nodes[addr] = None if n is None else node_fields(n)
        return self._nodes[addr]

    def link(self, holder: int, slot: int) -> Any:
        n = self.by_addr.get(holder)
        return None if n is None or not 0 <= slot < len(n.slots) \
            else n.slots[slot]

    def head(self) -> int:
        return self.a.walk.head

    def folio(self, addr: int) -> Any:
        if addr not in self._folios:
            self._folios[addr] = folio_sig(self.a.folios.get(addr),
                                           self.lay.pg_head)
        return self._folios[addr]

    def of(self, ev: Evidence) -> Tuple[Any, ...]:
        return (tuple(map(self.node, ev.nodes)),
                tuple(self.link(h, s) for h, s in ev.paths),
                self.head(), tuple(map(self.folio, ev.folios)))

    def tree(self) -> int:
        """One number for the whole walk: every node, every folio read,
        the header (nrpages, i_size, xa_head)."""
        if self._tree is None:
            w = self.a.walk
            folios = self.a.folios
            pg = self.lay.pg_head
            self._tree = hash((
                self.header, w.head,
                tuple((n.addr, node_fields(n)) for n in w.nodes),
                tuple((x, folio_sig(folios.get(x), pg))
                      for x in sorted(folios))))
        return self._tree

    def transitional(self, f: Finding, ev: Evidence) -> bool:
        """``f`` rests on a state lockless readers retry on."""
        if f.code in TRANSITIONAL:
            return True
        for x in ev.folios:
            s = self.folio(x)
            if s is not None and s[5] == 0:         # refcount 0: frozen
                return True
        for a in ev.nodes:
            n = self.by_addr.get(a)
            if n is not None and n.array == E.XA_RCU_FREE:
                return True
        return False


class _Reread:
    """The same evidence read again now: each node once (an ancestor's
    slot comes from its node), every folio in one :func:`read_folios`
    (runs), before any finding is compared (:meth:`prefetch`)."""

    def __init__(self, mem: Memory, lay: Layout, xarray: int) -> None:
        self.mem = mem
        self.lay = lay
        self.xarray = xarray
        self.read_node = node_reader(lay)
        self._nodes: Dict[int, Any] = {}
        self._folios: Dict[int, Any] = {}
        self._head: Any = None

    def prefetch(self, evs: List[Evidence]) -> None:
        nodes, folios = set(), set()
        for ev in evs:
            nodes.update(ev.nodes)
            nodes.update(h for h, _s in ev.paths)
            folios.update(ev.folios)
        for a in sorted(nodes):
            self.node(a)
        todo = sorted(folios.difference(self._folios))
        if todo:
            recs, _bad = read_folios(self.mem, self.lay, todo)
            pg = self.lay.pg_head
            for x in todo:
                self._folios[x] = folio_sig(recs.get(x), pg)
        self.head()

    def node(self, addr: int) -> Any:
        if addr not in self._nodes:
            try:
                self._nodes[addr] = self.read_node(self.mem, addr)
            except UnreadableMemory:
                self._nodes[addr] = "unreadable"
        return self._nodes[addr]

    def link(self, holder: int, slot: int) -> Any:
        n = self.node(holder)
        if n == "unreadable" or not 0 <= slot < len(n[6]):
            return "unreadable"
        return n[6][slot]               # NODE_FIELDS: slots

    def head(self) -> Any:
        if self._head is None:
            try:
                self._head = self.mem.read_u64(self.xarray + self.lay.xa_head)
            except UnreadableMemory:
                self._head = "unreadable"
        return self._head

    def folio(self, addr: int) -> Any:
        if addr not in self._folios:
            self.prefetch([Evidence(folios=(addr,))])
        return self._folios[addr]

    def of(self, ev: Evidence) -> Tuple[Any, ...]:
        return (tuple(map(self.node, ev.nodes)),
                tuple(self.link(h, s) for h, s in ev.paths),
                self.head(), tuple(map(self.folio, ev.folios)))


def header_state(st: TargetState) -> Tuple[Any, ...]:
    """``(nrpages, i_size, xa_head)`` of a :class:`TargetState`."""
    return (st.nrpages, st.i_size, st.xa_head)


def _header_change(before: Tuple[Any, ...], after: Tuple[Any, ...]) -> str:
    names = ("nrpages", "i_size", "xa_head")
    for n, b, a in zip(names, before, after):
        if b != a:
            fmt = "%s 0x%x -> 0x%x" if n == "xa_head" else "%s %d -> %d"
            if b is None or a is None:
                fmt = "%s %s -> %s"
            return (fmt + " during the walk") % (n, b, a)
    return ""


# ----------------------------------------------------------------------
# The judged analysis


def analyze_stable(mem: Memory, lay: Layout, target: Target,
                   run: Callable[[Target], Any],
                   conclude: Callable[[Any], None],
                   policy: Optional[LivePolicy] = None) -> Any:
    """Analyse ``target`` on a live kernel: ``run(target)`` is one plain
    analysis (a walk and every check); this calls it until each finding
    is confirmed on stable evidence, or the walks run out (see the
    module docstring).  Returns the last walk's ``Analysis`` holding only
    confirmed findings, with ``stability`` set and ``conclude(a)``
    (impact, explanations) done on them."""
    pol = policy or LivePolicy()
    sleep = pol.sleep
    if sleep is None:
        import time
        sleep = time.sleep
    counts: Dict[Tuple[Any, ...], Tuple[Any, int]] = {}
    needed: Dict[Tuple[Any, ...], int] = {}
    seen: set = set()
    changes: List[str] = []
    last: Any = None
    t = target
    walks = 0
    for k in range(1, max(pol.attempts, 1) + 1):
        if k > 1:
            sleep(pol.pause_before(k))
        # nrpages / i_size / xa_head as they are now (one read), and the
        # inode still the mapping's (evicted and reused: another tree).
        state = read_state(mem, lay, target)
        try:
            t = refresh_target(mem, lay, target, state)
        except CrashextError as e:
            _note(changes, str(e))
            if k > 1:
                break
            t = target      # walked as named; its findings cannot hold
        before = header_state(state)
        writer = state.writer_locked
        try:
            a = run(t)
        except CrashextError as e:
            if k == 1:
                raise       # not analysable at all: the caller's error
            _note(changes, str(e))
            break
        walks = k
        state = read_state(mem, lay, t)
        after = header_state(state)
        writer = writer or state.writer_locked
        last = a
        if not a.findings:
            return _finish(a, walks, [], seen, changes, True, conclude)
        moved = _header_change(before, after)
        if moved:
            _note(changes, moved)
        if moved and len(a.findings) > MAX_JUDGED:
            # The tree changed during the walk (nrpages / xa_head moved)
            # and thousands of findings came of it (a file truncated
            # under the walk): walk again rather than judge each one.
            _note(changes, "%d findings while the tree changed: walked "
                  "again" % len(a.findings))
            seen.update(map(finding_key, a.findings))
            counts, needed = {}, {}
            continue
        first = _FirstRead(a, lay, before)
        again = _Reread(mem, lay, t.xarray)
        evs = [first.evidence(f) for f in a.findings]
        again.prefetch([ev for ev in evs if not ev.whole])
        new_counts: Dict[Tuple[Any, ...], Tuple[Any, int]] = {}
        needed = {}
        for f, ev in zip(a.findings, evs):
            key = finding_key(f)
            seen.add(key)
            if ev.whole:
                if moved:
                    continue
                sig: Any = ("tree", first.tree())
            else:
                sig = first.of(ev)
                now = again.of(ev)
                if now != sig:
                    _note(changes, _what_changed(ev, sig, now))
                    continue
                if f.code in I_SIZE_CODES:
                    if moved or writer:
                        _note(changes, "i_size not settled (i_rwsem held "
                              "for writing)" if writer else moved)
                        continue
                    sig = sig + (before,)
            prev = counts.get(key)
            n = prev[1] + 1 if prev is not None and prev[0] == sig else 1
            new_counts[key] = (sig, n)
            needed[key] = pol.confirm + (1 if first.transitional(f, ev)
                                         else 0)
        counts = new_counts
        confirmed = [f for f in a.findings
                     if counts.get(finding_key(f), (None, 0))[1]
                     >= needed.get(finding_key(f), pol.confirm)]
        if len(confirmed) == len(a.findings):
            return _finish(a, walks, confirmed, seen, changes, True,
                           conclude)
    if last is None:                    # cannot happen: walk 1 raises
        raise CrashextError("live: no walk made")
    confirmed = [f for f in last.findings
                 if counts.get(finding_key(f), (None, 0))[1]
                 >= needed.get(finding_key(f), pol.confirm)]
    return _finish(last, walks, confirmed, seen, changes,
                   bool(confirmed), conclude)


def _note(changes: List[str], text: str) -> None:
    if text and text not in changes and len(changes) < MAX_CHANGES:
        changes.append(text)


def _what_changed(ev: Evidence, sig: Tuple[Any, ...],
                  now: Tuple[Any, ...]) -> str:
    """One short phrase naming the first item of ``ev`` that changed."""
    for a, x, y in zip(ev.nodes, sig[0], now[0]):
        if x != y:
            return "node 0x%x changed on re-read" % a
    for (h, s), x, y in zip(ev.paths, sig[1], now[1]):
        if x != y:
            return "slot %d of node 0x%x changed on re-read" % (s, h)
    if sig[2] != now[2]:
        return "xa_head changed on re-read"
    for a, x, y in zip(ev.folios, sig[3], now[3]):
        if x != y:
            return "folio 0x%x changed on re-read" % a
    return "evidence changed on re-read"


def _finish(a: Any, walks: int, confirmed: List[Finding], seen: set,
            changes: List[str], judged: bool,
            conclude: Callable[[Any], None]) -> Any:
    kept = {finding_key(f) for f in confirmed}
    last = {finding_key(f) for f in a.findings}
    unjudged = [f for f in a.findings if finding_key(f) not in kept]
    st = Stability(walks=walks, judged=judged, confirmed=len(confirmed),
                   unjudged=len(unjudged), transient=len(seen - last),
                   changes=list(changes))
    for f in unjudged:
        st.unjudged_codes[f.code] = st.unjudged_codes.get(f.code, 0) + 1
    a.findings = list(confirmed)
    # The walks' own analyses stop at the checks (crashext.analyze):
    # what is reported is concluded once.
    conclude(a)
    a.stability = st
    a.notes.extend(stability_notes(st))
    return a


def stability_notes(st: Stability) -> List[str]:
    """Short lines (chat width) saying how the live tree was judged."""
    out = []
    if not st.judged:
        out.append("live: changing, not judged (%d walks)" % st.walks)
    if st.confirmed:
        out.append("live: %d finding(s) confirmed in %d walks"
                   % (st.confirmed, st.walks))
    if st.unjudged:
        out.append("live: %d finding(s) on changing evidence"
                   % st.unjudged)
    if st.transient:
        out.append("live: %d transient finding(s) dropped" % st.transient)
    out.extend("live: " + c for c in st.changes[:2])
    return out


def stable_slots(mem: Memory, hits: List[Any],
                 policy: Optional[LivePolicy] = None) -> List[Any]:
    """The ``hits`` (objects with ``node``, ``slot``, ``entry`` and
    ``xarray``, e.g. :class:`crashext.triage.reverse.Hit`) whose slot
    still holds ``entry`` when read again after each of
    ``policy.confirm`` pauses, in a node still owned by the tree: a slot
    seen once can be a folio on its way out (``xas_reload()`` would not
    find it again), and a node being freed has ``array == XA_RCU_FREE``
    until radix_tree_node_rcu_free() zeroes its slots."""
    from .analyze import layout_for
    pol = policy or LivePolicy()
    sleep = pol.sleep
    if sleep is None:
        import time
        sleep = time.sleep
    lay = layout_for(mem)
    read = node_reader(lay)
    kept = list(hits)
    for k in range(max(pol.confirm, 1)):
        if not kept:
            break
        sleep(pol.pause_before(k + 2))
        again = []
        for h in kept:
            try:
                if h.node:
                    n = read(mem, h.node)
                    ok = n[5] == h.xarray and n[6][h.slot] == h.entry
                else:
                    ok = mem.read_u64(h.xarray + lay.xa_head) == h.entry
            except (UnreadableMemory, IndexError):
                ok = False
            if ok:
                again.append(h)
        kept = again
    return kept


__all__ = ["LivePolicy", "stable_slots", "Stability", "Evidence", "analyze_stable",
           "evidence_of", "finding_key", "folio_sig", "header_state",
           "stability_notes", "TREE_WIDE", "TRANSITIONAL"]
