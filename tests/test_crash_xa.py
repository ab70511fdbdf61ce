"""``xa`` inside crash (PyKdump), driven through its REAL entry points
under the STRICT PyKdump stand-in: a crash session in its own interpreter
whose imports are exactly what PyKdump's embedded Python 3.11 provides
(tests/pykdump_standin/crashsim.py: PyKdump's zipped pylib, its compiled-in
C modules, PyKdump's sys.path order, no site-packages, no ``site``; drgn
only behind the ``crash`` C module), with crash's terminal on a real file
descriptor written the way crash and PyKdump write it.  As a user would:
``epython .../crashext/crash/register.py`` from ~/.crashrc, then ``xa
...`` typed at the prompt, which runs the shim
``crashext/crash/progs/xa.py``.

Every output is compared with the standalone CLI (``crashext check
--vmcore ... TARGET`` through click's CliRunner, drgn backend) for the same
targets: lab dumps of every kernel family (clean) and the planted dumps
(corrupt).  Skipped when the dumps are absent.

One test runs the real crash 8.0.2 with a tiny C extension that stands in
for PyKdump's registration, to pin down the crash facts the set-up rests
on (an alias is dropped when a command of its name is registered).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab import labdumps  # noqa: E402

drgn = pytest.importorskip("drgn")
from click.testing import CliRunner  # noqa: E402
from conftest import standin_crash  # noqa: E402
from strict_crash import StrictCrash, extension  # noqa: E402

import crashext.crash as xacrash  # noqa: E402
from crashext import frontdoor  # noqa: E402
from crashext.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.lab

PROGS = xacrash.progs_dir()
REGISTER = xacrash.register_script()
SHIM = xacrash.shim_path()
TIMING = "\n ** Execution took"

Dump = namedtuple("Dump", "id vmlinux vmcore targets status")


def _lab(family):
    run = labdumps.elf_run(family)
    if run is None:
        return None
    m, elf, vmlinux = run
    return Dump(family, vmlinux, elf, [f["inode"] for f in m["files"]], 0)


def _planted(family):
    """``family``'s dump with every case planted, built here when absent
    (tests/lab/plant.ensure_planted)."""
    from tests.lab import plant
    t = plant.ensure_planted(family)
    if t is None:
        return None
    inodes = []
    for c in t["cases"]:
        if c.get("inode") and c["inode"] not in inodes:
            inodes.append(c["inode"])
    return Dump("planted-%s-all" % family, t["vmlinux"], t["planted"],
                inodes, 1)


FAMILIES = list(labdumps.FAMILIES)
DUMP_IDS = FAMILIES + ["planted-%s-all" % f for f in FAMILIES]
_dumps = {}


def _dump(did):
    if did not in _dumps:
        _dumps[did] = _planted(did[len("planted-"):-len("-all")]) \
            if did.startswith("planted-") else _lab(did)
    d = _dumps[did]
    if d is None:
        pytest.skip("dump %s absent (make it with ../shared/lab/mkdump.sh "
                    "--quick; planted copies come from tests/lab/plant.py)"
                    % did)
    return d


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    """A strict crash + PyKdump session (a child interpreter), reopened on
    each dump the tests ask for."""
    c = StrictCrash(str(tmp_path_factory.mktemp("crashsim")))
    yield c
    c.standin_close()


_opened = {"id": None}


def session(crash, d, pykdumppath=(PROGS,), register=True):
    """A fresh crash session on dump ``d`` (as if crash had just started
    with PYKDUMPPATH=``pykdumppath`` and ~/.crashrc ran register.py).
    Returns register.py's output."""
    if _opened["id"] != d.id or crash.proc is None:
        crash.standin_open(d.vmlinux, d.vmcore, pykdumppath=list(pykdumppath))
        _opened["id"] = d.id
    else:
        crash.standin_reset(pykdumppath=list(pykdumppath))
    if not register:
        return ""
    return crash.standin_epython(REGISTER)


@pytest.fixture(scope="module", params=DUMP_IDS)
def dump(request):
    return _dump(request.param)


def xa(crash, line):
    """Type ``line`` at the crash prompt: (xa's text, xa's status)."""
    out = crash.standin_command(line)
    text, sep, _ = out.partition(TIMING)
    assert sep, "no PyKdump timing line: %r" % out[-200:]
    return text, crash.last_status


