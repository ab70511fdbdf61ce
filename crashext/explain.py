"""What a set of findings implies, in a few factual words.

Follows the reasoning of the seed investigation (Wilcox, linux-mm,
2024-09-13): one folio at slots 16, 32 and 48 of a node means pieces of
stride 16 (order 4 now) spread over all 64 slots (an order-6 entry), i.e.
an entry split by ``xas_split()`` whose pieces were never replaced; a node
whose ``array`` names another tree was freed and reused without being
zeroed (``radix_tree_node_rcu_free()`` zeroes the slots).

>>> [e.text for e in explain(analysis)]        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import fmt


@dataclass
class Explanation:
    """One conclusion: a code, short lines of text, and the findings
    (positions in ``Analysis.findings``) it rests on."""

    code: str
    lines: List[str]
    findings: List[int] = field(default_factory=list)
    data: Dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def _block(slots: List[int], chunk: int) -> int:
    """Smallest aligned power-of-two block of slots holding all of them."""
    lo, hi = min(slots), max(slots)
    b = 1
    while b < chunk and lo // b != hi // b:
        b <<= 1
    return b


def _dup(a: Any, i: int, f: Any, chunk_shift: int) -> Explanation:
    chunk = 1 << chunk_shift
    slots = sorted(f.slots)
    lines = ["folio %s seen %d times" % (fmt.hx(f.folio), len(slots))]
    data: Dict[str, Any] = {}
    if f.node is not None and len(slots) > 1:
        diffs = {b - a_ for a_, b in zip(slots, slots[1:])}
        s = f.shift or 0
        if len(diffs) == 1:
            d = diffs.pop()
            if d & (d - 1) == 0:
                piece = s + d.bit_length() - 1
                block = _block(slots, chunk)
                orig = s + block.bit_length() - 1
                # Include the block start: the canonical piece at the block
                # base may hold another folio now.
                data.update(stride=d, piece_order=piece, orig_order=orig)
                lines.append("stride %d slots = order-%d pieces" % (d, piece))
                if f.order is not None:
                    lines.append("folio order now: %d" % f.order)
                if block > d:
                    lo = slots[0] - slots[0] % block
                    lines.append("spread over slots %d-%d = order %d"
                                 % (lo, lo + block - 1, orig))
                    lines.append("=> an order-%d entry split to order %d"
                                 % (orig, piece))
                    lines.append("   (xas_split) left stale pieces")
                    if block == chunk:
                        lines.append("   (order %d fills a node: the level"
                                     % orig)
                        lines.append("   below it was elided at insert)")
        fi = f.extra.get("folio_index")
        if fi is not None:
            if fi in f.indices:
                lines.append("folio->index %s: the copy at slot %d"
                             % (fmt.hx(fi), fmt.slot_of(fi, s)))
                lines.append("is its own; the others are stale")
            else:
                lines.append("folio->index %s matches no copy"
                             % fmt.hx(fi))
    else:
        nodes = set(f.extra.get("nodes") or [])
        if len(nodes) == 1:
            lines.append("in node %s at %d positions:" % (
                fmt.hx(nodes.pop()), len(slots)))
            lines.append("the node is shared (see SHARED_SUBTREE)")
        else:
            lines.append("in %d nodes: cross-tree or stale copy"
                         % len(nodes))
    return Explanation("STALE_SPLIT" if "orig_order" in data else "DUP",
                       lines, [i], data)


def explain(a: Any) -> List[Explanation]:
    """Explanations for ``a`` (an :class:`crashext.analyze.Analysis`)."""
    out: List[Explanation] = []
    cs = a.layout.chunk_shift if a.layout else 6
    by_code: Dict[str, List[int]] = {}
    for i, f in enumerate(a.findings):
        by_code.setdefault(f.code, []).append(i)
    for i in by_code.get("DUP_FOLIO", []):
        out.append(_dup(a, i, a.findings[i], cs))
    for i in by_code.get("FOLIO_ORDER", []):
        f = a.findings[i]
        if isinstance(f.expected, int) and isinstance(f.found, int):
            if f.found < f.expected:
                out.append(Explanation("SPLIT_UNSEEN", [
                    "index %s: tree holds an order-%d"
                    % (fmt.hx(f.indices[0]), f.expected),
                    "entry, folio is order %d: folio split"
                    % f.found,
                    "without the tree being updated"], [i]))
            else:
                out.append(Explanation("ORDER_GREW", [
                    "index %s: tree entry order %d, folio"
                    % (fmt.hx(f.indices[0]), f.expected),
                    "order %d: stale pointer to a reused folio"
                    % f.found], [i]))
    lost = getattr(getattr(a, "impact", None), "lost", None)
    cross = {id(c.finding): c for c in (lost.cross if lost else [])}
    for i in by_code.get("NODE_ARRAY", []):
        f = a.findings[i]
        who = fmt.hx(f.found)
        if "other_ino" in f.extra:
            who += " (inode %d)" % f.extra["other_ino"]
        lines = ["node %s belongs to xarray" % fmt.hx(f.node), who + ":"]
        data: Dict[str, Any] = {}
        c = cross.get(id(f))
        if c is not None and c.reached:
            lines += ["that tree holds it too: %s" % (
                          "its xa_head" if not c.holder else
                          "slot %d of node" % c.slot),
                      ("%s, idx" % fmt.hx(c.holder)) if c.holder else "idx",
                      fmt.idx_range(c.index, c.index + c.span - 1) + ":",
                      "one subtree under two trees; its",
                      "folios are read in both files"]
            data = {"shared": True, "other_index": c.index,
                    "span": c.span}
        elif c is not None and c.reached is False:
            lines += ["that tree does not hold it:", c.why + ";",
                      "its ->array is stale: node freed",
                      "and reused without zeroing?"]
            data = {"shared": False}
        else:
            lines += ["node cross-linked from another tree",
                      "(freed and reused without zeroing?)"]
        out.append(Explanation("CROSS_LINK", lines, [i], data))
    for i in by_code.get("NODE_FREEING", []):
        f = a.findings[i]
        out.append(Explanation("FREED_NODE", [
            "node %s is being freed" % fmt.hx(f.node),
            "(array == XA_RCU_FREE) yet still linked:",
            "use after free of an xa_node"], [i]))
    sib = [i for c in ("SIBLING_TO_NULL", "SIBLING_FORWARD",
                       "SIBLING_TO_SIBLING", "SIBLING_TO_NODE",
                       "SIBLING_TO_SPECIAL", "SIBLING_RUN_BROKEN")
           for i in by_code.get(c, [])]
    if sib:
        nodes = {a.findings[i].node for i in sib}
        n_slots = sum(len(a.findings[i].slots) for i in sib)
        out.append(Explanation("STALE_SIBLINGS", [
            "%d sibling slot%s in %d node%s lack%s a valid"
            % (n_slots, "" if n_slots == 1 else "s", len(nodes),
               "" if len(nodes) == 1 else "s", "s" if n_slots == 1 else ""),
            "canonical entry: stale siblings, as left",
            "by xas_split_alloc() in a node not zeroed"], sib))
    for i in by_code.get("FOLIO_MAPPING", []):
        e = _mapping_explanation(a, i, a.findings[i])
        if e is not None:
            out.append(e)
    for i in by_code.get("NODE_CYCLE", []):
        out.append(_cycle(a, i, a.findings[i]))
    where = {id(f): k for k, f in enumerate(a.findings)}
    for s in (lost.shared if lost is not None else []):
        out.append(_shared(a, s, where.get(id(s.finding), 0)))
    for i in by_code.get("NRPAGES", []):
        f = a.findings[i]
        lines = ["tree holds %d pages, nrpages is %d:" % (f.found, f.expected)]
        if lost is not None and lost.nrpages is not None:
            lines.extend(lost.lines())
        else:
            lines.append("entries lost or counted twice")
        out.append(Explanation("NRPAGES", lines, [i], {
            "reachable": getattr(lost, "reachable", None),
            "unexplained": getattr(lost, "unexplained", None)}))
    unread = [i for c in ("NODE_UNREADABLE", "FOLIO_UNREADABLE")
              for i in by_code.get(c, [])]
    if unread:
        out.append(Explanation("INCOMPLETE", [
            "%d node/folio reads failed (excluded" % len(unread),
            "or bad pages): the walk is incomplete"], unread))
    return out


def _cycle(a: Any, i: int, f: Any) -> Explanation:
    """A node that is its own ancestor: what the slot that points back
    up should have held is cut off."""
    depth = (f.extra or {}).get("ancestor_depth")
    lines = ["slot %s of node %s points back at" % (
        fmt.slot_list(f.slots) if f.slots else "head", fmt.hx(f.node)),
        "node %s, its own ancestor%s:" % (
            fmt.hx(f.address), "" if depth is None else
            " (depth %d)" % depth),
        "a cycle; the subtree of that slot (from",
        "%s) is cut off" % (fmt.idx(f.indices[0]) if f.indices else "?")]
    return Explanation("CYCLE", lines, [i], {"ancestor_depth": depth})


def _shared(a: Any, s: Any, i: int) -> Explanation:
    """A node reached from two slots, told completely (crashext.lost
    Shared): both index ranges, the folio->index delta, which slot is
    its own, and the node cut off from the other."""
    first, second = s.first, s.second
    if first[0] == second[0]:
        held = ["node %s (shift %s) is in" % (fmt.hx(s.node), s.shift),
                "slots %d and %d of node %s:" % (first[1], second[1],
                                                 fmt.hx(first[0]))]
    else:
        held = ["node %s (shift %s) is in" % (fmt.hx(s.node), s.shift),
                "slot %d of node %s and" % (first[1], fmt.hx(first[0])),
                "slot %d of node %s:" % (second[1], fmt.hx(second[0]))]
    lines = held + [
        "its %d folio%s (%d pages) read at" % (
            s.folios, "" if s.folios == 1 else "s", s.pages),
        "%s and again at" % fmt.idx_range(first[2], first[2] + s.span - 1),
        "%s" % fmt.idx_range(second[2], second[2] + s.span - 1)]
    wrong = s.wrong
    own = first if s.own == 0 else second if s.own == 1 else None
    if own is not None:
        d = own[2] - wrong[2]
        lines.append("(folio->index %s %s there)" % (
            "lower by" if d < 0 else "higher by", fmt.idx(abs(d))))
        lines.append("its parent/offset name slot %d:" % own[1])
        lines.append("slot %d%s is the wrong one" % (
            wrong[1], "" if wrong[0] == own[0] else
            " of node %s" % fmt.hx(wrong[0])))
    else:
        lines.append("its parent/offset name neither slot")
    c = s.cutoff
    if c is not None:
        lines.append("cut off from slot %d: node %s" % (wrong[1],
                                                        fmt.hx(c.node)))
        lines.append("with %d page%s in %d folio%s of this file" % (
            c.pages, "" if c.pages == 1 else "s", len(c.folios),
            "" if len(c.folios) == 1 else "s"))
    elif s.cutoff_pages is not None:
        lines.append("the node of slot %d is cut off:" % wrong[1])
        lines.append("%d page%s in %d folio%s (memory map)" % (
            s.cutoff_pages, "" if s.cutoff_pages == 1 else "s",
            s.cutoff_folios or 0, "" if s.cutoff_folios == 1 else "s"))
    else:
        lines.append("the node of slot %d is cut off" % wrong[1])
        lines.append("(find it: --slab, --memmap)")
    if not s.walked:
        lines.append("(second position not walked: visit limit)")
    return Explanation("SHARED_SUBTREE", lines, [i], {
        "node": s.node, "first_index": first[2], "second_index": second[2],
        "span": s.span, "delta": s.delta, "own": s.own, "pages": s.pages,
        "cutoff_node": c.node if c is not None else None,
        "cutoff_pages": c.pages if c is not None else s.cutoff_pages})


#: Low bits of folio->mapping (include/linux/page-flags.h, 6.1 and 6.12:
#: PAGE_MAPPING_ANON 0x1, PAGE_MAPPING_MOVABLE 0x2, KSM = both).
_MAPPING_KIND = {1: "anonymous (anon_vma)", 2: "movable (non-LRU)",
                 3: "KSM"}


def _mapping_explanation(a: Any, i: int, f: Any) -> Optional[Explanation]:
    """What folio->mapping says about a folio that is not this mapping's:
    another inode's, none (removed from the cache), or an anonymous,
    movable or KSM page (freed and reused)."""
    at = fmt.hx(f.indices[0]) if f.indices else "?"
    if "other_ino" in f.extra:
        return Explanation("FOREIGN_FOLIO", [
            "folio at %s belongs to inode %d" % (at, f.extra["other_ino"]),
            "(mapping %s): foreign folio in tree" % fmt.hx(f.found)], [i])
    if not isinstance(f.found, int):
        return None
    rec = getattr(a, "folios", {}).get(f.folio) if f.folio else None
    ref = getattr(rec, "refcount", None)
    refs = "" if ref is None else ", refcount %d" % ref
    if f.found == 0:
        # page_cache_delete() (mm/filemap.c) clears the slot, then sets
        # folio->mapping = NULL: an entry left in the tree is stale.
        return Explanation("STALE_ENTRY", [
            "folio at %s has mapping NULL%s:" % (at, refs),
            "removed from the page cache",
            "(page_cache_delete) but its entry stayed"
            + ("; now free" if ref == 0 else "")], [i])
    kind = _MAPPING_KIND.get(f.found & 3)
    if kind:
        return Explanation("REUSED_FOLIO", [
            "folio at %s is now %s%s:" % (at, kind, refs),
            "stale entry to a freed, reused page"], [i])
    return None
