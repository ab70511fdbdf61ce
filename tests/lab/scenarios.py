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
}

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
    """Nodes of one XArray, walked through ``read`` (drgn or overlay);
    unreadable nodes and revisited nodes (cycles) are recorded, not
    followed."""

    def __init__(self, read: Reader, lay: Layout, xa: int, max_nodes: int = 1 << 20):
        import drgn

        self.lay, self.xa = lay, xa
        self.nodes: List[Node] = []
        self.by_addr: Dict[int, Node] = {}
        self.unreadable: List[Tuple[Optional[Node], int, int]] = []
        self.revisits: List[Tuple[Optional[Node], int, int]] = []
        self.head = int.from_bytes(read(xa + lay.xa_head, 8), "little")
        ch = lay.chunk
        stack: List[Tuple[int, int, int, Optional[Node], Optional[int]]] = []
        if kind(self.head, ch) == NODE:
            stack.append((self.head - 2, 0, 0, None, None))
        seen = set()
        while stack and len(self.nodes) < max_nodes:
            addr, base, depth, holder, hslot = stack.pop()
            if addr in seen:
                self.revisits.append((holder, hslot, addr))
                continue
            seen.add(addr)
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
            self.nodes.append(n)
            self.by_addr[addr] = n
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
            extra={"lost_folios": [hx(x) for x in lost]})
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


_BUILDERS: Dict[str, Callable[[Ctx], Plan]] = {
    "seed": _seed, "stale_sibling": _stale_sibling, "sibling_to_null": _sibling_to_null,
    "wrong_mapping": _wrong_mapping, "wrong_index": _wrong_index, "node_count": _node_count,
    "cross_linked": _cross_linked, "split_stale": _split_stale,
    "unreadable_node": _unreadable_node, "cycle": _cycle,
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
        if (nrp["baseline_ok"] and len(nrp["differs"]) == 2
                and not nrp["after"]["unreadable_nodes"]):
            e["codes"].append("NRPAGES")
    return writes, {"cases": truths, "files": files}
