"""Plant corruption into a COPY of a real ELF vmcore (test support).

A write is ``(kernel_vaddr, bytes)``.  :func:`plant` copies the source dump
(sparse / reflink aware), translates every write through the dump's own page
tables (direct map, vmemmap and slab addresses alike: drgn's
``follow_phys(init_mm, addr)``), maps the physical address to a file offset
with the ELF ``PT_LOAD`` headers, patches the bytes (split per 4 KiB page,
since contiguous virtual pages need not be contiguous physically), and
verifies by reopening the copy with drgn and reading every write back.
A JSON sidecar (``<dst>.plant.json``) records the source and a hash of the
writes, so a later call with the same source and writes reuses the copy.

CLI (ground truth from :mod:`tests.lab.scenarios`)::

    python -m tests.lab.plant --family 6.1 --cases seed,wrong_index \\
        --out /var/cache/crashext-lab/planted/NAME.elf

writes NAME.elf, NAME.elf.plant.json and NAME.truth.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

PAGE_SIZE = 4096
SIDECAR_SUFFIX = ".plant.json"
SIDECAR_VERSION = 1

Write = Tuple[int, bytes]

# --------------------------------------------------------------------------
# drgn side
# --------------------------------------------------------------------------


def open_dump(core: str, vmlinux: Optional[str]):
    """A drgn Program on ``core`` with the vmlinux debug info loaded."""
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(str(core))
    paths = [str(vmlinux)] if vmlinux else []
    try:
        prog.load_debug_info(paths, main=True)
    except drgn.MissingDebugInfoError:
        # Modules without debug info are fine; the main vmlinux is what counts.
        pass
    return prog


def virt_to_phys(prog, vaddr: int) -> int:
    """Physical address of kernel virtual ``vaddr`` through the page tables
    of ``init_mm`` (drgn 0.3.0 ``follow_phys``): works for the direct map,
    vmemmap (struct page / folio), slab and vmalloc addresses.  Raises
    ``drgn.FaultError`` when the address is not mapped."""
    from drgn.helpers.linux.mm import follow_phys

    return int(follow_phys(prog["init_mm"].address_of_(), vaddr))


# --------------------------------------------------------------------------
# ELF side (no drgn)
# --------------------------------------------------------------------------

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
PT_LOAD = 1
PN_XNUM = 0xFFFF


def elf_load_segments(elf_path: str) -> List[Tuple[int, int, int]]:
    """``(p_paddr, p_offset, p_filesz)`` of every PT_LOAD of an ELF64
    little-endian core.  Reads ``e_phoff`` (QEMU 7.2 puts the section headers
    at offset 64 and the program headers after them) and honours
    ``PN_XNUM`` (real count in section header 0's ``sh_info``)."""
    with open(elf_path, "rb") as f:
        eh = _EHDR.unpack(f.read(_EHDR.size))
        ident, phoff, shoff, phentsize, phnum = eh[0], eh[5], eh[6], eh[9], eh[10]
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise ValueError("%s: not an ELF64 little-endian file" % elf_path)
        if phnum == PN_XNUM:
            f.seek(shoff)
            phnum = _SHDR.unpack(f.read(_SHDR.size))[7]     # sh_info
        if phentsize < _PHDR.size:
            raise ValueError("%s: e_phentsize %d" % (elf_path, phentsize))
        f.seek(phoff)
        raw = f.read(phentsize * phnum)
    segs = []
    for i in range(phnum):
        p = _PHDR.unpack_from(raw, i * phentsize)
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz = p[:6]
        if p_type == PT_LOAD and p_filesz:
            segs.append((p_paddr, p_offset, p_filesz))
    return segs


def elf_phys_to_offset(elf_path: str, paddr: int,
                       segments: Optional[Sequence[Tuple[int, int, int]]] = None) -> int:
    """File offset of physical address ``paddr`` in the ELF core (raises
    ValueError when no PT_LOAD holds it in its file image)."""
    segs = segments if segments is not None else elf_load_segments(elf_path)
    for p_paddr, p_offset, p_filesz in segs:
        if p_paddr <= paddr < p_paddr + p_filesz:
            return p_offset + (paddr - p_paddr)
    raise ValueError("physical address 0x%x is in no PT_LOAD of %s" % (paddr, elf_path))


# --------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------


def normalize_writes(writes: Iterable[Sequence[Any]]) -> List[Write]:
    """Accept (vaddr, bytes) pairs with int/hex-string addresses and bytes /
    bytearray / hex-string data."""
    out = []
    for va, data in writes:
        va = va if isinstance(va, int) else int(str(va), 0)
        if isinstance(data, str):
            data = bytes.fromhex(data)
        out.append((va, bytes(data)))
    return out


def writes_digest(writes: Sequence[Write]) -> str:
    """sha256 over the ordered writes (later writes win on overlap)."""
    h = hashlib.sha256()
    for va, data in writes:
        h.update(b"%x:%s\n" % (va, data.hex().encode()))
    return h.hexdigest()


def split_per_page(vaddr: int, data: bytes) -> List[Write]:
    """Split one write into pieces that never cross a 4 KiB page."""
    out = []
    pos = 0
    while pos < len(data):
        va = vaddr + pos
        n = min(len(data) - pos, PAGE_SIZE - (va % PAGE_SIZE))
        out.append((va, data[pos:pos + n]))
        pos += n
    return out


def resolve_writes(prog, elf_path: str, writes: Sequence[Write]) -> List[Dict[str, Any]]:
    """Per-page pieces of ``writes`` with their physical address and file
    offset in ``elf_path``; each piece's current file bytes are checked
    against what drgn reads at the virtual address (so a wrong translation
    is caught before anything is patched)."""
    segs = elf_load_segments(elf_path)
    pieces = []
    with open(elf_path, "rb") as f:
        for wi, (va, data) in enumerate(writes):
            for pva, pdata in split_per_page(va, data):
                pa = virt_to_phys(prog, pva)
                off = elf_phys_to_offset(elf_path, pa, segs)
                f.seek(off)
                old = f.read(len(pdata))
                seen = prog.read(pva, len(pdata))
                if old != seen:
                    raise RuntimeError(
                        "translation check failed at 0x%x (phys 0x%x, offset 0x%x): "
                        "file has %s, drgn reads %s" % (pva, pa, off, old.hex(), seen.hex()))
                pieces.append({"write": wi, "vaddr": pva, "paddr": pa,
                               "offset": off, "old": old.hex(), "new": pdata.hex()})
    return pieces


# --------------------------------------------------------------------------
# Copy + patch + verify
# --------------------------------------------------------------------------


def _sidecar_path(dst: str) -> str:
    return str(dst) + SIDECAR_SUFFIX


def _src_id(src: str) -> Dict[str, Any]:
    st = os.stat(src)
    return {"src": os.path.abspath(src), "src_size": st.st_size,
            "src_mtime_ns": st.st_mtime_ns}


def read_sidecar(dst: str) -> Optional[Dict[str, Any]]:
    try:
        with open(_sidecar_path(dst)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _reusable(src: str, dst: str, digest: str) -> Optional[Dict[str, Any]]:
    side = read_sidecar(dst)
    if not side or side.get("version") != SIDECAR_VERSION:
        return None
    try:
        st = os.stat(dst)
    except OSError:
        return None
    want = _src_id(src)
    if any(side.get(k) != v for k, v in want.items()):
        return None
    if side.get("digest") != digest:
        return None
    if side.get("dst_size") != st.st_size or side.get("dst_mtime_ns") != st.st_mtime_ns:
        return None
    return side


def copy_dump(src: str, dst: str) -> None:
    """Sparse- and reflink-aware copy (``cp --reflink=auto --sparse=always``),
    falling back to shutil."""
    try:
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(src), str(dst)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError):
        shutil.copyfile(src, dst)


def verify_planted(dst: str, vmlinux: Optional[str], writes: Sequence[Write],
                   prog=None) -> List[str]:
    """Reopen ``dst`` with drgn and read every write back; returns a list of
    problems (empty when all bytes are as written)."""
    import drgn

    problems = []
    try:
        p = prog or open_dump(dst, vmlinux)
    except Exception as e:  # noqa: BLE001 - report, do not hide
        return ["drgn cannot open %s: %s" % (dst, e)]
    # Later writes win where writes overlap: build the expected final image.
    final: Dict[int, int] = {}
    for va, data in writes:
        for i, b in enumerate(data):
            final[va + i] = b
    for va, data in writes:
        try:
            got = p.read(va, len(data))
        except drgn.FaultError as e:
            problems.append("0x%x: %s" % (va, e))
            continue
        want = bytes(final[va + i] for i in range(len(data)))
        if got != want:
            problems.append("0x%x: read %s, want %s" % (va, got.hex(), want.hex()))
    return problems


def plant(src_elf: str, dst_path: str, vmlinux: Optional[str],
          writes: Iterable[Sequence[Any]], *, prog=None, verify: bool = True,
          force: bool = False, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Copy ``src_elf`` to ``dst_path`` and apply ``writes`` (list of
    ``(kernel_vaddr, bytes)``).  ``prog`` is an open drgn Program on
    ``src_elf`` (opened here when None).  Reuses an existing ``dst_path``
    made from the same source and writes (unless ``force``).  Returns the
    sidecar dict (``reused`` tells whether the copy was reused, ``pieces``
    the per-page patches with physical address, file offset, old and new
    bytes)."""
    writes = normalize_writes(writes)
    src_elf, dst_path = str(src_elf), str(dst_path)
    if os.path.abspath(src_elf) == os.path.abspath(dst_path):
        raise ValueError("refusing to plant into the source dump itself")
    digest = writes_digest(writes)
    if not force:
        side = _reusable(src_elf, dst_path, digest)
        if side is not None:
            side["reused"] = True
            return side
    t0 = time.time()
    src_prog = prog or open_dump(src_elf, vmlinux)
    pieces = resolve_writes(src_prog, src_elf, writes)
    os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
    tmp = dst_path + ".tmp%d" % os.getpid()
    try:
        if os.path.exists(_sidecar_path(dst_path)):
            os.unlink(_sidecar_path(dst_path))
        copy_dump(src_elf, tmp)
        with open(tmp, "r+b") as f:
            for pc in pieces:
                f.seek(pc["offset"])
                f.write(bytes.fromhex(pc["new"]))
        os.replace(tmp, dst_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if verify:
        problems = verify_planted(dst_path, vmlinux, writes)
        if problems:
            raise RuntimeError("planted dump %s does not read back: %s"
                               % (dst_path, "; ".join(problems[:5])))
    st = os.stat(dst_path)
    side = {"version": SIDECAR_VERSION, **_src_id(src_elf), "digest": digest,
            "vmlinux": vmlinux, "dst": os.path.abspath(dst_path),
            "dst_size": st.st_size, "dst_mtime_ns": st.st_mtime_ns,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - t0, 2), "verified": bool(verify),
            "writes": [{"vaddr": "0x%x" % va, "bytes": d.hex()} for va, d in writes],
            "pieces": [{**pc, "vaddr": "0x%x" % pc["vaddr"], "paddr": "0x%x" % pc["paddr"]}
                       for pc in pieces]}
    if extra:
        side["extra"] = extra
    with open(_sidecar_path(dst_path), "w") as f:
        json.dump(side, f, indent=1)
    side["reused"] = False
    return side


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def truth_path_for(out: str) -> str:
    """NAME.elf -> NAME.truth.json (any other name: NAME + .truth.json)."""
    base = out[:-4] if out.endswith(".elf") else out
    return base + ".truth.json"


def default_out(family: str, cases: Sequence[str]) -> str:
    """``<planted dir>/<family>[-kaslr]-<cases tag>.elf``: a KASLR run of a
    family (``$CRASHEXT_LAB_KASLR=1``) gets its own copy."""
    from .labdumps import planted_dir, run_dir
    from .scenarios import CASES, IMPACT_CASES

    if sorted(cases) == sorted(CASES):
        tag = "all"
    elif sorted(cases) == sorted(IMPACT_CASES):
        tag = "impact"
    elif len(cases) <= 3:
        tag = "+".join(cases)
    else:
        tag = "%dcases-%s" % (len(cases), writes_digest([(0, ",".join(cases).encode())])[:8])
    d = run_dir(family)
    if d is not None and d.name.endswith("-kaslr") and not family.endswith("-kaslr"):
        family += "-kaslr"
    name = "%s-%s.elf" % (family, tag)
    return str(planted_dir() / name)


def make_planted(family: str, cases: Sequence[str], out: Optional[str] = None,
                 force: bool = False) -> Tuple[str, str, Dict[str, Any]]:
    """Build ``cases`` on the ``family`` lab ELF dump, plant them into
    ``out`` and write the truth file.  Returns (dump, truth path, truth)."""
    from . import labdumps, scenarios

    m = labdumps.load_manifest(family)
    if m is None:
        raise SystemExit("no lab manifest for %s under %s" % (family, labdumps.lab_dir()))
    src = labdumps.dump_path(m, "elf")
    vml = labdumps.vmlinux_path(m)
    if src is None or vml is None:
        raise SystemExit("lab run %s lacks vmcore.elf or vmlinux" % m.get("_run_dir"))
    out = out or default_out(family, cases)
    prog = scenarios.program_for(m)
    writes, truth = scenarios.build_cases(m, cases, prog=prog)
    side = plant(src, out, vml, writes, prog=prog, force=force)
    truth.update({"family": family, "release": m.get("release"), "source": src,
                  "planted": os.path.abspath(out), "vmlinux": vml,
                  "digest": side["digest"]})
    tp = truth_path_for(out)
    with open(tp, "w") as f:
        json.dump(truth, f, indent=1)
    truth["_reused"] = side.get("reused", False)
    return out, tp, truth


_ensured: Dict[Any, Dict[str, Any]] = {}


def ensure_planted(family: str, cases: Optional[Sequence[str]] = None
                   ) -> Optional[Dict[str, Any]]:
    """The truth of ``family``'s dump with ``cases`` (default: every case
    of :data:`scenarios.CASES`) planted (``<planted dir>/<family>-<tag>.elf``,
    see :func:`default_out`), built now when absent or stale (made from
    another run), reused otherwise; once per process.  None when the
    family has no lab run.  Tests that need a planted dump call this, so
    they never depend on another test having built it first."""
    from . import labdumps, scenarios

    cases = list(scenarios.CASES if cases is None else cases)
    key = (family, tuple(sorted(cases)))
    if key in _ensured:
        return _ensured[key]
    if labdumps.elf_run(family) is None:
        return None
    _out, _tp, truth = make_planted(family, cases)
    _ensured[key] = truth
    return truth


def main(argv: Optional[Sequence[str]] = None) -> int:
    from . import scenarios

    ap = argparse.ArgumentParser(prog="python -m tests.lab.plant", description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="6.1", help="lab family (6.1, 6.12, 6.12-kaslr, ...)")
    ap.add_argument("--cases", default="all",
                    help="comma separated, 'all' (%s) or 'impact' (%s)"
                    % (",".join(scenarios.CASES), ",".join(scenarios.IMPACT_CASES)))
    ap.add_argument("--out", help="planted ELF path (default <lab>/planted/<family>-<cases>.elf)")
    ap.add_argument("--force", action="store_true", help="re-copy even if a matching copy exists")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args(argv)
    if a.list:
        for c in scenarios.CASE_DOCS:
            print("%-16s %s" % (c, scenarios.CASE_DOCS[c]))
        return 0
    if a.cases in ("all", "impact"):
        cases = list(scenarios.CASES if a.cases == "all" else scenarios.IMPACT_CASES)
    else:
        cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in scenarios.CASE_DOCS]
    if bad:
        ap.error("unknown case(s): %s" % ", ".join(bad))
    out, tp, truth = make_planted(a.family, cases, a.out, a.force)
    print("%s %s" % ("reused" if truth.get("_reused") else "planted", out))
    print("truth  %s" % tp)
    for c in truth["cases"]:
        print("  %-16s %-18s codes=%s indices=%s" % (c["case"], c["file"], ",".join(c["codes"]),
                                                    c["indices"][:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
