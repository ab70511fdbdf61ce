"""The panic in a kernel log: its line, the BUG/Oops before it, the
crashing task and CPU, the first stack frames, the panic site, and
whether that site is page-cache code.

Works on log lines from the dump's printk ring buffer
(:func:`crashext.kernlog.read_log`) or from the text a dump tool saved
beside the dump (kexec-tools' ``vmcore-dmesg.txt``, kdump-tools'
``dmesg.<stamp>``: ``[   16.988363] text``, optionally with a
``[  T123]`` caller field).  What it looks for is what the kernel prints:

* ``Kernel panic - not syncing: <msg>`` (kernel/panic.c panic());
* before it, the report that led there: ``BUG: ...``, ``kernel BUG at
  <file>:<line>!``, ``Oops: ...``, ``general protection fault``,
  ``WARNING: CPU: ...`` (lib/bug.c, arch/x86/kernel/traps.c,
  arch/x86/mm/fault.c, kernel/panic.c __warn());
* ``CPU: N [UID: U ]PID: P Comm: C ...`` and ``Call Trace:`` with one
  frame a line (``func+0x12/0x40 [module]``; ``? func`` frames are
  unreliable and skipped), from lib/dump_stack.c and
  arch/x86/kernel/dumpstack.c; ``RIP: 0010:func+off/size`` and the
  register lines of __show_regs().

The *site* is the function that failed: the ``RIP`` function of an
oops/BUG, else the first frame below the panic machinery (``panic``,
``nmi_panic``, ``dump_stack_lvl``, ...).

>>> p = parse_lines(["[   16.98] Kernel panic - not syncing: NMI: Not continuing"])
>>> p["line"]
'Kernel panic - not syncing: NMI: Not continuing'
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

#: Frames shown per panic.
MAX_FRAMES = 8

_TS = re.compile(r"^\s*(?:<\d+>)?\[\s*(\d+)\.(\d+)\]\s?(?:\[\s*([TC]\d+)\]\s?)?")
_PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)$")
_BUG = re.compile(r"^(BUG: .*|kernel BUG at .*|Oops: .*|"
                  r"general protection fault.*|WARNING: CPU: .*|"
                  r"Unable to handle kernel .*)$")
_BUG_AT = re.compile(r"kernel BUG at ([^:\s]+):(\d+)!")
_WARN_AT = re.compile(r"WARNING: CPU: \d+ PID: \d+ at ([^:\s]+):(\d+) ")
_CPU = re.compile(r"^CPU: (\d+) (?:UID: \d+ )?PID: (-?\d+) Comm: (.{1,16}?)"
                  r"(?: (?:Not tainted|Tainted:)|$)")
_RIP = re.compile(r"^RIP: [0-9a-f]{4}:(?:\[<[0-9a-f]+>\] )?"
                  r"([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_FRAME = re.compile(r"^\s*(\? )?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                    r"(?: \[(\w+)\])?\s*$")
_REGS = re.compile(r"\b(R[A-Z0-9]{2}|R\d{1,2}): ?([0-9a-f]{16})\b")
_END = re.compile(r"^---\[ end (?:Kernel panic|trace)")

#: Frames of the panic/oops machinery itself, never the site.
_MACHINERY = {
    "dump_stack", "dump_stack_lvl", "show_stack", "panic", "vpanic",
    "nmi_panic", "nmi_panic_self_stop", "__warn", "warn_slowpath_fmt",
    "report_bug", "handle_bug", "do_error_trap", "do_trap", "die",
    "oops_end", "__die", "__die_body", "show_trace_log_lvl", "die_addr",
    "exc_invalid_op", "exc_general_protection", "exc_page_fault",
    "asm_exc_invalid_op", "asm_exc_general_protection",
    "asm_exc_page_fault", "page_fault_oops", "kernelmode_fixup_or_oops",
    "__bad_area_nosemaphore", "bad_area_nosemaphore", "do_user_addr_fault",
    "handle_page_fault", "no_context", "check_panic_on_warn",
}

#: Page-cache code (mm/filemap.c, lib/xarray.c, mm/truncate.c,
#: mm/readahead.c, mm/page-writeback.c, mm/huge_memory.c's split,
#: mm/shmem.c, mm/swap_state.c, fs/iomap/buffered-io.c, fs/buffer.c,
#: fs/mpage.c): function name prefixes ...
PAGECACHE_PREFIXES = (
    "filemap_", "__filemap_", "folio_", "__folio_", "xa_", "__xa_", "xas_",
    "page_cache_", "__page_cache_", "pagecache_", "readahead",
    "page_cache_ra_", "ondemand_readahead", "force_page_cache_ra",
    "truncate_", "invalidate_", "find_get_", "find_lock_",
    "find_or_create_page", "mapping_", "delete_from_page_cache",
    "replace_page_cache", "split_huge_page", "__split_huge_page",
    "split_folio", "__split_folio", "shmem_", "iomap_", "generic_perform_write",
    "generic_file_", "__generic_file_", "add_to_page_cache",
    "write_cache_pages", "do_writepages", "mpage_", "block_write_",
    "block_read_full_", "grab_cache_page", "add_to_swap_cache",
    "__delete_from_swap_cache", "swap_cache_", "unmap_mapping_",
    "__filemap_remove_folio", "page_cache_delete", "next_uptodate_",
    "filemap_map_pages", "do_read_cache_", "read_cache_",
)
#: ... the page-cache hooks of a filesystem's address_space_operations
#: (include/linux/fs.h) as their implementations are usually named ...
PAGECACHE_SUFFIXES = (
    "_read_folio", "_readahead", "_write_begin", "_write_end",
    "_writepages", "_writepage", "_dirty_folio", "_invalidate_folio",
    "_release_folio", "_migrate_folio", "_launder_folio",
    "_page_mkwrite", "_buffered_write", "_file_read_iter",
    "_file_write_iter", "_file_splice_read",
)
#: ... and source files (kernel BUG at <file>:<line>!).
PAGECACHE_FILES = (
    "mm/filemap.c", "lib/xarray.c", "include/linux/xarray.h",
    "mm/truncate.c", "mm/readahead.c", "mm/page-writeback.c",
    "mm/huge_memory.c", "mm/shmem.c", "mm/swap_state.c",
    "include/linux/pagemap.h", "mm/folio-compat.c", "fs/buffer.c",
    "fs/mpage.c", "fs/iomap/",
)


def base_function(name: str) -> str:
    """``unknown_nmi_error.cold`` -> ``unknown_nmi_error`` (compiler
    clone suffixes dropped)."""
    return name.split(".", 1)[0]


def is_pagecache_function(name: Optional[str]) -> bool:
    if not name:
        return False
    f = base_function(name)
    return f.startswith(PAGECACHE_PREFIXES) or f.endswith(PAGECACHE_SUFFIXES)


def is_pagecache_file(path: Optional[str]) -> bool:
    return bool(path) and any(path.startswith(p) or ("/" + p) in path
                              for p in PAGECACHE_FILES)


def split_line(raw: str) -> Tuple[Optional[float], Optional[str], str]:
    """``[  16.988363] [  T1] text`` -> (16.988363, "T1", "text")."""
    m = _TS.match(raw)
    if not m:
        return None, None, raw.rstrip("\n")
    ts = float("%s.%s" % (m.group(1), m.group(2)))
    return ts, m.group(3), raw[m.end():].rstrip("\n")


def read_dmesg_file(path: str, limit: int = 16 << 20) -> List[str]:
    """The lines of a saved kernel log (at most ``limit`` bytes, from the
    end: the panic is at the end)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - limit))
        data = f.read()
    return data.decode("utf-8", "replace").splitlines()


