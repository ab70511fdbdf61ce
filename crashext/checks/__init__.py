"""Checks over a walked tree: one module per family.

Each check is ``check(ctx) -> Iterator[Finding]`` over a
:class:`CheckContext`; :data:`ALL_CHECKS` lists them in report order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

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
    folios: Dict[int, FolioRec]
    unreadable_folios: Dict[int, UnreadableMemory]
    notes: List[str] = field(default_factory=list)

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
