"""Snapshot files: the exact memory and debug-info answers one analysis
used, so a tree can be attached to a bug report and analysed anywhere.

:class:`RecordingMemory` wraps any backend and records every answer
(bytes read, read faults, offsets, sizes, symbols, enumerators, paths);
:func:`save` writes them; :class:`SnapshotMemory` replays them.  Since the
engine asks a snapshot exactly what it asked the dump, the analysis of a
snapshot is identical to the analysis of the dump it came from.

File format (``crashext.snapshot``, version 1): gzip of one JSON header
line, a newline, then a binary blob.  The header holds the answers and a
segment table ``[address, length, blob offset]``; the blob holds the
bytes.  Reading is data only (no pickle, no eval), bounded in size, and
every field is validated: a damaged or hostile file gives one
:class:`~crashext.memory.CrashextError` line.

>>> rec = RecordingMemory(DrgnMemory.open(core, vmlinux))   # doctest: +SKIP
>>> analyze(rec, "/mnt/xfs/big64"); save(rec, "big64.snap")  # doctest: +SKIP
>>> analyze(SnapshotMemory.load("big64.snap"), "/mnt/xfs/big64")  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import __version__
from ..jsontext import dumps as json_dumps, loads as json_loads
from ..memory import CrashextError, Memory, UnreadableMemory

FORMAT = "crashext.snapshot"
VERSION = 1
#: Limits for untrusted files.
MAX_FILE = 256 << 20            # compressed bytes
MAX_HEADER = 64 << 20           # JSON header bytes
MAX_BLOB = 1 << 30              # decompressed blob bytes
MAX_SEGMENTS = 4_000_000
_U64 = (1 << 64) - 1

_QUERIES = ("member_offset", "member_size", "struct_size", "symbol",
            "enum_value", "resolve_path")


class RecordingMemory(Memory):
    """Delegates to ``inner`` and records every answer for a snapshot."""

    def __init__(self, inner: Memory) -> None:
        self.inner = inner
        self.reads: Dict[Tuple[int, int], bytes] = {}
        self.faults: Dict[Tuple[int, int], str] = {}
        self.answers: Dict[str, Dict[str, Any]] = {q: {} for q in _QUERIES}
        self.targets: List[str] = []

    def read(self, addr: int, size: int) -> bytes:
        try:
            data = self.inner.read(addr, size)
        except UnreadableMemory as e:
            self.faults[(e.addr if e.addr == addr else addr, size)] = e.reason or str(e)
            raise
        self.reads[(addr, size)] = data
        return data

    def _ask(self, q: str, key: str, *args: Any) -> Any:
        v = getattr(self.inner, q)(*args)
        self.answers[q][key] = v
        return v

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return self._ask("member_offset", struct + "\t" + member, struct, member)

    def member_size(self, struct: str, member: str) -> Optional[int]:
        return self._ask("member_size", struct + "\t" + member, struct, member)

    def struct_size(self, struct: str) -> Optional[int]:
        return self._ask("struct_size", struct, struct)

    def symbol(self, name: str) -> Optional[int]:
        return self._ask("symbol", name, name)

    def enum_value(self, name: str) -> Optional[int]:
        return self._ask("enum_value", name, name)

    def release(self) -> Optional[str]:
        return self.inner.release()

    def live(self) -> bool:
        # A live capture is judged live (crashext.stable); the snapshot
        # it writes replays as a dump.
        return self.inner.live()

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def resolve_path(self) -> Callable[[str], int]:
        """The inner backend's path resolver, recording its answers.  None
        (AttributeError) when it has none (PyKdump): the engine then walks
        the dcache itself (crashext.targets) through this recorder, so its
        reads land in the snapshot, and files the answer with
        :meth:`record_answer`."""
        resolver = getattr(self.inner, "resolve_path", None)
        if resolver is None:
            raise AttributeError("resolve_path")

        def resolve(path: str) -> int:
            v = resolver(path)
            self.answers["resolve_path"][path] = v
            return v
        return resolve

    def record_answer(self, query: str, key: str, value: Any) -> None:
        """File an answer found above the backend (a path the engine
        resolved) so the snapshot replays it."""
        self.answers[query][key] = value


def _segments(reads: Dict[Tuple[int, int], bytes]) -> List[Tuple[int, bytes]]:
    """Merge overlapping/adjacent reads into (start, bytes) segments."""
    out: List[Tuple[int, bytearray]] = []
    for (addr, _size), data in sorted(reads.items()):
        if out and addr <= out[-1][0] + len(out[-1][1]):
            start, buf = out[-1]
            end = addr + len(data)
            if end > start + len(buf):
                buf.extend(data[start + len(buf) - addr:])
        else:
            out.append((addr, bytearray(data)))
    return [(a, bytes(b)) for a, b in out]


def _write_gzip(raw: Any, parts: List[bytes]) -> None:
    """``parts`` as one gzip member (RFC 1952) written to ``raw``, with
    zlib only: PyKdump's embedded Python has zlib but no ``gzip`` (its
    ``_compression`` is missing).  mtime 0, no file name: the same capture
    gives the same bytes."""
    # ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=2 (best compression) OS=255
    raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = size = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
        size += len(p)
        raw.write(c.compress(p))
    raw.write(c.flush())
    raw.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))


def save(rec: RecordingMemory, path: str, note: str = "") -> int:
    """Write ``rec``'s answers to ``path`` atomically; return file size."""
    segs = _segments(rec.reads)
    table = []
    off = 0
    for a, b in segs:
        table.append([a, len(b), off])
        off += len(b)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created_by": "crashext %s" % __version__,
        "source": os.path.basename(rec.describe()),
        "release": rec.release(),
        "targets": rec.targets,
        "note": note,
        "answers": rec.answers,
        "faults": [[a, s, r] for (a, s), r in sorted(rec.faults.items())],
        "segments": table,
    }
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        _write_gzip(raw, [json_dumps(header, sort_keys=True,
                                     separators=(",", ":")).encode(),
                          b"\n"] + [b for _a, b in segs])
    os.replace(tmp, path)
    return os.path.getsize(path)


