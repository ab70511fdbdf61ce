"""Checks over a walked tree: one module per family.

Each check is ``check(ctx) -> Iterator[Finding]`` over a
:class:`CheckContext`; :data:`ALL_CHECKS` lists them in report order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..folio import FolioRec
from ..layout import Layout
from ..memory import Memory, UnreadableMemory
from ..targets import Target
from ..xarray.walk import Walk


@dataclass
class CheckContext:
    mem: Memory
    layout: Layout
    target: Target
    walk: Walk
    folios: Mapping[int, FolioRec]     # a crashext.folio.FolioTable
    unreadable_folios: Dict[int, UnreadableMemory]
    notes: List[str] = field(default_factory=list)
    #: Facts one check established for others (speed only; e.g. the folio
    #: check's "plain_order0": every entry is a clean order-0 folio).
    hints: Dict[str, Any] = field(default_factory=dict)

    @property
    def page_cache(self) -> bool:
        """True when the tree is a mapping's i_pages (folio checks apply)."""
        return self.target.mapping is not None


def ino_of_mapping(ctx: CheckContext, mapping: int) -> Optional[int]:
    """``mapping->host->i_ino`` when readable (names the other tree)."""
    lay = ctx.layout
    try:
        host = ctx.mem.read_u64(mapping + lay.as_host)
        if not host:
            return None
        return ctx.mem.read_u64(host + lay.inode_i_ino)
    except UnreadableMemory:
        return None
