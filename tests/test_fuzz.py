"""Hostile input, short fuzz pass for CI (no lab dump needed): corrupted
trees never hang or crash the engine, damaged snapshot files never crash
the reader.

Every input must end in findings, a clean result, or one
:class:`~crashext.memory.CrashextError` - never another exception - within
2 s.  Trees are mutated from a real lab tree kept in
``sample_dumps/*.snap`` (else the lab dump, else a tree synthesized from
the 6.1 layout, see :mod:`fuzzing`).  The long run is ``bench/fuzz_run.py``.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzzing as F
from crashext.analyze import analyze
from crashext.backends.snapshot import MAX_HEADER, VERSION, SnapshotMemory
from crashext.memory import CrashextError

#: Per-input time bound (s).
BOUND = 2.0
BASES = F.base_trees(2)

def fuzz(n: int):
    """Settings of a CI fuzz test: ``n`` inputs, reproducible (derandomized,
    no example database), no hypothesis deadline (the bound is checked
    by the test itself)."""
    return settings(max_examples=n, deadline=None, database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck))


def _ok(outcome, secs, err, inp):
    assert outcome in ("clean", "findings", "error"), (inp, err)
    assert secs < BOUND, (inp, secs)


# Trees ------------------------------------------------------------------
def test_bases_are_clean_real_and_synthesized():
    names = [b.name for b in BASES]
    assert names[-1] == "synth"
    for b in BASES:
        a = analyze(b.mem, b.spec)
        assert a.verdict == "clean" and a.stats.pages == a.target.nrpages
        assert len(b.nodes) >= 5 and b.folios


@fuzz(1500)
@given(st.sampled_from(range(len(BASES))), F.ops_strategy)
def test_mutated_trees(bi, ops):
    b = BASES[bi]
    mem = F.apply_ops(b, ops)
    _ok(*F.run_analysis(mem, b.spec, limit=5 * BOUND), (b.name, ops))


@fuzz(300)
@given(st.sampled_from(range(len(BASES))), st.integers(0, 1 << 32))
def test_random_node_bytes(bi, seed):
    b = BASES[bi]
    mem = F.random_node_memory(b, seed)
    _ok(*F.run_analysis(mem, b.spec, limit=5 * BOUND), (b.name, seed))


INTERIOR = -1


@pytest.mark.parametrize("b", BASES, ids=lambda b: b.name)
@pytest.mark.parametrize("ops, codes", [
    # A slot pointing at its own node, at the root, at the parent.
    ([("slot", INTERIOR, 9, "self", 0)], {"NODE_CYCLE"}),
    ([("slot", INTERIOR, 9, "ancestor", 0)], {"NODE_CYCLE"}),
    # A slot holding another node of the next level: a shared subtree,
    # walked at both positions (its folios at two indices).
    ([("slot", INTERIOR, 9, "other", 0)], {"NODE_SHARED", "NODE_OFFSET"}),
    # Root shift 66 / 7 / 255: not a multiple of 6 or >= 64.
    ([("shift", 0, 3, "null", 0)], {"NODE_SHIFT"}),
    ([("shift", 0, 4, "null", 0)], {"NODE_SHIFT"}),
    ([("shift", 0, 5, "null", 0)], {"NODE_SHIFT"}),
    # count > 64.
    ([("count", 0, 0, "null", 200)], {"NODE_COUNT"}),
    # A parent chain that loops (node's parent is itself).
    ([("parent", 1, 0, "self", 0)], {"NODE_PARENT"}),
    # Wild and non-canonical node pointers: unreadable subtrees.
    ([("slot", 0, 0, "wild", 0x1234)], {"NODE_UNREADABLE"}),
    ([("slot", 0, 0, "noncanon", 0x5678)], {"NODE_UNREADABLE"}),
    ([("slot", 0, 0, "top", 0)], {"NODE_UNREADABLE"}),
    # Sibling loops: a sibling pointing at itself or forward.
    ([("slot", 1, 10, "sibling", 10)], {"SIBLING_FORWARD"}),
    ([("slot", 1, 10, "sibling", 20)], {"SIBLING_FORWARD"}),
    # A root of shift 24 (2^30 indices) fanning out to every node.
    ([("fanout", 0, 0, "null", 0)], {"NODE_SHIFT"}),
    ([("fanout", 0, 1, "null", 1)], {"NODE_SHIFT"}),
    # 11 levels of fake nodes, each also pointing at itself.
    ([("chain", 0, 0, "null", 0)], {"NODE_CYCLE"}),
    # A node that cannot be read; a folio that cannot be read.
    ([("hole", 1, 0, "null", 0)], {"NODE_UNREADABLE"}),
    ([("folio_hole", 0, 0, "null", 0)], {"FOLIO_UNREADABLE"}),
])
def test_named_corruptions(b, ops, codes):
    # INTERIOR: the deepest non-leaf node (the root in a two-level tree).
    inner = max((i for i, n in enumerate(b.nodes) if n.eshift > 0),
                key=lambda i: b.nodes[i].depth)
    ops = [(o[0], inner if o[1] == INTERIOR else o[1]) + tuple(o[2:])
           for o in ops]
    mem = F.apply_ops(b, ops)
    t0 = time.perf_counter()
    a = analyze(mem, b.spec)
    assert time.perf_counter() - t0 < BOUND
    found = {f.code for f in a.findings}
    assert codes <= found, (ops, sorted(found))
    assert a.verdict == "corrupt"
    if "NODE_SHARED" in codes:
        # Told apart from a cycle, and its folios seen at both positions.
        assert "NODE_CYCLE" not in found
        [sh] = [f for f in a.findings if f.code == "NODE_SHARED"]
        assert sh.extra["walked"] and len(a.walk.positions(sh.address)) == 2
        if any(e.kind == 1 for e in a.walk.entries):
            assert "DUP_FOLIO" in found or "FOLIO_INDEX" in found
        assert [e.code for e in a.explanations].count("SHARED_SUBTREE") == 1


def test_unreadable_addresses_are_named():
    """Every node or folio address whose read failed is in a finding."""
    b = BASES[0]
    node = b.nodes[3].addr
    folio = b.folios[len(b.folios) // 2]
    mem = F.FuzzMemory(b.mem, {}, [node, folio], layout=b.layout)
    a = analyze(mem, b.spec)
    named = {f.address for f in a.findings}
    assert node in named
    # The folio is named unless it lived under the unreadable node.
    if any(e.raw == folio for e in a.walk.entries):
        assert folio in named


def test_endless_tree_is_bounded_by_the_node_limit():
    """Every readable address is a node with 64 fresh children (a root of
    shift 24 claims 2^30 indices): only max_nodes stops the walk, and it
    does, with WALK_TRUNCATED."""
    mem = F.ScriptedNodeMemory(root_shift=24)
    t0 = time.perf_counter()
    a = analyze(mem, mem.spec, max_nodes=1000)
    secs = time.perf_counter() - t0
    assert [f.code for f in a.findings if f.code == "WALK_TRUNCATED"]
    assert a.walk.truncated and len(a.walk.nodes) == 1000
    assert secs < BOUND


# Snapshots -----------------------------------------------------------------
SNAP_H, SNAP_B = F.small_snapshot()


def _write(tmp_path, data: bytes) -> str:
    p = str(tmp_path / "x.snap")
    with open(p, "wb") as f:
        f.write(data)
    return p


@fuzz(1200)
@given(case=F.snapshot_case)
def test_mutated_snapshots(tmp_path_factory, case):
    hops, bops = case
    h, blob = F.mutate_header(SNAP_H, SNAP_B, hops)
    data = F.pack_snapshot(h, blob)
    data = F.mutate_file(data, len(json.dumps(h).encode()), bops)
    p = _write(tmp_path_factory.mktemp("s"), data)
    outcome, secs, err = F.run_load(p, limit=5 * BOUND)
    assert outcome in ("loaded", "error"), (case, err)
    assert secs < BOUND, (case, secs)
    if outcome == "error":
        assert "\n" not in err and len(err) < 400, err


#: One debug-info answer of a snapshot replaced by a plausible-looking
#: number (the reader cannot know the kernel's real layout).
layout_answer = st.tuples(
    st.just("answer"),
    st.sampled_from(("member_offset", "member_size", "struct_size",
                     "enum_value")),
    st.integers(0, 1 << 16),
    st.one_of(st.none(), st.integers(0, 5000), st.sampled_from(
        [0, 1, 2, 4, 7, 8, 63, 64, 65, 576, 1 << 20, 1 << 31, 1 << 40,
         F.U64])))


@fuzz(400)
@given(st.lists(layout_answer, min_size=1, max_size=3))
def test_hostile_layout_answers(tmp_path_factory, hops):
    """A snapshot whose layout answers are wrong numbers: analysing it
    gives findings or one CrashextError, never another exception."""
    h, blob = F.mutate_header(SNAP_H, SNAP_B, hops)
    p = _write(tmp_path_factory.mktemp("l"), F.pack_snapshot(h, blob))
    outcome, secs, err = F.run_load(p, limit=5 * BOUND)
    assert outcome in ("loaded", "error"), (hops, err)
    assert secs < BOUND, (hops, secs)


@fuzz(200)
@given(st.binary(max_size=600))
def test_garbage_files(tmp_path_factory, data):
    p = _write(tmp_path_factory.mktemp("g"), data)
    outcome, secs, err = F.run_load(p)
    assert outcome == "error", err


@pytest.mark.parametrize("version", [VERSION + 1, 99, 1 << 31])
def test_newer_version_says_upgrade(tmp_path, version):
    h = dict(SNAP_H, version=version)
    p = _write(tmp_path, F.pack_snapshot(h, SNAP_B))
    with pytest.raises(CrashextError, match="newer than this crashext "
                       "reads.*upgrade crashext"):
        SnapshotMemory.load(p)


@pytest.mark.parametrize("header", [
    b"[" * 100000,                              # nesting past recursion
    b'{"format": "crashext.snapshot", "version": "1"}',
    b'{"format": "crashext.snapshot", "version": 1.0}',
    b'{"format": "crashext.snapshot", "version": true}',
    b'{"format": "crashext.snapshot", "version": 1e999}',
    b"1" * 5000,                                # int digit limit
    b"\xff\xfe",                                # not UTF-8
])
def test_header_type_confusion(tmp_path, header):
    p = _write(tmp_path, F.pack_snapshot(header))
    with pytest.raises(CrashextError, match="not a valid crashext snapshot"):
        SnapshotMemory.load(p)


def test_error_messages_stay_short(tmp_path):
    h = dict(SNAP_H, segments=[list(range(100000))])
    p = _write(tmp_path, F.pack_snapshot(h, SNAP_B))
    with pytest.raises(CrashextError) as ei:
        SnapshotMemory.load(p)
    assert len(str(ei.value)) < 200


@pytest.mark.parametrize("claim", [1 << 30, (1 << 30) + 1, 1 << 62])
def test_huge_claimed_sizes(tmp_path, claim):
    h = dict(SNAP_H, segments=[[0xffff888000000000, claim, 0]])
    p = _write(tmp_path, F.pack_snapshot(h, SNAP_B))
    t0 = time.perf_counter()
    with pytest.raises(CrashextError):
        SnapshotMemory.load(p)
    assert time.perf_counter() - t0 < BOUND


def _bomb(tmp_path, header: bytes, zeros: int) -> str:
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [c.compress(header)]
    chunk = bytes(1 << 24)
    for _ in range(zeros >> 24):
        parts.append(c.compress(chunk))
    parts.append(c.flush())
    return _write(tmp_path, b"".join(parts))


def test_gzip_bomb_is_refused_early(tmp_path):
    """256 MiB of zeros after a valid header (a 250 KB file): refused after
    the header, without inflating the rest."""
    hdr = json.dumps(dict(SNAP_H, segments=[], faults=[])).encode() + b"\n"
    p = _bomb(tmp_path, hdr, 256 << 20)
    t0 = time.perf_counter()
    with pytest.raises(CrashextError, match="more data than the segment"):
        SnapshotMemory.load(p)
    assert time.perf_counter() - t0 < BOUND
    # A header line that never ends.
    p = _bomb(tmp_path, b"{", MAX_HEADER + (16 << 20))
    with pytest.raises(CrashextError, match="header line longer"):
        SnapshotMemory.load(p)
