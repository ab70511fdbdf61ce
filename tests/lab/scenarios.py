"""Planted XArray / folio corruption cases with ground truth (test support).

Each case looks at a real lab dump with drgn (its own small XArray walker,
independent of crashext), picks a target that satisfies the kernel's
invariants (``include/linux/xarray.h``, ``lib/xarray.c``), and returns
``(writes, truth)``: ``writes`` is a list of ``(kernel_vaddr, bytes)`` for
:func:`tests.lab.plant.plant`, ``truth`` says what a checker must report
(finding codes of :mod:`crashext.findings`, the XArray indices, node and
slots).  Cases claim disjoint index ranges, so several can be planted into
one dump (:func:`build_cases`) without disturbing each other.

Truth keys: ``case``, ``file`` (guest path), ``xarray`` (i_pages, hex),
``codes`` (must be reported), ``may_also`` (consequences a checker may or may
not report, e.g. the run-size finding of a broken sibling run),
``must_not`` (must not be reported for this case's node / indices),
``indices`` (XArray indices the findings must name), ``node`` (the node that
was written, hex), ``slots`` (its slots written), ``expect`` (one record per
expected finding with code / node / slots / indices / folio /
expected / found), ``nrpages`` (mapping->nrpages against the sum of folio
pages before and after, simulated on the tree with this case's writes alone;
``build_cases`` adds ``files[path]["nrpages"]`` for all writes together),
``writes``
(vaddr, old, new bytes, what), ``claimed`` ([lo, hi) index range).

NRPAGES rule: nrpages must equal the sum of ``folio_nr_pages()`` over the
folios in the tree.  Counted over distinct folios ("distinct") and over
canonical slots ("per_slot": a folio at three slots counts three times).
NRPAGES is in ``codes`` when both sums differ from nrpages, in ``may_also``
when only one does (the seed case: distinct differs, per-slot does not) or
when part of the tree is unreadable (a checker cannot know what it held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .labdumps import dump_path, file_entry, hexint, vmlinux_path

CASES: Tuple[str, ...] = (
    "seed", "stale_sibling", "sibling_to_null", "wrong_mapping", "wrong_index",
    "node_count", "cross_linked", "split_stale", "unreadable_node", "cycle",
)

CASE_DOCS = {
    "seed": "leaf with order-4 folios at 16/32/48: slots 32 and 48 := folio of slot 16 "
            "-> DUP_FOLIO, FOLIO_INDEX",
    "stale_sibling": "last sibling of a multi-slot folio points at itself -> SIBLING_FORWARD",
    "sibling_to_null": "canonical slot of a multi-slot folio := NULL (count adjusted), its "
                       "siblings dangle -> SIBLING_TO_NULL, NRPAGES",
    "wrong_mapping": "folio->mapping := another file's address_space -> FOLIO_MAPPING",
    "wrong_index": "folio->index += 0x100000 -> FOLIO_INDEX",
    "node_count": "xa_node.count of a leaf -= 1 -> NODE_COUNT",
    "cross_linked": "xa_node.array of a leaf := another file's i_pages -> NODE_ARRAY",
    "split_stale": "leaf of small folios: slots 1..63 := sibling(0) (xas_split_alloc's "
                   "unfinished node) -> FOLIO_ORDER, NRPAGES",
    "unreadable_node": "node slot := unmapped direct-map address | 2 -> NODE_UNREADABLE",
    "cycle": "interior node slot := root node | 2 -> NODE_CYCLE",
    "cutoff_leaf": "interior node slot of a leaf := NULL (count adjusted): the leaf is "
                   "cut off -> NRPAGES; lost folios, NODE_CUT_OFF (slab)",
    "shared_node": "interior node slot := the node of the slot before it: one leaf at two "
                   "positions -> NODE_SHARED, NODE_OFFSET, DUP_FOLIO, FOLIO_INDEX; the "
                   "other leaf cut off",
    "foreign_folio": "leaf slot := another file's folio of the same order -> "
                     "FOLIO_MAPPING (+FOLIO_INDEX); this file's folio cut off",
    "dirty_cutoff": "a dirty folio's slots, count and marks cleared: data at risk -> "
                    "NRPAGES; FOLIO_LOST (memory map), dirty",
}

#: The cases of the impact tests (tests/test_impact.py): each takes
#: folios out of the reader's reach in its own way.
IMPACT_CASES: Tuple[str, ...] = ("cutoff_leaf", "shared_node", "foreign_folio",
                                 "split_stale", "dirty_cutoff")

#: Files tried first for each case (then every other manifest file); spread so
#: that the default set of all cases uses few shared nodes.
PREFERRED_FILES = {
    "seed": ["/mnt/xfs/big64", "/mnt/xfs/big200", "/mnt/xfs/dirty32", "/mnt/xfs/split64"],
    "stale_sibling": ["/mnt/xfs/dirty32", "/mnt/xfs/big64"],
    "sibling_to_null": ["/mnt/xfs/shadow64", "/mnt/xfs/big64"],
    "wrong_mapping": ["/mnt/xfs/big200", "/mnt/xfs/dirty32"],
    "wrong_index": ["/mnt/xfs/split64", "/mnt/xfs/big64"],
    "node_count": ["/mnt/xfs/big64", "/mnt/xfs/big200"],
    "cross_linked": ["/mnt/xfs/dirty32", "/mnt/xfs/big200"],
    "split_stale": ["/mnt/xfs/big200", "/mnt/xfs/big64"],
    "unreadable_node": ["/mnt/xfs/split64", "/mnt/xfs/big200"],
    "cycle": ["/mnt/xfs/big64", "/mnt/xfs/shadow64"],
    "cutoff_leaf": ["/mnt/xfs/big64", "/mnt/xfs/shadow64", "/mnt/xfs/split64"],
    "shared_node": ["/mnt/xfs/shadow64", "/mnt/xfs/big64", "/mnt/xfs/split64"],
    "foreign_folio": ["/mnt/xfs/split64", "/mnt/xfs/big64"],
    "dirty_cutoff": ["/mnt/xfs/dirty32"],
}
#: The "other file" whose address_space / i_pages cross-linking cases use.
OTHER_FILES = ["/mnt/xfs/big64", "/mnt/xfs/big200", "/mnt/xfs/dirty32"]

INDEX_SHIFT_FOR_WRONG_INDEX = 0x100000   # keeps alignment for every order <= 20

# ---------------------------------------------------------------------------
# Entry decoding (include/linux/xarray.h), kept separate from crashext on
# purpose: this is the ground truth the engine is tested against.
# ---------------------------------------------------------------------------

EMPTY, POINTER, VALUE, NODE, SIBLING, OTHER_INTERNAL = range(6)


def kind(entry: int, chunk: int = 64) -> int:
    if entry == 0:
        return EMPTY
    if entry & 1:
        return VALUE
    if entry & 3 == 2:
        if entry > 4096:
            return NODE
        if (entry >> 2) < chunk - 1:
            return SIBLING
        return OTHER_INTERNAL
    return POINTER


def mk_sibling(slot: int) -> int:
    return (slot << 2) | 2


def mk_node(addr: int) -> int:
    return addr | 2


def u64(v: int) -> bytes:
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def hx(v: Optional[int]) -> Optional[str]:
    return None if v is None else "0x%x" % v


# ---------------------------------------------------------------------------
# drgn access
# ---------------------------------------------------------------------------

_PROGS: Dict[str, Any] = {}


def program_for(manifest: Dict[str, Any]):
    """A drgn Program on the manifest's ELF dump (cached per dump path)."""
    from .plant import open_dump

    core = dump_path(manifest, "elf")
    if core is None:
        raise FileNotFoundError("lab run has no vmcore.elf")
    if core not in _PROGS:
        _PROGS[core] = open_dump(core, vmlinux_path(manifest))
    return _PROGS[core]