#: Why a node could not be read is the backend's own message: crash says
#: "readmem error at addr 0x..., reading 576 bytes", drgn "address is not
#: mapped" (or "excluded page").  Everything else must be identical.
_REASON = re.compile(r"readmem\s+error\s+at\s+addr\s+0x[0-9a-f]+,\s+reading"
                     r"\s+\d+\s+bytes|address\s+is\s+not\s+mapped|"
                     r"not\s+a\s+kernel\s+virtual\s+address")


def same_text(xa_text, cli_text):
    """Equal, once the backends' unreadable-memory reasons are blanked."""
    if xa_text == cli_text:
        return True
    a = _REASON.sub("<unreadable>", xa_text)
    b = _REASON.sub("<unreadable>", cli_text)
    assert a == b
    return True


def cli(d, *args):
    """The standalone CLI on the same dump: (stdout, stderr, exit code)."""
    cmd, rest = args[0], list(args[1:])
    r = CliRunner().invoke(cli_main, [cmd, "--vmcore", d.vmcore, "--vmlinux",
                                      d.vmlinux] + rest)
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        r.exception
    return r.stdout, r.stderr, r.exit_code


# ------------------------------------------------------- registration, help
def test_register_and_help_page(crash, dump):
    out = session(crash, dump)
    text = out.partition(TIMING)[0]
    assert text.startswith("crashext ") and "'xa' registered" in text
    assert text.count("\n") == 1
    short, synopsis, helptext = crash.standin_registrations()["xa"]
    assert (short, synopsis, helptext) == (frontdoor.SHORT, frontdoor.SYNOPSIS,
                                           frontdoor.HELP)
    page = crash.standin_command("help xa")
    assert "NAME\n  xa - find page-cache" in page
    # crash puts the name before the synopsis: arguments only
    assert "SYNOPSIS\n  xa [check|chat|dump|capture|scan|help]" in page
    assert "xa xa" not in page
    assert "\nEXAMPLES\n" in page and "crash> xa check ffff" in page
    # xa help prints the same page
    text, status = xa(crash, "xa help")
    assert status == 0
    assert text == frontdoor.help_page()
    assert text.strip() == page.strip()
    # a second registration (another .crashrc) is quiet and harmless
    again = crash.standin_epython(REGISTER).partition(TIMING)[0]
    assert again == ""


def test_subcommand_help(crash, dump):
    session(crash, dump)
    text, status = xa(crash, "xa check -h")
    assert status == 0
    assert text.startswith("usage: xa check") and "-f table|chat|json" in text
    text2, _ = xa(crash, "xa help check")
    assert text2 == text
    text, _ = xa(crash, "xa capture -h")
    assert "-o FILE, --output FILE" in text


# ------------------------------------------------------- same text as CLI
VARIANTS = [("check",), ("check", "-f", "json"), ("check", "-f", "chat"),
            ("chat",), ("chat", "--grouped"), ("dump",), ("dump", "--flat"),
            ("dump", "-f", "json")]


@pytest.mark.parametrize("variant", VARIANTS, ids=" ".join)
def test_xa_prints_what_the_cli_prints(crash, dump, variant):
    session(crash, dump)
    text, status = xa(crash, "xa %s %s" % (" ".join(variant),
                                           " ".join(dump.targets)))
    out, err, code = cli(dump, *(variant + tuple(dump.targets)))
    assert err == ""
    assert same_text(text, out)
    assert status == code == dump.status
    if variant == ("check", "-f", "json"):
        docs = json.loads(text)
        assert len(docs) == len(dump.targets)


def test_targets_hex_without_0x_and_kinds(crash, dump):
    """``ffff...``, ``0xffff...`` and ``inode:...`` name the same tree;
    ``xa TARGET`` is ``xa check TARGET``."""
    session(crash, dump)
    t = dump.targets[0]
    bare = t[2:] if t.startswith("0x") else t
    ref, st = xa(crash, "xa check %s" % bare)
    for spec in ("0x" + bare, "inode:" + bare, "inode:0x" + bare):
        assert xa(crash, "xa check %s" % spec) == (ref, st)
    assert xa(crash, "xa %s" % bare) == (ref, st)
    # options may follow the targets (crash style)
    assert xa(crash, "xa check %s -f json" % bare) == \
        xa(crash, "xa check -f json %s" % bare)
    out, _err, code = cli(dump, "check", bare)
    assert (out, code) == (ref, st)


