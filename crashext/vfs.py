"""VFS path lookup over the :class:`~crashext.memory.Memory` interface:
paths to inodes, and inodes back to paths, in any backend.

Covers ``struct dentry`` (``d_parent``, ``d_name`` - a ``struct qstr`` -,
``d_inode``, ``d_flags`` and the children lists: ``d_subdirs``/``d_child``
up to 6.7, ``d_children``/``d_sib`` from 6.8; ``d_u.d_alias`` or
``d_alias``), ``struct inode`` (``i_dentry``, ``i_mode``), ``struct
mount`` (``mnt_hash``, ``mnt_parent``, ``mnt_mountpoint``, ``mnt``),
``struct vfsmount`` (``mnt_root``, ``mnt_sb``), ``struct path``,
``struct fs_struct`` and ``init_task.fs`` plus the mount hash table
(``mount_hashtable``, ``m_hash_shift``/``m_hash_mask``).  Every offset
comes from the dump's debug info; nothing needs drgn, so the same code
runs under drgn, inside crash (PyKdump, embedded Python 3.11, standard
library only) and on snapshots (it only reads memory, so a lookup made
while capturing replays from the snapshot).

Like drgn's ``path_lookup`` (drgn/helpers/linux/fs.py, which this
follows), the lookup only sees the dcache: a file is found when its
dentries are cached, i.e. the path was looked up recently (an open file
always is).  Symlinks are not followed.

>>> inode = lookup_path(mem, "/mnt/xfs/big200")     # doctest: +SKIP
>>> hex(inode), inode_path(mem, inode)               # doctest: +SKIP
('0xffff888006e6c938', '/mnt/xfs/big200')
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

from .memory import CrashextError, Memory, UnreadableMemory

#: Most children of one directory, mounts in the hash table, or dentries
#: walked in one list before the walk is declared corrupt.
MAX_CHILDREN = 1 << 20
MAX_MOUNTS = 1 << 20
#: Deepest ``d_parent`` chain / mount stack followed (PATH_MAX is 4096,
#: so no real path has more than 2048 components).
MAX_DEPTH = 4096
#: Longest name read from a ``struct qstr`` (NAME_MAX is 255; a larger
#: length is a damaged dentry).
MAX_NAME = 4096
#: Largest mount hash table accepted (``mhash_entries`` is at most a few
#: million entries on the largest machines).
MAX_HASH_SHIFT = 26
#: Dentries remembered per Memory by :func:`inode_path` (cleared when full).
MAX_CACHED = 1 << 20

# S_IFMT and friends are uapi constants (include/uapi/linux/stat.h), the
# same in every kernel.
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFLNK = 0o120000

_U64 = (1 << 64) - 1


def _u64(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off:off + 8], "little")


def _u32(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off:off + 4], "little")


class _Dentry(NamedTuple):
    """The fields of one ``struct dentry`` the lookup uses."""

    addr: int
    parent: int
    inode: int
    name: bytes
    next: int          # next sibling link (raw pointer)
    sb: int


class _Mount(NamedTuple):
    """The fields of one ``struct mount``."""

    addr: int
    parent: int
    mountpoint: int
    root: int
    sb: int
    hash_next: int


class _Vfs:
    """Offsets, the mount table and a dentry cache for one Memory."""

    def __init__(self, mem: Memory) -> None:
        self.mem = mem
        D = "struct dentry"
        self.d_size = self._need_size(D)
        self.d_parent = self._need(D, "d_parent")
        self.d_inode = self._need(D, "d_inode")
        self.d_sb = self._need(D, "d_sb")
        d_name = self._need(D, "d_name")
        # struct qstr: { union { struct { u32 hash; u32 len; }; u64
        # hash_len; }; const unsigned char *name; }.  Some debuggers do
        # not see members of anonymous unions: then len is the high half
        # of hash_len (little endian, HASH_LEN_DECLARE in
        # include/linux/dcache.h).
        q_len = self.mem.member_offset("struct qstr", "len")
        if q_len is None:
            hl = self.mem.member_offset("struct qstr", "hash_len")
            if hl is None:
                raise self._missing("struct qstr", "len")
            q_len = hl + 4
        self.d_name_len = d_name + q_len
        self.d_name_ptr = d_name + self._need("struct qstr", "name")
        # Children: commit da549bdd15c2 ("dentry: switch the lists of
        # children to hlist", v6.8) replaced list_head d_subdirs (children
        # linked by d_child) with hlist_head d_children (linked by d_sib).
        kids = self.mem.member_offset(D, "d_children")
        if kids is not None:
            self.hlist = True
            self.d_kids = kids
            self.d_link = self._need(D, "d_sib")
        else:
            self.hlist = False
            self.d_kids = self._need(D, "d_subdirs")
            self.d_link = self._need(D, "d_child")
        # Aliases of an inode: dentry.d_u.d_alias (the union d_u; drgn
        # notes it becomes anonymous in a later kernel, commit 3b7d764a37d0
        # "struct dentry: make ->d_u anonymous", so try d_alias first).
        alias = self.mem.member_offset(D, "d_alias")
        if alias is None:
            alias = self.mem.member_offset(D, "d_u.d_alias")
        if alias is None:
            # A debugger without dotted member paths: d_alias is a member
            # of the union d_u, so it sits at d_u's offset.
            alias = self._need(D, "d_u")
        self.d_alias = alias
        self.i_dentry = self._need("struct inode", "i_dentry")
        self.i_mode = self._need("struct inode", "i_mode")
        self.s_root = self._need("struct super_block", "s_root")
        M = "struct mount"
        self.m_size = self._need_size(M)
        self.m_hash = self._need(M, "mnt_hash")
        self.m_parent = self._need(M, "mnt_parent")
        self.m_mountpoint = self._need(M, "mnt_mountpoint")
        self.m_mnt = self._need(M, "mnt")
        self.v_root = self._need("struct vfsmount", "mnt_root")
        self.v_sb = self._need("struct vfsmount", "mnt_sb")
        self.hnode_next = self._need("struct hlist_node", "next")
        self.list_next = self._need("struct list_head", "next")
        self.hhead_first = self._need("struct hlist_head", "first")
        self.p_mnt = self._need("struct path", "mnt")
        self.p_dentry = self._need("struct path", "dentry")
        for name in ("d_parent", "d_inode", "d_sb", "d_name_len",
                     "d_name_ptr", "d_kids", "d_link", "d_alias"):
            if getattr(self, name) + 8 > self.d_size:
                raise CrashextError("implausible struct dentry layout in the "
                                    "debug info (%s outside the struct)" % name)
        self._root: Optional[Tuple[int, int]] = None
        self.mounts: Optional[Dict[int, _Mount]] = None
        self.mounted: Dict[Tuple[int, int], List[int]] = {}
        self.dentries: Dict[int, _Dentry] = {}
        self.sb_roots: Dict[int, int] = {}

    # Debug info ---------------------------------------------------------
    def _missing(self, struct: str, member: str) -> CrashextError:
        return CrashextError("cannot look up paths: debug info has no "
                             "%s.%s (wrong vmlinux or unsupported kernel)"
                             % (struct, member))

    def _need(self, struct: str, member: str) -> int:
        off = self.mem.member_offset(struct, member)
        if off is None:
            raise self._missing(struct, member)
        return off

    def _need_size(self, struct: str) -> int:
        size = self.mem.struct_size(struct)
        if not size or size > 1 << 16:
            raise CrashextError("cannot look up paths: debug info has no "
                                "usable %s" % struct)
        return size

    # Memory ------------------------------------------------------------
    def read(self, addr: int, size: int, what: str) -> bytes:
        """``mem.read`` with an unreadable address turned into one clear
        line naming ``what`` was read."""
        if not addr:
            raise CrashextError("cannot read %s: NULL pointer" % what)
        try:
            return self.mem.read(addr, size)
        except UnreadableMemory as e:
            raise CrashextError("cannot read %s at 0x%x: %s"
                                % (what, addr, e.reason or "fault")) from None

    def ptr(self, addr: int, what: str) -> int:
        return _u64(self.read(addr, 8, what), 0)

    def dentry(self, addr: int) -> _Dentry:
        """One read of the whole ``struct dentry`` (the name too, when it
        is inline in ``d_iname``); cached."""
        d = self.dentries.get(addr)
        if d is not None:
            return d
        buf = self.read(addr, self.d_size, "dentry")
        n = _u32(buf, self.d_name_len)
        p = _u64(buf, self.d_name_ptr)
        if n > MAX_NAME:
            raise CrashextError("dentry 0x%x has a name of %d bytes "
                                "(damaged dentry)" % (addr, n))
        if addr <= p and p + n <= addr + self.d_size:
            name = buf[p - addr:p - addr + n]       # inline d_iname
        elif n:
            name = self.read(p, n, "name of dentry 0x%x" % addr)
        else:
            name = b""
        d = _Dentry(addr, _u64(buf, self.d_parent), _u64(buf, self.d_inode),
                    bytes(name), _u64(buf, self.d_link), _u64(buf, self.d_sb))
        if len(self.dentries) >= MAX_CACHED:
            self.dentries.clear()
        self.dentries[addr] = d
        return d

    def mode(self, inode: int) -> int:
        return int.from_bytes(self.read(inode + self.i_mode, 2,
                                        "inode i_mode"), "little")

    # Root and mounts ----------------------------------------------------
    def root(self) -> Tuple[int, int]:
        """(struct mount, dentry) of the initial root filesystem."""
        if self._root is None:
            # drgn: since commit 32750c77e811 ("fs: start all kthreads in
            # nullfs") init_task's root is nullfs; PID 1's fs_struct is
            # then the pointer userspace_init_fs (commit 9a8e29695888).
            uifs = self.mem.symbol("userspace_init_fs")
            if uifs:
                fs = self.ptr(uifs, "userspace_init_fs")
            else:
                task = self.mem.symbol("init_task")
                if not task:
                    raise CrashextError("cannot look up paths: no symbol "
                                        "init_task")
                fs = self.ptr(task + self._need("struct task_struct", "fs"),
                              "init_task.fs")
            root = fs + self._need("struct fs_struct", "root")
            buf = self.read(root, max(self.p_mnt, self.p_dentry) + 8,
                            "init_task.fs->root")
            vfsmnt = _u64(buf, self.p_mnt)
            dentry = _u64(buf, self.p_dentry)
            if not vfsmnt or not dentry:
                raise CrashextError("init_task.fs->root is empty")
            # container_of(vfsmount, struct mount, mnt)
            self._root = (vfsmnt - self.m_mnt, dentry)
        return self._root

    def mount(self, addr: int) -> _Mount:
        """One read of a ``struct mount`` (from the table when known)."""
        if self.mounts is not None and addr in self.mounts:
            return self.mounts[addr]
        buf = self.read(addr, self.m_size, "struct mount")
        return _Mount(addr, _u64(buf, self.m_parent),
                      _u64(buf, self.m_mountpoint),
                      _u64(buf, self.m_mnt + self.v_root),
                      _u64(buf, self.m_mnt + self.v_sb),
                      _u64(buf, self.m_hash + self.hnode_next))

    def mount_table(self) -> Dict[int, _Mount]:
        """Every hashed mount (and the root mount), read once: one read of
        ``mount_hashtable``, one per mount.  Fills :attr:`mounted`,
        {(parent mount, mountpoint dentry): [child mounts in chain order]}.
        """
        if self.mounts is not None:
            return self.mounts
        sym = self.mem.symbol("mount_hashtable")
        if not sym:
            raise CrashextError("cannot look up paths: no symbol "
                                "mount_hashtable")
        # fs/namespace.c: static unsigned int m_hash_mask, m_hash_shift;
        # the table has 1 << m_hash_shift hlist_heads.
        shift_sym = self.mem.symbol("m_hash_shift")
        if shift_sym:
            n = 1 << _u32(self.read(shift_sym, 4, "m_hash_shift"), 0)
        else:
            mask_sym = self.mem.symbol("m_hash_mask")
            if not mask_sym:
                raise CrashextError("cannot look up paths: no symbol "
                                    "m_hash_shift or m_hash_mask")
            n = _u32(self.read(mask_sym, 4, "m_hash_mask"), 0) + 1
        if n > 1 << MAX_HASH_SHIFT or n & (n - 1):
            raise CrashextError("implausible mount hash table size %d" % n)
        table = self.ptr(sym, "mount_hashtable")
        hsize = self._need_size("struct hlist_head")
        raw = self.read(table, n * hsize, "mount_hashtable (%d buckets)" % n)
        mounts: Dict[int, _Mount] = {}
        mounted: Dict[Tuple[int, int], List[int]] = {}
        for b in range(n):
            node = _u64(raw, b * hsize + self.hhead_first)
            while node:
                m = self.mount(node - self.m_hash)
                if m.addr in mounts:
                    raise CrashextError(
                        "mount hash chain %d loops at mount 0x%x (corrupted "
                        "mount_hashtable)" % (b, m.addr))
                if len(mounts) >= MAX_MOUNTS:
                    raise CrashextError("more than %d mounts in "
                                        "mount_hashtable (corrupted?)"
                                        % MAX_MOUNTS)
                mounts[m.addr] = m
                mounted.setdefault((m.parent, m.mountpoint), []).append(m.addr)
                node = m.hash_next
        # The root mount of a namespace is its own parent and not hashed.
        rm = self.root()[0]
        if rm not in mounts:
            mounts[rm] = self.mount(rm)
        self.mounts, self.mounted = mounts, mounted
        return mounts

    def follow_mounts(self, mnt: int, dentry: int) -> Tuple[int, int]:
        """Go down the mounts stacked on ``dentry`` of ``mnt``
        (fs/namei.c follow_mount / __traverse_mounts).  The kernel's
        __lookup_mnt (fs/namespace.c) takes the first mount of the hash
        chain whose mnt_parent and mnt_mountpoint match; attach_mnt adds
        at the chain's head, so that is the latest mount.  A mount made on
        top of another is mounted on that one's root (and since commit
        1064f874abc0 "mnt: Tuck mounts under others instead of creating
        shadow/side mounts", v4.11, propagation tucks mounts under rather
        than beside), so the loop below reaches the top of the stack.  The
        DCACHE_MOUNTED flag is not used: its value is a #define that moved
        in 6.15 (commit 9748cb2dc393 "VFS: repack DENTRY_ flags."), and a
        dictionary look-up per component is free."""
        self.mount_table()
        for _ in range(MAX_DEPTH):
            kids = self.mounted.get((mnt, dentry))
            if not kids:
                return mnt, dentry
            m = self.mount(kids[0])
            mnt, dentry = m.addr, m.root
        raise CrashextError("more than %d mounts stacked on dentry 0x%x "
                            "(corrupted mount table)" % (MAX_DEPTH, dentry))

    def children(self, parent: int):
        """Yield the child dentries of ``parent`` (bounded, cycle-checked)."""
        head = parent + self.d_kids
        if self.hlist:
            link = self.ptr(head + self.hhead_first,
                            "children of dentry 0x%x" % parent)
        else:
            link = self.ptr(head + self.list_next,
                            "children of dentry 0x%x" % parent)
        seen = set()
        while link and link != head:
            child = link - self.d_link
            if child in seen:
                raise CrashextError("children list of dentry 0x%x loops at "
                                    "dentry 0x%x (corrupted dcache)"
                                    % (parent, child))
            if len(seen) >= MAX_CHILDREN:
                raise CrashextError("children list of dentry 0x%x has more "
                                    "than %d entries (corrupted dcache?)"
                                    % (parent, MAX_CHILDREN))
            seen.add(child)
            d = self.dentry(child)
            if d.parent != parent:
                raise CrashextError("dentry 0x%x in the children list of "
                                    "0x%x has d_parent 0x%x (corrupted "
                                    "dcache)" % (child, parent, d.parent))
            yield d
            link = d.next
        if not self.hlist and not link:
            raise CrashextError("children list of dentry 0x%x ends in NULL "
                                "(corrupted dcache)" % parent)

    def sb_root(self, sb: int) -> int:
        r = self.sb_roots.get(sb)
        if r is None:
            r = self.ptr(sb + self.s_root, "super_block s_root")
            self.sb_roots[sb] = r
        return r


def _vfs(mem: Memory) -> _Vfs:
    """The :class:`_Vfs` of ``mem``, made once per Memory object and kept
    in its ``__dict__`` (not ``getattr``: wrappers such as a patched
    memory delegate unknown attributes to the memory they wrap, whose
    cache would bypass them)."""
    d = getattr(mem, "__dict__", None)
    v = d.get("_crashext_vfs") if d is not None else None
    if v is None:
        v = _Vfs(mem)
        if d is not None:
            d["_crashext_vfs"] = v
    return v


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def lookup_path(mem: Memory, path: str) -> int:
    """Address of the inode of ``path`` (absolute, from the initial root
    ``init_task.fs->root``), found in the dcache.

    Follows drgn's ``path_lookup``: per component the parent's children
    are searched by name (negative dentries skipped), then any mount on
    the dentry is entered; ``.`` stays, ``..`` goes to ``d_parent`` and
    up across mount points (as fs/namei.c follow_dotdot), never above the
    root.  A symlink is not followed (as a last component its own inode is
    returned, like ``lstat``).

    Raises :class:`CrashextError` (one line) when a component is not in
    the dcache (not looked up recently, or no such file), is not a
    directory, when a list is corrupt or memory unreadable.

    >>> hex(lookup_path(mem, "/mnt/xfs/big200"))   # doctest: +SKIP
    '0xffff888006e6c938'
    """
    v = _vfs(mem)
    root_mnt, root_dentry = v.root()
    mnt, dentry = root_mnt, root_dentry
    raw = path.encode("utf-8", "surrogateescape")
    parts = raw.split(b"/")
    done: List[bytes] = []
    for comp in parts:
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            mnt, dentry = _dotdot(v, mnt, dentry, root_mnt, root_dentry)
            done.append(comp)
            continue
        found = None
        negative = False
        for child in v.children(dentry):
            if child.name == comp:
                if child.inode:
                    found = child
                    break
                negative = True
        if found is None:
            # Messages name the component and its directory, not the whole
            # path: front ends print "PATH: message".
            here = v.dentry(dentry)
            where = "/" + _decode(b"/".join(done)) if done else "/"
            what = "%r in %s" % (_decode(comp), where)
            if here.inode:
                mode = v.mode(here.inode) & S_IFMT
                if mode == S_IFLNK:
                    raise CrashextError("%s is a symlink (symlinks are not "
                                        "followed)" % where)
                if mode != S_IFDIR:
                    raise CrashextError("%s is not a directory" % where)
            if negative:
                raise CrashextError("%s does not exist (negative dentry in "
                                    "the dcache)" % what)
            raise CrashextError("%s is not in the dcache (no such file, or "
                                "not looked up recently)" % what)
        done.append(comp)
        mnt, dentry = v.follow_mounts(mnt, found.addr)
    inode = v.dentry(dentry).inode
    if not inode:
        raise CrashextError("%s is a negative dentry (0x%x)" % (path, dentry))
    return inode


def _dotdot(v: _Vfs, mnt: int, dentry: int, root_mnt: int,
            root_dentry: int) -> Tuple[int, int]:
    """``..`` of (mnt, dentry): d_parent, or up to the mount point when
    at a mount's root (fs/namei.c follow_dotdot; drgn _follow_dotdot)."""
    for _ in range(MAX_DEPTH):
        if dentry == root_dentry and mnt == root_mnt:
            break
        parent = v.dentry(dentry).parent
        if parent != dentry:
            dentry = parent
            break
        m = v.mount(mnt)
        if m.parent == mnt:
            break
        mnt, dentry = m.parent, m.mountpoint
    return v.follow_mounts(mnt, dentry)