@dataclass
class Layout:
    """Offsets from the dump's debug info (drgn ``offsetof``/``sizeof``)."""

    node_size: int
    shift: int
    offset: int
    count: int
    nr_values: int
    parent: int
    array: int
    slots: int
    marks: int
    chunk: int
    nmarks: int
    xa_head: int
    as_i_pages: int
    as_nrpages: int
    f_mapping: int
    f_index: int
    f_flags: int = 0
    #: enum pageflags bits: name -> bit (dirty, writeback, locked, uptodate)
    pg: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, prog) -> "Layout":
        from drgn import offsetof, sizeof

        N = prog.type("struct xa_node")
        slots_t = N.member("slots").type
        chunk = slots_t.length
        marks_t = N.member("marks").type
        fs = "struct folio"
        try:
            F = prog.type(fs)
        except LookupError:
            F = prog.type("struct page")
        try:
            f_index = offsetof(F, "index")
        except LookupError:
            f_index = offsetof(F, "__folio_index")
        return cls(
            node_size=sizeof(N), shift=offsetof(N, "shift"), offset=offsetof(N, "offset"),
            count=offsetof(N, "count"), nr_values=offsetof(N, "nr_values"),
            parent=offsetof(N, "parent"), array=offsetof(N, "array"),
            slots=offsetof(N, "slots"), marks=offsetof(N, "marks"), chunk=chunk,
            nmarks=marks_t.length,
            xa_head=offsetof(prog.type("struct xarray"), "xa_head"),
            as_i_pages=offsetof(prog.type("struct address_space"), "i_pages"),
            as_nrpages=offsetof(prog.type("struct address_space"), "nrpages"),
            f_mapping=offsetof(F, "mapping"), f_index=f_index,
            f_flags=offsetof(F, "flags"),
            pg={k: prog.constant("PG_" + k).value_()
                for k in ("dirty", "writeback", "locked", "uptodate")},
        )


Reader = Callable[[int, int], bytes]


def overlay_reader(prog, writes: Sequence[Tuple[int, bytes]]) -> Reader:
    """prog.read with ``writes`` applied on top (a planted dump, simulated)."""

    def read(addr: int, n: int) -> bytes:
        buf = bytearray(prog.read(addr, n))
        for va, data in writes:
            lo, hi = max(addr, va), min(addr + n, va + len(data))
            if lo < hi:
                buf[lo - addr:hi - addr] = data[lo - va:hi - va]
        return bytes(buf)

    return read


# ---------------------------------------------------------------------------
# A minimal XArray walker
# ---------------------------------------------------------------------------


@dataclass
class Node:
    addr: int
    shift: int
    offset: int
    count: int
    nr_values: int
    parent: int
    array: int
    slots: List[int]
    marks: List[int]          # one bitmap per mark (chunk <= 64)
    base: int
    depth: int
    holder: Optional["Node"] = None
    holder_slot: Optional[int] = None
    lay: Optional[Layout] = field(default=None, repr=False)
    visit: int = 0            # > 0: a shared node walked again

    def index(self, slot: int) -> int:
        return self.base + (slot << self.shift)

    def slot_addr(self, slot: int) -> int:
        return self.addr + self.lay.slots + 8 * slot

    @property
    def range(self) -> Tuple[int, int]:
        return self.base, self.base + (self.lay.chunk << self.shift)

    def slot_range(self, slot: int, nslots: int = 1) -> Tuple[int, int]:
        return self.index(slot), self.index(slot + nslots)

    def marked(self, lo: int = 0, hi: Optional[int] = None) -> bool:
        hi = self.lay.chunk if hi is None else hi
        mask = ((1 << (hi - lo)) - 1) << lo
        return any(m & mask for m in self.marks)

    def runs(self) -> List[Tuple[int, int, int]]:
        """(slot, entry, nslots): every non-empty, non-sibling entry with
        the contiguous sibling entries that follow and point back at it."""
        out = []
        ch = self.lay.chunk
        for i, e in enumerate(self.slots):
            k = kind(e, ch)
            if k in (EMPTY, SIBLING):
                continue
            n = 1
            while i + n < ch and self.slots[i + n] == mk_sibling(i):
                n += 1
            out.append((i, e, n))
        return out


class Tree:
    """Nodes of one XArray, walked through ``read`` (drgn or overlay) as
    ``xas_descend()`` readers do: unreadable nodes and nodes that are
    their own ancestor (cycles) are recorded, not followed; a node held
    by a second slot (a shared subtree) is recorded and walked again
    there (readers descend through every slot that holds it), at most
    ``MAX_VISITS`` times per node.  ``nodes`` has one Node per position
    (``visit`` > 0 for the repeats), ``by_addr`` the first."""

    MAX_VISITS = 4

    def __init__(self, read: Reader, lay: Layout, xa: int, max_nodes: int = 1 << 20):
        import drgn

        self.lay, self.xa = lay, xa
        self.nodes: List[Node] = []
        self.by_addr: Dict[int, Node] = {}
        self.unreadable: List[Tuple[Optional[Node], int, int]] = []
        self.revisits: List[Tuple[Optional[Node], int, int]] = []
        #: (holder, slot, node) of every second slot holding a node
        self.shared: List[Tuple[Optional[Node], int, int]] = []
        self.head = int.from_bytes(read(xa + lay.xa_head, 8), "little")
        ch = lay.chunk
        stack: List[Tuple[int, int, int, Optional[Node], Optional[int]]] = []
        if kind(self.head, ch) == NODE:
            stack.append((self.head - 2, 0, 0, None, None))
        first: Dict[int, Tuple[Optional[int], Optional[int]]] = {}
        visits: Dict[int, int] = {}
        path: List[int] = []
        while stack and len(self.nodes) < max_nodes:
            addr, base, depth, holder, hslot = stack.pop()
            del path[depth:]
            hkey = (holder.addr if holder else None, hslot)
            if addr in first:
                if addr in path:
                    self.revisits.append((holder, hslot, addr))
                    continue
                if hkey != first[addr]:
                    self.shared.append((holder, hslot, addr))
                if visits[addr] >= self.MAX_VISITS:
                    continue
            else:
                first[addr] = hkey
                visits[addr] = 0
            visits[addr] += 1
            path.append(addr)
            try:
                raw = read(addr, lay.node_size)
            except drgn.FaultError:
                self.unreadable.append((holder, hslot, addr))
                continue
            slots = [int.from_bytes(raw[lay.slots + 8 * i:lay.slots + 8 * i + 8], "little")
                     for i in range(ch)]
            marks = [int.from_bytes(raw[lay.marks + 8 * m:lay.marks + 8 * m + 8], "little")
                     for m in range(lay.nmarks)]
            n = Node(addr=addr, shift=raw[lay.shift], offset=raw[lay.offset],
                     count=raw[lay.count], nr_values=raw[lay.nr_values],
                     parent=int.from_bytes(raw[lay.parent:lay.parent + 8], "little"),
                     array=int.from_bytes(raw[lay.array:lay.array + 8], "little"),
                     slots=slots, marks=marks, base=base, depth=depth,
                     holder=holder, holder_slot=hslot, lay=lay)
            n.visit = visits[addr] - 1
            self.nodes.append(n)
            self.by_addr.setdefault(addr, n)
            children = [(i, e) for i, e in enumerate(slots) if kind(e, ch) == NODE]
            if n.shift == 0:
                children = []          # a node entry in a leaf is not followed
            for i, e in reversed(children):
                stack.append((e - 2, n.index(i), depth + 1, n, i))

    @property
    def root(self) -> Optional[Node]:
        return self.nodes[0] if self.nodes else None

    def folio_slots(self) -> List[Tuple[int, int, Optional[Node], int, int]]:
        """(index, folio, node, slot, nslots) of every canonical pointer."""
        out = []
        if kind(self.head, self.lay.chunk) == POINTER:
            out.append((0, self.head, None, 0, 1))
        for n in self.nodes:
            for slot, e, ns in n.runs():
                if kind(e, self.lay.chunk) == POINTER:
                    out.append((n.index(slot), e, n, slot, ns))
        return out


