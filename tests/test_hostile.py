"""Damaged dumps and bad input through the command line: the tool never
hangs, never shows a traceback, and says what it could not read.

Lab tests (skipped without ``/var/cache/crashext-lab``): a truncated copy of
an ELF dump and of a kdump (makedumpfile) file, a vmlinux of the other
kernel, pages excluded by makedumpfile (6.12 ``-d 31`` made with the lab's
tools when ``makedumpfile`` is installed, and a simulation on the 6.1 dump
that excludes chosen pages), wrong target addresses.  Without the lab: bad
snapshot files and bad targets on a sample snapshot.

The command line contract, checked on every failure case: exit code 2 (or
1 when the analysis ran and reported unreadable memory), exactly one
stderr line starting with ``crashext: error:``, no ``Traceback``; and every
address the analysis could not read appears in the JSON output.

Damaged copies are cached in ``$LAB/hostile/`` (made on first use).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest

from conftest import FAMILIES, ROOT, SAMPLES, lab_dir, lab_manifest, open_lab
from patched_memory import ExcludingMemory

from crashext.memory import CrashextError, Memory, MemoryView

ERR = "crashext: error:"
UNREADABLE = ("NODE_UNREADABLE", "FOLIO_UNREADABLE")


def cli(*args: str, timeout: int = 600):
    """Run ``python -m crashext.cli ARGS``: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "crashext.cli"] + list(args),
                       cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def assert_one_error_line(code: int, err: str, *, expect_code: int = 2,
                          contains=()) -> str:
    assert code == expect_code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERR), err
    for c in contains:
        assert c in lines[0], (c, lines[0])
    return lines[0]


def unreadable_addresses(doc) -> set:
    return {int(f["address"], 16) for f in doc["findings"]
            if f["code"] in UNREADABLE}


# Lab helpers --------------------------------------------------------------
def _vmlinux(family: str) -> str:
    m = lab_manifest(family)
    if m is None or not os.path.exists(m["vmlinux"]):
        pytest.skip("no lab run for %s" % family)
    return m["vmlinux"]


def _dump(family: str, name: str) -> str:
    m = lab_manifest(family)
    if m is None:
        pytest.skip("no lab run for %s" % family)
    for d in m["dumps"]:
        if d["name"] == name and os.path.exists(d["path"]):
            return d["path"]
    pytest.skip("lab %s has no %s dump" % (family, name))


def hostile_dir() -> str:
    d = os.path.join(lab_dir(), "hostile")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        pytest.skip("cannot write %s" % d)
    return d


def _stamp(src: str) -> str:
    st = os.stat(src)
    return "%s %d %d\n" % (os.path.realpath(src), st.st_size, st.st_mtime_ns)


def _fresh(dst: str, src: str) -> bool:
    """``dst`` was made from ``src`` as it is now (a new lab run replaces
    the dumps under the same names)."""
    try:
        with open(dst + ".src") as f:
            return os.path.exists(dst) and f.read() == _stamp(src)
    except OSError:
        return False


def _mark(dst: str, src: str) -> None:
    with open(dst + ".src", "w") as f:
        f.write(_stamp(src))


def cut_copy(src: str, name: str, size: int) -> str:
    """The first ``size`` bytes of ``src`` (cached)."""
    dst = os.path.join(hostile_dir(), name)
    if not _fresh(dst, src) or os.path.getsize(dst) != size:
        tmp = dst + ".tmp"
        with open(src, "rb") as f, open(tmp, "wb") as g:
            left = size
            while left:
                buf = f.read(min(left, 16 << 20))
                if not buf:
                    break
                g.write(buf)
                left -= len(buf)
        os.replace(tmp, dst)
        _mark(dst, src)
    return dst


class ReadLog(MemoryView):
    """``base``, remembering every ``(address, size)`` read."""

    def __init__(self, base: Memory) -> None:
        self.base = base
        self.reads = []

    def read(self, addr: int, size: int) -> bytes:
        self.reads.append((addr, size))
        return self.base.read(addr, size)


def clean_walk(family: str, inode: str):
    """The ELF dump's analysis of ``inode`` (the reference)."""
    from crashext.analyze import analyze
    _m, mem = open_lab(family)
    return analyze(mem, inode)