def _d_path(v: _Vfs, mnt: int, dentry: int) -> str:
    """Path of (mnt, dentry) from the initial root (fs/d_path.c
    prepend_path): up ``d_parent`` to the mount's root, then on from the
    mount point in the parent mount."""
    root_mnt, root_dentry = v.root()
    names: List[bytes] = []
    for _ in range(MAX_DEPTH):
        if mnt == root_mnt and dentry == root_dentry:
            break
        m = v.mount(mnt)
        if dentry == m.root:
            if m.parent == mnt or not m.parent:
                break            # a namespace root other than the initial
            mnt, dentry = m.parent, m.mountpoint
            continue
        d = v.dentry(dentry)
        if d.parent == dentry:
            break                # the filesystem's root, not mnt_root
        names.append(d.name)
        dentry = d.parent
    else:
        raise CrashextError("path of dentry 0x%x is deeper than %d (d_parent "
                            "loop?)" % (dentry, MAX_DEPTH))
    return "/" + "/".join(_decode(n) for n in reversed(names))


def _reaches_root(v: _Vfs, mnt: int) -> bool:
    """True when ``mnt`` hangs below the initial root mount."""
    root_mnt = v.root()[0]
    for _ in range(MAX_DEPTH):
        if mnt == root_mnt:
            return True
        m = v.mounts.get(mnt) if v.mounts else None
        if m is None or m.parent == mnt or not m.parent:
            return False
        mnt = m.parent
    return False


