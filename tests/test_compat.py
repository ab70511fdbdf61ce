"""What xa uses inside PyKdump in place of the modules PyKdump lacks gives
the same bytes as those modules: crashext.jsontext's own encoder/decoder
vs the standard json, render/textable vs tabulate, snapshots written with
zlib alone vs Python's gzip reader.  On the real analyses of the sample
snapshots and every lab file, and on generated documents."""

from __future__ import annotations

import glob
import gzip
import json
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from crashext import jsontext  # noqa: E402
from crashext.analyze import analyze  # noqa: E402
from crashext.backends.snapshot import (RecordingMemory,  # noqa: E402
                                        SnapshotMemory, save)
from crashext.render import jsonout, table  # noqa: E402
from crashext.render.textable import simple_table  # noqa: E402

SAMPLES = sorted(glob.glob(os.path.join(ROOT, "sample_dumps", "*.snap")))


def _sample_analyses():
    out = []
    for p in SAMPLES:
        mem = SnapshotMemory.load(p)
        for t in mem.targets:
            out.append((os.path.basename(p), analyze(mem, t)))
    return out


def _no_tabulate(monkeypatch):
    for mod in list(sys.modules):
        if mod == "tabulate" or mod.startswith("tabulate."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "tabulate", None)


# ---------------------------------------------------------------- JSON
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8),
                                                        c, max_size=5),
    max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([None, 0, 1, 2, 4]), st.booleans())
def test_jsontext_encoder_equals_json(doc, indent, sort_keys):
    want = json.dumps(doc, indent=indent, sort_keys=sort_keys)
    got = jsontext._without_stdlib(jsontext.dumps, doc, indent=indent,
                                   sort_keys=sort_keys)
    assert got == want
    for seps in ((",", ":"), (",", ": ")):
        assert jsontext._without_stdlib(
            jsontext.dumps, doc, indent=indent, sort_keys=sort_keys,
            separators=seps) == json.dumps(doc, indent=indent,
                                           sort_keys=sort_keys,
                                           separators=seps)
    assert jsontext._without_stdlib(jsontext.loads, want) == json.loads(want)


@pytest.mark.parametrize("text", ['{"a": 1', '[1,]', '{"a" 1}', '"\\x"',
                                  '[1] 2', '', 'nul', '"a\nb"', '{1: 2}',
                                  '[', '"\\ud800"x'])
def test_jsontext_decoder_refuses_what_json_refuses(text):
    try:
        json.loads(text)
        ok = True
    except ValueError:
        ok = False
    if ok:
        assert jsontext._without_stdlib(jsontext.loads, text) == \
            json.loads(text)
    else:
        with pytest.raises(ValueError):
            jsontext._without_stdlib(jsontext.loads, text)


def test_json_render_same_without_json_samples():
    """Every sample analysis, summary and full, one document and many."""
    analyses = _sample_analyses()
    assert len(analyses) >= 4
    for name, a in analyses:
        for full in (False, True):
            want = jsonout.render(a, full=full)
            assert jsontext._without_stdlib(jsonout.render, a,
                                            full=full) == want, name
            assert jsontext._without_stdlib(jsonout.loads, want) == \
                json.loads(want)
    many = [a for _n, a in analyses]
    assert jsontext._without_stdlib(jsonout.render_many, many) == \
        jsonout.render_many(many)


# ---------------------------------------------------------------- tables
def test_table_same_without_tabulate_samples(monkeypatch):
    """The table renderer draws the same text with tabulate and, as inside
    crash, without it (multi-line cells, capped rows, grouped addresses)."""
    analyses = _sample_analyses()
    want = [(table.render(a), table.render(a, grouped=True),
             table.render(a, max_per_code=2)) for _n, a in analyses]
    assert any(a.findings for _n, a in analyses)
    _no_tabulate(monkeypatch)
    for (name, a), w in zip(analyses, want):
        got = (table.render(a), table.render(a, grouped=True),
               table.render(a, max_per_code=2))
        assert got == w, name


def test_table_other_formats_need_tabulate(monkeypatch):
    from crashext.memory import CrashextError
    a = _sample_analyses()[0][1]
    _no_tabulate(monkeypatch)
    if a.findings:
        with pytest.raises(CrashextError, match="needs tabulate"):
            table.render(a, tablefmt="grid")


cells = st.text(alphabet="abx0()+{},-_ \n", max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(
    st.lists(st.text(alphabet="abxyz_", min_size=1, max_size=6),
             min_size=n, max_size=n),
    st.lists(st.lists(cells, min_size=n, max_size=n), min_size=1,
             max_size=6))), st.booleans())
def test_simple_table_equals_tabulate(hr, index):
    from tabulate import tabulate
    headers, rows = hr
    idx = list(range(1, len(rows) + 1)) if index else None
    kw = {"showindex": idx} if idx else {}
    assert simple_table(rows, headers, idx) == tabulate(
        rows, headers=headers, tablefmt="simple", disable_numparse=True, **kw)


# ---------------------------------------------------------------- gzip
def test_snapshot_is_gzip_and_replays(tmp_path):
    """A snapshot written with zlib alone is a gzip file any reader takes
    (Python's gzip: header, then the JSON line and the blob), the same
    capture gives the same bytes, and it replays to the same analysis."""
    src = SnapshotMemory.load(SAMPLES[0])
    t = src.targets[0]
    outs = []
    for n in range(2):
        rec = RecordingMemory(src)
        a = analyze(rec, t)
        rec.targets.append(t)
        p = tmp_path / ("s%d.snap" % n)
        save(rec, str(p), "note")
        outs.append(p.read_bytes())
    assert outs[0] == outs[1]
    with gzip.open(str(tmp_path / "s0.snap"), "rb") as f:
        head = f.readline()
        blob = f.read()
    header = json.loads(head)
    assert header["format"] == "crashext.snapshot" and header["targets"] == [t]
    assert len(blob) == sum(s[1] for s in header["segments"])
    b = analyze(SnapshotMemory.load(str(tmp_path / "s0.snap")), t)
    assert jsonout.render(b) == jsonout.render(a)