def check_unreadable_accounting(cut, ref) -> None:
    """Nothing lost silently: every node of the cut analysis is a node of
    the reference; every unreadable address is a node or folio of the
    reference; every reference folio is read, reported unreadable, or
    under a node reported unreadable."""
    ref_nodes = {n.addr: n for n in ref.walk.nodes}
    ref_folios = {e.raw: e for e in ref.walk.entries if e.raw in ref.folios}
    codes = {f.code for f in cut.findings}
    assert codes <= set(UNREADABLE), sorted(codes)
    lost_nodes = {f.address for f in cut.findings
                  if f.code == "NODE_UNREADABLE"}
    bad_folios = {f.address for f in cut.findings
                  if f.code == "FOLIO_UNREADABLE"}
    assert {n.addr for n in cut.walk.nodes} <= set(ref_nodes)
    assert lost_nodes <= set(ref_nodes)
    assert bad_folios <= set(ref_folios)

    def under_lost(node: int) -> bool:
        while node:
            if node in lost_nodes:
                return True
            node = ref_nodes[node].holder if node in ref_nodes else 0
        return False

    for raw, e in ref_folios.items():
        assert (raw in cut.folios or raw in bad_folios
                or under_lost(e.node)), hex(raw)


# Truncated dumps ------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_elf_accounts_for_every_structure(family):
    """The first 300 MB of the ELF dump (or up to just past the lowest
    test inode, where KASLR put every inode higher): every file either
    analyses with only NODE_UNREADABLE/FOLIO_UNREADABLE findings that
    account for every structure of the full dump, or fails with a
    one-line error."""
    pytest.importorskip("drgn")
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    vmlinux = _vmlinux(family)
    core = _dump(family, "elf")
    _m, full = open_lab(family)
    inodes = [o for o in elf_offsets(full, core, [
        int(f["inode"], 16) for f in lab_manifest(family)["files"]])
        if o is not None]
    # The kernel image (page tables, page_offset_base, ...) must survive
    # the cut for any translation to work: KASLR may load it high.
    image_end, = elf_offsets(full, core, [full.prog.symbol("_end").address])
    size = max(300 << 20, min(inodes) + 8192, (image_end or 0) + 4096)
    size = (size + 4095) & ~4095
    if size > 300 << 20:
        # The plain 300 MB cut loses the kernel image or every inode:
        # each file is then one error line that says why.
        cut0 = cut_copy(core, "%s-elf-cut300M" % family, 300 << 20)
        f = lab_manifest(family)["files"][0]
        code, _out, err = cli("check", "-c", cut0, "-k", vmlinux,
                              f["inode"])
        assert_one_error_line(code, err, contains=(f["inode"],
                                                   "truncated dump?"))
    cut = cut_copy(core, "%s-elf-cut%d" % (family, size), size)
    mem = DrgnMemory.open(cut, vmlinux)
    m = lab_manifest(family)
    analysed = 0
    for f in m["files"]:
        ref = clean_walk(family, f["inode"])
        try:
            a = analyze(mem, f["inode"])
        except CrashextError as e:
            # The inode, or what proves it one, lies past the cut.
            assert "\n" not in str(e)
            continue
        analysed += 1
        check_unreadable_accounting(a, ref)
        for x in a.findings:
            assert "truncated" in x.extra.get("reason", ""), x
    assert analysed


class CutPlan(NamedTuple):
    cut: int            # smallest cut keeping every page the analysis needs
    nodes: list         # ELF offsets of the tree's nodes
    folios: list        # ELF offsets of its folios' struct pages


_plans = {}


