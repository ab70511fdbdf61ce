"""Fleet triage on /var/crash-shaped folders built from real lab dumps
(tests/lab/crashdir.py: kexec-tools and kdump-tools layouts, clean,
planted and panic dumps, a truncated one, incomplete ones): discovery by
content, unique names, vmlinux by release and build ID, the panic from
the dump's printk ring buffer (or the saved dmesg), one bucket per dump,
the report; the same run on a real Dask cluster with a worker killed."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
from click.testing import CliRunner

from crashext.cli import main
from crashext.triage import batch, bucket, discover as disc, report, results

from conftest import FAMILIES, lab_manifest, open_lab

pytestmark = pytest.mark.lab


def _need(*families):
    pytest.importorskip("drgn")
    for f in families:
        if lab_manifest(f) is None:
            pytest.skip("no lab run %s (../shared/lab/mkdump.sh --quick%s)"
                        % (f, " --panic" if "panic" in f else ""))


_built = {}


def crash_folder(tmp_path_factory):
    """(root, debug dir, expected) built once per session."""
    _need("6.1", "6.1-panic", "6.12")
    if "x" not in _built:
        from tests.lab import crashdir
        base = tmp_path_factory.mktemp("fleet")
        planted = crashdir.make_planted_set()
        root = str(base / "var-crash")
        os.makedirs(root)
        exp = crashdir.build(root, planted)
        debug = str(base / "debug")
        exp["debug"] = crashdir.debug_tree(debug, exp["manifests"])
        _built["x"] = (root, debug, exp)
    return _built["x"]


def _run(args, **kw):
    r = CliRunner().invoke(main, args, **kw)
    assert "Traceback" not in (r.output + (r.stderr or "")), r.stderr
    return r


def _results(out):
    return {r["name"]: r for r in bucket.load_results(str(out))}


# ----------------------------------------------------------------------
# discovery


def test_discovery_finds_every_dump_once_by_content(tmp_path_factory):
    root, _debug, exp = crash_folder(tmp_path_factory)
    d = disc.discover([root, exp["list"]], settle=0)
    names = [x.name for x in d.dumps]
    assert sorted(names) == sorted(exp["entries"]), (names, exp["entries"])
    assert len(set(names)) == len(names)
    skipped = {s.path for s in d.skipped}
    assert set(exp["skipped"]) <= skipped, skipped
    assert all("\n" not in s.line() for s in d.skipped)
    by = {x.name: x for x in d.dumps}
    for n, x in by.items():
        if n.startswith("10.0.0.") or n.startswith("127."):
            assert x.layout == "kexec-tools" and x.host
            assert x.dmesg.endswith("vmcore-dmesg.txt")
        elif n.startswith("2026"):
            assert x.layout == "kdump-tools"
            assert os.path.basename(x.dmesg) == "dmesg." + n.split("/")[0]
    # told by content: makedumpfile's kdump-compressed and flattened
    # dumps, QEMU's ELF cores
    for n, e in exp["entries"].items():
        if e.get("format"):
            assert by[n].format == e["format"], n
    assert by["10.0.0.7-2026-11-21-08:02:55/vmcore"].format in (
        "kdump", "elf")
    assert by["127.0.0.1-2026-11-20-03:14:07/vmcore"].format == "elf"
    # the same folder given twice, and through a symlink: still once each
    link = os.path.join(os.path.dirname(root), "crash-link")
    if not os.path.exists(link):
        os.symlink(root, link)
    d2 = disc.discover([root, link, exp["list"]], settle=0)
    assert len(d2.dumps) == len(d.dumps)


def test_discovery_of_a_growing_dump_and_of_nothing(tmp_path):
    # a dump being written: ELF core header, then more bytes while we look
    from conftest import lab_dump
    _m, src = lab_dump("6.1")
    d = tmp_path / "202611290101"
    d.mkdir()
    grow = d / "dump.202611290101"
    with open(src, "rb") as f:
        head = f.read(1 << 20)
    grow.write_bytes(head)
    stop = threading.Event()

    def writer():
        with open(grow, "ab") as g:
            while not stop.is_set():
                g.write(b"\0" * 65536)
                g.flush()
                time.sleep(0.05)
    t = threading.Thread(target=writer)
    t.start()
    try:
        found = disc.discover([str(tmp_path)], settle=0.5)
    finally:
        stop.set()
        t.join()
    assert found.dumps == []
    assert [s.path for s in found.skipped] == ["202611290101/dump.202611290101"]
    assert "still being written" in found.skipped[0].reason
    # nothing at all: exit 2 and the reason, one line
    empty = tmp_path / "empty"
    (empty / "202611290202").mkdir(parents=True)
    (empty / "202611290202" / "dmesg.202611290202").write_text("[ 0.0] x\n")
    r = _run(["triage", str(empty), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        "crashext: error: no dump found: 1 file looked at"), r.stderr


# ----------------------------------------------------------------------
# vmlinux


def test_vmlinux_by_release_and_build_id(tmp_path_factory):
    from crashext.triage.debuginfo import find_vmlinux
    from crashext.triage.dumpfile import header_facts
    _root, debug, exp = crash_folder(tmp_path_factory)
    for m in exp["manifests"]:
        dump = [d["path"] for d in m["dumps"] if d["name"] == "elf"][0]
        facts = header_facts(dump)
        assert facts["release"] == m["release"]
        f = find_vmlinux(facts["release"], facts["build_id"], [debug],
                         system=False)
        assert f.path is not None, f.error(facts["release"],
                                           facts["build_id"])
        assert os.path.realpath(f.path) == os.path.realpath(m["vmlinux"])
        assert f.path != exp["debug"]["wrong"]
        lay = exp["debug"]["layouts"][m["release"]]
        assert f.how == ("build ID" if lay == "build-id" else "release")
        if exp["debug"]["wrong"] and lay == "modules":
            assert [p for p, _ in f.rejected] == [exp["debug"]["wrong"]]
    # a release nobody has: one line naming it and where we looked
    f = find_vmlinux("6.1.0-99-amd64", "ab" * 20, [debug], system=False)
    msg = f.error("6.1.0-99-amd64", "ab" * 20)
    assert f.path is None and "\n" not in msg
    assert "no vmlinux for 6.1.0-99-amd64" in msg and debug in msg


# ----------------------------------------------------------------------
# the kernel log


def _panic_families():
    """The panic runs made next to the lab families (run_all.sh:
    $LAB_PANIC, passed on as $CRASHEXT_LAB_PANIC_FAMILIES)."""
    v = os.environ.get("CRASHEXT_LAB_PANIC_FAMILIES")
    want = v.replace(",", " ").split() if v is not None else ["6.1", "7.3"]
    return [f + "-panic" for f in want if f in FAMILIES]


@pytest.mark.parametrize("family", list(FAMILIES) + _panic_families())
def test_printk_ring_buffer_reads_as_drgn_does(family):
    _need(family)
    from drgn.helpers.linux.printk import get_printk_records
    from crashext import kernlog
    from crashext.triage.panic import from_records
    m, mem = open_lab(family)
    recs = kernlog.read_log(mem)
    want = get_printk_records(mem.prog)
    assert [(r.seq, r.ts_nsec, r.text) for r in recs] == \
        [(w.seq, w.timestamp, w.text.decode(errors="replace"))
         for w in want]
    p = from_records(recs)
    pm = m.get("panic")
    if pm is None:
        assert p["line"] is None and kernlog.panic_cpu(mem) is None
        return
    assert p["line"] == pm["line"]
    assert kernlog.panic_cpu(mem) == pm["panic_cpu"] == p["cpu"]
    t = kernlog.cpu_task(mem, pm["panic_cpu"])
    assert (t.pid, t.comm, "0x%x" % t.task) == (
        pm["panic_task"]["pid"], pm["panic_task"]["comm"],
        pm["panic_task"]["task"])
    assert (p["pid"], p["comm"]) == (t.pid, t.comm)
    # panic() (vpanic() on newer kernels: 7.3) is among the first frames
    assert {"panic", "vpanic"} & {f.split(".")[0] for f in p["frames"]}
    # an NMI panic over the idle task is no page-cache code
    if pm.get("how") == "nmi":
        assert p["site"] == "unknown_nmi_error" and not p["pagecache"]


@pytest.mark.parametrize("family", _panic_families())
def test_crashing_task_holding_the_corrupted_tree_is_related(family):
    """A real panic dump with the seed corruption patched into a file's
    tree: the idle task that panicked holds no pointer into it (not
    related); the same with that file's ``address_space`` pointer in a
    spare word of the panicking task's real stack (where a page-cache
    function's frame would keep it): related, with the word as the
    evidence."""
    _need(family)
    import copy
    from crashext import kernlog
    from crashext.triage import worker
    from patched_memory import lab_seed
    case = lab_seed(family)
    if case is None:
        pytest.skip("no seed-shaped node in %s" % family)
    pm = case.mem
    res = {"seconds": {}}
    worker._analyse(pm, res, {"slab": False})
    assert res["panic"]["line"] == lab_manifest(family)["panic"]["line"]
    res["primary"] = bucket.primary(res)
    row = res["primary"]["row"]
    assert row["path"].endswith(case.path) and row["verdict"] == "corrupt"
    before = copy.deepcopy(res)
    worker._relation(pm, before)
    ct = before["primary"]["crashing_task"]
    assert ct["related"] is False and ct["evidence"] == [], ct
    t = kernlog.cpu_task(pm, res["panic"]["panic_cpu"])
    words = kernlog.stack_words(pm, t)
    # x86_64 THREAD_SIZE = PAGE_SIZE << 2 without KASAN
    # (arch/x86/include/asm/page_64_types.h), read whole
    assert t.stack_size == 16384 and len(words) == 2048
    spare = next(k for k in range(1, len(words)) if words[k] == 0)
    pm.patch_u64(t.stack + 8 * spare, row["mapping"])
    worker._relation(pm, res)
    ct = res["primary"]["crashing_task"]
    assert ct["related"] is True and ct["evidence"] == [
        "stack holds 0x%x (inode)" % row["mapping"]], ct


# ----------------------------------------------------------------------
# the whole run


def _triage_cli(root, lst, debug, out, extra=()):
    return _run(["triage", root, lst, "-o", str(out), "-d", debug,
                 "-j", "2"] + list(extra))


_runs = {}


def process_run(tmp_path_factory):
    root, debug, exp = crash_folder(tmp_path_factory)
    if "p" not in _runs:
        out = tmp_path_factory.mktemp("out-process")
        t = time.time()
        r = _triage_cli(root, exp["list"], debug, out)
        _runs["p"] = (r, out, time.time() - t)
    return _runs["p"]


def test_fleet_triage_buckets_every_dump_once(tmp_path_factory):
    root, debug, exp = crash_folder(tmp_path_factory)
    r, out, _secs = process_run(tmp_path_factory)
    assert r.exit_code == 1, r.stdout + r.stderr
    res = _results(out)
    assert sorted(res) == sorted(exp["entries"])
    assert len(results.result_files(str(out))) == len(exp["entries"])
    for skip in exp["skipped"]:
        assert "skipped %s: " % skip in r.stderr
    g = report.group(str(out))
    in_buckets = [n for B in g["buckets"] for n in B["dumps"]]
    assert sorted(in_buckets) == sorted(exp["entries"])   # each exactly once
    where = {n: B for B in g["buckets"] for n in B["dumps"]}
    for name, e in exp["entries"].items():
        R, B = res[name], where[name]
        assert R["complete"] and R["release"] == e["release"], name
        assert R["crash_time"], name
        if e["kind"] == "clean":
            assert B["conclusion"] == "clean" and R["verdict"] == "clean"
        if e["kind"] == "planted":
            truth = e["truth"]
            codes = {c for case in truth["cases"] for c in case["codes"]}
            rests = {c[0]: set(c[2]) for c in bucket.CONCLUSIONS}
            assert B["conclusion"] in rests and rests[B["conclusion"]] & \
                codes or B["conclusion"] in codes, (name, B["key"], codes)
            ex = [x for x in B["examples"] if x["name"] == name]
            files = {case["file"] for case in truth["cases"]}
            if ex:
                assert any(ex[0]["tree"].endswith(" " + f) for f in files), \
                    ex[0]["tree"]
                idx = {i for case in truth["cases"]
                       for i in case["indices"]}
                if ex[0]["indices"] and idx:
                    assert {i["index"] for i in ex[0]["indices"]} <= idx
            assert R["verdict"] == "corrupt"
        if e["panic"]:
            assert R["panic"]["line"] == e["panic"], name
            assert B["panic"].startswith("panic in ")
        elif e["kind"] != "truncated":
            assert R["panic"]["line"] is None and B["panic"] == "no panic"
        ct = (R.get("primary") or {}).get("crashing_task")
        if e["kind"] == "planted" and e["panic"]:
            # an NMI over the idle task: its registers and stack were
            # read and hold no pointer into the planted tree
            assert ct["related"] is False and "words" in ct["why"], ct
        elif e["kind"] == "planted":
            assert ct["related"] is None and ct["why"] == \
                "no panic in the kernel log"
        if e["kind"] == "truncated":
            # the dump cannot give its log: vmcore-dmesg.txt does
            assert R["panic"]["source"] == "vmcore-dmesg.txt"
            assert B["conclusion"] in ("error", "SCAN_ERROR")
            assert R["verdict"] in ("error", "suspect")
    # the two seed dumps of 6.1.0-50 share a bucket; the panic one with
    # the same damage does not (its panic site differs)
    seed = [n for n, e in exp["entries"].items() if e["kind"] == "planted"
            and [c["case"] for c in e["truth"]["cases"]][0] == "seed"]
    keys = {n: where[n]["key"] for n in seed}
    no_panic = {k for n, k in keys.items() if not exp["entries"][n]["panic"]}
    assert len(no_panic) == 1 and len(set(keys.values())) == 2, keys
    B = where[[n for n in seed if not exp["entries"][n]["panic"]][0]]
    assert B["count"] == 2 and B["first"] <= B["last"]
    # a mismatched vmlinux was never used
    wrong = exp["debug"]["wrong"]
    if wrong:
        assert all(R["vmlinux"] != wrong for R in res.values())
        assert any(wrong in " ".join(R.get("vmlinux_rejected") or [])
                   for R in res.values())


def test_fleet_report_markdown_and_json(tmp_path_factory):
    r, out, _ = process_run(tmp_path_factory)
    md = r.stdout
    lines = md.splitlines()
    assert all(len(x) <= 60 for x in lines), [x for x in lines if len(x) > 60]
    assert lines[0].startswith("# crashext triage: ")
    g = report.group(str(out))
    assert g["schema"] == report.SCHEMA
    heads = [i for i, x in enumerate(lines) if x.startswith("## ")]
    for k, B in enumerate(g["buckets"]):
        lo, hi = heads[k], heads[k + 1]
        assert lines[lo].startswith("## %d. " % (k + 1))
        part = lines[lo:hi]
        pics = [ex["picture"] for ex in B["examples"] if ex["picture"]]
        if pics:
            # the picture under its own bucket, and its file is there
            assert any(x.startswith("![") and x.endswith("(%s)" % pics[0])
                       for x in part)
            assert os.path.isfile(os.path.join(out, pics[0]))
        for ex in B["examples"]:
            for i in ex["indices"][:3]:
                assert "0x%x (%d) slot %d" % (i["index"], i["index"],
                                              i["slot"]) in "\n".join(part)
    assert any(B["examples"][0]["picture"] for B in g["buckets"]
               if B["conclusion"] not in ("clean", "error", "SCAN_ERROR"))
    assert "## Index by finding code" in md
    j = _run(["report", str(out), "-f", "json"])
    doc = json.loads(j.stdout)
    assert doc["schema"] == report.SCHEMA and doc["dumps"] == g["dumps"]
    assert sum(B["count"] for B in doc["buckets"]) == doc["dumps"]


def test_rerun_does_only_what_is_missing(tmp_path_factory):
    root, debug, exp = crash_folder(tmp_path_factory)
    _r, out, _ = process_run(tmp_path_factory)
    work = tmp_path_factory.mktemp("rerun")
    shutil.copytree(out, work, dirs_exist_ok=True)
    files = results.result_files(str(work))
    gone = files[0]
    os.unlink(gone)
    before = {f: os.stat(f).st_mtime_ns for f in files[1:]}
    res = batch.triage([root, exp["list"]], work, workers=2,
                       debug_dirs=[debug], log=None, settle=0)
    st = sorted(s["status"] for s in res)
    assert st.count("skipped") == len(files) - 1
    assert [s["result"] for s in res if s["status"] != "skipped"] == [gone]
    assert {f: os.stat(f).st_mtime_ns for f in files[1:]} == before


# ----------------------------------------------------------------------
# an existing Dask cluster


@pytest.fixture
def cluster(tmp_path):
    pytest.importorskip("distributed")
    from tests.lab.daskloop import LoopbackCluster
    c = LoopbackCluster(str(tmp_path), workers=2)
    try:
        yield c
    finally:
        c.close()


def _essence(R):
    """What must not depend on the engine."""
    p = R.get("panic") or {}
    return (R["verdict"], R["release"], R.get("error"),
            (R.get("primary") or {}).get("key"),
            (R.get("scan") or {}).get("codes"),
            (R.get("slab") or {}).get("codes"),
            p.get("line"), p.get("site"), R.get("crash_time"))


def test_dask_cluster_survives_a_killed_worker(tmp_path_factory, cluster):
    root, debug, exp = crash_folder(tmp_path_factory)
    _r, pout, _ = process_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("out-dask")
    from distributed import Client
    killed = {}

    def killer():
        # kill the worker that is analysing a dump, mid-task
        with Client(cluster.address, timeout="30s") as c:
            for _ in range(600):
                busy = {w: ks for w, ks in c.processing().items() if ks}
                info = c.scheduler_info()["workers"]
                if busy and len(results.result_files(str(out))) >= 1:
                    w = sorted(busy)[0]
                    killed["name"] = info[w]["name"]
                    killed["task"] = busy[w]
                    cluster.kill(killed["name"])
                    return
                time.sleep(0.2)
    t = threading.Thread(target=killer)
    t.start()
    env = {"DASK_SCHEDULER_ADDRESS": cluster.address}
    r = _run(["triage", root, exp["list"], "-o", str(out), "-d", debug],
             env=env)
    t.join()
    assert killed, "no worker was busy to kill"
    assert cluster.procs[killed["name"]].poll() is not None
    assert r.exit_code == 1, r.stdout + r.stderr
    # every dump exactly one result, none an error, none left half-written
    res = _results(out)
    assert sorted(res) == sorted(exp["entries"])
    assert len(results.result_files(str(out))) == len(exp["entries"])
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert all(R["complete"] for R in res.values())
    # ran on the cluster's workers, not here
    assert {R["pid"] for R in res.values()} <= {
        p.pid for n, p in cluster.procs.items() if n != "scheduler"}
    # the same per-dump results as the process engine
    pres = _results(pout)
    for name in exp["entries"]:
        assert _essence(res[name]) == _essence(pres[name]), name
    # a re-run on the cluster does nothing more
    again = batch.triage([root, exp["list"]], out, scheduler=cluster.address,
                         debug_dirs=[debug], log=None, settle=0)
    assert {s["status"] for s in again} == {"skipped"}


def test_process_engine_runs_more_dumps_than_one_pool_holds(tmp_path):
    """More dumps than a pool runs before it is replaced: each still gets
    its result (CPython 3.11's max_tasks_per_child hung here)."""
    from conftest import lab_dump
    from crashext.triage import engines
    m, src = lab_dump("6.1", "makedumpfile-d31")
    n = engines.JOBS_PER_POOL_WORKER + 2
    root = tmp_path / "crash"
    for k in range(n):
        d = root / ("2026120100%02d" % k)
        d.mkdir(parents=True)
        try:
            os.link(src, d / ("dump.2026120100%02d" % k))
        except OSError:
            shutil.copyfile(src, d / ("dump.2026120100%02d" % k))
    seen = []
    res = batch.triage([str(root)], tmp_path / "out", workers=1,
                       debug_dirs=[os.path.dirname(m["vmlinux"])],
                       slab=False, png=False, log=None, settle=0,
                       progress=lambda k, total, s: seen.append((k, total)))
    assert len(res) == n and {r["status"] for r in res} == {"done"}
    assert seen == [(k, n) for k in range(1, n + 1)]
    assert {r["verdict"] for r in res} == {"clean"}
    assert len({r["pid"] for r in res}) == 2        # two pools


def test_missing_vmlinux_is_a_per_dump_error(tmp_path):
    """A dump whose vmlinux is nowhere: its result is one error line that
    names the release and where crashext looked; its kernel log (saved
    beside it) still gives the panic; the other dumps are unaffected."""
    _need("6.12", "6.1-panic")
    from tests.lab import crashdir
    m612, mp = lab_manifest("6.12"), lab_manifest("6.1-panic")
    root = tmp_path / "crash"
    a = root / "10.1.1.1-2026-11-29-09:00:00"        # the panic, no vmlinux
    a.mkdir(parents=True)
    os.symlink([d["path"] for d in mp["dumps"] if d["name"] == "elf"][0],
               a / "vmcore")
    (a / "vmcore-dmesg.txt").write_text(crashdir.kernel_log(mp["_run_dir"]))
    b = root / "10.1.1.2-2026-11-29-09:05:00"        # 6.12, with vmlinux
    b.mkdir()
    os.symlink([d["path"] for d in m612["dumps"] if d["name"] == "elf"][0],
               b / "vmcore")
    debug = tmp_path / "debug"
    debug.mkdir()
    os.symlink(m612["vmlinux"], debug / ("vmlinux-" + m612["release"]))
    out = tmp_path / "out"
    res = batch.triage([str(root)], out, workers=1, debug_dirs=[str(debug)],
                       log=None, settle=0, system_debug=False, png=False,
                       slab=False)
    by = {r["name"]: r for r in res}
    err = by["10.1.1.1-2026-11-29-09:00:00/vmcore"]["error"]
    assert err.startswith("no vmlinux for %s (build ID " % mp["release"])
    assert str(debug) in err and "next to the dump" in err
    assert "\n" not in err
    R = _results(out)["10.1.1.1-2026-11-29-09:00:00/vmcore"]
    assert R["verdict"] == "error" and R["release"] == mp["release"]
    assert R["panic"]["source"] == "vmcore-dmesg.txt"
    assert R["panic"]["line"] == mp["panic"]["line"]
    assert R["panic"]["comm"] == mp["panic"]["panic_task"]["comm"]
    assert by["10.1.1.2-2026-11-29-09:05:00/vmcore"]["error"] is None
    g = report.group(str(out))
    B = [B for B in g["buckets"]
         if "10.1.1.1-2026-11-29-09:00:00/vmcore" in B["dumps"]][0]
    assert B["conclusion"] == "error"
    if mp["panic"].get("how") == "nmi":
        assert B["panic"] == "panic in unknown_nmi_error"