def test_status_semantics(crash, dump):
    session(crash, dump)
    text, status = xa(crash, "xa check %s" % dump.targets[0])
    assert status == dump.status and "Traceback" not in text
    # one good, one bad target: the good one is printed, the status is 2,
    # as in the CLI
    bad = "0xdead000000000000"
    text, status = xa(crash, "xa check %s %s" % (dump.targets[0], bad))
    out, err, code = cli(dump, "check", dump.targets[0], bad)
    assert status == code == 2
    first = text.splitlines()[0]
    assert same_text(first, "xa: error: "
                     + err.strip()[len("crashext: error: "):])
    assert text[len(first) + 1:] == out


# ------------------------------------------------------- errors: one line
BAD_LINES = [
    ("xa check zzzz", "not an address: 'zzzz'"),
    ("xa check 0xdead000000000000", "cannot read memory at 0xdead000000000000"),
    ("xa check 0", "address out of range"),
    ("xa check /mnt/xfs/nope", "'nope' in /mnt/xfs is not in the dcache"),
    ("xa check", "no TARGET given"),
    ("xa check -f bogus ffff8880", "invalid choice: 'bogus'"),
    ("xa check --nope ffff8880", "unrecognized arguments: --nope"),
    ("xa frobnicate", "unknown command 'frobnicate'"),
    ("xa capture ffff8880", "the following arguments are required: -o"),
    ("xa check inode:ffffffff81000000", "is not an inode"),
]