def cut_plan(family: str, f) -> Optional[CutPlan]:
    """Where an ELF dump of ``family`` may be cut so that file ``f``
    still analyses: past the kernel image (page tables; KASLR may load
    it high) and past every page the analysis cannot do without besides
    the tree's nodes and the folios' struct pages (the inode, its
    mapping...: found by hiding each page the clean analysis reads and
    seeing it fail).  From this run's own layout, never a guess; None
    when some address has no place in the dump."""
    key = (family, f["inode"])
    if key in _plans:
        return _plans[key]
    from crashext.analyze import analyze
    core = _dump(family, "elf")
    _m, full = open_lab(family)
    image_end, = elf_offsets(full, core, [full.prog.symbol("_end").address])
    log = ReadLog(full)
    ref = analyze(log, f["inode"])
    vmemmap = full.prog["vmemmap_base"].value_()
    inside = [(n.addr, n.addr + ref.layout.node_size) for n in ref.walk.nodes]
    inside.append((vmemmap, vmemmap + ref.layout.page_size *
                   full.prog["max_pfn"].value_()))
    pages = sorted({p for a, size in log.reads
                    if not any(lo <= a and a + size <= hi
                               for lo, hi in inside)
                    for p in range(a & ~4095, a + size, 4096)})
    needed = []
    for p in pages:
        try:
            analyze(ExcludingMemory(full, {p}, "hidden"), f["inode"])
        except CrashextError:
            needed.append(p)
    offs = elf_offsets(full, core, needed)
    nodes = elf_offsets(full, core, [n.addr for n in ref.walk.nodes])
    folios = elf_offsets(full, core, list(ref.folios))
    plan = None
    if None not in offs + nodes + folios and image_end is not None:
        plan = CutPlan((max(offs + [image_end]) + 8192) & ~4095, nodes, folios)
    _plans[key] = plan
    return plan


@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_elf_cli_names_unreadable_folios(family):
    """An ELF dump cut past every page a file's analysis needs but before
    some of its folios' struct pages (vmemmap, near the top of RAM): exit
    1, and the JSON names every node and folio that could not be read -
    which, with the nodes' subtrees, is every folio of the tree."""
    pytest.importorskip("drgn")
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    vmlinux = _vmlinux(family)
    core = _dump(family, "elf")
    best = None
    for x in lab_manifest(family)["files"]:
        p = cut_plan(family, x)
        if p is None or not p.folios:
            continue
        # Every node before the cut (else its folios are never read),
        # some struct page after it.
        size = max([p.cut] + [(n + 8192) & ~4095 for n in p.nodes])
        if max(p.folios) >= size and (best is None or size < best[0]):
            best = (size, x)
    assert best, "no file of this lab run has a struct page past its " \
        "nodes and every page its analysis needs"
    size, f = best
    cut = cut_copy(core, "%s-elf-cut-before-folios" % family, size)
    ref = clean_walk(family, f["inode"])
    a = analyze(DrgnMemory.open(cut, vmlinux), f["inode"])
    check_unreadable_accounting(a, ref)
    named = {x.address for x in a.findings}
    assert any(x.code == "FOLIO_UNREADABLE" for x in a.findings)
    code, out, err = cli("check", "-f", "json", "-c", cut, "-k", vmlinux,
                         f["inode"])
    assert code == 1, err
    assert "Traceback" not in err and ERR not in err
    doc = json.loads(out)
    assert doc["verdict"] == "corrupt"
    assert unreadable_addresses(doc) == named
    assert any("not compared" in n for n in doc["notes"])
    # The path is resolved through dentries also past the cut or not:
    # either way one line or a report, never a traceback.
    code, out, err = cli("check", "-c", cut, "-k", vmlinux, f["path"])
    assert code in (1, 2) and "Traceback" not in err
    if code == 2:
        assert_one_error_line(code, err)


def elf_offsets(mem, core: str, addrs):
    """File offset in the ELF dump ``core`` of each kernel virtual address
    (page-table walk with drgn's follow_phys, then the PT_LOAD headers);
    None where unmapped."""
    import struct
    from drgn.helpers.linux.mm import follow_phys
    with open(core, "rb") as fh:
        eh = fh.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phnum, = struct.unpack_from("<H", eh, 56)
        fh.seek(phoff)
        ph = fh.read(56 * phnum)
    loads = []
    for i in range(phnum):
        typ, _fl, off, _va, pa, fsz = struct.unpack_from("<IIQQQQ", ph, 56 * i)
        if typ == 1:
            loads.append((pa, off, fsz))
    init_mm = mem.prog["init_mm"].address_of_()
    out = []
    for a in addrs:
        try:
            phys = follow_phys(init_mm, a).value_()
        except Exception:
            out.append(None)
            continue
        out.append(next((off + phys - pa for pa, off, fsz in loads
                         if pa <= phys < pa + fsz), None))
    return out