# ---------------------------------------------------------------------------
# Build context
# ---------------------------------------------------------------------------


class NoTarget(LookupError):
    """No node / folio in the dump satisfies a case's preconditions."""


class Ctx:
    """One dump: drgn Program, layout, original trees, claimed ranges."""

    def __init__(self, manifest: Dict[str, Any], prog=None):
        self.m = manifest
        self.prog = prog or program_for(manifest)
        self.lay = Layout.of(self.prog)
        self._trees: Dict[int, Tree] = {}
        self._orders: Dict[int, Optional[int]] = {}
        self.claimed: Dict[int, List[Tuple[int, int]]] = {}

    # files ------------------------------------------------------------
    def files(self, prefs: Sequence[str]) -> List[Dict[str, Any]]:
        out, seen = [], set()
        for p in list(prefs) + [f["path"] for f in self.m.get("files", [])]:
            f = file_entry(self.m, p)
            if f and f.get("i_pages") and f["path"] not in seen:
                seen.add(f["path"])
                out.append(f)
        return out

    def other_file(self, not_path: str) -> Dict[str, Any]:
        for f in self.files(OTHER_FILES):
            if f["path"] != not_path and f.get("address_space"):
                return f
        raise NoTarget("no second file in the manifest")

    def tree(self, f: Dict[str, Any]) -> Tree:
        xa = hexint(f["i_pages"])
        if xa not in self._trees:
            self._trees[xa] = Tree(self.prog.read, self.lay, xa)
        return self._trees[xa]

    # folios -------------------------------------------------------------
    def order(self, folio: int) -> Optional[int]:
        """folio order from the dump (drgn ``compound_order``)."""
        if folio not in self._orders:
            import drgn
            from drgn.helpers.linux.mm import compound_order

            try:
                self._orders[folio] = int(compound_order(
                    drgn.Object(self.prog, "struct page *", folio)))
            except drgn.FaultError:
                self._orders[folio] = None
        return self._orders[folio]

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.prog.read(addr, 8), "little")

    def folio_info(self, folio: int) -> Dict[str, Any]:
        """Ground truth of one folio from the dump: index, order, mapping
        and the state flags of ``enum pageflags``."""
        flags = self.read_u64(folio + self.lay.f_flags)
        return {"folio": hx(folio), "index": self.read_u64(folio + self.lay.f_index),
                "order": self.order(folio),
                "mapping": hx(self.read_u64(folio + self.lay.f_mapping)),
                "state": sorted(k for k, b in self.lay.pg.items() if flags >> b & 1)}

    def own_folios(self, f: Dict[str, Any], tree: "Tree") -> List[Dict[str, Any]]:
        """Every distinct folio of file ``f`` that ``tree`` holds, with
        its info (folio->mapping is the file's address_space)."""
        own = hexint(f["i_pages"]) - self.lay.as_i_pages
        out, seen = [], set()
        for _idx, folio, _n, _s, _ns in tree.folio_slots():
            if folio in seen:
                continue
            seen.add(folio)
            info = self.folio_info(folio)
            if hexint(info["mapping"]) == own:
                out.append(info)
        return out

    # claims ---------------------------------------------------------------
    def free(self, xa: int, lo: int, hi: int) -> bool:
        return all(hi <= a or b <= lo for a, b in self.claimed.get(xa, []))

    def claim(self, xa: int, lo: int, hi: int) -> None:
        self.claimed.setdefault(xa, []).append((lo, hi))

    # stats --------------------------------------------------------------
    def page_stats(self, tree: Tree) -> Dict[str, int]:
        distinct: Dict[int, int] = {}
        per_slot = 0
        for _idx, folio, _n, _s, _ns in tree.folio_slots():
            o = self.order(folio)
            if o is None:
                continue
            distinct[folio] = 1 << o
            per_slot += 1 << o
        return {"distinct": sum(distinct.values()), "per_slot": per_slot,
                "folios": len(distinct), "unreadable_nodes": len(tree.unreadable),
                "revisited_nodes": len(tree.revisits)}

    def nrpages(self, f: Dict[str, Any]) -> int:
        mapping = hexint(f["i_pages"]) - self.lay.as_i_pages
        return self.read_u64(mapping + self.lay.as_nrpages)


@dataclass
class Plan:
    """What a case function returns before the common finishing steps."""

    file: Dict[str, Any]
    writes: List[Tuple[int, bytes, str]]
    codes: List[str]
    expect: List[Dict[str, Any]]
    indices: List[int]
    node: Optional[int]
    slots: List[int]
    claimed: Tuple[int, int]
    may_also: List[str] = field(default_factory=list)
    must_not: List[str] = field(default_factory=list)
    folio: Optional[int] = None
    address: Optional[int] = None
    notes: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def _leaves(ctx: Ctx, prefs: Sequence[str]) -> Iterable[Tuple[Dict[str, Any], Tree, Node]]:
    for f in ctx.files(prefs):
        t = ctx.tree(f)
        xa = hexint(f["i_pages"])
        for n in t.nodes:
            if n.shift == 0 and ctx.free(xa, *n.range):
                yield f, t, n


def _slot_name(n: Node, slot: int) -> str:
    return "xa_node 0x%x .slots[%d] (index %d)" % (n.addr, slot, n.index(slot))


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------


