"""PNG renderer: a picture of the broken node, to post in chat.

Each node with findings (or, for a clean tree, the first node holding
entries) is drawn as its 64 slots in an 8x8 grid, slot 0 top left:

* a folio is filled with a colour of its own (the same folio has the same
  colour wherever it appears, in every drawn node);
* a sibling slot takes its canonical entry's colour, lighter, with an
  arrow mark and the canonical slot number;
* value entries grey-blue, NULL white, node entries green, anything bad
  (retry, zero, invalid internal entry, stray sibling, bad pointer) red;
* a duplicated folio (``DUP_FOLIO``) gets a thick dark-red frame and a
  ``DUP`` tag at every slot where it appears; other slots named by a
  finding get an orange frame.

Above the grid: the node header (address, shift, offset, count,
nr_values, array, parent, index range); below it the explanations that
concern the node, a legend, and the verdict as a coloured caption.
1080 px wide by default, fonts sized for a phone screen.

Pillow is imported only when a picture is drawn; without it
:class:`~crashext.memory.CrashextError` says how to install it.

>>> info = render_png(analysis, "node.png")      # doctest: +SKIP
>>> info["size"][0]                               # doctest: +SKIP
1080
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import fmt
from ..memory import CrashextError
from ..xarray import entry as E

RGB = Tuple[int, int, int]

BG: RGB = (255, 255, 255)
INK: RGB = (20, 20, 20)
DIM: RGB = (110, 110, 110)
GRID: RGB = (200, 200, 200)
NULL_FILL: RGB = (248, 248, 248)
VALUE_FILL: RGB = (196, 208, 226)
NODE_FILL: RGB = (168, 214, 170)
BAD_FILL: RGB = (222, 60, 60)
DUP_FRAME: RGB = (150, 0, 20)
HIT_FRAME: RGB = (255, 140, 0)
VERDICT_FILL: Dict[str, RGB] = {
    "corrupt": (176, 0, 32),
    "suspect": (196, 120, 0),
    "clean": (22, 120, 56),
}
CAPTION_INK: RGB = (255, 255, 255)

COLS = 8


def need_pillow():
    """Pillow's modules, or :class:`CrashextError` saying how to get it."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:
        # Inside crash, PyKdump's Python cannot import Pillow (a C
        # extension, and PIL imports logging): draw from a snapshot.
        raise CrashextError(
            "Pillow is not installed: pip install crashext[png] (%s; inside "
            "crash: xa capture -o F TARGET, then crashext check --snapshot "
            "F --png OUT)" % e)
    return Image, ImageDraw, ImageFont


