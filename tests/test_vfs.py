"""crashext.vfs (the engine's dcache path lookup and inode -> path) on the
lab dumps of both kernels (6.1: d_subdirs/d_child lists; 6.12:
d_children/d_sib hlists): every manifest file, system paths against
drgn's own path_lookup, the PyKdump stand-in (paths now resolve inside
crash), capture/replay, and hostile dcache lists.  Skipped when the lab
is absent.
"""

from __future__ import annotations

import pytest

from conftest import FAMILIES, open_lab, standin_crash
from patched_memory import PatchedMemory

drgn = pytest.importorskip("drgn")

from crashext import vfs  # noqa: E402
from crashext.analyze import analyze  # noqa: E402
from crashext.memory import CrashextError, Memory  # noqa: E402

pytestmark = pytest.mark.lab

SYSTEM_PATHS = ["/", "/mnt", "/dev", "/proc", "/sys", "/dev/null",
                "/mnt/xfs", "/mnt/thp", "/init", "/bin"]


class Plain(Memory):
    """``base`` without ``resolve_path`` (nor any other backend extra), so
    the engine's lookup is used, as under crash."""

    def __init__(self, base: Memory, hide=()) -> None:
        self.base = base
        self.hide = set(hide)           # {(struct, member)} to hide
        self.reads = 0

    def read(self, addr, size):
        self.reads += 1
        return self.base.read(addr, size)

    def symbol(self, name):
        return self.base.symbol(name)

    def member_offset(self, struct, member):
        if (struct, member) in self.hide:
            return None
        return self.base.member_offset(struct, member)

    def member_size(self, struct, member):
        return self.base.member_size(struct, member)

    def struct_size(self, struct):
        return self.base.struct_size(struct)

    def enum_value(self, name):
        return self.base.enum_value(name)

    def release(self):
        return self.base.release()


@pytest.fixture(params=FAMILIES)
def lab(request):
    return open_lab(request.param)


def _drgn_inode(mem, path):
    from drgn.helpers.linux.fs import path_lookup
    try:
        return path_lookup(mem.prog, path).dentry.d_inode.value_()
    except Exception:
        return None


# ------------------------------------------------------------ lookups
def test_every_manifest_file(lab):
    m, mem = lab
    plain = Plain(mem)
    assert not hasattr(plain, "resolve_path")
    for f in m["files"]:
        want = int(f["inode"], 16)
        assert vfs.lookup_path(mem, f["path"]) == want, f["path"]
        assert vfs.lookup_path(plain, f["path"]) == want, f["path"]
        assert vfs.inode_path(plain, want) == f["path"]
        assert vfs.inode_path(mem, want) == f["path"]


def test_system_paths_match_drgn(lab):
    _m, mem = lab
    checked = 0
    for p in SYSTEM_PATHS:
        want = _drgn_inode(mem, p)
        if want is None:
            continue
        got = vfs.lookup_path(Plain(mem), p)
        assert got == want, p
        assert vfs.inode_path(mem, got) == p
        checked += 1
    assert checked >= 5


def test_dot_and_dotdot(lab):
    m, mem = lab
    thp = [f for f in m["files"] if f["path"] == "/mnt/thp/thp16"][0]
    big = [f for f in m["files"] if f["path"] == "/mnt/xfs/big200"][0]
    p = Plain(mem)
    assert vfs.lookup_path(p, "/mnt/xfs/../thp/./thp16") == int(thp["inode"], 16)
    assert vfs.lookup_path(p, "//mnt/xfs//big200/") == int(big["inode"], 16)
    # ".." above the root stays at the root
    assert vfs.lookup_path(p, "/../..") == vfs.lookup_path(p, "/")
    # ".." at a mount's root goes to the mount point's parent
    assert vfs.lookup_path(p, "/mnt/xfs/..") == _drgn_inode(mem, "/mnt")


def test_missing_and_not_a_directory(lab):
    _m, mem = lab
    p = Plain(mem)
    with pytest.raises(CrashextError) as e:
        vfs.lookup_path(p, "/mnt/xfs/no-such-file")
    assert str(e.value) == ("'no-such-file' in /mnt/xfs is not in the "
                            "dcache (no such file, or not looked up recently)")
    with pytest.raises(CrashextError) as e:
        vfs.lookup_path(p, "/mnt/nope/deeper")
    assert str(e.value).startswith("'nope' in /mnt is not in the dcache")
    with pytest.raises(CrashextError) as e:
        vfs.lookup_path(p, "/mnt/xfs/big200/x")
    assert str(e.value) == "/mnt/xfs/big200 is not a directory"


def test_missing_debug_info_is_one_line(lab):
    _m, mem = lab
    for hidden in [("struct dentry", "d_parent"), ("struct mount", "mnt_hash")]:
        with pytest.raises(CrashextError) as e:
            vfs.lookup_path(Plain(mem, hide=[hidden]), "/mnt/xfs/big200")
        assert "debug info has no %s.%s" % hidden in str(e.value)