def _bad(path: str, why: str) -> CrashextError:
    return CrashextError("%s: not a valid crashext snapshot: %s" % (path, why))


def _int(v: Any, lo: int = 0, hi: int = _U64) -> bool:
    return type(v) is int and lo <= v <= hi


class SnapshotMemory(Memory):
    """Replays a snapshot file (see module docstring)."""

    def __init__(self, header: Dict[str, Any], blob: bytes, path: str) -> None:
        self.path = path
        self.header = header
        self.blob = blob
        self._starts = [s[0] for s in header["segments"]]
        self._segs = header["segments"]
        self._faults = {(a, s): r for a, s, r in header["faults"]}
        self.answers = header["answers"]
        self.targets: List[str] = list(header.get("targets") or [])

    @classmethod
    def load(cls, path: str) -> "SnapshotMemory":
        try:
            if os.path.getsize(path) > MAX_FILE:
                raise _bad(path, "file larger than %d bytes" % MAX_FILE)
            with open(path, "rb") as raw:
                data = raw.read(MAX_FILE + 1)
        except OSError as e:
            raise CrashextError("cannot read snapshot %s: %s"
                                % (path, e.strerror or e))
        if data[:2] != b"\x1f\x8b":
            raise _bad(path, "not gzip data")
        try:
            # The header first (at most MAX_HEADER bytes), then exactly the
            # blob its segment table needs: memory stays bounded by what
            # the validated header declares, whatever the stream inflates
            # to (a gzip bomb is refused after MAX_HEADER bytes).
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            head = d.decompress(data, MAX_HEADER + 1)
            nl = head.find(b"\n", 0, MAX_HEADER)
            if nl < 0:
                if len(head) > MAX_HEADER:
                    raise _bad(path, "header line longer than %d bytes"
                               % MAX_HEADER)
                if not d.eof:
                    raise _bad(path, "truncated (gzip stream ends early)")
                raise _bad(path, "no header line")
            try:
                header = json_loads(head[:nl].decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise _bad(path, "header is not JSON (%s)"
                           % (str(e)[:60] or type(e).__name__))
            cls._validate(header, MAX_BLOB, path)
            need = max((s[2] + s[1] for s in header["segments"]), default=0)
            if len(head) > nl + 1 + need:
                raise _bad(path, "more data than the segment table holds")
            # Grown as data arrives: memory follows what the stream
            # really holds, not what a damaged table claims.
            blob = bytearray(memoryview(head)[nl + 1:])
            del head
            while len(blob) < need:
                part = d.decompress(d.unconsumed_tail,
                                    min(need - len(blob), 1 << 24))
                if not part:
                    raise _bad(path, "truncated (blob shorter than its "
                               "segment table)")
                blob += part
            if d.decompress(d.unconsumed_tail, 1):
                raise _bad(path, "more data than the segment table holds")
            if not d.eof:
                raise _bad(path, "truncated (gzip stream ends early)")
        except zlib.error as e:
            raise _bad(path, "corrupt gzip data (%s)" % e)
        return cls(header, blob, path)

    @staticmethod
    def _validate(h: Any, blob_len: int, path: str) -> None:
        if not isinstance(h, dict) or h.get("format") != FORMAT:
            raise _bad(path, "wrong format tag")
        v = h.get("version")
        if not _int(v, 1, 1 << 31):
            raise _bad(path, "bad version")
        if v > VERSION:
            raise CrashextError(
                "%s: snapshot format version %d is newer than this "
                "crashext reads (%d): upgrade crashext" % (path, v, VERSION))
        segs = h.get("segments")
        if not isinstance(segs, list) or len(segs) > MAX_SEGMENTS:
            raise _bad(path, "bad segment table")
        prev_end = -1
        for s in segs:
            if not (isinstance(s, list) and len(s) == 3 and _int(s[0])
                    and _int(s[1], 1, MAX_BLOB) and _int(s[2], 0, blob_len)
                    and s[2] + s[1] <= blob_len and s[0] + s[1] <= _U64 + 1):
                raise _bad(path, "bad segment %s" % repr(s)[:60])
            if s[0] < prev_end:
                raise _bad(path, "segments overlap or are unsorted")
            prev_end = s[0] + s[1]
        faults = h.get("faults")
        if not isinstance(faults, list) or not all(
                isinstance(f, list) and len(f) == 3 and _int(f[0])
                and _int(f[1], 0, MAX_BLOB) and isinstance(f[2], str)
                for f in faults):
            raise _bad(path, "bad fault table")
        ans = h.get("answers")
        if not isinstance(ans, dict):
            raise _bad(path, "no answers")
        for q in _QUERIES:
            tab = ans.setdefault(q, {})
            if not isinstance(tab, dict) or not all(
                    isinstance(k, str) and (val is None or _int(val))
                    for k, val in tab.items()):
                raise _bad(path, "bad %s table" % q)
        t = h.get("targets", [])
        if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
            raise _bad(path, "bad target list")
        if h.get("release") is not None and not isinstance(h["release"], str):
            raise _bad(path, "bad release")

    # Memory interface -------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        r = self._faults.get((addr, size))
        if r is not None:
            raise UnreadableMemory(addr, size, r)
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, length, off = self._segs[i]
            if addr + size <= start + length:
                o = off + addr - start
                return bytes(self.blob[o:o + size])
        raise UnreadableMemory(addr, size, "not in snapshot")

    def _get(self, q: str, key: str) -> Optional[int]:
        return self.answers[q].get(key)

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return self._get("member_offset", struct + "\t" + member)

    def member_size(self, struct: str, member: str) -> Optional[int]:
        return self._get("member_size", struct + "\t" + member)

    def struct_size(self, struct: str) -> Optional[int]:
        return self._get("struct_size", struct)

    def symbol(self, name: str) -> Optional[int]:
        return self._get("symbol", name)

    def enum_value(self, name: str) -> Optional[int]:
        return self._get("enum_value", name)

    def release(self) -> Optional[str]:
        return self.header.get("release")

    def describe(self) -> str:
        return "%s (snapshot of %s)" % (self.path, self.header.get("source"))

    def resolve_path(self, path: str) -> Optional[int]:
        """The recorded answer, or None (the engine then tries the dcache
        walk on the recorded bytes)."""
        return self.answers["resolve_path"].get(path)