def inode_path(mem: Memory, inode: int) -> Optional[str]:
    """A path of ``inode``: from its first alias dentry (``i_dentry``) up
    ``d_parent`` to its filesystem's root, prefixed with where that
    filesystem is mounted (a mount of its superblock whose ``mnt_root``
    is on the way, preferring mounts visible from the initial root, then
    the one covering most of the path).

    Returns None when the inode has no dentry.  Without a mount (an
    internal or unmounted filesystem) the path inside the filesystem is
    returned ("/dir/file"); a dentry that is not below its superblock's
    root (``memfd:x``, pipes, sockets: d_alloc_pseudo) gives its bare name.
    Names that are not UTF-8 are shown with backslash escapes.

    Cost: one read of the inode's ``i_dentry`` and one per dentry not yet
    seen (+1 for a name longer than the inline ``d_iname``), 1 per
    superblock; the mount table is read once per Memory.  Scanning the
    files of one directory is 2 reads per inode.

    Raises :class:`CrashextError` when memory on the way is unreadable or
    the dentries are corrupt.

    >>> inode_path(mem, 0xffff888006e6c938)        # doctest: +SKIP
    '/mnt/xfs/big200'
    """
    v = _vfs(mem)
    first = v.ptr(inode + v.i_dentry + v.hhead_first,
                  "i_dentry of inode 0x%x" % inode)
    if not first:
        return None
    alias = first - v.d_alias
    d = v.dentry(alias)
    if d.inode != inode:
        raise CrashextError("alias dentry 0x%x of inode 0x%x points at inode "
                            "0x%x (corrupted dcache)" % (alias, inode, d.inode))
    chain = [alias]                 # alias, its parent, ..., the top
    seen = {alias}
    while d.parent != d.addr:
        if len(chain) >= MAX_DEPTH or d.parent in seen:
            raise CrashextError("d_parent chain of dentry 0x%x loops or is "
                                "deeper than %d" % (alias, MAX_DEPTH))
        d = v.dentry(d.parent)
        chain.append(d.addr)
        seen.add(d.addr)
    top = chain[-1]
    if top != v.sb_root(d.sb):
        # Not under the superblock's root: a pseudo or disconnected
        # dentry (fs/dcache.c d_alloc_pseudo); its name is all there is.
        if len(chain) == 1:
            return _decode(d.name)
        return "/" + "/".join(_decode(v.dentry(a).name)
                              for a in reversed(chain[:-1]))
    v.mount_table()
    depth = {a: i for i, a in enumerate(chain)}
    best = None
    for m in v.mounts.values():
        if m.sb == d.sb and m.root in depth:
            key = (_reaches_root(v, m.addr), depth[m.root])
            if best is None or key > best[0]:
                best = (key, m.addr)
    if best is None:
        return "/" + "/".join(_decode(v.dentry(a).name)
                              for a in reversed(chain[:-1]))
    return _d_path(v, best[1], alias)


__all__ = ["lookup_path", "inode_path"]