def _seed(ctx: Ctx) -> Plan:
    for f, t, n in _leaves(ctx, PREFERRED_FILES["seed"]):
        if n.marked(16, 64):
            continue
        runs = {s: (e, ns) for s, e, ns in n.runs()}
        ok = all(s in runs and runs[s][1] == 16 and kind(runs[s][0]) == POINTER
                 and ctx.order(runs[s][0]) == 4 for s in (16, 32, 48))
        if not ok:
            continue
        F = runs[16][0]
        b = n.base
        writes = [(n.slot_addr(32), u64(F), _slot_name(n, 32) + " := folio of slot 16"),
                  (n.slot_addr(48), u64(F), _slot_name(n, 48) + " := folio of slot 16")]
        lost = [runs[32][0], runs[48][0]]
        return Plan(
            file=f, writes=writes, codes=["DUP_FOLIO", "FOLIO_INDEX"],
            expect=[{"code": "DUP_FOLIO", "folio": hx(F), "node": hx(n.addr),
                     "slots": [16, 32, 48], "indices": [b + 16, b + 32, b + 48]},
                    {"code": "FOLIO_INDEX", "folio": hx(F), "node": hx(n.addr),
                     "slots": [32, 48], "indices": [b + 32, b + 48],
                     "expected": [b + 32, b + 48], "found": b + 16}],
            indices=[b + 16, b + 32, b + 48], node=n.addr, slots=[32, 48],
            claimed=n.range, folio=F,
            may_also=[],
            must_not=["FOLIO_MAPPING", "FOLIO_ORDER", "FOLIO_ALIGN", "SIBLING_FORWARD",
                      "SIBLING_TO_NULL", "SIBLING_RUN_BROKEN", "NODE_COUNT"],
            notes="siblings 33..47 and 49..63 are untouched and now resolve to the "
                  "slot-16 folio; folio->index is right only for slot 16; the folios "
                  "of slots 32 and 48 left the tree (see nrpages)",
            extra={"lost_folios": [hx(x) for x in lost]})
    raise NoTarget("no leaf with order-4 folios at slots 16, 32 and 48")


def _stale_sibling(ctx: Ctx) -> Plan:
    for f, t, n in _leaves(ctx, PREFERRED_FILES["stale_sibling"]):
        for s, e, ns in n.runs():
            if kind(e) != POINTER or ns < 4 or n.marked(s, s + ns):
                continue
            j = s + ns - 1
            return Plan(
                file=f, writes=[(n.slot_addr(j), u64(mk_sibling(j)),
                                 _slot_name(n, j) + " := sibling(%d) (itself)" % j)],
                codes=["SIBLING_FORWARD"],
                expect=[{"code": "SIBLING_FORWARD", "node": hx(n.addr), "slots": [j],
                         "indices": [n.index(j)], "expected": "< %d" % j, "found": j}],
                indices=[n.index(j)], node=n.addr, slots=[j], claimed=n.slot_range(s, ns),
                folio=e,
                may_also=["SIBLING_RUN_SIZE", "FOLIO_ORDER"],
                must_not=["DUP_FOLIO", "FOLIO_MAPPING", "FOLIO_INDEX", "NODE_COUNT"],
                notes="the folio at slot %d (order %s) keeps %d of its %d siblings; the "
                      "last one points at itself" % (s, ctx.order(e), ns - 2, ns - 1))
    raise NoTarget("no leaf with a multi-slot folio")


def _sibling_to_null(ctx: Ctx) -> Plan:
    lay = ctx.lay
    for f, t, n in _leaves(ctx, PREFERRED_FILES["sibling_to_null"]):
        for s, e, ns in n.runs():
            if kind(e) != POINTER or ns < 4 or n.marked(s, s + ns):
                continue
            if n.count != sum(1 for x in n.slots if x):
                continue
            sib = list(range(s + 1, s + ns))
            return Plan(
                file=f,
                writes=[(n.slot_addr(s), u64(0), _slot_name(n, s) + " := NULL"),
                        (n.addr + lay.count, bytes([n.count - 1]),
                         "xa_node 0x%x .count %d -> %d (kept consistent)"
                         % (n.addr, n.count, n.count - 1))],
                codes=["SIBLING_TO_NULL"],
                expect=[{"code": "SIBLING_TO_NULL", "node": hx(n.addr), "slots": sib,
                         "indices": [n.index(x) for x in sib], "expected": hx(e),
                         "found": 0}],
                indices=[n.index(x) for x in sib], node=n.addr, slots=[s],
                claimed=n.slot_range(s, ns), folio=e,
                may_also=["SIBLING_RUN_BROKEN", "SIBLING_RUN_SIZE"],
                must_not=["NODE_COUNT", "DUP_FOLIO", "FOLIO_INDEX", "FOLIO_MAPPING"],
                notes="canonical slot %d of an order-%s folio cleared; count lowered so "
                      "only the dangling siblings (and the lost pages) are wrong"
                      % (s, ctx.order(e)),
                extra={"lost_folios": [hx(e)]})
    raise NoTarget("no leaf with a multi-slot folio")


def _biggest_folio(ctx: Ctx, prefs: Sequence[str], want_order: Optional[int] = None):
    best = None
    for f in ctx.files(prefs):
        t = ctx.tree(f)
        xa = hexint(f["i_pages"])
        for idx, folio, n, s, ns in t.folio_slots():
            o = ctx.order(folio)
            if o is None or not ctx.free(xa, idx, idx + (1 << o)):
                continue
            if n is not None and n.marked(s, s + ns):
                continue
            if want_order is not None and o == want_order:
                return f, idx, folio, n, s, o
            if best is None or o > best[5]:
                best = (f, idx, folio, n, s, o)
        if best is not None:
            return best
    raise NoTarget("no folio")


def _wrong_mapping(ctx: Ctx) -> Plan:
    f, idx, folio, n, s, o = _biggest_folio(ctx, PREFERRED_FILES["wrong_mapping"])
    other = ctx.other_file(f["path"])
    own_as = hexint(f["i_pages"]) - ctx.lay.as_i_pages
    other_as = hexint(other["address_space"])
    cur = ctx.read_u64(folio + ctx.lay.f_mapping)
    if cur != own_as:
        raise NoTarget("folio 0x%x mapping 0x%x is not 0x%x" % (folio, cur, own_as))
    return Plan(
        file=f, writes=[(folio + ctx.lay.f_mapping, u64(other_as),
                         "folio 0x%x .mapping := %s's address_space" % (folio, other["path"]))],
        codes=["FOLIO_MAPPING"],
        expect=[{"code": "FOLIO_MAPPING", "folio": hx(folio), "node": hx(n.addr if n else None),
                 "slots": [s], "indices": [idx], "expected": hx(own_as), "found": hx(other_as)}],
        indices=[idx], node=n.addr if n else None, slots=[s], claimed=(idx, idx + (1 << o)),
        folio=folio, may_also=[],
        must_not=["FOLIO_INDEX", "DUP_FOLIO", "FOLIO_ORDER"],
        notes="order-%d folio; mapping now names %s" % (o, other["path"]),
        extra={"other_file": other["path"], "order": o})