@pytest.mark.lab
@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_elf_cli_names_unreadable_node(family):
    """An ELF dump cut just past some file's inode, where part of its
    tree lies beyond: NODE_UNREADABLE names each lost node (exit 1, the
    addresses in the JSON); a file whose inode lies past the cut: one
    error line naming the address, exit 2."""
    pytest.importorskip("drgn")
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    vmlinux = _vmlinux(family)
    core = _dump(family, "elf")
    _m, full = open_lab(family)
    best = None
    plans = []
    for f in lab_manifest(family)["files"]:
        p = cut_plan(family, f)
        if p is None or not p.nodes:
            continue
        plans.append((p, f))
        if max(p.nodes) >= p.cut and (best is None or p.cut < best[0]):
            best = (p.cut, f)
    assert plans
    if best is None:
        # KASLR may load the kernel high, above every node: then no
        # prefix of the dump keeps the image (page tables) and loses a
        # node.  What such a cut does instead: one error line.
        text, = elf_offsets(full, core, [full.prog.symbol("_text").address])
        assert all(max(p.nodes) < text for p, _f in plans), \
            "no file of this lab run has a node past every page its " \
            "analysis needs"
        cut = cut_copy(core, "%s-elf-cut-before-image" % family,
                       text & ~4095)
        p, f = plans[0]
        code, _out, err = cli("check", "-c", cut, "-k", vmlinux, f["inode"])
        assert_one_error_line(code, err, contains=("truncated dump?",))
        return
    size, f = best
    cut = cut_copy(core, "%s-elf-cut-at-inode" % family, size)
    a = analyze(DrgnMemory.open(cut, vmlinux), f["inode"])
    check_unreadable_accounting(a, clean_walk(family, f["inode"]))
    lost = {x.address for x in a.findings if x.code == "NODE_UNREADABLE"}
    assert lost
    code, out, err = cli("check", "-f", "json", "-c", cut, "-k", vmlinux,
                         f["inode"])
    assert code == 1 and "Traceback" not in err and ERR not in err, err
    doc = json.loads(out)
    assert unreadable_addresses(doc) == {x.address for x in a.findings}
    for x in doc["findings"]:
        assert "truncated" in x["extra"]["reason"]
    # Inodes past the cut: one line each.
    later = [g for g in lab_manifest(family)["files"]
             if elf_offsets(full, core, [int(g["inode"], 16)])[0] is not None
             and elf_offsets(full, core, [int(g["inode"], 16)])[0] >= size]
    if later:
        code, out, err = cli("check", "-c", cut, "-k", vmlinux,
                             later[0]["inode"])
        assert_one_error_line(code, err, contains=(later[0]["inode"],))


@pytest.mark.lab
@pytest.mark.parametrize("family, name", [("6.1", "makedumpfile-d31"),
                                          ("6.12", "makedumpfile-d17")])
def test_truncated_kdump(family, name):
    """Half of a makedumpfile dump: each path and each inode gives one
    error line (exit 2: dentry, inode or mapping in the lost half) or a
    report whose only findings are unreadable nodes and folios, each
    named by its address (exit 1)."""
    vmlinux = _vmlinux(family)
    src = _dump(family, name)
    size = os.path.getsize(src) // 2
    cut = cut_copy(src, "%s-%s-cut50" % (family, name), size)
    files = lab_manifest(family)["files"]
    for args in ([f["path"] for f in files], [f["inode"] for f in files]):
        _check_partial(cli("check", "-f", "json", "-c", cut, "-k", vmlinux,
                           *args), len(args))


