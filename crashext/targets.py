"""Turn what a user names (an inode, ``address_space``, ``struct xarray``,
``struct file``, folio/page address, or a path) into the XArray to walk.

An untyped address is identified from the kernel's own back-pointers:
an inode's ``i_mapping->host`` is the inode, a mapping's ``host->i_mapping``
is the mapping, an XArray is ``&mapping->i_pages`` of such a mapping, a
file's ``f_mapping`` is such a mapping, and a page-cache folio's
``mapping`` is one.  An address that is none of these is walked as a bare
XArray (mapping/index/nrpages checks are then off, and the result says so).

>>> t = resolve_target(mem, layout, "0xffff888006cbc938")   # doctest: +SKIP
>>> t.kind, t.i_ino                                          # doctest: +SKIP
('inode', 134)
"""

from __future__ import annotations

from dataclasses import dataclass, asdict, replace
from typing import Any, Dict, NamedTuple, Optional

from .layout import Layout
from .memory import CrashextError, Memory, MemoryView, UnreadableMemory
from .vfs import lookup_path

KINDS = ("inode", "mapping", "xarray", "file", "folio", "path")
ALIASES = {"as": "mapping", "address_space": "mapping", "page": "folio",
           "xa": "xarray", "i": "inode", "f": "file"}


@dataclass
class Target:
    """The tree to analyse and what owns it."""

    kind: str                   # what the user named
    addr: int                   # the address the user gave (or resolved)
    xarray: int
    mapping: Optional[int] = None
    inode: Optional[int] = None
    i_ino: Optional[int] = None
    i_size: Optional[int] = None
    nrpages: Optional[int] = None
    label: str = ""             # the path, when one was given
    folio: Optional[int] = None  # the folio the user named, if any
    fs_type: Optional[str] = None   # i_sb->s_type->name ("xfs", "tmpfs")
    swap_cache: bool = False    # a swapper_spaces[] tree: folio->mapping
                                # and ->index are not the cache's

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_address(text: str) -> int:
    """``0xffff888006cbc938``, ``ffff888006cbc938`` (crash style, hex
    without 0x) -> int.  Raises CrashextError on anything else."""
    t = text.strip().lower()
    if t.startswith("0x"):
        t = t[2:]
    try:
        v = int(t, 16)
    except ValueError:
        raise CrashextError("not an address: %r" % text)
    if not 0 < v < 1 << 64:
        raise CrashextError("address out of range: %r" % text)
    return v


def _u64(mem: Memory, addr: int) -> Optional[int]:
    try:
        return mem.read_u64(addr)
    except UnreadableMemory:
        return None


def _mapping_ok(mem: Memory, lay: Layout, m: int) -> Optional[int]:
    """Return the host inode when ``m`` is an address_space whose
    ``host->i_mapping`` points back at it."""
    if not m or m & 7:
        return None
    host = _u64(mem, m + lay.as_host)
    if not host or host & 7:
        return None
    if _u64(mem, host + lay.inode_i_mapping) == m:
        return host
    return None


def _fill(mem: Memory, lay: Layout, t: Target) -> Target:
    if t.mapping is not None:
        t.xarray = t.mapping + lay.as_i_pages
        t.nrpages = _u64(mem, t.mapping + lay.as_nrpages)
    if t.inode:
        t.i_ino = _u64(mem, t.inode + lay.inode_i_ino)
        t.i_size = _u64(mem, t.inode + lay.inode_i_size)
        t.fs_type = fs_type_of(mem, lay, t.inode)
    return t


class TargetChanged(CrashextError):
    """A live target no longer names the tree it named (its inode was
    freed or reused, its mapping moved)."""


class TargetState(NamedTuple):
    """The fields of a target that a live kernel changes (None: not
    applicable or unreadable)."""

    i_mapping: Optional[int]
    i_ino: Optional[int]
    i_size: Optional[int]
    host: Optional[int]
    nrpages: Optional[int]
    xa_head: Optional[int]
    i_rwsem: Optional[int] = None   # inode->i_rwsem.count

    @property
    def writer_locked(self) -> bool:
        """A writer holds ``inode->i_rwsem`` (a truncate or a write in
        progress): RWSEM_WRITER_LOCKED, bit 0 of ``count``
        (kernel/locking/rwsem.c, since 5.3)."""
        return bool(self.i_rwsem is not None and self.i_rwsem & 1)