def _wrong_index(ctx: Ctx) -> Plan:
    f, idx, folio, n, s, o = _biggest_folio(ctx, PREFERRED_FILES["wrong_index"], want_order=0)
    cur = ctx.read_u64(folio + ctx.lay.f_index)
    if cur != idx:
        raise NoTarget("folio 0x%x index %d is not %d" % (folio, cur, idx))
    new = idx + INDEX_SHIFT_FOR_WRONG_INDEX
    return Plan(
        file=f, writes=[(folio + ctx.lay.f_index, u64(new),
                         "folio 0x%x .index %d -> %d" % (folio, idx, new))],
        codes=["FOLIO_INDEX"],
        expect=[{"code": "FOLIO_INDEX", "folio": hx(folio), "node": hx(n.addr if n else None),
                 "slots": [s], "indices": [idx], "expected": idx, "found": new}],
        indices=[idx], node=n.addr if n else None, slots=[s], claimed=(idx, idx + (1 << o)),
        folio=folio, must_not=["FOLIO_MAPPING", "FOLIO_ALIGN", "DUP_FOLIO"],
        notes="order-%d folio; the new index keeps its alignment" % o,
        extra={"order": o})


def _node_count(ctx: Ctx) -> Plan:
    for f, t, n in _leaves(ctx, PREFERRED_FILES["node_count"]):
        real = sum(1 for x in n.slots if x)
        if n.count != real:
            continue
        new = real - 1 if real > 1 else real + 1
        return Plan(
            file=f, writes=[(n.addr + ctx.lay.count, bytes([new]),
                             "xa_node 0x%x .count %d -> %d" % (n.addr, real, new))],
            codes=["NODE_COUNT"],
            expect=[{"code": "NODE_COUNT", "node": hx(n.addr), "slots": [], "indices": [],
                     "expected": real, "found": new}],
            indices=[], node=n.addr, slots=[], claimed=n.range,
            must_not=["NODE_ARRAY", "NODE_UNREADABLE", "DUP_FOLIO"],
            notes="node-level finding: no index; node range [%d, %d)" % n.range)
    raise NoTarget("no leaf")


def _cross_linked(ctx: Ctx) -> Plan:
    for f, t, n in _leaves(ctx, PREFERRED_FILES["cross_linked"]):
        xa = hexint(f["i_pages"])
        if n.array != xa:
            continue
        other = ctx.other_file(f["path"])
        oxa = hexint(other["i_pages"])
        return Plan(
            file=f, writes=[(n.addr + ctx.lay.array, u64(oxa),
                             "xa_node 0x%x .array := %s's i_pages" % (n.addr, other["path"]))],
            codes=["NODE_ARRAY"],
            expect=[{"code": "NODE_ARRAY", "node": hx(n.addr), "slots": [], "indices": [],
                     "expected": hx(xa), "found": hx(oxa)}],
            indices=[], node=n.addr, slots=[], claimed=n.range,
            must_not=["NODE_COUNT", "DUP_FOLIO", "FOLIO_MAPPING"],
            notes="node-level finding; node range [%d, %d)" % n.range,
            extra={"other_file": other["path"]})
    raise NoTarget("no leaf")


def _split_stale(ctx: Ctx) -> Plan:
    ch = ctx.lay.chunk
    for f, t, n in _leaves(ctx, PREFERRED_FILES["split_stale"]):
        runs = n.runs()
        if (n.marked() or n.count != ch or not all(n.slots) or len(runs) < 2
                or any(kind(e) != POINTER for _s, e, _n in runs) or runs[0][0] != 0):
            continue
        F = n.slots[0]
        o = ctx.order(F)
        if o is None or (1 << o) >= ch:
            continue
        data = b"".join(u64(mk_sibling(0)) for _ in range(1, ch))
        lost = [e for s, e, _ns in runs[1:]]
        return Plan(
            file=f, writes=[(n.slot_addr(1), data,
                             "xa_node 0x%x .slots[1..%d] := sibling(0)" % (n.addr, ch - 1))],
            codes=["FOLIO_ORDER"],
            expect=[{"code": "FOLIO_ORDER", "folio": hx(F), "node": hx(n.addr), "slots": [0],
                     "indices": [n.base], "expected": 6, "found": o,
                     "tree_order": (ch.bit_length() - 1), "folio_order": o}],
            indices=[n.base], node=n.addr, slots=list(range(1, ch)), claimed=n.range,
            folio=F,
            must_not=["DUP_FOLIO", "FOLIO_INDEX", "FOLIO_MAPPING", "NODE_COUNT",
                      "SIBLING_RUN_SIZE", "SIBLING_RUN_ALIGN", "SIBLING_FORWARD"],
            notes="xas_split_alloc() leaves slot 0 = entry and slots 1..63 = sibling(0); "
                  "here slot 0 keeps its order-%d folio, so the tree claims 64 pages for "
                  "a %d-page folio and the other %d folios of the node are lost"
                  % (o, 1 << o, len(lost)),
            extra={"lost_folios": [hx(x) for x in lost],
                   # Readers of slots 1..63 follow sibling(0) to the
                   # order-o folio: indices past its 2^o pages read its
                   # bytes again (filemap_read(): offset = pos & (size-1)).
                   "impact": {"ranges": [{
                       "kind": "aliased", "first": n.base + (1 << o),
                       "last": n.base + ch - 1,
                       "sources": [[n.base, n.base + (1 << o) - 1]]}],
                       "lost": [ctx.folio_info(x) for x in lost]}})
    raise NoTarget("no full leaf of small folios")


def _unmapped_address(ctx: Ctx) -> int:
    import drgn
    from .plant import virt_to_phys

    try:
        pob = int(ctx.prog["page_offset_base"].value_())
    except (KeyError, LookupError):
        pob = hexint(ctx.m.get("page_offset_base", "0xffff888000000000"))
    for off in (1 << 40, (1 << 40) + (1 << 36), 1 << 39):
        addr = pob + off + 0x6d8            # looks like a slab object
        try:
            ctx.prog.read(addr, 8)
        except drgn.FaultError:
            try:
                virt_to_phys(ctx.prog, addr)
            except drgn.FaultError:
                return addr
    raise NoTarget("no unmapped direct-map address found")


def _interior_slots(ctx: Ctx, prefs: Sequence[str], want_parent: bool):
    for f in ctx.files(prefs):
        t = ctx.tree(f)
        xa = hexint(f["i_pages"])
        # Lowest interior level first: the lost subtree stays small.
        interior = sorted((n for n in t.nodes if n.shift), key=lambda n: n.shift)
        for want in ((True, False) if want_parent else (False,)):
            for n in interior:
                if want and n.holder is None:
                    continue
                for i, e in enumerate(n.slots):
                    if kind(e) == NODE and ctx.free(xa, *n.slot_range(i)):
                        yield f, t, n, i, e