@pytest.mark.parametrize("line,why", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_errors_are_one_line(crash, line, why):
    session(crash, _dump("6.1"))
    text, status = xa(crash, line)
    assert status == 2
    assert text.count("\n") == 1 and text.startswith("xa: error: "), text
    assert why in text
    assert "Traceback" not in text


def test_bad_target_same_error_as_cli(crash):
    d = _dump("6.1")
    session(crash, d)
    for spec in ("zzzz", "0xdead000000000000", "inode:ffffffff81000000"):
        text, _ = xa(crash, "xa check %s" % spec)
        _out, err, code = cli(d, "check", spec)
        assert code == 2
        assert same_text(text[len("xa: error: "):],
                         err[len("crashext: error: "):])


# ------------------------------------------------------- PyKdump's argv
def test_reserved_options_are_stripped(crash, tmp_path):
    """PyKdump removes --debug N, --timeout N, --maxel N, --usens PID,
    --reload, --dumpcache, --experimental (and --ofile FILE, which sends
    the output to FILE) before the shim sees sys.argv."""
    d = _dump("6.1")
    session(crash, d)
    t = d.targets[0]
    ref = xa(crash, "xa check %s" % t)
    noisy = ("xa --debug 0 check --timeout 50 %s --maxel 10 --reload "
             "--dumpcache --experimental" % t)
    assert xa(crash, noisy) == ref
    f = tmp_path / "out.txt"
    shown = crash.standin_command("xa check %s --ofile %s" % (t, f))
    assert crash.last_status == ref[1]
    assert shown == ""
    # PyKdump names the command and the dump first when stdout is a file
    written = f.read_text().partition(TIMING)[0]
    banner, sep, rest = written.partition(ref[0])
    assert sep and rest == ""
    assert banner.startswith("\n   ") and d.vmcore in banner
    assert banner.count("\n") == 3
    # a value PyKdump cannot parse ends crash itself (as in real crash)
    with pytest.raises(crash.StandinCrashExit):
        crash.standin_command("xa check --debug x %s" % t)


def test_stdout_is_flushed_every_run(crash):
    """Nothing stays in PyKdump's buffered stdout after xa."""
    session(crash, _dump("6.1"))
    xa(crash, "xa check zzzz")
    assert crash.standin_pending_output() == ""
    xa(crash, "xa help")
    assert crash.standin_pending_output() == ""


# ------------------------------------------------------- capture in crash
def test_capture_then_cli_on_the_snapshot(crash, tmp_path):
    d = _dump("planted-6.1-all")
    session(crash, d)
    snap = tmp_path / "x.snap"
    t = d.targets[0]
    text, status = xa(crash, "xa capture -o %s --note 'from crash' %s"
                      % (snap, t))
    assert status == d.status
    assert text.startswith("%s: " % t) and "wrote %s (" % snap in text
    ref, _ = xa(crash, "xa check %s" % t)
    r = CliRunner().invoke(cli_main, ["check", "--snapshot", str(snap)])
    assert r.exit_code == d.status and r.stdout == ref
    # the CLI's capture writes the same answers
    snap2 = tmp_path / "y.snap"
    r = CliRunner().invoke(cli_main, ["capture", "--vmcore", d.vmcore,
                                      "--vmlinux", d.vmlinux, "-o", str(snap2),
                                      "--note", "from crash", t])
    assert r.exit_code == d.status
    from crashext.backends.snapshot import SnapshotMemory
    a, b = SnapshotMemory.load(str(snap)), SnapshotMemory.load(str(snap2))
    assert a.blob == b.blob and a.answers == b.answers


# ------------------------------------------------------- bulk reads
def test_one_memory_call_per_node_and_folio_runs():
    """The walk does exactly one PyKdump memory call per xa_node (plus
    one for the struct xarray); folio structs come in runs.  (The adapter
    against the in-process stand-in: its call counter sees every call.)"""
    from crashext.analyze import layout_for
    from crashext.backends.pykdump import PykdumpMemory
    from crashext.folio import read_folios
    from crashext.targets import resolve_target
    from crashext.xarray import entry as E
    from crashext.xarray.walk import walk_xarray

    d = _dump("6.1")
    with standin_crash(d.vmlinux, d.vmcore) as crash:
        _memory_calls(crash, d, layout_for, PykdumpMemory, read_folios,
                      resolve_target, E, walk_xarray)


def _memory_calls(crash, d, layout_for, PykdumpMemory, read_folios,
                  resolve_target, E, walk_xarray):
    stats = crash.standin_stats
    mem = PykdumpMemory()
    lay = layout_for(mem)
    checked = 0
    ratios = []
    for t in d.targets:
        tgt = resolve_target(mem, lay, t)
        stats.reset()
        stats.trace = True
        try:
            w = walk_xarray(mem, lay, tgt.xarray)
        finally:
            stats.trace = False
        assert stats.mem_calls == w.reads == 1 + len(w.nodes)
        assert stats["readmem"] == stats.mem_calls       # no readPtr/readInt
        node_reads = sorted(a for _f, a, s in stats.log if s >= lay.node_size)
        assert node_reads == sorted(n.addr for n in w.nodes)
        addrs = {e.raw for e in w.entries if e.kind == E.POINTER}
        stats.reset()
        recs, bad = read_folios(mem, lay, addrs)
        assert not bad and len(recs) == len(addrs)
        assert stats.mem_calls == stats["readmem"]
        assert stats.mem_calls <= len(addrs)
        if len(addrs) >= 100:
            # runs: fewer calls than folios (big folios lie far apart in
            # the struct page array, so not every tree packs as well)
            assert stats.mem_calls < len(addrs) / 2, (stats.mem_calls,
                                                      len(addrs))
            checked += 1
        ratios.append((t, len(w.nodes), len(addrs), stats.mem_calls))
    print("tree, nodes, folios, folio reads:", ratios)
    assert checked >= 3


def test_xa_check_reads_through_readmem_only(crash):
    """A whole ``xa check``: every dump read is one readmem; the node
    reads are one per node."""
    from crashext.analyze import analyze
    from crashext.backends.drgn import DrgnMemory

    d = _dump("6.1")
    session(crash, d)
    t = [x for x in d.targets][1]
    a = analyze(DrgnMemory.open(d.vmcore, d.vmlinux), t)  # expected nodes
    crash.standin_stats.trace = True
    try:
        xa(crash, "xa check %s" % t)
    finally:
        crash.standin_stats.trace = False
    st = crash.standin_stats.fetch()
    assert st["readPtr"] == st["readInt"] == 0
    node_size = 576
    nodes = [x for x in st.log if x[2] == node_size]
    assert len(nodes) == a.stats.nodes
    assert st.mem_calls < a.stats.nodes + a.stats.folios / 4 + 100
    assert st["exec_crash_command:sys"] == 1


# ------------------------------------------------------- the alias way
def test_without_pykdumppath_register_makes_an_alias(crash):
    """Crash started without the shim on PYKDUMPPATH: registering 'xa'
    would make the command unrunnable (' Cannot find the program <xa>'),
    so register.py makes 'xa' an alias of 'epython /abs/xa.py'."""
    d = _dump("6.1")
    session(crash, d, pykdumppath=(), register=False)
    crash.standin_define_command("alias", "ok")
    out = crash.standin_epython(REGISTER).partition(TIMING)[0]
    assert crash.standin_calls() == ["alias xa epython %s" % SHIM]
    assert "alias of epython %s" % SHIM in out and out.count("\n") == 1
    assert "xa" not in crash.standin_registrations()
    # what the alias runs: the shim by absolute path, no search
    t = d.targets[0]
    via_alias = crash.standin_command("epython %s check %s" % (SHIM, t))
    session(crash, d)
    assert via_alias.partition(TIMING)[0] == xa(crash, "xa check %s" % t)[0]


def test_alias_carries_the_dependency_dirs(crash, tmp_path):
    """The alias route does not rely on os.environ lasting between epython
    runs: with ``register.py --path DIRS`` the alias line carries
    --crashext-path DIRS, and the shim takes them off its arguments
    before parsing the rest."""
    d = _dump("6.1")
    session(crash, d, pykdumppath=(), register=False)
    crash.standin_define_command("alias", "empty")
    extra = tmp_path / "deps"
    extra.mkdir()
    crash.setenv("CRASHEXT_PATH", None)
    crash.standin_epython(REGISTER, "--path", str(extra))
    assert crash.standin_calls() == ["alias xa epython %s --crashext-path %s"
                                     % (SHIM, extra)]
    # a later epython run that lost the environment
    crash.setenv("CRASHEXT_PATH", None)
    t = d.targets[0]
    out = crash.standin_command("epython %s --crashext-path %s check %s"
                                % (SHIM, extra, t)).partition(TIMING)[0]
    session(crash, d)
    assert out == xa(crash, "xa check %s" % t)[0]


def test_registered_without_shim_on_path_cannot_run(crash):
    """The fact behind the choice above (stand-in of PyKdump's lookup)."""
    d = _dump("6.1")
    session(crash, d, pykdumppath=(), register=False)
    crash.standin_epython(REGISTER, "--register")
    assert "xa" in crash.standin_registrations()
    assert crash.standin_command("xa help") == " Cannot find the program <xa>\n"


def test_register_says_what_to_do_when_alias_fails(crash):
    d = _dump("6.1")
    session(crash, d, pykdumppath=(), register=False)

    crash.standin_define_command(
        "alias", "fail:alias: cannot alias existing command name: xa")
    out = crash.standin_epython(REGISTER).partition(TIMING)[0]
    assert out.count("\n") == 1
    assert "add this line to ~/.crashrc: alias xa epython %s" % SHIM in out


def test_shim_found_in_pykdumppath_by_name(crash, tmp_path):
    """Another directory of PYKDUMPPATH holding a symlink to the shim
    works too (the shim finds crashext from its real path)."""
    d = _dump("6.1")
    (tmp_path / "xa.py").symlink_to(SHIM)
    session(crash, d, pykdumppath=(str(tmp_path),))
    assert "xa" in crash.standin_registrations()
    text, status = xa(crash, "xa check %s" % d.targets[0])
    assert status == 0 and text.startswith("CLEAN")


# ------------------------------------------------------- crashrc
def test_crashrc_lines(tmp_path):
    """Two lines to paste (extend, epython register.py), nothing else but
    comments; no dependency directory (xa needs none inside crash); the
    check of the installation goes to stderr."""
    from crashext import crashrc as rc
    so = tmp_path / "mpykdump.so"
    so.write_bytes(b"")
    r = CliRunner().invoke(cli_main, ["crashrc", "--mpykdump", str(so)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")]
    assert lines == ["extend %s" % so, "epython %s" % REGISTER]
    assert os.path.isfile(REGISTER)
    assert "#   alias xa epython %s" % SHIM in r.stdout
    assert "export PYKDUMPPATH=%s" % PROGS in r.stdout
    assert "export PYKDUMPPATH=%s${PYKDUMPPATH:+:$PYKDUMPPATH}" % PROGS \
        in r.stderr
    assert "cannot tell which Python" in r.stderr      # an empty file
    r = CliRunner().invoke(cli_main, ["crashrc", "--shell"])
    assert r.stdout == rc.export_line() + "\n"


def test_crashrc_reads_pykdumps_python(tmp_path):
    """The version of the Python PyKdump embeds, read from the extension
    (the stand-in's mpykdump.so: an ELF head with the zipped pylib of
    .pyc files appended, as PyKdump's build makes it), and a warning when
    crashext's code cannot run there."""
    from crashext import crashrc as rc
    so = extension()
    assert rc.pykdump_python(so) == ((3, 11), "pylib .pyc magic 3495")
    r = CliRunner().invoke(cli_main, ["crashrc", "--mpykdump", so])
    assert "crashext: warning: PyKdump embeds Python 3.11" in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")]
    assert len(lines) == 2
    # An extension of an older Python: the magic of 3.8 in its pylib.
    import zipfile
    old = tmp_path / "old.so"
    with open(old, "wb") as f:
        f.write(b"\x7fELF" + b"\0" * 60)
    with zipfile.ZipFile(old, "a") as z:
        z.writestr("pylib/os.pyc", (3413).to_bytes(2, "little") + b"\r\n"
                   + b"\0" * 12)
    assert rc.pykdump_python(str(old)) == ((3, 8), "pylib .pyc magic 3413")
    warn = rc.warnings(str(old))
    assert any("embeds Python 3.8" in w and "needs 3.9 or newer" in w
               for w in warn), warn
    # No zip: the version string compiled into libpython.
    bare = tmp_path / "bare.so"
    bare.write_bytes(b"\x7fELF" + b"\0" * 100 + b"3.10.12\0"
                     + b"/usr/lib/python3.10/\0" + b"\0" * 50)
    assert rc.pykdump_python(str(bare)) == ((3, 10),
                                            "version string in the extension")


def test_crashrc_wrapper(tmp_path):
    fake = tmp_path / "fakecrash"
    fake.write_text("#!/bin/sh\necho \"PYKDUMPPATH=$PYKDUMPPATH\"\n"
                    "echo \"ARGS=$*\"\n")
    fake.chmod(0o755)
    w = tmp_path / "bin" / "crash-xa"
    r = CliRunner().invoke(cli_main, ["crashrc", "--mpykdump", "/x/mpykdump.so",
                                      "--wrapper", str(w), "--crash", str(fake)])
    assert r.exit_code == 0, r.output
    assert os.access(w, os.X_OK)
    env = dict(os.environ, PYKDUMPPATH="/other")
    p = subprocess.run([str(w), "vmlinux", "vmcore x"], capture_output=True,
                       text=True, env=env, check=True)
    got = dict(ln.split("=", 1) for ln in p.stdout.splitlines())
    assert got["PYKDUMPPATH"] == PROGS + ":/other"
    assert got["ARGS"] == "vmlinux vmcore x"


def test_shim_ships_as_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'crashext = ["crash/progs/*.py"]' in text
    assert os.path.isfile(SHIM) and os.path.isfile(REGISTER)
    assert xacrash.SHIM_MARK in Path(SHIM).read_text()


# ------------------------------------------------------- real crash facts
FAKE_EXT = r"""
#include "defs.h"
/* Stands in for mpykdump.so: 'epython' echoes its arguments and, with
   REGISTER, registers an extension command 'xa' as
   register_epython_prog() does (register_extension). */
void fake_epython(void);
void fake_xa(void);
static char *help_epython[] = {"epython", "fake epython", "args", "  fake", NULL};
static char *help_xa[] = {"xa", "XArray checks", "check TARGET...", "  xa help text", NULL};
static struct command_table_entry cmds[] = {{"epython", fake_epython, help_epython, 0}, {NULL}};
static struct command_table_entry xacmds[] = {{"xa", fake_xa, help_xa, 0}, {NULL}};
void __attribute__((constructor)) fake_init(void) { register_extension(cmds); }
void fake_epython(void) {
    int i;
    fprintf(fp, "EPYTHON:");
    for (i = 1; i < argcnt; i++) fprintf(fp, " %s", args[i]);
    fprintf(fp, "\n");
    if (argcnt > 1 && strcmp(args[1], "REGISTER") == 0)
        register_extension(xacmds);
}
void fake_xa(void) {
    int i;
    fprintf(fp, "XA-COMMAND:");
    for (i = 1; i < argcnt; i++) fprintf(fp, " %s", args[i]);
    fprintf(fp, "\n");
}
"""


def test_real_crash_alias_and_registration(tmp_path):
    """Real crash 8.0.2: an alias needs its target command to exist
    (after 'extend'); registering a command named like an alias deletes
    the alias; an alias named like a command is refused; '#' lines of
    .crashrc are ignored; the generated register line reaches epython
    intact."""
    crash_bin = shutil.which("crash")
    cc = shutil.which("gcc") or shutil.which("cc")
    defs = Path("/usr/include/crash/defs.h")
    d = _lab("6.1")
    if not (crash_bin and cc and defs.is_file() and d):
        pytest.skip("needs crash, a C compiler, crash's defs.h and the 6.1 dump")
    src = tmp_path / "fakepy.c"
    src.write_text(FAKE_EXT)
    so = tmp_path / "fakepy.so"
    subprocess.run([cc, "-shared", "-fPIC", "-DX86_64", "-I", str(defs.parent),
                    "-o", str(so), str(src)], check=True, capture_output=True)
    from crashext.crashrc import crashrc_text
    home = tmp_path / "home"
    home.mkdir()
    (home / ".crashrc").write_text(crashrc_text(str(so)))
    cmds = tmp_path / "cmds"
    cmds.write_text("alias xa epython %s\n"
                    "xa check ffff1\n"
                    "epython REGISTER\n"
                    "xa check ffff2\n"
                    "help xa\n"
                    "alias xa epython /elsewhere.py\n"
                    "q\n" % SHIM)
    p = subprocess.run(["timeout", "-s", "KILL", "600", crash_bin, "-s",
                        d.vmlinux, d.vmcore, "-i", str(cmds)],
                       capture_output=True, text=True, cwd=str(tmp_path),
                       env=dict(os.environ, HOME=str(home)))
    out = p.stdout + p.stderr
    assert "EPYTHON: %s\n" % REGISTER in out                                  # .crashrc line
    assert "EPYTHON: %s check ffff1" % SHIM in out       # the alias runs
    assert 'alias "xa" deleted: name clash with extension command' in out
    assert "XA-COMMAND: check ffff2" in out              # the command runs
    assert "SYNOPSIS\n  xa check TARGET..." in out       # help xa
    assert "cannot alias existing command name: xa" in out


def test_crash_side_imports_only_pykdumps_library():
    """Every module any crashext file imports that can run inside crash
    (everything but the CLI, the drgn front door, triage, the drgn
    backend and the picture) is in PyKdump's pylib, compiled into it,
    an interpreter built-in, crashext or PyKdump's own, or imported under
    ``try`` with a fallback (json, tabulate).  The strict stand-in runs
    prove it; this names the file when it breaks."""
    import ast
    sys.path.insert(0, str(ROOT / "tests" / "pykdump_standin"))
    try:
        import pylib
    finally:
        sys.path.pop(0)
    allowed = {rel[:-3].replace("/", ".").replace(".__init__", "")
               for rel in pylib.pylib_files()}
    allowed |= set(pylib.COMPILED_IN) | set(sys.builtin_module_names)
    allowed |= {"pykdump", "pykdump.API", "crash", "crashext", "__future__"}
    outside = ("cli.py", "drgn_plugin.py", "triage", "backends/drgn.py",
               "backends/vmlinux.py",
               "render/png.py", "crashrc.py", "__main__.py")
    bad = []
    for f in sorted((ROOT / "crashext").rglob("*.py")):
        rel = f.relative_to(ROOT / "crashext").as_posix()
        if rel.startswith(outside):
            continue
        tree = ast.parse(f.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in (
                        "ImportError", "ModuleNotFoundError", "Exception")
                    for h in node.handlers):
                for sub in node.body:
                    for n in ast.walk(sub):
                        guarded.add(id(n))
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if n in allowed or top in ("crashext", "pykdump", "crash"):
                    continue
                bad.append("%s:%d imports %s" % (rel, node.lineno, n))
    assert not bad, bad
