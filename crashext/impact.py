"""What the damage means for the file: the byte ranges whose page cache
reads wrong, and the data at risk.

A reader finds the folio for index ``i`` as ``filemap_get_read_batch()``
does (mm/filemap.c): ``xas_load()`` descends the tree; a sibling slot is
followed once to its canonical slot (``xas_descend()``, lib/xarray.c);
the bytes come from the folio at ``pos & (folio_size - 1)`` - i.e. from
the folio's own range ``[folio->index, folio->index + nr)``, wherever the
tree holds it.  Comparing what the damaged tree serves at each index
with what the folios themselves say gives, per range of the file:

* ``aliased`` - the folio is this file's, but its own range is another
  one: the bytes of that range are read here (a stale split, a folio at
  a wrong slot, a shared subtree at its second position);
* ``foreign`` - the folio's ``mapping`` is another file's: that file's
  bytes are read here, and what is written here is written back there;
* ``stale`` - the folio belongs to no file (``mapping`` NULL: removed by
  ``page_cache_delete()``; anon/movable/KSM bits: reused), or the entry
  is a tail page;
* ``lost`` - a folio of this file the tree no longer holds at its index
  (found under a cut-off node or in the memory map, :mod:`crashext.lost`),
  or a slot whose siblings point at an emptied canonical slot: reads fall
  through to the disk, right only if the folio was clean;
* ``unknown`` - an unreadable node or folio, or an entry no reader can
  use (retry, bad internal, a node entry in a leaf);
* ``beyond_eof`` - folios cached wholly past ``i_size`` (the
  FOLIO_BEYOND_EOF finding): readers stop at EOF, writeback drops them.

Each range carries the state of its folios (PG_dirty, PG_writeback,
PG_locked, PG_uptodate, :func:`crashext.folio.folio_state`).  A dirty or
writeback folio that is lost, or reached at a wrong index, or that is
another file's or no file's, is **data at risk**: never written back (its
dirty mark is gone with its slot: writeback finds folios through the
PAGECACHE_TAG_DIRTY mark), or written back to the wrong place.

>>> imp = assess(analysis, mem)                       # doctest: +SKIP
>>> [(r.kind, hex(r.first), r.pages) for r in imp.ranges]   # doctest: +SKIP
[('aliased', '0x420', 32)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .folio import FolioRec, folio_state
from .lost import Lost, account
from .memory import KERNEL_MIN, Memory
from .xarray import entry as E

#: Range kinds, most telling first (the order ranges are listed in).
KINDS: Dict[str, str] = {
    "lost": "folio lost: the tree no longer holds it here",
    "aliased": "reads another range of this file",
    "foreign": "reads another file's folio",
    "stale": "reads a folio no file owns",
    "unknown": "cannot tell: unreadable or unusable entry",
    "beyond_eof": "folio cached past i_size",
}

#: Kinds whose dirty / writeback folios are data at risk.
RISK_KINDS = ("lost", "aliased", "foreign", "stale")

#: Folio addresses kept per range (the count keeps all).
MAX_FOLIOS = 8
#: Source ranges kept per aliased range.
MAX_SOURCES = 8


@dataclass
class Range:
    """A run of indices ``[first, last]`` of one kind."""

    kind: str
    first: int
    last: int
    folios: List[int] = field(default_factory=list)   # capped
    nr_folios: int = 0
    #: folios in the range with each state flag set (dirty, writeback,
    #: locked, uptodate), counted once per folio.
    state: Dict[str, int] = field(default_factory=dict)
    #: aliased: the index ranges (inclusive) whose data is read here.
    sources: List[Tuple[int, int]] = field(default_factory=list)
    delta: Optional[int] = None        # aliased: source - index, if one
    mapping: Optional[int] = None      # foreign/stale: folio->mapping
    other_ino: Optional[int] = None    # foreign: the other inode number
    found: str = ""                    # lost: where it was found
    node: Optional[int] = None         # lost: cut-off node; unknown: node
    reached_at: Tuple[int, ...] = ()   # lost: indices it is reached at
    beyond_eof: bool = False           # wholly past i_size
    why: str = ""                      # short cause ("dangling siblings")
    _seen: Dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def pages(self) -> int:
        return self.last - self.first + 1

    @property
    def at_risk(self) -> bool:
        """Dirty or writeback data that will not reach its place."""
        return self.kind in RISK_KINDS and bool(
            self.state.get("dirty") or self.state.get("writeback"))

    @property
    def reads_wrong(self) -> bool:
        """A reader of these bytes gets wrong data: everything but bytes
        past EOF and a lost folio that was not dirty (the bytes are read
        again from the disk; a lost folio nobody found is not counted:
        its state is unknown)."""
        if self.kind == "beyond_eof":
            return False
        if self.kind == "lost":
            return self.at_risk
        return True

    def add_folio(self, addr: int, state: Tuple[str, ...]) -> None:
        if addr in self._seen:
            return
        self._seen[addr] = 1
        self.nr_folios += 1
        if len(self.folios) < MAX_FOLIOS:
            self.folios.append(addr)
        for s in state:
            self.state[s] = self.state.get(s, 0) + 1

    def add_source(self, lo: int, hi: int) -> None:
        src = self.sources
        for k, (a, b) in enumerate(src):
            if lo <= b + 1 and a <= hi + 1:
                src[k] = (min(a, lo), max(b, hi))
                return
        if len(src) < MAX_SOURCES:
            src.append((lo, hi))
            src.sort()

    def byte_range(self, page_shift: int) -> Tuple[int, int]:
        """``(offset, length)`` in bytes of the file."""
        return self.first << page_shift, self.pages << page_shift


@dataclass
class Impact:
    """What the damage of one tree means for its file."""

    page_shift: int
    i_size: Optional[int]
    ranges: List[Range] = field(default_factory=list)
    lost: Optional[Lost] = None
    notes: List[str] = field(default_factory=list)

    @property
    def at_risk(self) -> List[Range]:
        return [r for r in self.ranges if r.at_risk]

    def pages(self, ranges: Iterable[Range]) -> int:
        """Pages covered by ``ranges`` (overlaps counted once)."""
        spans = sorted((r.first, r.last) for r in ranges)
        total, end = 0, -1
        for a, b in spans:
            if b <= end:
                continue
            total += b - max(a, end + 1) + 1
            end = b
        return total

    @property
    def wrong_pages(self) -> int:
        """Pages of the file that read wrong data (see
        :attr:`Range.reads_wrong`)."""
        return self.pages(r for r in self.ranges if r.reads_wrong)

    @property
    def risk_pages(self) -> int:
        return self.pages(self.at_risk)


# ----------------------------------------------------------------------
# Pieces: what the reader gets, per slot


class _Pieces:
    """Collects ``(kind, first, last, attributes)`` pieces."""

    def __init__(self, a: Any) -> None:
        self.a = a
        self.lay = a.layout
        self.M = a.target.mapping
        self.items: List[Tuple[str, int, int, Dict[str, Any]]] = []
        self.other: Dict[int, Optional[int]] = {}

    def add(self, kind: str, first: int, last: int, **kw: Any) -> None:
        self.items.append((kind, first, last, kw))

    def state(self, f: FolioRec) -> Tuple[str, ...]:
        return folio_state(self.lay, f.flags)

    def folio(self, raw: int, lo: int, hi: int, node: Optional[int]) -> None:
        """The folio ``raw`` serves indices ``[lo, hi]``."""
        f = self.a.folios.get(raw) if raw >= KERNEL_MIN else None
        if f is None:
            self.add("unknown", lo, hi, node=node, why="folio unreadable")
            return
        st = self.state(f)
        if f.is_tail:
            self.add("stale", lo, hi, folio=raw, st=st, why="tail page",
                     mapping=f.mapping)
            return
        if f.mapping != self.M:
            live = f.mapping and not f.mapping & 3 \
                and f.mapping >= KERNEL_MIN
            kind = "foreign" if live else "stale"
            why = ("another file" if live else "mapping NULL: removed"
                   if not f.mapping else "reused page")
            self.add(kind, lo, hi, folio=raw, st=st, mapping=f.mapping,
                     why=why)
            return
        own_lo, own_hi = f.index, f.index + f.nr_pages - 1
        # The part outside the folio's own range reads that range's data.
        for a_, b_ in ((lo, min(hi, own_lo - 1)), (max(lo, own_hi + 1), hi)):
            if a_ <= b_:
                self.add("aliased", a_, b_, folio=raw, st=st,
                         source=(own_lo, own_hi), delta=own_lo - a_ + (
                             (a_ - own_lo) % f.nr_pages))

    def node(self, n: Any) -> None:
        """Every slot of node position ``n`` (a NodeRec)."""
        chunk = self.lay.chunk_size
        sh = n.eshift
        width = 1 << sh
        kind_of = E.kind_of
        slots = n.slots
        dangling = set()
        for i, raw in enumerate(slots):
            k = kind_of(raw, chunk)
            if k in (E.EMPTY, E.VALUE):
                continue
            lo = n.index + (i << sh)
            hi = lo + width - 1
            if k == E.NODE:
                if sh == 0:
                    self.add("unknown", lo, hi, node=n.addr,
                             why="node entry in a leaf")
                continue
            if k == E.SIBLING:
                t = raw >> 2
                tgt = slots[t] if t < chunk else 0
                kt = kind_of(tgt, chunk)
                if kt == E.POINTER:
                    self.folio(tgt, lo, hi, n.addr)
                elif kt == E.EMPTY:
                    # xas_descend() follows the sibling to an empty slot:
                    # the multi-index entry it was part of is gone.
                    self.add("lost", lo, hi, node=n.addr,
                             why="dangling siblings")
                    dangling.add(t)
                elif kt != E.VALUE:
                    self.add("unknown", lo, hi, node=n.addr,
                             why="sibling to a non-folio")
                continue
            if k == E.POINTER:
                self.folio(raw, lo, hi, n.addr)
                continue
            self.add("unknown", lo, hi, node=n.addr,
                     why=E.KIND_NAMES.get(k, "bad") + " entry")
        for t in dangling:      # the emptied canonical slot itself
            lo = n.index + (t << sh)
            self.add("lost", lo, lo + width - 1, node=n.addr,
                     why="dangling siblings")


def _nodes_to_view(a: Any) -> List[Any]:
    """Node positions whose slots the findings touch: the nodes they
    name, every position of a shared node and of the nodes under it."""
    names = set()
    spans = []
    for f in a.findings:
        if f.node is not None:
            names.add(f.node)
        for x in (f.extra or {}).get("nodes") or []:
            if x:
                names.add(x)
        if f.code == "NODE_SHARED":
            ex = f.extra or {}
            span = ex.get("span") or 0
            for i in (ex.get("first_index"), f.indices[0] if f.indices
                      else None):
                if i is not None and span:
                    spans.append((i, i + span))
    out = []
    for n in a.walk.nodes:
        if n.addr in names or n.visit or any(
                lo <= n.index < hi for lo, hi in spans):
            out.append(n)
    return out


def _merge(items: List[Tuple[str, int, int, Dict[str, Any]]],
           eof: Optional[int]) -> List[Range]:
    """Pieces into ranges: adjacent pieces of one kind merge when they
    tell the same thing (aliased: the same folio or the same shift of
    index; foreign: the same mapping; lost: the same finding place)."""
    order = {k: i for i, k in enumerate(KINDS)}
    items.sort(key=lambda it: (order.get(it[0], 9), it[1], it[2]))
    out: List[Range] = []
    cur: Optional[Range] = None
    for kind, lo, hi, kw in items:
        folio = kw.get("folio")
        if cur is not None and cur.kind == kind and lo <= cur.last + 1 \
                and _same(cur, kind, kw):
            if kind == "aliased" and cur.delta != kw.get("delta"):
                cur.delta = None
            cur.last = max(cur.last, hi)
        else:
            cur = Range(kind, lo, hi, delta=kw.get("delta"),
                        mapping=kw.get("mapping"), found=kw.get("found", ""),
                        node=kw.get("node"), why=kw.get("why", ""),
                        reached_at=tuple(kw.get("reached_at") or ()))
            out.append(cur)
        if folio is not None:
            cur.add_folio(folio, kw.get("st") or ())
        if kw.get("source"):
            cur.add_source(*kw["source"])
    for r in out:
        r.beyond_eof = eof is not None and r.first >= eof
        r._seen = {}
    return out


def _same(r: Range, kind: str, kw: Dict[str, Any]) -> bool:
    if kind == "aliased":
        return kw.get("folio") in r._seen or (
            r.delta is not None and r.delta == kw.get("delta"))
    if kind in ("foreign", "stale"):
        return r.mapping == kw.get("mapping") and r.why == kw.get("why", "")
    if kind == "lost":
        return r.found == kw.get("found", "") and r.why == kw.get("why", "") \
            and r.node == kw.get("node")
    return r.why == kw.get("why", "")


def assess(a: Any, mem: Optional[Memory] = None, memmap: Any = None,
           slab_nodes: Optional[Iterable[Any]] = None) -> Impact:
    """The impact of ``a``'s findings on its file (``a``: an Analysis),
    with the nrpages accounting of :func:`crashext.lost.account`
    (``memmap``, ``slab_nodes``: see there)."""
    lay = a.layout
    t = a.target
    shift = lay.page_shift if lay is not None else 12
    imp = Impact(page_shift=shift, i_size=t.i_size)
    if t.mapping is None or getattr(t, "swap_cache", False):
        imp.notes.append("not a file's page cache: no byte ranges")
        return imp
    if t.fs_type == "hugetlbfs":
        imp.notes.append("hugetlbfs: byte ranges not computed")
        return imp
    eof = None
    if t.i_size is not None and 0 <= t.i_size < 1 << 62:
        eof = (t.i_size + (1 << shift) - 1) >> shift
    imp.lost = lost = account(a, mem, memmap, slab_nodes)
    p = _Pieces(a)
    if a.findings:
        for n in _nodes_to_view(a):
            p.node(n)
        w = a.walk
        if E.kind_of(w.head, lay.chunk_size) == E.POINTER:
            p.folio(w.head, 0, 0, None)
        for u in lost.unreadable:
            p.add("unknown", u.index, u.index + max(u.span, 1) - 1,
                  node=u.node, why="node unreadable")
        for f in a.findings:
            if f.code == "FOLIO_BEYOND_EOF" and f.folio:
                r = a.folios.get(f.folio)
                if r is not None:
                    i = f.indices[0]
                    p.add("beyond_eof", i, i + r.nr_pages - 1,
                          folio=f.folio, st=p.state(r))
    # Folios the tree lost; their exact story beats the trace of
    # dangling siblings over the same indices.
    exact = []
    for x in lost.folios:
        f = x.folio
        lo, hi = f.index, f.index + f.nr_pages - 1
        exact.append((lo, hi))
        found = ("cut-off node" if x.found == "cut-off node"
                 else "memory map")
        why = ("reached at another index" if x.reached_at else
               "under an unreadable node" if x.unreadable else "cut off")
        p.add("lost", lo, hi, folio=f.addr, st=p.state(f), found=found,
              node=x.node, reached_at=x.reached_at, why=why)
    if exact:
        p.items = [it for it in p.items
                   if not (it[0] == "lost" and it[3].get("why") ==
                           "dangling siblings" and any(
                               lo <= it[2] and it[1] <= hi
                               for lo, hi in exact))]
    imp.ranges = _merge(p.items, eof)
    # Data at risk first, then what reads wrong, by kind, by index.
    order = {k: i for i, k in enumerate(KINDS)}
    imp.ranges.sort(key=lambda r: (not r.at_risk, not r.reads_wrong,
                                   order.get(r.kind, 9), r.first))
    for r in imp.ranges:
        if r.kind == "foreign" and r.mapping:
            r.other_ino = _ino(mem, lay, r.mapping, p.other)
    return imp


def _ino(mem: Optional[Memory], lay: Any, mapping: int,
         cache: Dict[int, Optional[int]]) -> Optional[int]:
    """``mapping->host->i_ino`` (None when unreadable)."""
    if mapping in cache:
        return cache[mapping]
    ino = None
    if mem is not None:
        from .memory import UnreadableMemory
        try:
            host = mem.read_u64(mapping + lay.as_host)
            if host:
                ino = mem.read_u64(host + lay.inode_i_ino)
        except UnreadableMemory:
            ino = None
    cache[mapping] = ino
    return ino