def _check_partial(result, n: int) -> None:
    """``n`` targets, some of which may fail: each gives one stderr error
    line or one report holding only unreadable findings with addresses;
    the exit code is 2 if any failed, else 1 if any finding, else 0."""
    code, out, err = result
    assert "Traceback" not in err
    errors = err.splitlines()
    for line in errors:
        assert line.startswith(ERR), err
    docs = json.loads(out) if out.strip() else []
    docs = docs if isinstance(docs, list) else [docs]
    assert len(errors) + len(docs) == n, (errors, len(docs))
    for doc in docs:
        assert {x["code"] for x in doc["findings"]} <= set(UNREADABLE)
        for x in doc["findings"]:
            assert int(x["address"], 16)
    findings = any(doc["findings"] for doc in docs)
    assert code == (2 if errors else 1 if findings else 0), (code, err)


# Wrong vmlinux ----------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.parametrize("dump_family, vmlinux_family",
                         [("6.12", "6.1"), ("6.1", "6.12")])
def test_vmlinux_of_another_release(dump_family, vmlinux_family):
    dump = _dump(dump_family, "elf")
    vmlinux = _vmlinux(vmlinux_family)
    rel_dump = lab_manifest(dump_family)["release"]
    rel_vml = lab_manifest(vmlinux_family)["release"]
    code, out, err = cli("check", "-c", dump, "-k", vmlinux,
                         "/mnt/xfs/big64")
    line = assert_one_error_line(code, err, contains=(rel_dump, rel_vml))
    assert "vmlinux" in line and out == ""


@pytest.mark.lab
def test_vmlinux_release_from_the_file():
    from crashext.backends.drgn import vmlinux_release
    for fam in FAMILIES:
        assert vmlinux_release(_vmlinux(fam)) == lab_manifest(fam)["release"]
    assert vmlinux_release(os.path.join(SAMPLES, "README.md")) is None
    assert vmlinux_release("/nonexistent") is None