def read_state(mem: Memory, lay: Layout, t: Target) -> TargetState:
    """``t``'s :class:`TargetState` as it is now: one read when the
    fields lie within 4 KiB (an inode and its own ``i_data``, the usual
    case), else one read per field."""
    want = {}
    if t.inode:
        want["i_mapping"] = t.inode + lay.inode_i_mapping
        want["i_ino"] = t.inode + lay.inode_i_ino
        want["i_size"] = t.inode + lay.inode_i_size
        rw = _rwsem_count_offset(mem, lay)
        if rw is not None:
            want["i_rwsem"] = t.inode + rw
    if t.mapping is not None:
        want["host"] = t.mapping + lay.as_host
        want["nrpages"] = t.mapping + lay.as_nrpages
    want["xa_head"] = t.xarray + lay.xa_head
    lo = min(want.values())
    hi = max(want.values()) + 8
    vals: Dict[str, Optional[int]] = {}
    if hi - lo <= 4096:
        try:
            buf = mem.read(lo, hi - lo)
            vals = {k: int.from_bytes(buf[a - lo:a - lo + 8], "little")
                    for k, a in want.items()}
        except UnreadableMemory:
            vals = {}
    if not vals:
        vals = {k: _u64(mem, a) for k, a in want.items()}
    return TargetState(*(vals.get(k) for k in TargetState._fields))


def _rwsem_count_offset(mem: Memory, lay: Layout) -> Optional[int]:
    """Offset of ``i_rwsem.count`` in ``struct inode`` (debug info; once
    per layout), None when the kernel has no such field."""
    key = "inode_i_rwsem_count"
    if key not in lay.extra:
        a = mem.member_offset("struct inode", "i_rwsem")
        b = mem.member_offset("struct rw_semaphore", "count")
        lay.extra[key] = None if a is None or b is None else a + b
    return lay.extra[key]


def refresh_target(mem: Memory, lay: Layout, t: Target,
                   state: Optional[TargetState] = None) -> Target:
    """A copy of ``t`` with ``nrpages``, ``i_size`` and ``i_ino`` as they
    are now (``state``, else :func:`read_state`): a live kernel changes
    them.  Raises :class:`TargetChanged` when ``t`` no longer names the
    same tree: the mapping's ``host`` is not the inode, the inode's
    ``i_mapping`` is not the mapping (unless it is the inode's own
    ``i_data``), or ``i_ino`` changed (an inode
    freed and reused, fs/inode.c).  A bare XArray has nothing to re-read."""
    if t.mapping is None:
        return t
    st = state if state is not None else read_state(mem, lay, t)
    new = replace(t)
    if t.inode:
        own = t.mapping == t.inode + lay.inode_i_data     # scan rows
        if st.host != t.inode or (st.i_mapping != t.mapping and not own):
            raise TargetChanged("inode 0x%x no longer owns mapping 0x%x "
                                "(freed or reused)" % (t.inode, t.mapping))
        if t.i_ino is not None and st.i_ino != t.i_ino:
            raise TargetChanged("inode 0x%x is now inode %s, was %d (freed "
                                "and reused)" % (t.inode, st.i_ino, t.i_ino))
        new.i_size = st.i_size
    new.nrpages = st.nrpages
    return new


def fs_type_of(mem: Memory, lay: Layout, inode: int) -> Optional[str]:
    """``inode->i_sb->s_type->name``, or None when unreadable."""
    st = mem.member_offset("struct super_block", "s_type")
    nm = mem.member_offset("struct file_system_type", "name")
    if st is None or nm is None:
        return None
    sb = _u64(mem, inode + lay.inode_i_sb)
    fst = _u64(mem, sb + st) if sb else None
    name = _u64(mem, fst + nm) if fst else None
    if not name:
        return None
    try:
        raw = mem.read(name, 16)
    except UnreadableMemory:
        return None
    raw = raw.split(b"\0", 1)[0]
    return raw.decode("ascii", "replace") if raw.isascii() else None


class _Probe(MemoryView):
    """Delegates to a Memory and remembers the reads that failed, so a
    target that cannot be identified says whether memory was missing
    (excluded pages, a truncated dump) rather than only "not an inode"."""

    def __init__(self, inner: Memory) -> None:
        super().__init__(inner)
        self.failed: list = []

    def read(self, addr: int, size: int) -> bytes:
        try:
            return self.base.read(addr, size)
        except UnreadableMemory as e:
            self.failed.append(e)
            raise


