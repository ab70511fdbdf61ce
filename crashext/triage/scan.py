"""Scan a whole dump: every page-cache tree of every inode of every
superblock, plus the swap cache, each through the one :func:`analyze`.

Engine code: reads memory only through :class:`crashext.memory.Memory`
(one read per ``struct inode``, one per superblock), never raises for
what it finds in the dump, and streams: :func:`scan` yields one
:class:`ScanRow` per tree analysed (or per problem met on the way) and
keeps nothing of the dump between rows but the list position.

Where the trees are (include/linux/fs.h, fs/super.c, mm/swap_state.c):

* ``super_blocks`` (``LIST_HEAD``) -> ``super_block.s_list``;
* ``super_block.s_inodes`` -> ``inode.i_sb_list``: every inode of that
  filesystem, shmem/tmpfs and the block-device pseudo filesystem included;
* each inode's own ``i_data`` is its page cache (``i_mapping`` points at
  it, or for a device node at the block device inode's ``i_data``, which is
  scanned from the bdev superblock: walking ``i_data`` sees every mapping
  once);
* ``swapper_spaces[type]`` -> ``nr_swapper_spaces[type]`` address_spaces
  per swap type (a swap cache has no host inode, so it is walked as a bare
  XArray: the mapping/index/nrpages checks are off).

>>> for row in scan(mem):                                  # doctest: +SKIP
...     if row.verdict != "clean": print(row.summary())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from ..findings import SEVERITY_RANK
from ..fmt import size
from ..layout import Layout
from ..memory import CrashextError, Memory, UnreadableMemory
from ..targets import Target

#: Bound on superblocks followed on ``super_blocks``.
MAX_SUPERBLOCKS = 100_000
#: Bound on inodes followed on one ``s_inodes`` list.
MAX_INODES_PER_SB = 50_000_000
#: Finding records kept per row (the counts keep every code).
MAX_FINDINGS_PER_ROW = 32
#: Indices kept per finding record.
MAX_INDICES = 16

ProgressFn = Callable[[Dict[str, Any]], None]


@dataclass
class ScanRow:
    """One tree analysed (``kind`` "inode" or "swap"), or one problem met
    while enumerating (``kind`` "error": ``error`` says what, ``where``
    names the list)."""

    kind: str
    verdict: str = "clean"          # clean / suspect / corrupt / error
    inode: Optional[int] = None
    i_ino: Optional[int] = None
    i_mapping: Optional[int] = None
    mapping: Optional[int] = None
    xarray: Optional[int] = None
    sb: Optional[int] = None
    fs_type: str = ""
    s_id: str = ""
    nrpages: Optional[int] = None
    i_size: Optional[int] = None
    swap_type: Optional[int] = None
    errors: int = 0
    warnings: int = 0
    counts: Dict[str, int] = field(default_factory=dict)   # walk stats
    codes: Dict[str, int] = field(default_factory=dict)    # code -> n
    findings: List[Dict[str, Any]] = field(default_factory=list)
    explanations: List[Dict[str, Any]] = field(default_factory=list)
    error: str = ""
    where: str = ""
    path: str = ""                  # from the dcache, rows with findings
    #: What the damage means for the file (render.impact.summary_dict):
    #: bytes that read wrong, data at risk, the nrpages equation.
    impact: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def name(self) -> str:
        """See :func:`row_name`."""
        return row_name(self.__dict__)

    def summary(self) -> str:
        """One line (chat width is the renderer's business)."""
        if self.kind == "error":
            return "%s: error: %s" % (self.name, self.error)
        codes = ", ".join("%s x%d" % kv for kv in sorted(self.codes.items()))
        imp = self.impact
        risk = ("; DATA AT RISK %s" % size(imp["risk_bytes"])
                if imp.get("at_risk") else "")
        wrong = ("; %s read wrong" % size(imp["wrong_bytes"])
                 if imp.get("wrong_bytes") else "")
        return "%s: %s%s%s%s" % (self.name, self.verdict,
                                 " (%s)" % codes if codes else "", risk,
                                 wrong)


def row_name(row: Dict[str, Any]) -> str:
    """A tree's name, from a :class:`ScanRow` or its dict (a triage
    result): ``xfs vda:134 /mnt/xfs/big200`` (the path on rows with
    findings) / ``swap 0:2`` / the error's place."""
    kind = row.get("kind")
    if kind == "swap":
        return "swap %d:%d" % (row.get("swap_type") or 0,
                               row.get("i_ino") or 0)
    if kind == "inode":
        return "%s %s:%s%s" % (row.get("fs_type") or "?",
                               row.get("s_id") or "?", row.get("i_ino"),
                               " " + row["path"] if row.get("path") else "")
    return row.get("where") or "scan"


def finding_record(f: Any) -> Dict[str, Any]:
    """A finding as a compact JSON-able dict (indices and slots capped)."""
    d = f.to_dict()
    n = len(d["indices"])
    if n > MAX_INDICES:
        d["indices"] = d["indices"][:MAX_INDICES]
        d["indices_total"] = n
    if len(d["slots"]) > 64:
        d["slots"] = d["slots"][:64]
    d = {k: v for k, v in d.items() if v not in (None, [], {}, ())}
    return d


def row_from_analysis(row: ScanRow, a: Any) -> ScanRow:
    """Fill ``row`` from an :class:`crashext.analyze.Analysis`."""
    s = a.stats
    row.verdict = a.verdict
    row.counts = {"nodes": s.nodes, "depth": s.depth, "entries": s.entries,
                  "folios": s.folios, "pages": s.pages, "values": s.values,
                  "value_indices": s.value_indices}
    for f in a.findings:
        row.codes[f.code] = row.codes.get(f.code, 0) + 1
        if f.severity == "error":
            row.errors += 1
        elif f.severity == "warning":
            row.warnings += 1
    row.findings = [finding_record(f)
                    for f in a.findings[:MAX_FINDINGS_PER_ROW]]
    row.explanations = [{"code": e.code, "lines": list(e.lines),
                         "data": dict(e.data)} for e in a.explanations]
    from ..render.impact import summary_dict
    row.impact = summary_dict(a)
    return row


# ----------------------------------------------------------------------
# Reading helpers


def _u64(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off:off + 8], "little")