def parse_lines(lines: Iterable[Any],
                source: str = "log") -> Dict[str, Any]:
    """The panic of a log (lines as text, or ``(ts, caller, text)``
    tuples): a dict with ``line`` (None when the log has no panic nor
    oops), ``bug``, ``time`` (seconds since boot), ``caller``, ``cpu``,
    ``pid``, ``comm``, ``site``, ``site_file``, ``pagecache`` (the site
    is page-cache code), ``pagecache_frames``, ``frames`` (first
    :data:`MAX_FRAMES` reliable frames), ``registers`` (values from the
    register dump), ``source``."""
    recs: List[Tuple[Optional[float], Optional[str], str]] = []
    for ln in lines:
        if isinstance(ln, tuple):
            recs.append(ln)
        else:
            for piece in str(ln).split("\n"):
                recs.append(split_line(piece))
    out: Dict[str, Any] = {"source": source, "line": None, "bug": None,
                           "time": None, "caller": None, "cpu": None,
                           "pid": None, "comm": None, "site": None,
                           "site_file": None, "pagecache": False,
                           "pagecache_frames": [], "frames": [],
                           "registers": [], "records": len(recs)}
    texts = [r[2].strip() for r in recs]
    p = None
    for i in range(len(texts) - 1, -1, -1):
        if _PANIC.search(texts[i]) and not texts[i].startswith("---["):
            p = i
            break
    # The report that led to the panic: the last BUG/Oops before it
    # (or, without a panic line, the last one at all).
    stop = p if p is not None else len(texts)
    b = None
    for i in range(stop - 1, -1, -1):
        if _BUG.match(texts[i]):
            b = i
            break
        if p is not None and _END.match(texts[i]):
            break                       # an earlier, finished report
    if p is None and b is None:
        return out
    first = b if b is not None else p
    out["line"] = texts[p] if p is not None else texts[b]
    out["bug"] = texts[b] if b is not None else None
    out["time"] = recs[p if p is not None else b][0]
    out["caller"] = recs[p if p is not None else b][1]
    end = len(texts)
    for i in range((p if p is not None else b) + 1, len(texts)):
        if _END.match(texts[i]):
            end = i
            break
    block = texts[first:end]
    rip = None
    in_trace = False
    frames: List[str] = []
    regs: List[int] = []
    for t in block:
        m = _CPU.match(t)
        if m and out["cpu"] is None:
            out["cpu"], out["pid"] = int(m.group(1)), int(m.group(2))
            out["comm"] = m.group(3)
            continue
        m = _RIP.match(t)
        if m and rip is None:
            rip = m.group(1)
        for name, val in _REGS.findall(t):
            v = int(val, 16)
            if v:
                regs.append(v)
        if t.startswith("Call Trace:"):
            in_trace = True
            continue
        if in_trace:
            m = _FRAME.match(t)
            if m and not m.group(1):
                frames.append(m.group(2) + (" [%s]" % m.group(3)
                                            if m.group(3) else ""))
    out["frames"] = frames[:MAX_FRAMES]
    out["registers"] = sorted(set(regs))
    m = _BUG_AT.search(out["bug"] or "") or _WARN_AT.search(out["bug"] or "")
    if m:
        out["site_file"] = "%s:%s" % (m.group(1), m.group(2))
    site = rip if b is not None and rip else None
    if site is None:
        for f in frames:
            fn = base_function(f.split(" ", 1)[0])
            if fn not in _MACHINERY and not fn.startswith(
                    ("dump_stack", "panic", "nmi_panic")):
                site = f.split(" ", 1)[0]
                break
    out["site"] = base_function(site) if site else None
    out["pagecache"] = (is_pagecache_function(out["site"])
                        or is_pagecache_file(out["site_file"]))
    out["pagecache_frames"] = [f for f in frames[:MAX_FRAMES]
                               if is_pagecache_function(f.split(" ")[0])]
    return out


def from_records(records: Sequence[Any]) -> Dict[str, Any]:
    """:func:`parse_lines` over :class:`crashext.kernlog.LogRecord`s."""
    return parse_lines([(r.ts_nsec / 1e9, r.caller, r.text)
                        for r in records], source="dump log")


def site_label(p: Optional[Dict[str, Any]]) -> str:
    """The panic part of a bucket key: ``panic in unknown_nmi_error``,
    ``BUG in filemap_get_pages (page cache)``, ``no panic``."""
    if not p or not p.get("line"):
        if p and p.get("error"):
            return "panic unknown"
        return "no panic"
    kind = "panic"
    bug = p.get("bug") or ""
    if bug.startswith(("BUG:", "kernel BUG")):
        kind = "BUG"
    elif bug.startswith(("Oops", "general protection", "Unable")):
        kind = "oops"
    elif bug.startswith("WARNING"):
        kind = "WARNING"
    where = p.get("site") or p.get("site_file") or "?"
    return "%s in %s%s" % (kind, where,
                           " (page cache)" if p.get("pagecache") else "")