def test_inode_without_dentry_is_none(lab):
    m, mem = lab
    # A fake inode whose i_dentry list is empty: patch a real one.
    inode = int(m["files"][0]["inode"], 16)
    off = mem.member_offset("struct inode", "i_dentry")
    pm = PatchedMemory(mem).patch_u64(inode + off, 0)
    assert vfs.inode_path(pm, inode) is None


def test_inode_path_cost(lab):
    """Reads per inode once the mount table is known: i_dentry + the
    dentry of each file (its directory is cached)."""
    m, mem = lab
    p = Plain(mem)
    files = [f for f in m["files"] if f["path"].startswith("/mnt/xfs/")]
    vfs.inode_path(p, int(files[0]["inode"], 16))
    before = p.reads
    for f in files[1:]:
        assert vfs.inode_path(p, int(f["inode"], 16)) == f["path"]
    assert p.reads - before == 2 * (len(files) - 1)


def test_analyze_path_through_the_engine(lab):
    m, mem = lab
    for f in m["files"][:2]:
        a = analyze(Plain(mem), f["path"])
        assert a.target.inode == int(f["inode"], 16)
        assert a.target.kind == "path" and a.target.label == f["path"]


# ------------------------------------------------- capture and replay
def test_capture_without_resolver_replays(lab, tmp_path):
    from crashext.backends.snapshot import (RecordingMemory, SnapshotMemory,
                                            save)
    m, mem = lab
    f = [x for x in m["files"] if x["path"] == "/mnt/xfs/big64"][0]
    rec = RecordingMemory(Plain(mem))
    a = analyze(rec, f["path"])
    assert rec.answers["resolve_path"][f["path"]] == int(f["inode"], 16)
    snap = tmp_path / "big64.snap"
    save(rec, str(snap))
    s = SnapshotMemory.load(str(snap))
    b = analyze(s, f["path"])
    assert b.target.inode == a.target.inode == int(f["inode"], 16)
    assert b.stats == a.stats
    # and the engine alone replays the lookup from the recorded reads
    assert vfs.lookup_path(Plain(s), f["path"]) == int(f["inode"], 16)


# ------------------------------------------------- PyKdump stand-in
@pytest.fixture(params=FAMILIES)
def standin(request):
    m, _mem = open_lab(request.param)
    elf = [d for d in m["dumps"] if d["name"] == "elf"][0]["path"]
    with standin_crash(m["vmlinux"], elf):
        yield m


def test_paths_resolve_under_pykdump(standin):
    from crashext.backends.pykdump import PykdumpMemory
    m = standin
    pk = PykdumpMemory()
    assert not hasattr(pk, "resolve_path")
    for f in m["files"]:
        want = int(f["inode"], 16)
        assert vfs.lookup_path(pk, f["path"]) == want
        assert vfs.inode_path(pk, want) == f["path"]
    a = analyze(PykdumpMemory(), "/mnt/xfs/big200")
    big = [f for f in m["files"] if f["path"] == "/mnt/xfs/big200"][0]
    assert a.target.inode == int(big["inode"], 16)
    assert a.stats.pages == big["nrpages"]


# ------------------------------------------------------------ hostile
def _dir_dentry(mem, path):
    from drgn.helpers.linux.fs import path_lookup
    return path_lookup(mem.prog, path).dentry.value_()


def _first_child_link(mem, dentry):
    """Address of the first child's link (d_sib / d_child) and the offset
    of its ``next`` pointer."""
    kids = mem.member_offset("struct dentry", "d_children")
    if kids is not None:                                   # 6.8+
        first = mem.read_u64(dentry + kids)
        return first, mem.member_offset("struct hlist_node", "next")
    head = dentry + mem.member_offset("struct dentry", "d_subdirs")
    return mem.read_u64(head), mem.member_offset("struct list_head", "next")


def test_children_loop_terminates(lab):
    _m, mem = lab
    d = _dir_dentry(mem, "/mnt/xfs")
    link, nxt = _first_child_link(mem, d)
    assert link
    pm = PatchedMemory(mem).patch_u64(link + nxt, link)   # self loop
    with pytest.raises(CrashextError) as e:
        vfs.lookup_path(Plain(pm), "/mnt/xfs/no-such-file")
    assert "children list of dentry 0x%x loops" % d in str(e.value)
    assert "\n" not in str(e.value)


def test_two_element_loop_terminates(lab):
    _m, mem = lab
    d = _dir_dentry(mem, "/dev")
    link, nxt = _first_child_link(mem, d)
    second = mem.read_u64(link + nxt)
    assert second and second != link
    pm = PatchedMemory(mem).patch_u64(second + nxt, link)
    with pytest.raises(CrashextError, match="loops"):
        vfs.lookup_path(Plain(pm), "/dev/no-such-device")


def test_unreadable_children_is_one_line(lab):
    _m, mem = lab
    d = _dir_dentry(mem, "/mnt/xfs")
    link, nxt = _first_child_link(mem, d)
    bad = 0xDEAD000000000000
    pm = PatchedMemory(mem).patch_u64(link + nxt, bad)
    with pytest.raises(CrashextError) as e:
        vfs.lookup_path(Plain(pm), "/mnt/xfs/no-such-file")
    msg = str(e.value)
    assert msg.startswith("cannot read dentry at 0x")
    assert "\n" not in msg