def _cstr(mem: Memory, addr: int, size: int = 64) -> str:
    """A NUL-terminated string at ``addr`` ('' when unreadable).  Reads
    within the page so a short string near a page end still works."""
    if not addr:
        return ""
    n = min(size, 4096 - (addr & 4095))
    try:
        b = mem.read(addr, n)
    except UnreadableMemory:
        return ""
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Offsets:
    """Offsets of the structs the scan walks, from the dump's debug info."""

    def __init__(self, mem: Memory, lay: Layout) -> None:
        def need(s: str, m: str) -> int:
            off = mem.member_offset(s, m)
            if off is None:
                raise CrashextError("debug info has no %s.%s" % (s, m))
            return off

        SB, IN = "struct super_block", "struct inode"
        self.sb_list = need(SB, "s_list")
        self.sb_inodes = need(SB, "s_inodes")
        self.sb_type = need(SB, "s_type")
        self.sb_id = need(SB, "s_id")
        self.sb_id_size = mem.member_size(SB, "s_id") or 32
        self.fst_name = need("struct file_system_type", "name")
        self.i_sb_list = need(IN, "i_sb_list")
        self.inode_size = mem.struct_size(IN) or 0
        # One read per superblock / inode covers every field used.
        self.sb_read = max(self.sb_list + 16, self.sb_inodes + 16,
                           self.sb_type + 8, self.sb_id + self.sb_id_size)
        idata_end = (lay.inode_i_data + max(lay.as_nrpages + 8,
                                            lay.as_i_pages + lay.xa_head + 8))
        self.inode_read = max(self.i_sb_list + 16, lay.inode_i_mapping + 8,
                              lay.inode_i_ino + 8, lay.inode_i_size + 8,
                              lay.inode_i_sb + 8, idata_end)


def _list(mem: Memory, head: int, link_off: int, read_size: int,
          limit: int) -> Iterator[Any]:
    """Follow a ``list_head`` at ``head`` whose entries embed the link at
    ``link_off``: yield ``(entry_addr, buf)`` with ``buf`` = ``read_size``
    bytes of the entry (one read each), then a final ``("error", text)``
    when the list is broken (unreadable entry, bad ``prev`` back-link,
    cycle, or longer than ``limit``).

    A cycle that does not pass through ``head`` always breaks a ``prev``
    back-link (some entry is reached from a node that is not its ``prev``),
    so checking ``next->prev == cur`` finds it in O(1) memory."""
    try:
        first = mem.read_u64(head)
    except UnreadableMemory as e:
        yield ("error", "list head 0x%x unreadable (%s)" % (head, e.reason
                                                             or "read failed"))
        return
    prev, cur, n = head, first, 0
    while cur != head:
        if not cur or cur & 7:
            yield ("error", "bad list pointer 0x%x after 0x%x" % (cur, prev))
            return
        n += 1
        if n > limit:
            yield ("error", "list at 0x%x longer than %d: cycle?"
                   % (head, limit))
            return
        ent = cur - link_off
        try:
            buf = mem.read(ent, read_size)
        except UnreadableMemory as e:
            yield ("error", "entry 0x%x unreadable (%s)"
                   % (ent, e.reason or "read failed"))
            return
        nxt, back = _u64(buf, link_off), _u64(buf, link_off + 8)
        if back != prev:
            yield ("error", "list entry 0x%x: prev 0x%x, reached from 0x%x "
                   "(broken list or cycle)" % (ent, back, prev))
            return
        yield (ent, buf)
        prev, cur = cur, nxt