# Excluded pages -------------------------------------------------------------
@pytest.mark.lab
def test_simulated_excluded_pages_are_reported_and_analysis_continues():
    """6.1 ELF dump, big64: exclude the page of one leaf node and the
    vmemmap page of one folio elsewhere.  Exactly those are reported (with
    their addresses, in the JSON too); every other folio is checked."""
    from crashext.analyze import analyze
    from crashext.render import jsonout
    _m, mem = open_lab("6.1")
    f = [x for x in lab_manifest("6.1")["files"]
         if x["path"] == "/mnt/xfs/big64"][0]
    ref = analyze(mem, f["inode"])
    leaves = [n for n in ref.walk.nodes if n.eshift == 0]
    leaf = leaves[len(leaves) // 2]
    page = leaf.addr & ~4095
    # Nodes sharing that page are excluded with it; those reached through
    # another excluded node are not even tried.
    by = {n.addr: n for n in ref.walk.nodes}
    on_page = {n.addr for n in ref.walk.nodes if n.addr & ~4095 == page
               or (n.addr + ref.layout.node_size - 1) & ~4095 == page}

    def hidden(addr: int) -> bool:
        """Under a node of the excluded page (or on it)."""
        while addr:
            if addr in on_page:
                return True
            addr = by[addr].holder
        return False

    gone = {a for a in on_page if not hidden(by[a].holder)}
    other = [e.raw for e in ref.walk.entries
             if not hidden(e.node) and e.raw in ref.folios]
    folio = other[len(other) // 3]
    fpage = folio & ~4095
    xm = ExcludingMemory(mem, [page, fpage])
    a = analyze(xm, f["inode"])
    lost = {x.address for x in a.findings if x.code == "NODE_UNREADABLE"}
    bad = {x.address for x in a.findings if x.code == "FOLIO_UNREADABLE"}
    assert lost == gone
    # Folios whose struct page shares the excluded vmemmap page.
    expect_bad = {r for r in other if r & ~4095 == fpage
                  or (r + ref.layout.folio_read_size - 1) & ~4095 == fpage}
    assert bad == expect_bad and folio in bad
    for x in a.findings:
        assert x.code in UNREADABLE and x.extra["reason"] == "excluded page"
    check_unreadable_accounting(a, ref)
    # Analysis went on: every other folio was read and is clean.
    assert len(a.folios) == len(ref.folios) - len(bad) - sum(
        1 for e in ref.walk.entries if hidden(e.node) and e.raw in ref.folios)
    doc = json.loads(jsonout.render(a))
    assert unreadable_addresses(doc) == lost | bad


def _d31_612() -> str:
    """A 6.12 ``makedumpfile -c -d 31`` dump (makedumpfile 1.7.2 drops the
    slab pages of >= 6.10 kernels), made like the lab does (header-fixed
    copy of the ELF dump, see ../shared/lab/mkdump.sh), cached."""
    dst = os.path.join(hostile_dir(), "6.12-makedumpfile-d31")
    elf = _dump("6.12", "elf")
    if _fresh(dst, elf):
        return dst
    mk = shutil.which("makedumpfile")
    fix = os.path.join(os.path.dirname(ROOT), "shared", "lab",
                       "elf_phdr_first.py")
    if not mk or not os.path.exists(fix):
        pytest.skip("makedumpfile or ../shared/lab/elf_phdr_first.py absent")
    vmlinux = _vmlinux("6.12")
    tmp = dst + ".phdrfirst"
    try:
        shutil.copyfile(elf, tmp)
        subprocess.run([sys.executable, fix, tmp], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([mk, "-c", "-d", "31", "-x", vmlinux, tmp,
                        dst + ".tmp"], check=True, capture_output=True,
                       timeout=900, stdin=subprocess.DEVNULL)
        os.chmod(dst + ".tmp", 0o644)
        os.replace(dst + ".tmp", dst)
        _mark(dst, elf)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip("makedumpfile -d 31 failed: %s" % e)
    finally:
        for p in (tmp, dst + ".tmp"):
            if os.path.exists(p):
                os.unlink(p)
    return dst


@pytest.mark.lab
@pytest.mark.slow
def test_makedumpfile_d31_on_6_12_reports_excluded_nodes():
    """Real excluded pages: in a 6.12 -d 31 dump some xa_node slab pages
    are gone.  Each file analyses clean (same as the ELF dump) or reports
    exactly the excluded nodes as NODE_UNREADABLE "excluded page"; the
    CLI exits 1 and names their addresses in the JSON."""
    pytest.importorskip("drgn")
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory
    dump = _d31_612()
    vmlinux = _vmlinux("6.12")
    mem = DrgnMemory.open(dump, vmlinux)
    excluded = None
    for f in lab_manifest("6.12")["files"]:
        ref = clean_walk("6.12", f["inode"])
        try:
            a = analyze(mem, f["inode"])
        except CrashextError as e:
            assert "\n" not in str(e)
            continue
        for x in a.findings:
            assert x.extra.get("reason") == "excluded page", x
        check_unreadable_accounting(a, ref)
        if a.findings:
            excluded = excluded or (f, a)
        else:
            assert a.stats.pages == ref.stats.pages
    if excluded is None:
        pytest.skip("no xa_node was excluded in this run")
    f, a = excluded
    code, out, err = cli("check", "-f", "json", "-c", dump, "-k", vmlinux,
                         f["inode"])
    assert code == 1 and "Traceback" not in err and ERR not in err, err
    doc = json.loads(out)
    assert unreadable_addresses(doc) == {x.address for x in a.findings}
    # A path needs dentries, which -d 31 dropped too: one line.
    code, out, err = cli("check", "-c", dump, "-k", vmlinux, f["path"])
    if code == 2:
        assert_one_error_line(code, err, contains=(f["path"],))


# Wrong targets -------------------------------------------------------------
BAD_TARGETS = [
    "0",                          # null
    "0x1234",                     # low, unmapped
    "0xffff888100000000",         # direct map past the guest's 1 GiB of RAM
    "0x00007fff00000000",         # a user address
    "0xfffffffffffffff8",         # the top of the address space
    "0x10000000000000000",        # past 64 bits
    "nonsense",
    "inode:0xffff888000000000",   # readable, not an inode
]


@pytest.mark.lab
@pytest.mark.parametrize("target", BAD_TARGETS)
def test_wrong_target_on_a_dump(target):
    dump, vmlinux = _dump("6.1", "elf"), _vmlinux("6.1")
    code, out, err = cli("check", "-c", dump, "-k", vmlinux, "--", target)
    assert_one_error_line(code, err, contains=(target,))
    assert out == ""


@pytest.mark.parametrize("target", BAD_TARGETS + ["/no/such/path"])
def test_wrong_target_on_a_snapshot(target):
    snap = os.path.join(SAMPLES, "clean-6.1.snap")
    code, out, err = cli("check", "--snapshot", snap, "--", target)
    assert_one_error_line(code, err, contains=(target,))


# Corrupted snapshots -----------------------------------------------------------
def _corruptions(data: bytes):
    plain = gzip.decompress(data)
    nl = plain.index(b"\n")
    hdr = json.loads(plain[:nl])
    yield "empty", b""
    yield "garbage", bytes(range(256)) * 4
    yield "truncated", data[:len(data) // 2]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xff
    yield "flipped byte", bytes(flipped)
    yield "blob cut", gzip.compress(plain[:nl + 1 + (len(plain) - nl) // 2])
    yield "not json", gzip.compress(b"{nope\n" + plain[nl + 1:])
    yield "newer version", gzip.compress(
        json.dumps(dict(hdr, version=hdr["version"] + 1)).encode()
        + plain[nl:])
    yield "segments a dict", gzip.compress(
        json.dumps(dict(hdr, segments={})).encode() + plain[nl:])
    yield "layout nonsense", gzip.compress(json.dumps(dict(hdr, answers=dict(
        hdr["answers"], struct_size={"struct xa_node": "576"}))).encode()
        + plain[nl:])


@pytest.mark.parametrize("case", [c for c, _ in _corruptions(
    open(os.path.join(SAMPLES, "seed-6.1.snap"), "rb").read())]
    if os.path.exists(os.path.join(SAMPLES, "seed-6.1.snap")) else [])
def test_corrupted_snapshot_cli(tmp_path, case):
    src = os.path.join(SAMPLES, "seed-6.1.snap")
    with open(src, "rb") as f:
        data = dict(_corruptions(f.read()))[case]
    p = tmp_path / "bad.snap"
    p.write_bytes(data)
    for cmd in ("check", "chat", "dump"):
        code, out, err = cli(cmd, "--snapshot", str(p))
        line = assert_one_error_line(code, err, contains=(str(p),))
        assert out == ""
        if case == "newer version":
            assert "upgrade crashext" in line


def test_missing_and_unreadable_files(tmp_path):
    code, out, err = cli("check", "--snapshot", str(tmp_path / "nope.snap"))
    assert_one_error_line(code, err, contains=("nope.snap",))
    code, out, err = cli("check", "--snapshot", str(tmp_path))
    assert_one_error_line(code, err)
    code, out, err = cli("check", "-c", str(tmp_path / "nope.core"), "x")
    assert_one_error_line(code, err, contains=("nope.core",))
    junk = tmp_path / "junk.core"
    junk.write_bytes(b"\x7fELF" + bytes(200))
    code, out, err = cli("check", "-c", str(junk), "0x1234")
    assert_one_error_line(code, err, contains=("junk.core",))


def test_wrong_kind_of_file_as_vmlinux(tmp_path):
    """A vmlinux that is not an ELF file or is a directory: one line that
    says so, before drgn is asked."""
    core = str(tmp_path / "x.core")
    with open(core, "wb") as f:
        f.write(b"\x7fELF" + bytes(200))
    text = tmp_path / "vmlinux.txt"
    text.write_text("not a kernel\n")
    code, _out, err = cli("check", "-c", core, "-k", str(text), "0x1234")
    assert_one_error_line(code, err, contains=("vmlinux.txt",
                                               "not an ELF file"))
    code, _out, err = cli("check", "-c", core, "-k", str(tmp_path), "0x1")
    assert_one_error_line(code, err, contains=("is a directory",))


@pytest.mark.parametrize("command", [("scan",), ("folio", "0x1234")])
def test_whole_dump_commands_refuse_a_snapshot(command):
    """scan and the reverse lookup walk every tree of a dump: on a
    snapshot they say why they cannot, in one line."""
    snap = os.path.join(SAMPLES, "seed-6.1.snap")
    code, _out, err = cli(*(command[:1] + ("--snapshot", snap)
                            + command[1:]))
    assert_one_error_line(code, err, contains=("needs the whole dump",
                                               "snapshot"))