def test_mount_hash_loop_terminates(lab):
    _m, mem = lab
    p = Plain(mem)
    v = vfs._vfs(p)
    v.mount_table()
    # a hashed mount whose mnt_hash.next points at itself
    m = next(x for x in v.mounts.values() if x.addr != v.root()[0])
    off = mem.member_offset("struct mount", "mnt_hash")
    pm = PatchedMemory(mem).patch_u64(m.addr + off, m.addr + off)
    with pytest.raises(CrashextError, match="mount hash chain .* loops"):
        vfs.lookup_path(Plain(pm), "/mnt/xfs/big200")


def test_d_parent_loop_in_inode_path(lab):
    m, mem = lab
    f = [x for x in m["files"] if x["path"] == "/mnt/xfs/big200"][0]
    d = _dir_dentry(mem, "/mnt/xfs/big200")
    xfs_root = _dir_dentry(mem, "/mnt/xfs")
    # big200's parent is the xfs root; make that root's parent big200
    po = mem.member_offset("struct dentry", "d_parent")
    pm = PatchedMemory(mem).patch_u64(xfs_root + po, d)
    with pytest.raises(CrashextError, match="loops or is deeper"):
        vfs.inode_path(Plain(pm), int(f["inode"], 16))


def test_xa_check_path_inside_crash(standin, tmp_path):
    """``xa check /mnt/xfs/big200`` at the (strict stand-in) crash prompt
    prints what ``crashext check --vmcore`` (drgn's resolver) prints."""
    from strict_crash import StrictCrash
    from tests.test_crash_xa import Dump, PROGS, REGISTER, cli, xa
    m = standin
    elf = [d for d in m["dumps"] if d["name"] == "elf"][0]["path"]
    crash = StrictCrash(str(tmp_path))
    crash.standin_open(m["vmlinux"], elf, pykdumppath=[str(PROGS)])
    try:
        crash.standin_epython(str(REGISTER))
        d = Dump("vfs", m["vmlinux"], elf, [], 0)
        for line in ("check /mnt/xfs/big200", "check -f json /mnt/thp/thp16"):
            text, status = xa(crash, "xa " + line)
            out, _err, code = cli(d, *line.split())
            assert (text, status) == (out, code) == (out, 0)
        text, status = xa(crash, "xa check /mnt/xfs/nope")
        assert status == 2
        assert text == ("xa: error: /mnt/xfs/nope: 'nope' in /mnt/xfs is not "
                        "in the dcache (no such file, or not looked up "
                        "recently)\n")
    finally:
        crash.standin_close()


def test_without_dotted_members(lab):
    """A debugger that sees neither dotted member paths nor members of
    anonymous unions (qstr.len): d_u's offset and hash_len's high half."""
    m, mem = lab
    p = Plain(mem, hide=[("struct dentry", "d_u.d_alias"),
                         ("struct qstr", "len")])
    for f in m["files"]:
        inode = vfs.lookup_path(p, f["path"])
        assert inode == int(f["inode"], 16)
        assert vfs.inode_path(p, inode) == f["path"]


# ------------------------------------------------- mutated dentries
def test_mutated_dcache_never_raises_anything_else(lab):
    """Random 8-byte words written over the dentries, inodes and mount of
    a real path (and the mount hash bucket heads): lookup_path and
    inode_path return a value or raise one CrashextError line - no other
    exception, no hang."""
    import random
    import time
    from drgn.helpers.linux.fs import path_lookup
    m, mem = lab
    f = [x for x in m["files"] if x["path"] == "/mnt/xfs/big200"][0]
    objs = []
    for p in ("/", "/mnt", "/mnt/xfs", "/mnt/xfs/big200"):
        pth = path_lookup(mem.prog, p)
        objs += [(pth.dentry.value_(), 192),
                 (pth.dentry.d_inode.value_(), 64),
                 (pth.mnt.value_() - 32, 128)]
    table = mem.symbol("mount_hashtable")
    if table:
        objs.append((mem.read_u64(table), 4096))
    rnd = random.Random(20261126)
    words = (0, 1, 0xdead000000000000, 0xffffffffffffffff)
    for _ in range(300):
        pm = PatchedMemory(mem)
        for _k in range(rnd.randint(1, 4)):
            base, size = rnd.choice(objs)
            addr = base + 8 * rnd.randrange(size // 8)
            val = rnd.choice(words + (rnd.choice(objs)[0],
                                      rnd.getrandbits(64),
                                      mem.read_u64(addr) ^ (1 << rnd.randrange(64))))
            pm.patch_u64(addr, val)
        plain = Plain(pm)
        t0 = time.perf_counter()
        for call in (lambda: vfs.lookup_path(plain, f["path"]),
                     lambda: vfs.inode_path(plain, int(f["inode"], 16))):
            try:
                call()
            except CrashextError as e:
                assert "\n" not in str(e)
        assert time.perf_counter() - t0 < 5