# ----------------------------------------------------------------------
# The scan


def _analyze_row(mem: Memory, row: ScanRow, target: Target,
                 max_nodes: Optional[int], memmap: Any = "auto",
                 slab_nodes: Optional[Dict[int, list]] = None) -> ScanRow:
    from ..analyze import analyze     # late: analyze imports a lot
    kw: Dict[str, Any] = {"memmap": memmap}
    if max_nodes is not None:
        kw["max_nodes"] = max_nodes
    if slab_nodes is not None and target.xarray:
        kw["slab_nodes"] = slab_nodes.get(target.xarray, [])
    try:
        a = analyze(mem, target, **kw)
    except CrashextError as e:
        row.verdict, row.error = "error", str(e)
        return row
    except Exception as e:              # a bug must not end the scan
        row.verdict = "error"
        row.error = "internal error: %s: %s" % (type(e).__name__, e)
        return row
    return row_from_analysis(row, a)


def superblocks(mem: Memory, lay: Optional[Layout] = None
                ) -> Iterator[Dict[str, Any]]:
    """Every superblock on ``super_blocks``: dicts with ``sb``,
    ``fs_type``, ``s_id``, ``inodes_head`` (or ``error``)."""
    if lay is None:
        from ..analyze import layout_for
        lay = layout_for(mem)
    off = _Offsets(mem, lay)
    head = mem.symbol("super_blocks")
    if head is None:
        yield {"error": "no symbol super_blocks"}
        return
    for sb, buf in _list(mem, head, off.sb_list, off.sb_read,
                         MAX_SUPERBLOCKS):
        if sb == "error":
            yield {"error": "super_blocks: " + buf}
            return
        s_id = buf[off.sb_id:off.sb_id + off.sb_id_size].split(b"\0", 1)[0]
        st = _u64(buf, off.sb_type)
        name = ""
        if st:
            try:
                name = _cstr(mem, mem.read_u64(st + off.fst_name), 32)
            except UnreadableMemory:
                name = ""
        yield {"sb": sb, "fs_type": name,
               "s_id": s_id.decode("utf-8", "replace"),
               "inodes_head": sb + off.sb_inodes}


def iter_trees(mem: Memory, progress: Optional[ProgressFn] = None,
               swap: bool = True, include_empty: bool = False,
               fs_types: Optional[Iterable[str]] = None
               ) -> Iterator[ScanRow]:
    """Every page-cache tree of the dump as an unanalysed :class:`ScanRow`
    (``verdict`` "clean"; ``counts`` holds only ``head``, the raw
    ``xa_head``), plus ``kind="error"`` rows for lists that could not be
    followed.  Reads one ``struct inode`` per inode and nothing else.
    Same arguments as :func:`scan`."""
    from ..analyze import layout_for
    lay = layout_for(mem)
    off = _Offsets(mem, lay)
    want = set(fs_types) if fs_types else None
    n_inodes = n_trees = 0
    for sbd in superblocks(mem, lay):
        if "error" in sbd:
            yield ScanRow("error", "error", error=sbd["error"],
                          where="super_blocks")
            break
        if want is not None and sbd["fs_type"] not in want:
            continue
        sb = sbd["sb"]
        common = dict(sb=sb, fs_type=sbd["fs_type"], s_id=sbd["s_id"])
        for ino, buf in _list(mem, sbd["inodes_head"], off.i_sb_list,
                              off.inode_read, MAX_INODES_PER_SB):
            if ino == "error":
                yield ScanRow("error", "error", error=buf,
                              where="%s %s s_inodes" % (sbd["fs_type"],
                                                         sbd["s_id"]),
                              **common)
                break
            n_inodes += 1
            if progress and n_inodes % 10000 == 0:
                progress(dict(common, inodes=n_inodes, trees=n_trees,
                              done=False))
            mapping = ino + lay.inode_i_data
            nrpages = _u64(buf, lay.inode_i_data + lay.as_nrpages)
            xa_head = _u64(buf, lay.inode_i_data + lay.as_i_pages
                           + lay.xa_head)
            if not nrpages and not xa_head and not include_empty:
                continue
            n_trees += 1
            yield ScanRow("inode", inode=ino,
                          i_ino=_u64(buf, lay.inode_i_ino),
                          i_mapping=_u64(buf, lay.inode_i_mapping),
                          mapping=mapping, xarray=mapping + lay.as_i_pages,
                          nrpages=nrpages, counts={"head": xa_head},
                          i_size=_u64(buf, lay.inode_i_size), **common)
        if progress:
            progress(dict(common, inodes=n_inodes, trees=n_trees,
                          done=False))
    if swap and (want is None or "swap" in want):
        for row in scan_swap(mem, lay, include_empty):
            n_trees += row.kind == "swap"
            yield row
    if progress:
        progress({"inodes": n_inodes, "trees": n_trees, "done": True})


