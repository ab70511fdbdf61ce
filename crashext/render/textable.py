"""tabulate's ``simple`` table format without tabulate.

The table renderer uses :mod:`tabulate`; inside crash, PyKdump's embedded
Python cannot import it (tabulate 0.10 imports ``importlib.metadata`` and
``html``, which PyKdump's minimal standard library lacks; see
``shared/pykdump-api.md``).  :func:`simple_table` draws the same text as
``tabulate(rows, headers, tablefmt="simple", disable_numparse=True,
showindex=...)`` for string cells (the renderers' cells are all strings),
multi-line cells included, so ``xa check`` in crash prints what ``crashext
check`` prints (the tests compare the two on real analyses).

>>> print(simple_table([["a", "x\\ny"]], ["h1", "h2"], showindex=[1]))
    h1    h2
--  ----  ----
1   a     x
          y
"""

from __future__ import annotations

from typing import List, Optional, Sequence

#: tabulate's MIN_PADDING: a header is 2 columns narrower than its column.
MIN_PADDING = 2
SEP = "  "


def _lines(cell: str, multiline: bool) -> List[str]:
    if not multiline:
        return [cell]
    return cell.split("\n") if cell else []


def simple_table(rows: Sequence[Sequence[str]], headers: Sequence[str],
                 showindex: Optional[Sequence[object]] = None) -> str:
    """``rows`` (lists of str) under ``headers``, columns left-aligned
    and two spaces apart, a dash line under the headers; ``showindex``
    adds a first column of those values (header empty)."""
    heads = list(headers)
    body = [list(r) for r in rows]
    if showindex is not None and body:      # as tabulate: no rows, no index
        heads = [""] + heads
        body = [[str(i)] + r for i, r in zip(showindex, body)]
    ncols = len(heads)
    # tabulate's multi-line mode: some cell or header holds a newline
    # (then a row is as high as its tallest cell, an empty cell has no
    # line, and a row of empty cells has none at all).
    multiline = any("\n" in str(c) for r in body for c in r) or \
        any("\n" in str(h) for h in heads)
    # tabulate strips each cell (not each line of it), then splits lines.
    cells = [[_lines(str(c).strip(), multiline) for c in r] for r in body]
    hcells = [str(h).split("\n") for h in heads]
    widths = []
    for j in range(ncols):
        w = max(len(x) for x in hcells[j]) + MIN_PADDING
        for r in cells:
            w = max(w, max((len(x) for x in r[j]), default=0))
        widths.append(w)

    def lines_of(row: List[List[str]]) -> List[str]:
        height = max(len(c) for c in row) if multiline else 1
        out = []
        for k in range(height):
            out.append(SEP.join(
                (c[k] if k < len(c) else "").ljust(widths[j])
                for j, c in enumerate(row)).rstrip())
        return out

    out = lines_of(hcells)
    out.append(SEP.join("-" * w for w in widths))
    for r in cells:
        out.extend(lines_of(r))
    return "\n".join(out)


__all__ = ["simple_table"]