def _unreadable_node(ctx: Ctx) -> Plan:
    bogus = _unmapped_address(ctx)
    for f, t, n, i, e in _interior_slots(ctx, PREFERRED_FILES["unreadable_node"], False):
        idx = n.index(i)
        return Plan(
            file=f, writes=[(n.slot_addr(i), u64(mk_node(bogus)),
                             _slot_name(n, i) + " := node 0x%x (unmapped)" % bogus)],
            codes=["NODE_UNREADABLE"],
            expect=[{"code": "NODE_UNREADABLE", "node": hx(n.addr), "slots": [i],
                     "indices": [idx], "address": hx(bogus)}],
            indices=[idx], node=n.addr, slots=[i], claimed=n.slot_range(i),
            address=bogus, may_also=["WALK_TRUNCATED"], must_not=["DUP_FOLIO"],
            notes="child node 0x%x (indices [%d, %d)) replaced by an address in the "
                  "unmapped part of the direct map" % ((e - 2,) + n.slot_range(i)),
            extra={"lost_node": hx(e - 2)})
    raise NoTarget("no interior node")


def _cycle(ctx: Ctx) -> Plan:
    for f, t, n, i, e in _interior_slots(ctx, PREFERRED_FILES["cycle"], True):
        target = t.root.addr
        idx = n.index(i)
        return Plan(
            file=f, writes=[(n.slot_addr(i), u64(mk_node(target)),
                             _slot_name(n, i) + " := root node 0x%x" % target)],
            codes=["NODE_CYCLE"],
            expect=[{"code": "NODE_CYCLE", "node": hx(target), "holder": hx(n.addr),
                     "slots": [i], "indices": [idx]}],
            indices=[idx], node=n.addr, slots=[i], claimed=n.slot_range(i),
            address=target,
            may_also=["NODE_SHIFT", "NODE_OFFSET", "NODE_PARENT", "ROOT_PARENT"],
            must_not=["DUP_FOLIO", "WALK_TRUNCATED"],
            notes="slot %d of the shift-%d node (depth %d) now points back at the root "
                  "(shift %d, an ancestor); child 0x%x is lost"
                  % (i, n.shift, n.depth, t.root.shift, e - 2),
            extra={"lost_node": hx(e - 2), "ancestor_shift": t.root.shift})
    raise NoTarget("no interior node")


# ---------------------------------------------------------------------------
# Impact cases: what the damage means for the file (crashext.impact /
# crashext.lost).  Ground truth comes from the clean dump: the folios each
# case takes out of reach (their index, order and enum pageflags state),
# the index ranges a reader now gets wrong, the node cut off.
# ---------------------------------------------------------------------------


def _leaf_children(ctx: Ctx, prefs: Sequence[str]):
    """(file, tree, Y, slot, X): a leaf X held at ``slot`` of the
    interior node Y one level up, neither marked there, range free."""
    cshift = ctx.lay.chunk.bit_length() - 1
    for f in ctx.files(prefs):
        t = ctx.tree(f)
        xa = hexint(f["i_pages"])
        for Y in t.nodes:
            if Y.shift != cshift or Y.visit:
                continue
            for i, e in enumerate(Y.slots):
                if kind(e) != NODE:
                    continue
                X = t.by_addr.get(e - 2)
                if (X is None or X.shift != 0 or X.marked() or Y.marked(i, i + 1)
                        or not ctx.free(xa, *Y.slot_range(i))):
                    continue
                yield f, t, Y, i, X


def _node_folios(ctx: Ctx, X: Node, base: Optional[int] = None) -> List[Dict[str, Any]]:
    """Info of every folio entry of leaf X, with ``at``: [first, last]
    index range the tree gives it (``base``: X's first index there)."""
    base = X.base if base is None else base
    out = []
    for s, e, ns in X.runs():
        if kind(e) == POINTER:
            info = ctx.folio_info(e)
            info["at"] = [base + s, base + s + ns - 1]
            out.append(info)
    return out


def _lost_ranges(infos: Sequence[Dict[str, Any]], found: str) -> List[Dict[str, Any]]:
    return [{"kind": "lost", "first": x["index"], "last": x["index"] + (1 << x["order"]) - 1,
             "folios": [x["folio"]], "state": x["state"], "found": found,
             "at_risk": bool({"dirty", "writeback"} & set(x["state"]))}
            for x in infos]


def _cutoff_leaf(ctx: Ctx) -> Plan:
    for f, t, Y, i, X in _leaf_children(ctx, PREFERRED_FILES["cutoff_leaf"]):
        if Y.count != sum(1 for x in Y.slots if x):
            continue
        folios = _node_folios(ctx, X)
        if not folios:
            continue
        pages = sum(1 << x["order"] for x in folios)
        lo, hi = Y.slot_range(i)
        return Plan(
            file=f,
            writes=[(Y.slot_addr(i), u64(0), _slot_name(Y, i) + " := NULL (leaf cut off)"),
                    (Y.addr + ctx.lay.count, bytes([Y.count - 1]),
                     "xa_node 0x%x .count %d -> %d (kept consistent)"
                     % (Y.addr, Y.count, Y.count - 1))],
            codes=[], expect=[], indices=[lo], node=Y.addr, slots=[i], claimed=(lo, hi),
            must_not=["NODE_COUNT", "NODE_PARENT", "NODE_OFFSET", "DUP_FOLIO",
                      "FOLIO_INDEX", "SIBLING_TO_NULL", "MARK_PARENT"],
            notes="leaf 0x%x (indices [%d, %d), %d folios, %d pages) unlinked from slot %d "
                  "of 0x%x; the leaf stays allocated with parent/offset naming that slot"
                  % (X.addr, lo, hi, len(folios), pages, i, Y.addr),
            extra={"impact": {
                "ranges": _lost_ranges(folios, "cut-off node"),
                "lost": folios,
                "cutoff": {"node": hx(X.addr), "parent": hx(Y.addr), "offset": i,
                           "first_index": lo, "pages": pages}}})
    raise NoTarget("no leaf under an interior node")