def row_target(row: ScanRow) -> Target:
    """The :class:`Target` to analyse for a tree row (a swap cache is a
    bare XArray: no host inode, and anonymous folios' mapping is not it)."""
    if row.kind == "swap":
        t = Target("xarray", row.xarray, row.xarray)
        if hasattr(t, "swap_cache"):
            t.swap_cache = True
    else:
        t = Target("inode", row.inode, row.xarray, row.mapping, row.inode,
                   row.i_ino, row.i_size, row.nrpages)
    if hasattr(t, "fs_type") and row.fs_type:
        t.fs_type = row.fs_type
    return t


def scan(mem: Memory, progress: Optional[ProgressFn] = None,
         swap: bool = True, include_empty: bool = False,
         fs_types: Optional[Iterable[str]] = None,
         max_nodes: Optional[int] = None, memmap: Any = "auto",
         slab_nodes: Optional[Dict[int, list]] = None
         ) -> Iterator[ScanRow]:
    """Analyse every page-cache tree in the dump; yield one
    :class:`ScanRow` per tree (and one ``kind="error"`` row per list that
    could not be followed to its end).

    Mappings with ``nrpages == 0`` and an empty ``xa_head`` are skipped
    after reading only the inode (``include_empty=True`` yields a clean
    row for them too).  ``fs_types`` limits the scan to those filesystem
    type names ("swap" names the swap cache).  ``progress`` is called with
    a dict (``sb``, ``fs_type``, ``s_id``, ``inodes``, ``trees``, ``done``)
    after each superblock and every 10,000 inodes.  Raises
    :class:`CrashextError` only when the debug info lacks the structs
    (wrong vmlinux).

    ``memmap`` ("auto"): walk the memory map for a tree whose nrpages the
    tree does not account for (False: never); ``slab_nodes``: the slab
    walk's node headers by ``array`` (cut-off subtrees), None: not
    searched.  See :func:`crashext.analyze.analyze`.
    """
    for row in iter_trees(mem, progress, swap, include_empty, fs_types):
        if row.kind == "error":
            yield row
            continue
        head = row.counts.pop("head", 0)
        if not row.nrpages and not head:
            yield row
            continue
        row = _analyze_row(mem, row, row_target(row), max_nodes, memmap,
                           slab_nodes)
        if row.kind == "inode" and row.verdict != "clean":
            row.path = _path_of(mem, row.inode)
        yield row


def _path_of(mem: Memory, inode: Optional[int]) -> str:
    """The inode's path from the dcache (crashext.vfs.inode_path), or ""
    when it has no dentry or the dentries cannot be read: a name for the
    report, never a reason to lose the row."""
    from ..vfs import inode_path
    if not inode:
        return ""
    try:
        return inode_path(mem, inode) or ""
    except Exception:           # CrashextError, or a bug on garbage bytes
        return ""


