"""What ``scan`` prints, made while the rows stream by: the totals, the
worst rows (a top-K heap), every row in rank order (a spool that sorts
on disk past a bound), and the three forms: a table, one JSON document,
JSON Lines.

Memory stays flat over millions of trees: a row is turned into the
*piece* its form keeps as soon as it is made (:meth:`Form.piece`: the
row's JSON text, or its rank key and summary line), the row itself is
dropped, and a writer keeps at most:

* JSON Lines and the JSON document: nothing (pieces are written as they
  come, the totals follow the rows);
* the table: ``top`` pieces (:class:`TopK`), or with ``--all`` /
  ``--top 0`` every piece in a :class:`SortedSpool` (``SPOOL_RUN`` in
  memory, the rest in sorted runs on disk).

Pieces are plain data (str, int, tuple), so a ``scan -j N`` worker makes
them and the parent only writes them (:mod:`crashext.triage.scanjobs`):
the text is the same as in one process.

Runs inside PyKdump's embedded Python (``xa scan``): heapq, marshal and
tempfile are in its standard library, json is not (JSON text comes from
:mod:`crashext.jsontext`).

>>> form = Form("jsonl", include_clean=False)
>>> w = writer("jsonl", sys.stdout.write, include_clean=False)  # doctest: +SKIP
>>> for row in rows:                                           # doctest: +SKIP
...     totals.add(row)
...     if form.wants(row): w.put(form.piece(row))
>>> w.put_all(form.pack(pieces))     # a unit's pieces at once  # doctest: +SKIP
>>> w.finish(totals)                                           # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import marshal
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..findings import CODES, SEVERITY_RANK
from ..jsontext import dumps

#: The ``format`` of the JSON document.
FORMAT = "crashext.scan/1"
#: The ``format`` of JSON Lines' summary line (the fleet job's too:
#: crashext.triage.fleet).
LINES_FORMAT = "crashext.scan-lines/1"
#: Output forms of ``scan``.
FORMS = ("table", "json", "jsonl")
#: Rows the table shows by default (the worst first); 0 shows every one.
DEFAULT_TOP = 50
#: Pieces a :class:`SortedSpool` keeps in memory before it sorts them
#: into a run on disk.
SPOOL_RUN = 50_000
#: Written text is flushed when this much is pending, or after
#: ``FLUSH_SECONDS`` (rows stream out as they are made).
FLUSH_BYTES = 1 << 15
FLUSH_SECONDS = 0.5

#: Worst first (the table's order and the triage verdict); "changing":
#: a live tree that changed while read, not judged (crashext.stable).
VERDICT_RANK = {"corrupt": 0, "error": 1, "suspect": 2, "changing": 3,
                "clean": 4}
_VERDICT_ORDER = ("corrupt", "suspect", "error", "changing", "clean")


# ----------------------------------------------------------------------
# Totals


class Totals:
    """Counts over every row of a scan (or of one unit of it): rows by
    verdict and by filesystem, finding codes, cached pages.  Two totals
    add up (:meth:`merge`) to the totals of both, in any order."""

    def __init__(self) -> None:
        self.rows = 0
        self.lists = 0              # rows of kind "error": not trees
        self.by_verdict: Dict[str, int] = {}
        self.by_fs: Dict[str, Dict[str, int]] = {}
        self.codes: Dict[str, int] = {}
        self.pages = 0

    def add(self, row: Any) -> None:
        v = row.verdict
        self.rows += 1
        self.lists += row.kind == "error"
        self.by_verdict[v] = self.by_verdict.get(v, 0) + 1
        fs = self.by_fs.setdefault(row.fs_type or row.kind, {})
        fs[v] = fs.get(v, 0) + 1
        self.pages += row.counts.get("pages", 0)
        for c, k in row.codes.items():
            self.codes[c] = self.codes.get(c, 0) + k

    def merge(self, other: "Totals") -> None:
        self.rows += other.rows
        self.lists += other.lists
        self.pages += other.pages
        _add_counts(self.by_verdict, other.by_verdict)
        _add_counts(self.codes, other.codes)
        for fs, d in other.by_fs.items():
            _add_counts(self.by_fs.setdefault(fs, {}), d)

    @property
    def verdict(self) -> str:
        """The worst verdict seen ("clean" when none)."""
        for v in ("corrupt", "error", "suspect"):
            if self.by_verdict.get(v):
                return v
        return "clean"

    def sorted_codes(self) -> Dict[str, int]:
        """Codes by severity, then count (descending), then name."""
        return dict(sorted(self.codes.items(), key=lambda kv: (
            SEVERITY_RANK.get(CODES.get(kv[0], ("error", ""))[0], 9),
            -kv[1], kv[0])))

    def header(self) -> str:
        """``scanned N trees: 2 corrupt, 198 clean``."""
        n = self.rows
        parts = ["%d %s" % (self.by_verdict[v], v) for v in _VERDICT_ORDER
                 if self.by_verdict.get(v)]
        return "scanned %d tree%s: %s" % (n, "" if n == 1 else "s",
                                          ", ".join(parts) or "none")


def _add_counts(into: Dict[str, int], other: Dict[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


# ----------------------------------------------------------------------
# Worst first without keeping everything


class _Kept:
    """A heap entry ordered worst-kept-first (heapq is a min-heap)."""

    __slots__ = ("key", "item")

    def __init__(self, key: Any, item: Any) -> None:
        self.key, self.item = key, item

    def __lt__(self, other: "_Kept") -> bool:
        return self.key > other.key


class TopK:
    """The ``k`` items with the smallest keys seen, in a heap of ``k``:
    O(k) memory, O(log k) per push.  On equal keys the first pushed is
    kept (as a stable sort would).

    >>> t = TopK(2)
    >>> for key in (5, 1, 4, 2): t.push(key, "row%d" % key)
    >>> t.items(), t.seen
    (['row1', 'row2'], 4)
    """

    def __init__(self, k: int) -> None:
        if k <= 0:
            raise ValueError("TopK needs k >= 1")
        self.k = k
        self.seen = 0
        self._heap: List[_Kept] = []

    def push(self, key: Any, item: Any) -> None:
        self.seen += 1
        h = self._heap
        if len(h) < self.k:
            heapq.heappush(h, _Kept(key, item))
        elif key < h[0].key:
            heapq.heapreplace(h, _Kept(key, item))

    def __len__(self) -> int:
        return len(self._heap)

    def items(self) -> List[Any]:
        """The kept items, smallest key first."""
        return [e.item for e in sorted(self._heap, key=lambda e: e.key)]


class SortedSpool:
    """Every ``(key, item)`` added, given back in key order (stable),
    with at most ``run`` of them in memory: each full run is sorted and
    written to a temporary file (marshal records), and the runs are
    merged when read (:func:`heapq.merge`).  Keys and items must be
    marshal-able (int, str, tuples of them).  Without a writable
    temporary directory the runs stay in memory."""

    def __init__(self, run: Optional[int] = None) -> None:
        self.run = max(1, SPOOL_RUN if run is None else run)
        self.count = 0
        self._mem: List[Tuple[Any, int, Any]] = []
        self._runs: List[Any] = []          # files, or lists in memory

    def add(self, key: Any, item: Any) -> None:
        # The sequence number keeps equal keys in the order added.
        self._mem.append((key, self.count, item))
        self.count += 1
        if len(self._mem) >= self.run:
            self._spill()

    def _spill(self) -> None:
        self._mem.sort()
        try:
            import tempfile
            f = tempfile.TemporaryFile(prefix="crashext-scan-")
            dump = marshal.dump
            for rec in self._mem:
                dump(rec, f)
            f.flush()
            self._runs.append(f)
        except OSError:
            self._runs.append(self._mem)
        self._mem = []

    @staticmethod
    def _read(run: Any) -> Iterator[Tuple[Any, int, Any]]:
        if isinstance(run, list):
            yield from run
            return
        run.seek(0)
        load = marshal.load
        while True:
            try:
                yield load(run)
            except EOFError:
                return

    def __iter__(self) -> Iterator[Any]:
        self._mem.sort()
        runs = [self._read(r) for r in self._runs] + [iter(self._mem)]
        for _key, _n, item in heapq.merge(*runs):
            yield item

    def close(self) -> None:
        for r in self._runs:
            if not isinstance(r, list):
                r.close()
        self._runs, self._mem = [], []


# ----------------------------------------------------------------------
# Forms: what each keeps of a row


class Form:
    """What output form ``fmt`` keeps of a row, made where the row is
    made (in a ``-j N`` worker, or in the one process):

    * ``table``: ``(rank key, summary line)``;
    * ``json`` and ``jsonl``: the row's JSON text on one line, keys
      sorted (the document has one row a line too: a 200,000-tree
      document stays greppable, and compact text is 3 times faster to
      make than indented).

    ``wants(row)``: clean rows only with ``include_clean``."""

    def __init__(self, fmt: str, include_clean: bool = False) -> None:
        if fmt not in FORMS:
            raise ValueError("unknown scan form %r" % fmt)
        self.fmt = fmt
        self.include_clean = include_clean

    def wants(self, row: Any) -> bool:
        return self.include_clean or row.verdict != "clean"

    def piece(self, row: Any) -> Any:
        if self.fmt == "table":
            return (row.rank_key(), row.summary())
        return dumps(row.to_dict(), sort_keys=True)

    def pack(self, pieces: List[Any]) -> Any:
        """A unit's pieces as its writer's :meth:`_Writer.put_all` takes
        them: the table's list as is, the JSON forms' text joined (one
        string: cheap to send from a worker)."""
        if self.fmt == "table":
            return pieces
        if self.fmt == "jsonl":
            return (len(pieces), "".join(p + "\n" for p in pieces))
        return (len(pieces), ",\n    ".join(pieces))

    def one(self, row: Any) -> Tuple[Any, "Totals"]:
        """One row on its own: its packed piece (none when not wanted)
        and its totals."""
        t = Totals()
        t.add(row)
        return self.pack([self.piece(row)] if self.wants(row) else []), t


def _indent(text: str, pad: str) -> str:
    """``text`` with every line but the first indented by ``pad`` (JSON
    text has no raw newline inside a string)."""
    return text.replace("\n", "\n" + pad)


# ----------------------------------------------------------------------
# Writers


class _Writer:
    """Buffers text for ``write`` and flushes it when ``FLUSH_BYTES``
    are pending or ``FLUSH_SECONDS`` passed, so rows reach the reader
    while the scan goes on."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._buf: List[str] = []
        self._size = 0
        self._last = time.monotonic()

    def _out(self, text: str) -> None:
        self._buf.append(text)
        self._size += len(text)
        if self._size >= FLUSH_BYTES or \
                time.monotonic() - self._last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._write("".join(self._buf))
            self._buf, self._size = [], 0
        self._last = time.monotonic()

    def put(self, piece: Any) -> None:
        raise NotImplementedError

    def put_all(self, packed: Any) -> None:
        """A unit's pieces, as :meth:`Form.pack` packed them."""
        for piece in packed:
            self.put(piece)

    def finish(self, totals: Totals, slab: Optional[Dict[str, Any]] = None
               ) -> None:
        raise NotImplementedError