def _shared_node(ctx: Ctx) -> Plan:
    for f, t, Y, i1, X1 in _leaf_children(ctx, PREFERRED_FILES["shared_node"]):
        i2 = i1 + 1
        if i2 >= ctx.lay.chunk or kind(Y.slots[i2]) != NODE or Y.marked(i2, i2 + 1):
            continue
        X2 = t.by_addr.get(Y.slots[i2] - 2)
        xa = hexint(f["i_pages"])
        if X2 is None or X2.shift != 0 or not ctx.free(xa, *Y.slot_range(i2)):
            continue
        f1, f2 = _node_folios(ctx, X1), _node_folios(ctx, X2)
        if not f1 or not f2:
            continue
        lo1, hi1 = Y.slot_range(i1)
        lo2, hi2 = Y.slot_range(i2)
        # The second position: every folio of X1 is read at index +delta,
        # where its own range (folio->index) is not.
        aliased = [{"kind": "aliased", "first": x["at"][0] + lo2 - lo1,
                    "last": x["at"][1] + lo2 - lo1, "folios": [x["folio"]],
                    "sources": [[x["index"], x["index"] + (1 << x["order"]) - 1]]}
                   for x in f1]
        codes = ["NODE_SHARED", "NODE_OFFSET", "DUP_FOLIO", "FOLIO_INDEX"]
        return Plan(
            file=f,
            writes=[(Y.slot_addr(i2), u64(mk_node(X1.addr)),
                     _slot_name(Y, i2) + " := node 0x%x (that of slot %d)" % (X1.addr, i1))],
            codes=codes,
            expect=[{"code": "NODE_SHARED", "node": hx(Y.addr), "slots": [i2],
                     "indices": [lo2], "address": hx(X1.addr), "first_slot": i1,
                     "first_index": lo1},
                    {"code": "NODE_OFFSET", "node": hx(X1.addr), "expected": i2, "found": i1,
                     "indices": [lo2]}],
            indices=[lo2], node=Y.addr, slots=[i2], claimed=(lo1, hi2),
            must_not=["NODE_CYCLE", "NODE_COUNT", "NODE_ARRAY", "FOLIO_MAPPING",
                      "SIBLING_TO_NULL", "MARK_PARENT"],
            notes="slot %d of 0x%x now holds the leaf of slot %d: leaf 0x%x is read at "
                  "[%d, %d) and [%d, %d); leaf 0x%x (%d folios) is cut off"
                  % (i2, Y.addr, i1, X1.addr, lo1, hi1, lo2, hi2, X2.addr, len(f2)),
            extra={"impact": {
                "ranges": aliased + _lost_ranges(f2, "memory map"),
                "lost": f2,
                "cutoff": {"node": hx(X2.addr), "parent": hx(Y.addr), "offset": i2,
                           "first_index": lo2,
                           "pages": sum(1 << x["order"] for x in f2)},
                "shared": {"node": hx(X1.addr), "holder": hx(Y.addr), "first_slot": i1,
                           "second_slot": i2, "first_index": lo1, "second_index": lo2,
                           "delta": lo2 - lo1, "own": 0,
                           "pages": sum(1 << x["order"] for x in f1),
                           "folios": len(f1)}}})
    raise NoTarget("no interior node with two unmarked leaves side by side")


def _foreign_folio(ctx: Ctx) -> Plan:
    for f, t, n in _leaves(ctx, PREFERRED_FILES["foreign_folio"]):
        own = hexint(f["i_pages"]) - ctx.lay.as_i_pages
        xa = hexint(f["i_pages"])
        mine = {e for _i, e, _n, _s, _ns in t.folio_slots()}
        for s, e, ns in n.runs():
            if kind(e) != POINTER or n.marked(s, s + ns):
                continue
            o = ctx.order(e)
            lo, hi = n.slot_range(s, ns)
            if o is None or (1 << o) != ns or not ctx.free(xa, lo, hi):
                continue
            if hexint(ctx.folio_info(e)["mapping"]) != own:
                continue
            other = ctx.other_file(f["path"])
            ot = ctx.tree(other)
            oas = hexint(other["i_pages"]) - ctx.lay.as_i_pages
            for _i, fb, _n2, _s2, _ns2 in ot.folio_slots():
                if fb in mine or ctx.order(fb) != o:
                    continue
                info_b = ctx.folio_info(fb)
                if hexint(info_b["mapping"]) != oas:
                    continue
                info_a = ctx.folio_info(e)
                info_a["at"] = [lo, hi - 1]
                codes = ["FOLIO_MAPPING"] + (["FOLIO_INDEX"] if info_b["index"] != lo else [])
                return Plan(
                    file=f,
                    writes=[(n.slot_addr(s), u64(fb),
                             _slot_name(n, s) + " := folio 0x%x of %s" % (fb, other["path"]))],
                    codes=codes,
                    expect=[{"code": "FOLIO_MAPPING", "folio": hx(fb), "node": hx(n.addr),
                             "slots": [s], "indices": [lo], "expected": hx(own),
                             "found": hx(oas), "other_ino": other.get("i_ino")}],
                    indices=[lo], node=n.addr, slots=[s], claimed=(lo, hi), folio=fb,
                    must_not=["DUP_FOLIO", "FOLIO_ORDER", "FOLIO_ALIGN", "NODE_COUNT",
                              "SIBLING_TO_NULL"],
                    notes="order-%d folio of %s in the slot of this file's folio 0x%x, "
                          "which is cut off" % (o, other["path"], e),
                    extra={"other_file": other["path"], "impact": {
                        "ranges": [{"kind": "foreign", "first": lo, "last": hi - 1,
                                    "folios": [hx(fb)], "other_ino": other.get("i_ino"),
                                    "state": info_b["state"]}]
                        + _lost_ranges([info_a], "memory map"),
                        "lost": [info_a]}})
    raise NoTarget("no folio with a same-order folio in another file")


def _clear_marks(ctx: Ctx, t: Tree, n: Node, lo: int, hi: int):
    """Writes clearing slots [lo, hi) of every mark of n, and each
    ancestor's bit for a node left without the mark (xas_clear_mark())."""
    lay = ctx.lay
    writes = []
    mask = ((1 << (hi - lo)) - 1) << lo
    for m in range(lay.nmarks):
        cur, bits = n, n.marks[m] & ~mask
        while cur is not None and bits != cur.marks[m]:
            writes.append((cur.addr + lay.marks + 8 * m, u64(bits),
                           "xa_node 0x%x .marks[%d] 0x%x -> 0x%x"
                           % (cur.addr, m, cur.marks[m], bits)))
            if bits or cur.holder is None:
                break
            up = cur.holder
            bits = up.marks[m] & ~(1 << cur.holder_slot)
            cur = up
    return writes


def _dirty_cutoff(ctx: Ctx) -> Plan:
    for f in [x for x in (file_entry(ctx.m, p) for p in PREFERRED_FILES["dirty_cutoff"])
              if x and x.get("i_pages")]:
        t = ctx.tree(f)
        xa = hexint(f["i_pages"])
        own = xa - ctx.lay.as_i_pages
        for n in t.nodes:
            for s, e, ns in n.runs():
                if kind(e) != POINTER:
                    continue
                info = ctx.folio_info(e)
                lo, hi = n.slot_range(s, ns)
                if ("dirty" not in info["state"] or hexint(info["mapping"]) != own
                        or not ctx.free(xa, lo, hi)
                        or n.count != sum(1 for x in n.slots if x) or n.count <= ns):
                    continue
                info["at"] = [lo, hi - 1]
                writes = [(n.slot_addr(s), bytes(8 * ns),
                           "xa_node 0x%x .slots[%d..%d] := NULL (dirty folio 0x%x cut off)"
                           % (n.addr, s, s + ns - 1, e)),
                          (n.addr + ctx.lay.count, bytes([n.count - ns]),
                           "xa_node 0x%x .count %d -> %d (kept consistent)"
                           % (n.addr, n.count, n.count - ns))]
                writes += _clear_marks(ctx, t, n, s, s + ns)
                return Plan(
                    file=f, writes=writes, codes=[], expect=[], indices=[lo], node=n.addr,
                    slots=list(range(s, s + ns)), claimed=(lo, hi), folio=e,
                    must_not=["NODE_COUNT", "MARK_PARENT", "MARK_ON_EMPTY", "SIBLING_TO_NULL",
                              "DUP_FOLIO", "FOLIO_INDEX"],
                    notes="dirty order-%d folio 0x%x at [%d, %d) removed from the tree with "
                          "its siblings and marks (count and marks kept consistent): its data "
                          "is in memory only, and writeback no longer finds it"
                          % (info["order"], e, lo, hi),
                    extra={"impact": {"ranges": _lost_ranges([info], "memory map"),
                                      "lost": [info]}})
    raise NoTarget("no dirty folio")