def resolve_target(mem: Memory, lay: Layout, spec: str) -> Target:
    """Resolve ``spec`` (``[KIND:]ADDRESS`` or ``/path``) to a Target.

    Raises :class:`CrashextError` with a one-line reason when the address
    cannot be read or is not of the kind requested; when reads failed on
    the way, the reason names the first of them.
    """
    probe = _Probe(mem)
    try:
        return _resolve(probe, lay, spec)
    except CrashextError as e:
        if probe.failed and "cannot read" not in str(e):
            f = probe.failed[0]
            raise CrashextError("%s (while checking, memory at 0x%x was "
                                "unreadable: %s)" % (e, f.addr,
                                                     f.reason or "fault"))
        raise


def _resolve(mem: Memory, lay: Layout, spec: str) -> Target:
    spec = spec.strip()
    if spec.startswith("/"):
        # The backend's resolver when it has one (drgn's path_lookup),
        # else the engine's dcache walk (crash/PyKdump, any Memory).
        resolver = getattr(mem, "resolve_path", None)
        inode = resolver(spec) if resolver else None
        if inode is None:           # no resolver, or no answer (snapshot)
            try:
                inode = lookup_path(mem, spec)
            except CrashextError:
                if resolver:        # a snapshot that did not record it
                    raise CrashextError("path %s was not captured in this "
                                        "snapshot" % spec) from None
                raise
            note = getattr(mem, "record_answer", None)
            if note is not None:
                note("resolve_path", spec, inode)
        t = resolve_target(mem, lay, "inode:0x%x" % inode)
        t.kind, t.label = "path", spec
        return t
    kind = None
    if ":" in spec:
        k, _, rest = spec.partition(":")
        k = ALIASES.get(k.lower(), k.lower())
        if k not in KINDS:
            raise CrashextError("unknown target kind %r (one of %s)"
                                % (k, ", ".join(KINDS[:-1])))
        kind, spec = k, rest
    addr = parse_address(spec)
    try:
        mem.read_u64(addr)
    except UnreadableMemory as e:
        raise CrashextError("cannot read memory at 0x%x%s" % (
            addr, ": " + e.reason if e.reason else "")) from None

    if kind in (None, "inode"):
        m = _u64(mem, addr + lay.inode_i_mapping)
        if m and _mapping_ok(mem, lay, m) == addr:
            return _fill(mem, lay, Target("inode", addr, 0, m, addr))
        if kind == "inode":
            raise CrashextError("0x%x is not an inode (i_mapping->host "
                                "does not point back)" % addr)
    if kind in (None, "mapping"):
        host = _mapping_ok(mem, lay, addr)
        if host:
            return _fill(mem, lay, Target("mapping", addr, 0, addr, host))
        if kind == "mapping":
            raise CrashextError("0x%x is not an address_space (host->"
                                "i_mapping does not point back)" % addr)
    if kind in (None, "xarray"):
        m = addr - lay.as_i_pages
        host = _mapping_ok(mem, lay, m)
        if host:
            return _fill(mem, lay, Target("xarray", addr, 0, m, host))
        if kind == "xarray":
            # A bare XArray: walk it, without page-cache checks.
            return Target("xarray", addr, addr)
    if kind in (None, "folio") and addr % lay.page_size == 0:
        # A folio lives in the struct page array: page-size aligned, a head
        # (compound_head bit 0 clear), mapping an address_space.
        m = _u64(mem, addr + lay.f_mapping)
        ch = (_u64(mem, addr + lay.f_compound_head)
              if lay.f_compound_head is not None else 0)
        host = _mapping_ok(mem, lay, m) if m and not (ch or 0) & 1 else None
        if host:
            t = _fill(mem, lay, Target("folio", addr, 0, m, host))
            t.folio = addr
            return t
    if kind == "folio":
        raise CrashextError("0x%x is not a page-cache folio (its "
                            "mapping is not an address_space)" % addr)
    if kind in (None, "file"):
        # struct file: f_mapping is an address_space whose host is f_inode.
        off = mem.member_offset("struct file", "f_mapping")
        ioff = mem.member_offset("struct file", "f_inode")
        m = _u64(mem, addr + off) if off is not None else None
        host = _mapping_ok(mem, lay, m) if m else None
        if host and ioff is not None and _u64(mem, addr + ioff) == host:
            return _fill(mem, lay, Target("file", addr, 0, m, host))
        if kind == "file":
            raise CrashextError("0x%x is not a struct file with a page "
                                "cache mapping" % addr)
    raise CrashextError("0x%x is not an inode, address_space, file or "
                        "page-cache folio; use xarray:0x%x to walk it as "
                        "a bare XArray" % (addr, addr))