class JsonLinesWriter(_Writer):
    """One JSON object per line, as each row is made; the last line is
    ``{"kind": "summary", "format": "crashext.scan-lines/1",
    "complete": true, "by_verdict": ..., ...}`` (with ``"slab"`` after
    ``--slab``), so a reader knows the scan ended: the fleet job's
    summary line (crashext.triage.fleet) less its cost, which would make
    two runs differ."""

    def put(self, piece: str) -> None:
        self._out(piece + "\n")

    def put_all(self, packed: Tuple[int, str]) -> None:
        if packed[0]:
            self._out(packed[1])

    def finish(self, totals: Totals, slab: Optional[Dict[str, Any]] = None
               ) -> None:
        d = dict(_totals_dict(totals), kind="summary", format=LINES_FORMAT,
                 complete=True, stopped=None)
        if slab is not None:
            d["slab"] = slab
        self._out(dumps(d, sort_keys=True) + "\n")
        self.flush()


class JsonDocWriter(_Writer):
    """One JSON document, written as the rows come: ``format``, then
    ``rows`` (scan order, one a line), then the totals (``by_verdict``,
    ``by_fs``, ``codes``, ``pages``, ``trees``, ``verdict``; ``slab``
    after ``--slab``), indented.  Nothing of a row is kept once
    written."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(write)
        self._rows = 0
        self._out('{\n  "format": %s,\n  "rows": [' % dumps(FORMAT))

    def put(self, piece: str) -> None:
        self.put_all((1, piece))

    def put_all(self, packed: Tuple[int, str]) -> None:
        n, text = packed
        if n:
            self._out(("," if self._rows else "") + "\n    " + text)
            self._rows += n

    def finish(self, totals: Totals, slab: Optional[Dict[str, Any]] = None
               ) -> None:
        tail = _totals_dict(totals)
        if slab is not None:
            tail["slab"] = slab
        parts = [("\n  ]" if self._rows else "]")]
        for k in sorted(tail):
            parts.append(",\n  %s: %s" % (dumps(k), _indent(
                dumps(tail[k], indent=2, sort_keys=True), "  ")))
        parts.append("\n}\n")
        self._out("".join(parts))
        self.flush()


class TableWriter(_Writer):
    """The header line (``scanned N trees: ...``), then one line per row,
    worst first: the ``top`` worst (a :class:`TopK`) and a line counting
    the rest, or every row kept (``top`` 0, or ``include_clean``) through
    a :class:`SortedSpool`; then the slab walk's lines."""

    def __init__(self, write: Callable[[str], None], include_clean: bool,
                 top: int = DEFAULT_TOP) -> None:
        super().__init__(write)
        self.limited = bool(top) and not include_clean
        self._keep: Any = TopK(top) if self.limited else SortedSpool()
        self._by_rank: Dict[int, int] = {}

    def put(self, piece: Tuple[Any, str]) -> None:
        key, line = piece
        r = key[0]
        self._by_rank[r] = self._by_rank.get(r, 0) + 1
        if self.limited:
            self._keep.push(key, (key[0], line))
        else:
            self._keep.add(key, line)

    def finish(self, totals: Totals, slab: Optional[Dict[str, Any]] = None
               ) -> None:
        self._out(totals.header() + "\n")
        if self.limited:
            shown: Dict[int, int] = {}
            for r, line in self._keep.items():
                shown[r] = shown.get(r, 0) + 1
                self._out(line + "\n")
            rest = {r: n - shown.get(r, 0) for r, n in self._by_rank.items()
                    if n > shown.get(r, 0)}
            if rest:
                names = {v: k for k, v in VERDICT_RANK.items()}
                parts = ["%d %s" % (rest[r], names.get(r, "?"))
                         for r in sorted(rest)]
                self._out("+ %d more not shown: %s (--top 0 shows all)\n"
                          % (sum(rest.values()), ", ".join(parts)))
        else:
            for line in self._keep:
                self._out(line + "\n")
            self._keep.close()
        if slab is not None:
            for line in slab_lines(slab):
                self._out(line + "\n")
        self.flush()


