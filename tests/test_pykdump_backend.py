"""PykdumpMemory (crashext/backends/pykdump.py) against the PyKdump
stand-in (tests/pykdump_standin, drgn on the lab ELF dump of each family
of tests/lab/labdumps.FAMILIES), and the
stand-in itself against the facts of /work/shared/pykdump-api.md.

Skipped when the lab dump is absent (make it with ../shared/lab/mkdump.sh
--quick; CRASHEXT_LAB overrides /var/cache/crashext-lab).
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

drgn = pytest.importorskip("drgn")

from conftest import standin_crash  # noqa: E402
from crashext.memory import UnreadableMemory  # noqa: E402
from crashext.backends.pykdump import PykdumpMemory  # noqa: E402

BAD = 0xDEAD000000000000        # non-canonical: unreadable everywhere

from tests.lab import labdumps  # noqa: E402

pytestmark = pytest.mark.lab     # needs the lab dumps (skipped when absent)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", params=labdumps.FAMILIES)
def manifest(request):
    run = labdumps.elf_run(request.param)
    if run is None:
        pytest.skip("no lab run (ELF dump + vmlinux) for %s in %s"
                    % (request.param, labdumps.lab_dir()))
    m, elf, vmlinux = run
    m["_elf"], m["vmlinux"] = elf, vmlinux
    return m


@pytest.fixture(scope="module")
def crash(manifest):
    """The stand-in's ``crash`` module, opened on the family's ELF dump."""
    with standin_crash(manifest["vmlinux"], manifest["_elf"]) as crash_mod:
        yield crash_mod


@pytest.fixture(scope="module")
def api(crash):
    from pykdump import API
    return API


@pytest.fixture()
def fresh(crash, tmp_path):
    """A new crash session (no registrations, zero stats, empty
    PYKDUMPPATH) and a scratch directory."""
    crash.standin_reset(pykdumppath=[], progs_dir="")
    yield crash
    crash.standin_reset(pykdumppath=[], progs_dir="")


@pytest.fixture(scope="module")
def prog(crash):
    return crash.standin_program()


@pytest.fixture()
def mem(api, crash):
    return PykdumpMemory()


@pytest.fixture(scope="module")
def big64(manifest):
    return [f for f in manifest["files"] if f["path"] == "/mnt/xfs/big64"][0]


def _head(prog, big64):
    """xa_head of big64's i_pages, read with drgn."""
    i_pages = int(big64["i_pages"], 16)
    off = drgn.offsetof(prog.type("struct xarray"), "xa_head")
    return i_pages, int.from_bytes(prog.read(i_pages + off, 8), "little")


XA_NODE_MEMBERS = ["shift", "offset", "count", "nr_values", "parent",
                   "array", "slots", "marks", "private_list"]


# ------------------------------------------------------ the adapter
def test_xa_node_offsets_match_drgn(mem, prog):
    t = prog.type("struct xa_node")
    for m in XA_NODE_MEMBERS:
        assert mem.member_offset("struct xa_node", m) == drgn.offsetof(t, m), m
    assert mem.member_offset("struct xa_node", "slots") == 40
    assert mem.struct_size("struct xa_node") == drgn.sizeof(t) == 576
    assert mem.member_size("struct xa_node", "slots") == 512
    assert mem.member_size("struct xa_node", "shift") == 1


def test_other_offsets_and_dotted_paths(mem, prog):
    for struct, member in [("struct xarray", "xa_head"),
                           ("struct xarray", "xa_flags"),
                           ("struct address_space", "i_pages"),
                           ("struct address_space", "nrpages"),
                           ("struct inode", "i_mapping"),
                           ("struct page", "mapping"),      # anonymous union
                           ("struct folio", "flags"),
                           ("struct task_struct", "se.vruntime"),
                           ("struct inode", "i_data.i_pages.xa_head"),
                           # 7.3: in an anonymous struct freelist_counters
                           ("struct slab", "freelist"),
                           ("struct slab", "counters")]:
        assert mem.member_offset(struct, member) == \
            drgn.offsetof(prog.type(struct), member), (struct, member)
    # struct page.compound_head, renamed compound_info in 7.x: the one
    # the kernel has, and None for the other.
    got = {}
    for member in ("compound_head", "compound_info"):
        try:
            want = drgn.offsetof(prog.type("struct page"), member)
        except LookupError:
            want = None
        got[member] = mem.member_offset("struct page", member)
        assert got[member] == want, member
    assert [v is None for v in got.values()].count(True) == 1, got