def _font(ImageFont, size: int):
    """Pillow's built-in font at ``size`` px (Pillow >= 10.1); older
    Pillow only has a small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def folio_colour(k: int) -> RGB:
    """The k-th distinct folio's colour: hues spread by the golden ratio,
    light enough for black text, never red (red means bad)."""
    h = (0.14 + k * 0.6180339887) % 1.0
    # Keep away from the reds (bad) and dark-red frame.
    if h < 0.06 or h > 0.94:
        h = (h + 0.12) % 1.0
    import colorsys                      # not in PyKdump's library
    r, g, b = colorsys.hsv_to_rgb(h, 0.50, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


def lighter(c: RGB, f: float = 0.55) -> RGB:
    return tuple(int(x + (255 - x) * f) for x in c)  # type: ignore


def _text_w(font, s: str) -> float:
    try:
        return font.getlength(s)
    except AttributeError:
        return font.getsize(s)[0]


def _line_h(font) -> int:
    try:
        a, d = font.getmetrics()
        return a + d
    except AttributeError:
        return 12


def wrap_px(font, text: str, width: float) -> List[str]:
    """Wrap ``text`` on spaces so each line is at most ``width`` px."""
    words = text.split(" ")
    lines: List[str] = []
    cur = ""
    for w in words:
        cand = w if not cur else cur + " " + w
        if _text_w(font, cand) <= width or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = w
    if cur or not lines:
        lines.append(cur)
    out = []
    for ln in lines:      # hard-break words still too long
        while _text_w(font, ln) > width and len(ln) > 1:
            k = len(ln)
            while k > 1 and _text_w(font, ln[:k]) > width:
                k -= 1
            out.append(ln[:k])
            ln = ln[k:]
        out.append(ln)
    return out


# What to draw --------------------------------------------------------------
def nodes_to_draw(a: Any, max_nodes: int = 3) -> Tuple[List[Any], int]:
    """Nodes named by findings (in finding order), else the first node
    holding entries; returns ``(nodes, how many more had findings)``."""
    by_code: Dict[str, List[int]] = {}
    for f in a.findings:
        cands = [f.node] if f.node is not None else []
        cands += [x for x in (f.extra.get("nodes") or [])
                  if isinstance(x, int)]
        lst = by_code.setdefault(f.code, [])
        for x in cands:
            if x not in lst and a.walk.node_at(x) is not None:
                lst.append(x)
    # First the first node of every code (so 30 nodes with one kind of
    # finding do not hide the one node with another), then the rest.
    addrs: List[int] = []
    for lst in by_code.values():
        if lst and not any(x in addrs for x in lst):
            addrs.append(lst[0])
    for lst in by_code.values():
        addrs.extend(x for x in lst if x not in addrs)
    if addrs:
        return [a.walk.node_at(x) for x in addrs[:max_nodes]], \
            max(0, len(addrs) - max_nodes)
    w = a.walk
    if not w.nodes:
        return [], 0
    holders = {e.node for e in w.entries}
    for n in w.nodes:
        if n.addr in holders:
            return [n], 0
    return [w.nodes[0]], 0


def classify(n: Any, chunk: int = 64) -> List[Dict[str, Any]]:
    """Per slot: kind name, raw entry, and for siblings the canonical slot
    (None when the sibling is stray: no open run ends in it)."""
    out: List[Dict[str, Any]] = []
    run = -1
    for i in range(chunk):
        raw = n.slots[i]
        k = E.kind_of(raw, chunk)
        c: Dict[str, Any] = {"slot": i, "raw": raw, "kind": k, "canon": None}
        if k in (E.POINTER, E.VALUE):
            run = i
            if k == E.POINTER and not E.is_kernel_pointer(raw):
                c["bad"] = True
        elif k == E.SIBLING:
            t = E.xa_to_sibling(raw)
            if run >= 0 and t == run:
                c["canon"] = t
            else:
                c["bad"] = True
                c["canon"] = t
                run = -1
        else:
            run = -1
            if k in (E.RETRY, E.ZERO, E.BAD_INTERNAL):
                c["bad"] = True
            if k == E.NODE and n.eshift == 0:
                c["bad"] = True
        out.append(c)
    return out


class _Palette:
    """Folio address -> colour, by order of first appearance."""

    def __init__(self) -> None:
        self.map: Dict[int, RGB] = {}

    def __call__(self, folio: int) -> RGB:
        c = self.map.get(folio)
        if c is None:
            c = self.map[folio] = folio_colour(len(self.map))
        return c


def _fill_of(c: Dict[str, Any], cells: Sequence[Dict[str, Any]],
             pal: _Palette) -> RGB:
    k = c["kind"]
    if c.get("bad"):
        return BAD_FILL
    if k == E.POINTER:
        return pal(c["raw"])
    if k == E.SIBLING:
        t = cells[c["canon"]]
        if t["kind"] == E.POINTER:
            return lighter(pal(t["raw"]))
        if t["kind"] == E.VALUE:
            return lighter(VALUE_FILL)
        return BAD_FILL
    if k == E.VALUE:
        return VALUE_FILL
    if k == E.NODE:
        return NODE_FILL
    return NULL_FILL


def _hits(a: Any, node: int) -> Tuple[set, set]:
    """(duplicated folios, slots named by findings) for ``node``."""
    dup = set()
    slots = set()
    for f in a.findings:
        if f.code == "DUP_FOLIO" and f.folio is not None:
            dup.add(f.folio)
        nodes = f.extra.get("nodes") if isinstance(f.extra, dict) else None
        if f.node == node:
            slots.update(s for s in f.slots if s >= 0)
        elif nodes and f.slots and len(nodes) == len(f.slots):
            slots.update(s for x, s in zip(nodes, f.slots) if x == node)
    return dup, slots


def _explanations_for(a: Any, node: int) -> List[str]:
    lines: List[str] = []
    for e in a.explanations:
        if any(0 <= i < len(a.findings) and (
                a.findings[i].node == node or node in (
                    a.findings[i].extra.get("nodes") or []))
               for i in e.findings):
            lines.extend(x.rstrip() for x in e.lines)
    return lines


# Drawing -------------------------------------------------------------------
def render_png(a: Any, path: str, width: int = 1080, max_nodes: int = 3,
               node: Optional[int] = None) -> Dict[str, Any]:
    """Draw the node(s) of ``a`` to ``path`` (PNG), ``width`` px wide.

    ``node`` picks the node to draw (an address); else the nodes with
    findings (at most ``max_nodes``), or the first node holding entries
    of a clean tree.  Returns the geometry, for tests and callers that
    annotate further: ``{"path", "size", "panels": [{"node", "cells"
    (64 boxes x0,y0,x1,y1), "fills" (64 RGB)}], "caption" (box),
    "caption_fill"}``."""
    Image, ImageDraw, ImageFont = need_pillow()
    from .chat import verdict_line

    sc = width / 1080.0
    px = lambda v: max(1, int(round(v * sc)))          # noqa: E731
    f_title = _font(ImageFont, px(38))
    f_head = _font(ImageFont, px(30))
    f_cell = _font(ImageFont, px(27))
    f_slot = _font(ImageFont, px(22))
    f_text = _font(ImageFont, px(28))
    f_cap = _font(ImageFont, px(36))
    m = px(24)
    gap = px(4)
    cell = (width - 2 * m - (COLS - 1) * gap) // COLS
    grid_w = COLS * cell + (COLS - 1) * gap
    text_w = width - 2 * m

    if node is not None:
        n = a.walk.node_at(node)
        if n is None:
            raise CrashextError("node 0x%x is not in this tree" % node)
        nodes, more = [n], 0
    else:
        nodes, more = nodes_to_draw(a, max_nodes)
    chunk = 1 << (a.layout.chunk_shift if a.layout else 6)
    pal = _Palette()

    # Lay out the text of each panel first, to size the canvas.
    panels = []
    for n in nodes:
        end = n.index + (1 << (n.eshift + (a.layout.chunk_shift
                                           if a.layout else 6))) - 1
        arr = "array %s" % fmt.hx(n.array)
        if n.array != a.walk.xarray:
            arr += " (NOT this xarray)"
        head = ["shift %d  offset %d  count %d  nr_values %d" % (
                    n.shift, n.offset, n.count, n.nr_values),
                arr,
                "parent %s  indices %s-%s" % (fmt.hx(n.parent) if n.parent
                                               else "NULL",
                                               fmt.hx(n.index), fmt.hx(end))]
        head_lines: List[str] = []
        for h in head:
            head_lines.extend(wrap_px(f_head, h, text_w))
        ex_lines: List[Tuple[int, str]] = []
        for x in _explanations_for(a, n.addr):
            ind = int(_text_w(f_text, " " * (len(x) - len(x.lstrip(" ")))))
            ex_lines.extend((ind, ln) for ln in
                            wrap_px(f_text, x.strip(), text_w - ind))
        rows = (chunk + COLS - 1) // COLS
        panels.append((n, head_lines, ex_lines, rows))

    cap_text = verdict_line(a, None)
    cap_lines = wrap_px(f_cap, cap_text, text_w - 2 * px(16))
    sub = []
    if a.release:
        sub.append("kernel %s" % a.release)
    sub.append("%d nodes, %d folios, %d pages" % (
        a.stats.nodes, a.stats.folios, a.stats.pages))
    if more:
        sub.append("+%d more node%s with findings" % (more,
                                                      "" if more == 1 else "s"))
    sub_lines = wrap_px(f_text, " | ".join(sub), text_w - 2 * px(16))

    lh_title, lh_head, lh_text = _line_h(f_title), _line_h(f_head), _line_h(f_text)
    lh_cap = _line_h(f_cap)
    legend_h = px(46)
    height = m
    for n, hl, el, rows in panels:
        height += lh_title + px(6) + len(hl) * lh_head + px(12)
        height += rows * cell + (rows - 1) * gap + px(14)
        height += len(el) * lh_text + (px(10) if el else 0) + px(16)
    if not panels:
        height += lh_text * 2
    height += legend_h + px(12)
    cap_h = px(16) * 2 + len(cap_lines) * lh_cap + len(sub_lines) * lh_text
    height += cap_h

    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)
    info: Dict[str, Any] = {"path": path, "size": (width, height),
                            "panels": []}
    y = m
    if not panels:
        d.text((m, y), "empty tree: no node to draw", fill=DIM, font=f_text)
        y += lh_text * 2
    for n, hl, el, rows in panels:
        d.text((m, y), "node %s" % fmt.hx(n.addr), fill=INK, font=f_title)
        y += lh_title + px(6)
        for ln in hl:
            d.text((m, y), ln, fill=INK, font=f_head)
            y += lh_head
        y += px(12)
        cells = classify(n, chunk)
        dup, hit = _hits(a, n.addr)
        boxes = []
        fills = []
        x0g = m + (text_w - grid_w) // 2
        for c in cells:
            i = c["slot"]
            r, col = divmod(i, COLS)
            x0 = x0g + col * (cell + gap)
            y0 = y + r * (cell + gap)
            x1, y1 = x0 + cell - 1, y0 + cell - 1
            fill = _fill_of(c, cells, pal)
            boxes.append((x0, y0, x1, y1))
            fills.append(fill)
            d.rectangle((x0, y0, x1, y1), fill=fill, outline=GRID, width=1)
            is_dup = c["kind"] == E.POINTER and c["raw"] in dup
            if is_dup:
                d.rectangle((x0, y0, x1, y1), outline=DUP_FRAME, width=px(7))
            elif i in hit:
                d.rectangle((x0, y0, x1, y1), outline=HIT_FRAME, width=px(5))
            ink = CAPTION_INK if fill == BAD_FILL else INK
            pad = px(10)
            d.text((x0 + pad, y0 + px(6)), str(i), fill=ink if fill == BAD_FILL
                   else DIM, font=f_slot)
            k = c["kind"]
            lines: List[str] = []
            if k == E.POINTER:
                lines = ["%06x" % (c["raw"] & 0xFFFFFF)]
                fo = a.folios.get(c["raw"])
                if fo is not None:
                    lines.append("o%d" % fo.order)
                if c.get("bad"):
                    lines = ["bad ptr"]
            elif k == E.SIBLING:
                lines = ["%d" % c["canon"]]
                if c.get("bad"):
                    lines.append("stray")
            elif k == E.VALUE:
                lines = ["value"]
            elif k == E.NODE:
                lines = ["node", "%04x" % (c["raw"] & 0xFFFF)]
            elif k != E.EMPTY:
                lines = [E.KIND_NAMES.get(k, "?")]
            ty = y0 + px(40)
            for j, ln in enumerate(lines):
                tw = _text_w(f_cell, ln)
                tx = x0 + (cell - tw) / 2
                if k == E.SIBLING and j == 0:
                    # Arrow mark pointing back to the canonical slot.
                    aw = px(16)
                    tx += aw / 2 + px(2)
                    ay = ty + _line_h(f_cell) / 2
                    d.polygon([(tx - px(4) - aw, ay),
                               (tx - px(4), ay - px(9)),
                               (tx - px(4), ay + px(9))], fill=ink)
                d.text((tx, ty), ln, fill=ink, font=f_cell)
                ty += _line_h(f_cell)
            if is_dup:
                tag = "DUP"
                tw = _text_w(f_slot, tag)
                d.text((x1 - pad - tw, y0 + px(6)), tag, fill=DUP_FRAME,
                       font=f_slot)
        info["panels"].append({"node": n.addr, "cells": boxes,
                               "fills": fills})
        y += rows * cell + (rows - 1) * gap + px(14)
        for ind, ln in el:
            d.text((m + ind, y), ln, fill=INK, font=f_text)
            y += lh_text
        y += (px(10) if el else 0) + px(16)

    # Legend.
    sw = px(30)
    lx = m
    items = [(folio_colour(0), "folio"), (lighter(folio_colour(0)), "sibling"),
             (VALUE_FILL, "value"), (NULL_FILL, "NULL"), (NODE_FILL, "node"),
             (BAD_FILL, "bad"), (None, "duplicate")]
    for colr, label in items:
        if colr is None:
            d.rectangle((lx, y, lx + sw, y + sw), fill=BG, outline=DUP_FRAME,
                        width=px(5))
        else:
            d.rectangle((lx, y, lx + sw, y + sw), fill=colr, outline=GRID)
        d.text((lx + sw + px(6), y), label, fill=INK, font=f_slot)
        lx += sw + px(6) + int(_text_w(f_slot, label)) + px(18)
    y += legend_h + px(12)

    # Caption: the verdict.
    cap_fill = VERDICT_FILL.get(a.verdict, INK)
    cap_box = (0, y, width - 1, height - 1)
    d.rectangle(cap_box, fill=cap_fill)
    ty = y + px(16)
    for ln in cap_lines:
        d.text((m + px(16), ty), ln, fill=CAPTION_INK, font=f_cap)
        ty += lh_cap
    for ln in sub_lines:
        d.text((m + px(16), ty), ln, fill=CAPTION_INK, font=f_text)
        ty += lh_text
    info["caption"] = cap_box
    info["caption_fill"] = cap_fill
    info["caption_text"] = cap_text
    img.save(path, format="PNG", optimize=True)
    return info


def render(a: Any, path: str = "crashext.png", **opts: Any) -> str:
    """Same as :func:`render_png`, returning the path written."""
    render_png(a, path, **opts)
    return path