def scan_swap(mem: Memory, lay: Optional[Layout] = None,
              include_empty: bool = False) -> Iterator[ScanRow]:
    """The swap cache trees (``swapper_spaces[type][0..nr)``), when the
    kernel has them and swap is on; nothing otherwise.  Rows are not
    analysed (see :func:`scan`)."""
    if lay is None:
        from ..analyze import layout_for
        lay = layout_for(mem)
    spaces = mem.symbol("swapper_spaces")
    nrs = mem.symbol("nr_swapper_spaces")
    if spaces is None or nrs is None:
        return
    # Only types 0..nr_swapfiles-1 were ever set up (mm/swapfile.c
    # alloc_swap_info()); reading past them would read other globals.
    nsf = mem.symbol("nr_swapfiles")
    try:
        n_types = (int.from_bytes(mem.read(nsf, 4), "little")
                   if nsf is not None else 1)
    except UnreadableMemory as e:
        yield ScanRow("error", "error", error=str(e), where="nr_swapfiles")
        return
    if n_types <= 0:
        return
    if n_types > 64:
        yield ScanRow("error", "error", where="nr_swapfiles",
                      error="nr_swapfiles = %d: implausible" % n_types)
        return
    as_size = mem.struct_size("struct address_space") or 0
    if not as_size:
        return
    try:
        ptrs = mem.read(spaces, 8 * n_types)
        counts = mem.read(nrs, 4 * n_types)
    except UnreadableMemory as e:
        yield ScanRow("error", "error", error=str(e), where="swapper_spaces")
        return
    for t in range(n_types):
        base = _u64(ptrs, 8 * t)
        nr = int.from_bytes(counts[4 * t:4 * t + 4], "little")
        if not base or not nr:
            continue
        if nr > 1 << 20:
            yield ScanRow("error", "error", where="swapper_spaces[%d]" % t,
                          error="nr_swapper_spaces[%d] = %d: implausible"
                          % (t, nr))
            continue
        for i in range(nr):
            m = base + i * as_size
            try:
                hdr = mem.read(m, max(lay.as_nrpages + 8,
                                      lay.as_i_pages + lay.xa_head + 8))
            except UnreadableMemory as e:
                yield ScanRow("error", "error", error=str(e),
                              where="swapper_spaces[%d][%d]" % (t, i))
                break
            nrpages = _u64(hdr, lay.as_nrpages)
            head = _u64(hdr, lay.as_i_pages + lay.xa_head)
            if not nrpages and not head and not include_empty:
                continue
            yield ScanRow("swap", swap_type=t, i_ino=i, mapping=m,
                          xarray=m + lay.as_i_pages, nrpages=nrpages,
                          fs_type="swap", s_id="swap%d" % t,
                          counts={"head": head})


# ----------------------------------------------------------------------
# Ranking

VERDICT_RANK = {"corrupt": 0, "error": 1, "suspect": 2, "clean": 3}


def rank(rows: Iterable[ScanRow], limit: Optional[int] = None,
         include_clean: bool = False) -> List[ScanRow]:
    """Rows most worth a look first: corrupt (data at risk first, then by
    error count, then warnings), then enumeration errors, then suspect;
    clean rows only with ``include_clean``.  Only the kept rows are held
    in memory."""
    kept = [r for r in rows if include_clean or r.verdict != "clean"]
    # Data at risk first (dirty data lost or misplaced), within a verdict.
    kept.sort(key=lambda r: (VERDICT_RANK.get(r.verdict, 9),
                             not r.impact.get("at_risk"), -r.errors,
                             -r.warnings, r.fs_type, r.s_id,
                             r.i_ino if r.i_ino is not None else -1))
    return kept[:limit] if limit else kept


def summarize(rows: Iterable[ScanRow], top: int = 50) -> Dict[str, Any]:
    """Stream ``rows`` into a ranked summary dict: totals by verdict, by
    filesystem and by finding code, and the ``top`` worst rows (as dicts).
    Clean rows are counted, not kept."""
    by_verdict: Dict[str, int] = {}
    by_fs: Dict[str, Dict[str, int]] = {}
    by_code: Dict[str, int] = {}
    pages = 0
    bad: List[ScanRow] = []
    n = 0
    for r in rows:
        n += 1
        by_verdict[r.verdict] = by_verdict.get(r.verdict, 0) + 1
        fs = by_fs.setdefault(r.fs_type or r.kind, {})
        fs[r.verdict] = fs.get(r.verdict, 0) + 1
        pages += r.counts.get("pages", 0)
        for c, k in r.codes.items():
            by_code[c] = by_code.get(c, 0) + k
        if r.verdict != "clean":
            bad.append(r)
            if len(bad) > 4 * top + 100:      # keep memory bounded
                bad = rank(bad, limit=top)
    ranked = rank(bad, limit=top)
    worst = "clean"
    for v in ("corrupt", "error", "suspect"):
        if by_verdict.get(v):
            worst = v
            break
    return {"rows": n, "verdict": worst, "by_verdict": by_verdict,
            "by_fs": by_fs, "pages": pages,
            "codes": dict(sorted(by_code.items(),
                                 key=lambda kv: (SEVERITY_RANK.get(
                                     _sev(kv[0]), 9), -kv[1], kv[0]))),
            "top": [r.to_dict() for r in ranked]}


def _sev(code: str) -> str:
    from ..findings import CODES
    return CODES.get(code, ("error", ""))[0]