def test_enum_and_symbols(mem, prog):
    assert mem.enum_value("PG_head") == prog.constant("PG_head").value_()
    assert mem.enum_value("PG_dirty") == prog.constant("PG_dirty").value_()
    assert mem.symbol("init_uts_ns") == prog.symbol("init_uts_ns").address


def test_unknown_names_are_none(mem):
    assert mem.symbol("no_such_symbol_crashext") is None
    assert mem.member_offset("struct xa_node", "no_such_member") is None
    assert mem.member_offset("struct no_such_struct", "slots") is None
    assert mem.member_offset("struct xa_node", "parent.shift") is None  # via pointer
    assert mem.member_size("struct xa_node", "no_such_member") is None
    assert mem.struct_size("struct no_such_struct") is None
    assert mem.enum_value("NO_SUCH_ENUMERATOR") is None
    assert mem.enum_value("XA_CHUNK_SHIFT") is None       # a #define


def test_read_xa_node_in_one_call(mem, crash, prog, big64):
    i_pages, head_drgn = _head(prog, big64)
    head = mem.read_u64(i_pages + mem.member_offset("struct xarray", "xa_head"))
    assert head == head_drgn
    assert head & 3 == 2 and head > 4096, "big64 root must be a node"
    node = head - 2
    crash.standin_stats.reset()
    data = mem.read(node, 576)
    assert crash.standin_stats["readmem"] == 1
    assert crash.standin_stats.mem_calls == 1
    assert crash.standin_stats["bytes_read"] == 576
    assert data == prog.read(node, 576)
    shift, count = data[0], data[2]
    parent = int.from_bytes(data[8:16], "little")
    array = int.from_bytes(data[16:24], "little")
    assert shift % 6 == 0 and shift > 0 and count > 0
    assert parent == 0 and array == i_pages


def test_bulk_read(mem, crash, big64):
    crash.standin_stats.reset()
    data = mem.read(int(big64["inode"], 16) & ~0xFFF, 80000)
    assert len(data) == 80000
    assert crash.standin_stats.mem_calls == 1


@pytest.mark.parametrize("addr", [BAD, 0, 0x1000, 0xFFFFFFFFFFFFFFF8, -8,
                                  1 << 64])
def test_unreadable_address(mem, addr):
    with pytest.raises(UnreadableMemory) as ei:
        mem.read(addr, 8)
    assert ei.value.addr == addr
    assert ei.value.size == 8


def test_unreadable_message_from_crash(mem):
    with pytest.raises(UnreadableMemory) as ei:
        mem.read(BAD, 8)
    assert "readmem error at addr 0xdead000000000000, reading 8 bytes" \
        in str(ei.value)
    with pytest.raises(UnreadableMemory) as ei:
        mem.read(0, 16)
    assert "readPtr NULL pointer" in str(ei.value)


def test_release_from_sys_once(mem, crash, manifest):
    crash.standin_stats.reset()
    assert mem.release() == manifest["release"]
    assert mem.release() == manifest["release"]
    assert manifest["release"] in mem.describe()
    assert os.path.basename(manifest["_elf"]) in mem.describe()
    assert crash.standin_stats["exec_crash_command:sys"] == 1


@pytest.mark.parametrize("dumpfile,live", [
    ("/dev/crash", True), ("/proc/kcore", True), ("/dev/mem", True),
    ("/dev/crash@host  (remote live system)", True),
    ("/var/crash/202611201314/dump.202611201314", False),
    ("/dumps/vmcore  [PARTIAL DUMP]", False)])
def test_live_from_crashs_sys(fresh, api, dumpfile, live):
    """crash on a running kernel names its memory source as DUMPFILE:
    PykdumpMemory is then live (crashext.stable judges the tree)."""
    fresh.standin_define_command(
        "sys", lambda line: "    DUMPFILE: %s\n     RELEASE: 6.1.0-57-amd64\n"
        % dumpfile)
    m = PykdumpMemory()
    assert m.live() is live
    assert m.release() == "6.1.0-57-amd64"


def test_layout_discovers_through_pykdump(mem):
    from crashext.layout import Layout
    lay = Layout.discover(mem)
    assert lay.node_size == 576 and lay.node_slots == 40
    assert lay.chunk_shift == 6