_BUILDERS: Dict[str, Callable[[Ctx], Plan]] = {
    "seed": _seed, "stale_sibling": _stale_sibling, "sibling_to_null": _sibling_to_null,
    "wrong_mapping": _wrong_mapping, "wrong_index": _wrong_index, "node_count": _node_count,
    "cross_linked": _cross_linked, "split_stale": _split_stale,
    "unreadable_node": _unreadable_node, "cycle": _cycle,
    "cutoff_leaf": _cutoff_leaf, "shared_node": _shared_node,
    "foreign_folio": _foreign_folio, "dirty_cutoff": _dirty_cutoff,
}


# ---------------------------------------------------------------------------
# Finishing: old bytes, NRPAGES by simulation, truth dict
# ---------------------------------------------------------------------------


def _nrpages_truth(ctx: Ctx, f: Dict[str, Any], writes: Sequence[Tuple[int, bytes]]):
    xa = hexint(f["i_pages"])
    nr = ctx.nrpages(f)
    before = ctx.page_stats(ctx.tree(f))
    after = ctx.page_stats(Tree(overlay_reader(ctx.prog, writes), ctx.lay, xa))
    base_ok = before["distinct"] == nr and before["per_slot"] == nr
    diff = [k for k in ("distinct", "per_slot") if after[k] != nr]
    return {"mapping": nr, "before": before, "after": after, "baseline_ok": base_ok,
            "differs": diff}


def _lost_truth(ctx: Ctx, f: Dict[str, Any], writes: Sequence[Tuple[int, bytes]]
                ) -> Dict[str, Any]:
    """What the planted tree still reaches of file ``f`` and what it lost,
    from the clean dump and the writes: ``reachable`` = pages of the
    distinct folios whose ``mapping`` is the file's that the planted tree
    holds (at any index); ``lost`` = the file's folios of the clean tree
    that the planted tree does not hold at their ``index`` (with the
    folio fields as the planted dump has them)."""
    xa = hexint(f["i_pages"])
    own = xa - ctx.lay.as_i_pages
    read = overlay_reader(ctx.prog, writes)
    lay = ctx.lay

    def field_(folio: int, off: int) -> int:
        return int.from_bytes(read(folio + off, 8), "little")

    after = Tree(read, lay, xa)
    held = {(i, e) for i, e, _n, _s, _ns in after.folio_slots()}
    reached = {e for _i, e in held}
    reachable = 0
    for e in reached:
        o = ctx.order(e)
        if o is not None and field_(e, lay.f_mapping) == own:
            reachable += 1 << o
    lost = []
    for x in ctx.own_folios(f, ctx.tree(f)):
        e = hexint(x["folio"])
        if field_(e, lay.f_mapping) != own:
            continue
        idx = field_(e, lay.f_index)
        if (idx, e) not in held:
            lost.append(dict(x, index=idx, reached=e in reached))
    lost.sort(key=lambda x: (x["index"], x["folio"]))
    return {"reachable": reachable, "lost": lost,
            "lost_pages": sum(1 << x["order"] for x in lost),
            "shared": len(after.shared), "cycles": len(after.revisits)}


def _finish(ctx: Ctx, name: str, p: Plan) -> Tuple[List[Tuple[int, bytes]], Dict[str, Any]]:
    writes = [(va, data) for va, data, _w in p.writes]
    recs = []
    for va, data, what in p.writes:
        old = ctx.prog.read(va, len(data))
        if old == data:
            raise RuntimeError("%s: write at 0x%x changes nothing" % (name, va))
        recs.append({"vaddr": hx(va), "old": old.hex(), "new": data.hex(), "what": what})
    nrp = _nrpages_truth(ctx, p.file, writes)
    codes, may = list(p.codes), list(p.may_also)
    if nrp["baseline_ok"] and len(nrp["differs"]) == 2 and not nrp["after"]["unreadable_nodes"]:
        codes.append("NRPAGES")
        p.expect.append({"code": "NRPAGES", "expected": nrp["mapping"],
                         "found": nrp["after"]["distinct"], "indices": []})
    elif nrp["differs"]:
        may.append("NRPAGES")
    must_not = [c for c in p.must_not if c not in codes and c not in may]
    if "NRPAGES" not in codes and "NRPAGES" not in may and nrp["baseline_ok"]:
        must_not.append("NRPAGES")
    truth = {
        "case": name, "description": CASE_DOCS[name], "file": p.file["path"],
        "xarray": p.file["i_pages"], "address_space": p.file.get("address_space"),
        "inode": p.file.get("inode"), "codes": codes, "may_also": may,
        "must_not": must_not, "indices": sorted(p.indices), "node": hx(p.node),
        "slots": p.slots, "folio": hx(p.folio), "address": hx(p.address),
        "expect": p.expect, "nrpages": nrp, "claimed": list(p.claimed),
        "writes": recs, "notes": p.notes, **p.extra,
    }
    return writes, truth


def build_case(manifest: Dict[str, Any], name: str, prog=None, ctx: Optional[Ctx] = None
               ) -> Tuple[List[Tuple[int, bytes]], Dict[str, Any]]:
    """(writes, truth) of one case on the manifest's ELF dump.  Pass the
    same ``ctx`` to several calls to keep their targets disjoint."""
    if name not in _BUILDERS:
        raise KeyError("unknown case %r (known: %s)" % (name, ", ".join(CASES)))
    ctx = ctx or Ctx(manifest, prog)
    p = _BUILDERS[name](ctx)
    ctx.claim(hexint(p.file["i_pages"]), *p.claimed)
    return _finish(ctx, name, p)


def build_cases(manifest: Dict[str, Any], names: Sequence[str], prog=None
                ) -> Tuple[List[Tuple[int, bytes]], Dict[str, Any]]:
    """All ``names`` together (built in :data:`CASES` order, disjoint
    targets).  Returns (all writes, {"cases": [truth...], "files": {path:
    {"codes": union, "nrpages": simulated with every write}}})."""
    ctx = Ctx(manifest, prog)
    order = [c for c in CASES if c in names] + [c for c in names if c not in CASES]
    writes: List[Tuple[int, bytes]] = []
    truths = []
    for name in order:
        w, t = build_case(manifest, name, ctx=ctx)
        writes += w
        truths.append(t)
    files: Dict[str, Any] = {}
    for t in truths:
        e = files.setdefault(t["file"], {"xarray": t["xarray"], "cases": [], "codes": []})
        e["cases"].append(t["case"])
        for c in t["codes"]:
            if c != "NRPAGES" and c not in e["codes"]:
                e["codes"].append(c)
    for path, e in files.items():
        nrp = _nrpages_truth(ctx, file_entry(manifest, path), writes)
        e["nrpages"] = nrp
        e["lost"] = _lost_truth(ctx, file_entry(manifest, path), writes)
        if (nrp["baseline_ok"] and len(nrp["differs"]) == 2
                and not nrp["after"]["unreadable_nodes"]):
            e["codes"].append("NRPAGES")
    return writes, {"cases": truths, "files": files}