def writer(fmt: str, write: Callable[[str], None], include_clean: bool,
           top: int = DEFAULT_TOP) -> _Writer:
    """The writer of form ``fmt`` (see :data:`FORMS`)."""
    if fmt == "jsonl":
        return JsonLinesWriter(write)
    if fmt == "json":
        return JsonDocWriter(write)
    return TableWriter(write, include_clean, top)


def _totals_dict(t: Totals) -> Dict[str, Any]:
    return {"by_verdict": dict(t.by_verdict), "by_fs": dict(t.by_fs),
            "codes": t.sorted_codes(), "pages": t.pages,
            "trees": t.rows - t.lists, "verdict": t.verdict}


def slab_lines(slab: Dict[str, Any]) -> List[str]:
    """The table lines of a slab walk's result (``SlabReport.to_dict()``,
    or ``{"error": ...}``): verdict, stats and notes within 60 columns,
    then one line per finding."""
    import textwrap

    def wrap(t: str, lead: str = "  ", more: str = "    ") -> str:
        return textwrap.fill(t, 60, initial_indent=lead,
                             subsequent_indent=more)
    if "error" in slab:
        return [wrap("slab radix_tree_node: error: %s" % slab["error"], "")]
    out = ["slab radix_tree_node: %s%s" % (
        slab.get("verdict"), "" if slab.get("complete", True)
        else " (incomplete)")]
    # "name value" pairs kept whole (no-break space while wrapping).
    out.append(wrap(", ".join("%s\xa0%s" % kv for kv in sorted(
        (slab.get("stats") or {}).items()))).replace("\xa0", " "))
    out.extend(wrap(n, "  note: ") for n in slab.get("notes") or [])
    out.extend("  %s node 0x%x %s" % (
        f["code"], f.get("node") or 0,
        CODES.get(f["code"], ("", f["code"]))[1])
        for f in slab.get("findings") or [])
    return out