def test_adapter_is_stdlib_only_and_lazy():
    src = (ROOT / "crashext" / "backends" / "pykdump.py").read_text()
    top = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    assert not top & {"click", "tabulate", "drgn"}, top
    assert top <= {"__future__", "typing", "pykdump", "crash"}, top
    code = ("import sys; import crashext.backends.pykdump; "
            "bad = {'pykdump', 'crash', 'drgn', 'click', 'tabulate'} "
            "& set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), check=True)


# ------------------------------------------------------ the stand-in: facts
def test_standin_symbols(crash, api, prog):
    assert api.sym2addr("no_such_symbol_crashext") == 0
    addr = api.sym2addr("init_uts_ns")
    assert addr == prog.symbol("init_uts_ns").address
    assert api.addr2sym(addr) == "init_uts_ns"
    assert api.addr2sym(addr + 8) is None
    assert crash.addr2sym(addr + 8, True) == ("init_uts_ns", 8)
    assert api.symbol_exists("init_uts_ns") == 1
    assert api.symbol_exists("no_such_symbol_crashext") == 0


def test_standin_types(crash, api):
    assert api.member_offset("struct xa_node", "slots") == 40
    assert api.member_offset("struct xa_node", "nope") == -1
    assert api.member_offset("struct nope_nope", "slots") == -1
    assert api.member_offset("xa_node", "slots") == -1      # C syntax needed
    assert api.member_offset("struct task_struct", "se.vruntime") > 0
    assert api.struct_size("struct xa_node") == 576
    assert api.struct_size("struct nope_nope") == -1
    assert api.member_size("struct xa_node", "slots") == 512
    assert api.member_size("struct xa_node", "nope") == -1
    assert api.struct_exists("struct xa_node") is True
    assert api.struct_exists("struct nope_nope") is False
    assert api.getSizeOf("unsigned long") == 8
    assert isinstance(api.enumerator_value("PG_head"), int)
    assert api.enumerator_value("NO_SUCH_ENUMERATOR") is None
    assert api.enumerator_value("XA_CHUNK_SHIFT") is None
    # the C-level versions agree
    assert crash.member_offset("struct xa_node", "slots") == 40
    assert crash.struct_size("struct nope_nope") == -1


def test_standin_read_errors(crash, api, prog, big64):
    assert issubclass(crash.error, Exception)
    with pytest.raises(crash.error) as ei:
        api.readmem(BAD, 8)
    assert str(ei.value) == \
        "readmem error at addr 0xdead000000000000, reading 8 bytes"
    with pytest.raises(IndexError, match="^readPtr NULL pointer$"):
        api.readPtr(0)
    with pytest.raises(IndexError, match="^readPtr NULL pointer$"):
        api.readmem(0, 8)
    with pytest.raises(IndexError):
        api.readU64(0)
    with pytest.raises(crash.error, match="^readmem error at addr 0xdead000000000000$"):
        api.readPtr(BAD)
    with pytest.raises(crash.error, match="py_readInt error at addr 0x0, reading 8"):
        crash.readInt(0, 8)
    with pytest.raises(crash.error):
        api.readU32(0x1000)          # user address read as KVADDR
    # UVADDR needs a task context the stand-in does not have
    i_pages = int(big64["i_pages"], 16)
    with pytest.raises(crash.error):
        api.readmem(i_pages, 8, crash.UVADDR)


def test_standin_readers(crash, api, prog, big64):
    i_pages = int(big64["i_pages"], 16)
    raw = prog.read(i_pages, 16)
    assert api.readmem(i_pages, 16) == raw and type(api.readmem(i_pages, 1)) is bytes
    head = int.from_bytes(raw[8:16], "little")
    assert api.readPtr(i_pages + 8) == head
    assert api.readU64(i_pages + 8) == head
    assert api.readS64(i_pages + 8) == head - (1 << 64)
    assert api.readU32(i_pages + 4) == int.from_bytes(raw[4:8], "little")
    assert api.readU16(i_pages + 8) == int.from_bytes(raw[8:10], "little")
    assert api.readU8(i_pages + 8) == raw[8]
    assert crash.readInt(i_pages + 8, 8, True) == head - (1 << 64)
    assert crash.readInt(i_pages + 8, 8) == head
    # Physical = direct-map address - page_offset_base (KASLR moves it).
    page_offset = prog["page_offset_base"].value_()
    phys = api.readmem(i_pages - page_offset, 16, crash.PHYSADDR)
    assert phys == raw


def test_standin_readsu(crash, api, prog, big64):
    i_pages, head = _head(prog, big64)
    crash.standin_stats.reset()
    node = api.readSU("struct xa_node", head - 2)
    assert crash.standin_stats.mem_calls == 0          # lazy
    assert isinstance(node, int) and node == head - 2
    assert node.shift == prog.read(head - 2, 1)[0]
    assert node.array == i_pages
    assert node.array.Deref.xa_head == head
    assert len(node.slots) == 64
    with pytest.raises(KeyError, match="does not have a field <nope>"):
        node.nope
    with pytest.raises(TypeError):
        api.readSU("struct nope_nope", head - 2)
    bad = api.readSU("struct xa_node", BAD)           # no error yet
    with pytest.raises(crash.error):
        bad.shift
    xa = api.readSU("struct xarray", i_pages)
    assert xa.xa_head == head
    assert api.readSymbol("init_uts_ns").name.release == \
        prog["init_uts_ns"].name.release.string_().decode()
    with pytest.raises(TypeError):
        api.readSymbol("no_such_symbol_crashext")


def test_standin_commands(fresh, manifest):
    crash = fresh
    out = crash.exec_crash_command("sys")
    assert "     RELEASE: %s\n" % manifest["release"] in out
    assert crash.exec_crash_command("nosuchcmd x y").startswith(
        "crash: command not found: nosuchcmd")
    with pytest.raises(crash.StandinUnsupported):
        crash.exec_crash_command("kmem -i")
    assert crash.standin_stats["exec_crash_command"] == 3


def test_standin_defined_command_failure(fresh, api):
    crash = fresh

    def files(line):
        raise crash.error("files: invalid task or pid value: 1\n")
    crash.standin_define_command("files", files)
    with pytest.raises(crash.error, match="invalid task or pid value"):
        api.exec_crash_command("files 1")
    crash.standin_define_command("sys", lambda line: "     RELEASE: 9.9\n")
    assert PykdumpMemory().release() == "9.9"
    crash.standin_define_command("sys", lambda line: "")
    assert PykdumpMemory().release() is None      # crash.error('') -> None


def test_standin_registration(fresh, capsys):
    crash = fresh
    assert crash.register_epython_prog("xa", "XArray checks", "[-v] FILE",
                                       "long help") is True
    assert crash.standin_registrations()["xa"] == ("XArray checks", "[-v] FILE",
                                                   "long help")
    assert crash.register_epython_prog("files", "a", "b", "c") is False
    assert crash.register_epython_prog("xa", "a", "b", "c") is False
    assert crash.register_epython_prog("epython", "a", "b", "c") is False
    assert "duplicate" in capsys.readouterr().out
    with pytest.raises(crash.error):
        crash.register_epython_prog("xb", "a", "b")
    assert "xa" in crash.get_epython_cmds()
    h = crash.exec_crash_command("help xa")
    assert "SYNOPSIS\n  xa [-v] FILE" in h and "long help" in h


def test_standin_argv_stripping(crash):
    argv = ["/x/xa.py", "--debug", "3", "-v", "--ofile", "out.txt", "path",
            "--timeout=5", "--maxel", "10", "--usens", "1", "--reload",
            "--dumpcache", "--experimental", "--ehelp", "--deb", "x", "--",
            "--reload", "-d"]
    stripped, o = crash.standin_strip_argv(argv)
    assert stripped == ["/x/xa.py", "-v", "path", "--deb", "x", "--", "-d"]
    assert (o["debug"], o["filename"], o["timeout"], o["Maxel"], o["usens"]) \
        == (3, "out.txt", 5, 10, 1)
    assert o["reload"] and o["dumpcache"] and o["experimental"]
    assert crash.standin_strip_argv(["p", "a", "-b"]) == (
        ["p", "a", "-b"], crash.standin_strip_argv(["p"])[1])
    with pytest.raises(SystemExit):
        crash.standin_strip_argv(["p", "--debug", "x"])
    with pytest.raises(IndexError):
        crash.standin_strip_argv(["p", "--timeout"])


# ------------------------------------------------------ the stand-in: runs
def _script(path, body):
    path.write_text(textwrap.dedent(body))
    return path


def test_epython_run_strips_argv_and_flushes(fresh, api, manifest,
                                             tmp_path):
    crash = fresh
    s = _script(tmp_path / "show.py", """
        from pykdump.API import *
        import sys
        print("ARGV", sys.argv[1:])
        print("REL", sys_info.RELEASE)
        print("OFF", member_offset("struct xa_node", "slots"))
    """)
    out = crash.standin_epython(str(s), "--debug", "2", "-v", "FILE")
    assert "ARGV ['-v', 'FILE']" in out
    assert "OFF 40" in out and "REL %s\n" % manifest["release"] in out
    assert " ** Execution took" in out
    assert out.index("ARGV") < out.index("** Execution took")


def test_epython_reserved_option_errors(fresh, api, tmp_path):
    crash = fresh
    s = _script(tmp_path / "argv.py", """
        import sys
        print("ARGV", sys.argv[1:])
    """)
    # A value-taking option at the end: the enter hook fails, the script
    # still runs with sys.argv unstripped.
    out = crash.standin_epython(str(s), "x", "--timeout")
    assert "Error in sys.enterepython" in out
    assert "ARGV ['x', '--timeout']" in out
    # A bad value: optparse exits inside the hook; real crash exits.
    with pytest.raises(crash.StandinCrashExit) as ei:
        crash.standin_epython(str(s), "--debug", "x")
    assert ei.value.code == 2
    assert "invalid integer value: 'x'" in ei.value.output
    # --ofile FILE redirects the script's output (and the timing line).
    f = tmp_path / "report.txt"
    assert crash.standin_epython(str(s), "--ofile", str(f), "y") == ""
    assert "ARGV ['y']" in f.read_text()
    assert "** Execution took" in f.read_text()


def test_epython_output_pending_without_api_hook(fresh, tmp_path, monkeypatch):
    crash = fresh
    # As in a crash session where pykdump.API was never imported.
    monkeypatch.setattr(crash._st, "hooks", None)
    s = _script(tmp_path / "quiet.py", """
        print("buffered text")
    """)
    out = crash.standin_epython(str(s))
    assert out == ""
    assert crash.standin_pending_output() == "buffered text\n"
    s2 = _script(tmp_path / "flush.py", """
        import sys
        print("second")
        sys.stdout.flush()
    """)
    assert crash.standin_epython(str(s2)) == "buffered text\nsecond\n"


def test_registered_command_found_on_pykdumppath(fresh, api, tmp_path):
    crash = fresh
    d = tmp_path / "shims"
    d.mkdir()
    _script(d / "xa.py", """
        from pykdump.API import *
        import sys
        print("XA", sys.argv[1:], sys.argv[0].endswith("/shims/xa.py"))
    """)
    _script(d / "caller.py", """
        from pykdump.API import *
        import crash
        print("before")
        crash.exec_epython_command("xa", "nested")
        print("middle")
        exec_crash_command("xa --debug 1")     # stops this script silently
        print("after")
    """)
    _script(d / "exits.py", """
        import sys
        sys.exit(3)
    """)
    _script(d / "raises.py", """
        raise ValueError("boom")
    """)
    crash.standin_reset(pykdumppath=[str(d)])
    assert crash.register_epython_prog("xa", "s", "ARGS", "h")
    out = crash.standin_command("xa --maxel 5 /mnt/xfs/big64 -n")
    assert "XA ['/mnt/xfs/big64', '-n'] True" in out
    out = crash.standin_command("epython caller")
    assert "before" in out and "XA ['nested']" in out and "middle" in out
    assert "after" not in out and "Traceback" not in out
    assert " -- sys.exit(3) --" in crash.standin_command("epython exits")
    out = crash.standin_command("epython raises.py")
    assert "ValueError: boom" in out
    assert " Cannot find the program <nope>" in \
        crash.standin_command("epython nope")
    assert crash.standin_command("nosuchcmd") == \
        "crash: command not found: nosuchcmd\n"


def test_pykdumppath_read_at_load_only(fresh, tmp_path, monkeypatch):
    crash = fresh
    d = tmp_path / "late"
    d.mkdir()
    _script(d / "late.py", "print('late')\n")
    monkeypatch.setenv("PYKDUMPPATH", str(d))        # too late: no effect
    assert "Cannot find the program <late>" in crash.standin_command("epython late")
    assert "late" in crash.standin_command("epython %s" % (d / "late.py"))


def test_standin_config_from_env(crash, manifest, monkeypatch):
    crash.standin_close()
    monkeypatch.delenv("CRASHEXT_STANDIN_VMLINUX", raising=False)
    monkeypatch.delenv("CRASHEXT_STANDIN_VMCORE", raising=False)
    with pytest.raises(RuntimeError, match="standin_open"):
        crash.sym2addr("init_uts_ns")
    monkeypatch.setenv("CRASHEXT_STANDIN_VMLINUX", manifest["vmlinux"])
    monkeypatch.setenv("CRASHEXT_STANDIN_VMCORE", manifest["_elf"])
    assert crash.sym2addr("init_uts_ns") != 0
    assert crash.standin_is_open()
