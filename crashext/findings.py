"""The finding record: what a check found, as data only.

A :class:`Finding` names a stable ``code`` (see :data:`CODES`), a severity,
and the evidence: the node and slots where it was seen, the XArray indices,
the folio, and what was expected versus found.  Wording belongs to
:mod:`crashext.explain` and the renderers, never here.

>>> Finding("DUP_FOLIO", ERROR, folio=0xffffea0000247800,
...         indices=(0x7650, 0x7660, 0x7670))      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any, Dict, Optional, Tuple

ERROR = "error"
WARNING = "warning"
INFO = "info"

SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

#: Every finding code with its severity and a one-line meaning.  Codes are
#: part of the JSON schema: never rename one, only add.
CODES: Dict[str, Tuple[str, str]] = {
    # duplicates
    "DUP_FOLIO": (ERROR, "same folio at more than one canonical slot"),
    # siblings
    "SIBLING_FORWARD": (ERROR, "sibling entry points forward or to itself"),
    "SIBLING_TO_SIBLING": (ERROR, "sibling entry points at another sibling"),
    "SIBLING_TO_NULL": (ERROR, "sibling entry points at an empty slot"),
    "SIBLING_TO_NODE": (ERROR, "sibling entry points at a node entry"),
    "SIBLING_TO_SPECIAL": (ERROR, "sibling entry points at a retry/zero/bad entry"),
    "SIBLING_RUN_BROKEN": (ERROR, "sibling run not contiguous after its canonical slot"),
    "SIBLING_RUN_SIZE": (ERROR, "sibling run length is not 2^n - 1"),
    "SIBLING_RUN_ALIGN": (ERROR, "multi-index entry not aligned to its size"),
    "SIBLING_IN_HEAD": (ERROR, "xa_head holds a sibling entry"),
    # entries
    "RETRY_ENTRY": (ERROR, "XA_RETRY_ENTRY in a reachable node"),
    "ZERO_ENTRY": (WARNING, "XA_ZERO_ENTRY in a page cache"),
    "BAD_INTERNAL": (ERROR, "internal entry that is no node, sibling, retry or zero"),
    "NODE_IN_LEAF": (ERROR, "node entry in a shift-0 node"),
    "BAD_POINTER": (ERROR, "entry is not a valid kernel pointer"),
    # nodes
    "NODE_UNREADABLE": (ERROR, "xa_node could not be read"),
    "NODE_CYCLE": (ERROR, "node is its own ancestor (cycle)"),
    "NODE_SHARED": (ERROR, "node held by two slots (shared subtree)"),
    "NODE_SHIFT": (ERROR, "node shift disagrees with its depth"),
    "NODE_OFFSET": (ERROR, "node offset disagrees with its slot in the parent"),
    "NODE_PARENT": (ERROR, "node parent disagrees with the node that holds it"),
    "NODE_ARRAY": (ERROR, "node array names another xarray"),
    "NODE_FREEING": (ERROR, "reachable node is being freed (array == XA_RCU_FREE)"),
    "NODE_COUNT": (ERROR, "node count disagrees with its non-NULL slots"),
    "NODE_NR_VALUES": (ERROR, "node nr_values disagrees with its value entries"),
    "NODE_EMPTY": (WARNING, "reachable node has no entries"),
    "ROOT_PARENT": (ERROR, "root node has a parent"),
    # folios
    "FOLIO_UNREADABLE": (ERROR, "struct folio could not be read"),
    "FOLIO_MAPPING": (ERROR, "folio->mapping is not this mapping"),
    "FOLIO_INDEX": (ERROR, "folio->index is not the canonical index"),
    "FOLIO_ALIGN": (ERROR, "index not aligned to the folio's size"),
    "FOLIO_ORDER": (ERROR, "folio order disagrees with its slots in the tree"),
    "FOLIO_TAIL": (ERROR, "entry points at a tail page, not a folio"),
    # WARNING: folio_ref_freeze() drops it to 0 during split/migration.
    "FOLIO_REFCOUNT": (WARNING, "folio refcount below its page count"),
    "NRPAGES": (ERROR, "sum of folio pages differs from nrpages"),
    # WARNING: a truncate in progress (i_size written, pages not yet
    # dropped) is the one legitimate moment for it.
    "FOLIO_BEYOND_EOF": (WARNING, "folio lies wholly beyond i_size"),
    # where the lost pages went (crashext.lost: slab / memory map)
    "NODE_CUT_OFF": (ERROR, "node of this xarray that the tree does not reach"),
    "FOLIO_LOST": (ERROR, "folio of this mapping not held at its index"),
    # marks
    "MARK_PARENT": (WARNING, "node marks disagree with its slot marks in the parent"),
    "MARK_ON_EMPTY": (WARNING, "mark set on an empty or sibling slot"),
    # walk
    "WALK_TRUNCATED": (ERROR, "walk stopped early (limit reached)"),
    "HEAD_UNREADABLE": (ERROR, "xarray header could not be read"),
    # slab walk (crashext.triage.slab)
    "SLAB_NODE_ORPHAN": (WARNING, "allocated xa_node not reachable from the xarray it names"),
    "SLAB_NODE_FREE_LINKED": (ERROR, "node entry points at a free xa_node (slab freelist or sheaf)"),
    "SLAB_LINK_NOT_NODE": (ERROR, "node entry points at no radix_tree_node object"),
    "SLAB_FREELIST": (WARNING, "slab freelist undecodable: allocation state unknown"),
    "SLAB_SHEAF": (WARNING, "sheaf holds no free object of the cache (or one also on a freelist)"),
}


@dataclass
class Finding:
    """One piece of evidence of corruption.

    ``indices`` are XArray indices (not folio->index); ``slots`` are slot
    offsets within ``node``.  ``expected``/``found`` are short machine values
    (ints or strings) for renderers to print side by side.
    """

    code: str
    severity: str = ""
    node: Optional[int] = None
    slots: Tuple[int, ...] = ()
    indices: Tuple[int, ...] = ()
    folio: Optional[int] = None
    expected: Any = None
    found: Any = None
    shift: Optional[int] = None
    order: Optional[int] = None
    address: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.severity:
            self.severity = CODES.get(self.code, (ERROR, ""))[0]

    @property
    def meaning(self) -> str:
        return CODES.get(self.code, (ERROR, self.code))[1]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["slots"] = list(self.slots)
        d["indices"] = list(self.indices)
        return d
