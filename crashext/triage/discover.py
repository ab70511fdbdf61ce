"""Find the dumps in what a user hands to ``crashext triage``, by content,
and give each a unique, meaningful name.

Inputs may be, mixed:

* a folder, searched recursively (symlinks followed, each folder once):
  ``/var/crash`` as kexec-tools writes it (RHEL/Fedora:
  ``<host>-<YYYY-MM-DD-HH:MM:SS>/vmcore`` with ``vmcore-dmesg.txt``), as
  Debian/Ubuntu kdump-tools write it (``<YYYYMMDDHHMM>/dump.<stamp>`` with
  ``dmesg.<stamp>``), a vmcore lab run, or any tree of dump files;
* a dump file (any name);
* a list: a text file of paths (one a line, ``#`` comments, relative to
  the list), a JSON list of paths or of ``{"dump", "vmlinux", "name"}``
  objects, or a vmcore lab ``manifest.json``.

A file is a dump when it starts as one (:func:`crashext.triage.dumpfile.sniff`):
ELF core, kdump-compressed or makedumpfile-flattened.  Skipped, with one
line each: dumps still being saved (``vmcore-incomplete``,
``dump-incomplete``, ``*.incomplete``; a file that grows while we look),
empty or headerless files with a dump's name, paths that do not exist.

A dump's name is its path relative to the folder it was found under
(``host7-2026-11-20-03:14/vmcore``), or its file name when given
directly; names that would collide get leading folders until they are
unique.

>>> d = discover(["/var/crash"])                           # doctest: +SKIP
>>> [x.name for x in d.dumps], [s.line() for s in d.skipped]   # doctest: +SKIP
(['127.0.0.1-2026-11-20-03:14:07/vmcore'], ['202611200320/dump-incomplete: ...'])
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Union

from .dumpfile import sniff

#: Names the kdump tools give a dump they are still writing (kexec-tools'
#: kdump-lib, Debian's kdump-config): renamed when the save completes.
INCOMPLETE_NAMES = ("vmcore-incomplete", "dump-incomplete")
INCOMPLETE_SUFFIX = ".incomplete"
#: A dump modified this recently is looked at twice, ``settle`` seconds
#: apart: if it changed, it is still being written.
RECENT_SECONDS = 120
#: Most bytes read from a file to decide whether it is a list of paths.
MAX_LIST_BYTES = 4 << 20

_DUMPLIKE = re.compile(r"^(vmcore(\.[^/]*)?|dump\.[^/]+|.*\.(vmcore|kdump))$")
#: kexec-tools: <host or IP>-<date +%Y-%m-%d-%T> (older: without seconds)
_KEXEC_DIR = re.compile(r"^(?P<host>.+)-(?P<date>\d{4}-\d\d-\d\d)-"
                        r"(?P<time>\d\d:\d\d(:\d\d)?)$")
#: kdump-tools: KDUMP_STAMP=$(date +"%Y%m%d%H%M")
_DEBIAN_DIR = re.compile(r"^(?P<stamp>\d{12})$")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Dump:
    """One dump to triage."""

    path: str                       # absolute, as found (symlinks kept)
    name: str                       # unique among the run's dumps
    format: str                     # elf / kdump / flattened
    layout: str                     # kexec-tools / kdump-tools / lab run / file
    root: str = ""                  # the folder (or list) it was found in
    dmesg: Optional[str] = None     # the kernel log saved beside it
    dir_time: Optional[str] = None  # crash time from its folder's name
    host: Optional[str] = None      # kexec-tools folder: the host part
    vmlinux: Optional[str] = None   # given explicitly (JSON list)
    vmlinux_hint: Optional[str] = None   # a lab manifest's
    size: int = 0
    mtime: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    """A path that is not triaged, and why (one line)."""

    path: str
    reason: str

    def line(self) -> str:
        return "%s: %s" % (self.path, self.reason)


@dataclass
class Discovery:
    dumps: List[Dump] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    files_seen: int = 0

    def reason(self) -> str:
        """Why nothing was found (for the exit-2 line)."""
        why = "no dump found: %d file%s looked at, none starts as an ELF " \
              "core, kdump-compressed or flattened dump" % (
                  self.files_seen, "" if self.files_seen == 1 else "s")
        if self.skipped:
            why += " (%d skipped: %s)" % (len(self.skipped),
                                          self.skipped[0].line())
        return why


class _Walker:
    def __init__(self, settle: float) -> None:
        self.out = Discovery()
        self.settle = settle
        self.seen_files: Dict[str, int] = {}
        self.seen_dirs: set = set()
        self._manifests: Dict[str, Optional[str]] = {}
        self._parts: List[List[str]] = []      # name candidates per dump

    # -- adding ---------------------------------------------------------
    def skip(self, path: str, reason: str) -> None:
        self.out.skipped.append(Skipped(path, reason))

    def add(self, path: str, fmt: str, rel: str, root: str,
            **kw: Any) -> None:
        real = os.path.realpath(path)
        if real in self.seen_files:
            return
        try:
            st = os.stat(real)
        except OSError as e:
            self.skip(path, "cannot stat: %s" % (e.strerror or e))
            return
        self.seen_files[real] = len(self.out.dumps)
        d = os.path.dirname(os.path.abspath(path))
        layout, dir_time, host = _layout_of(path, d)
        if layout == "file" and self._manifest_vmlinux(d) is not None:
            layout = "lab run"
        dump = Dump(path=os.path.abspath(path), name=rel, format=fmt,
                    layout=layout, root=root, dmesg=_dmesg_beside(path),
                    dir_time=dir_time, host=host, size=st.st_size,
                    mtime=st.st_mtime,
                    vmlinux_hint=self._manifest_vmlinux(d))
        for k, v in kw.items():
            if v is not None:
                setattr(dump, k, v)
        self.out.dumps.append(dump)
        # candidate name parts: the relative name, then the root's folders
        self._parts.append(_split(os.path.join(root, rel)) if root
                           else _split(os.path.abspath(path)))

    def _manifest_vmlinux(self, d: str) -> Optional[str]:
        if d not in self._manifests:
            v = None
            mf = os.path.join(d, "manifest.json")
            if os.path.isfile(mf):
                try:
                    with open(mf) as f:
                        m = json.load(f)
                    v = m.get("vmlinux") if isinstance(m, dict) else None
                except (OSError, ValueError):
                    v = None
            self._manifests[d] = v if isinstance(v, str) else None
        return self._manifests[d]

    # -- walking --------------------------------------------------------
    def input(self, it: Any, base: str = "") -> None:
        if isinstance(it, dict):
            p = it.get("dump")
            if not isinstance(p, str):
                self.skip(repr(it)[:80], "list entry without a 'dump' path")
                return
            self.file(_join(base, p), vmlinux=it.get("vmlinux"),
                      name=it.get("name"))
            return
        p = _join(base, os.fspath(it))
        if os.path.isdir(p):
            self.folder(p)
        elif os.path.exists(p):
            self.file(p)
        else:
            self.skip(p, "no such file or directory")

    def folder(self, root: str) -> None:
        root = os.path.abspath(root)
        for d, dirs, files in os.walk(root, followlinks=True):
            real = os.path.realpath(d)
            if real in self.seen_dirs:
                dirs[:] = []
                continue
            self.seen_dirs.add(real)
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(d, f)
                self.out.files_seen += 1
                self.candidate(p, os.path.relpath(p, root), root)

    def candidate(self, p: str, rel: str, root: str) -> None:
        """A file met while walking a folder."""
        base = os.path.basename(p)
        if base in INCOMPLETE_NAMES or base.endswith(INCOMPLETE_SUFFIX):
            self.skip(rel if root else p, "incomplete dump (still being "
                      "saved, or the save did not finish)")
            return
        fmt = sniff(p)
        if fmt:
            self.add(p, fmt, rel, root)
            return
        if _DUMPLIKE.match(base) and "dmesg" not in base:
            try:
                size = os.path.getsize(p)
            except OSError as e:
                self.skip(rel, "cannot read: %s" % (e.strerror or e))
                return
            self.skip(rel, "empty file (the save failed?)" if size == 0
                      else "not a dump (no ELF core, kdump or flattened "
                      "header)")

    def file(self, p: str, vmlinux: Optional[str] = None,
             name: Optional[str] = None) -> None:
        """A file named by the user or a list."""
        self.out.files_seen += 1
        base = os.path.basename(p)
        if base in INCOMPLETE_NAMES or base.endswith(INCOMPLETE_SUFFIX):
            self.skip(p, "incomplete dump (still being saved, or the save "
                      "did not finish)")
            return
        fmt = sniff(p)
        if fmt:
            self.add(p, fmt, name or base, "", vmlinux=vmlinux)
            if name:
                self._parts[-1] = _split(name)
            return
        try:
            size = os.path.getsize(p)
        except OSError as e:
            self.skip(p, "cannot read: %s" % (e.strerror or e))
            return
        if size == 0:
            self.skip(p, "empty file")
            return
        entries = _list_entries(p)
        if entries is None:
            self.skip(p, "neither a dump nor a list of dumps")
            return
        base_dir = os.path.dirname(os.path.abspath(p))
        if isinstance(entries, dict):           # a lab manifest
            for d in entries.get("dumps") or []:
                if isinstance(d, dict) and isinstance(d.get("path"), str):
                    q = _join(base_dir, d["path"])
                    if not os.path.exists(q):
                        q = os.path.join(base_dir, "vmcore.%s" % d.get(
                            "name"))
                    self.input({"dump": q})
            return
        paths = [e.get("dump") if isinstance(e, dict) else e
                 for e in entries]
        if not any(isinstance(q, str) and os.path.exists(_join(base_dir, q))
                   for q in paths):
            self.skip(p, "neither a dump nor a list of dumps (no line "
                      "names an existing file)")
            return
        for e in entries:
            self.input(e, base_dir)

    # -- names and the still-growing check --------------------------------
    def finish(self) -> Discovery:
        self._unique_names()
        self._growing()
        return self.out

    def _unique_names(self) -> None:
        dumps = self.out.dumps
        k = [max(1, len(_split(d.name))) for d in dumps]
        for _ in range(64):
            names: Dict[str, List[int]] = {}
            for i, d in enumerate(dumps):
                parts = self._parts[i]
                names.setdefault("/".join(parts[-k[i]:]), []).append(i)
            dup = [i for v in names.values() if len(v) > 1 for i in v
                   if k[i] < len(self._parts[i])]
            for n, v in names.items():
                for i in v:
                    dumps[i].name = n
            if not dup:
                break
            for i in dup:
                k[i] += 1
        # Any name still shared (same path spelled twice): number them.
        count: Dict[str, int] = {}
        for d in dumps:
            count[d.name] = count.get(d.name, 0) + 1
            if count[d.name] > 1:
                d.name += "#%d" % count[d.name]

    def _growing(self) -> None:
        now = time.time()
        recent = [d for d in self.out.dumps if now - d.mtime < RECENT_SECONDS]
        if not recent or self.settle <= 0:
            return
        time.sleep(self.settle)
        gone = set()
        for d in recent:
            try:
                st = os.stat(d.path)
            except OSError:
                self.skip(d.name, "vanished while being looked at")
                gone.add(id(d))
                continue
            if st.st_size != d.size or st.st_mtime != d.mtime:
                self.skip(d.name, "still being written (%d -> %d bytes in "
                          "%.1f s)" % (d.size, st.st_size, self.settle))
                gone.add(id(d))
        self.out.dumps = [d for d in self.out.dumps if id(d) not in gone]


def _split(path: str) -> List[str]:
    return [p for p in path.split(os.sep) if p]


def _join(base: str, p: str) -> str:
    p = os.path.expanduser(p)
    return p if os.path.isabs(p) or not base else os.path.join(base, p)


def _layout_of(path: str, d: str):
    """(layout, crash time from the folder name, host) of a dump."""
    base, folder = os.path.basename(path), os.path.basename(d)
    m = _KEXEC_DIR.match(folder)
    if m and base == "vmcore":
        t = m.group("time")
        return ("kexec-tools", "%s %s" % (m.group("date"), t),
                m.group("host"))
    m = _DEBIAN_DIR.match(folder)
    if m and base.startswith("dump."):
        s = m.group("stamp")
        return ("kdump-tools", "%s-%s-%s %s:%s" % (
            s[:4], s[4:6], s[6:8], s[8:10], s[10:12]), None)
    return ("file", None, None)


def _dmesg_beside(path: str) -> Optional[str]:
    """The kernel log the dump tool saved next to the dump: kexec-tools'
    ``vmcore-dmesg.txt``, kdump-tools' ``dmesg.<stamp>`` for
    ``dump.<stamp>``, else a lone ``*dmesg*`` file in the folder."""
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    cands = [os.path.join(d, "vmcore-dmesg.txt")]
    if base.startswith("dump."):
        cands.insert(0, os.path.join(d, "dmesg." + base[len("dump."):]))
    for c in cands:
        if os.path.isfile(c):
            return c
    try:
        others = [f for f in os.listdir(d) if "dmesg" in f
                  and os.path.isfile(os.path.join(d, f))
                  and not f.endswith(".json")]
    except OSError:
        return None
    return os.path.join(d, others[0]) if len(others) == 1 else None


def _list_entries(p: str) -> Optional[Union[List[Any], Dict[str, Any]]]:
    """The entries of a list file (JSON list, lab manifest dict, or text
    lines), or None when the file is no list."""
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_LIST_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_LIST_BYTES or b"\0" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    s = text.lstrip()
    if s.startswith("[") or s.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and isinstance(data.get("dumps"), list):
            return data
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return lines or None


def discover(inputs: Union[PathLike, Iterable[Any]],
             settle: float = 1.0) -> Discovery:
    """Every dump of ``inputs`` (see the module docstring), each once (by
    real path), in input order, with unique names; and what was skipped.
    ``settle``: seconds between the two looks at a recently modified
    dump (0: do not check for growing files)."""
    if isinstance(inputs, (str, os.PathLike, dict)):
        inputs = [inputs]
    w = _Walker(settle)
    for it in inputs:
        w.input(it)
    return w.finish()
