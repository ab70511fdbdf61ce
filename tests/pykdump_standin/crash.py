"""Stand-in for PyKdump's C module ``crash``, backed by drgn on a real vmcore.

This is *test code*: it lets the test suite drive code written for PyKdump
(``from pykdump.API import *`` / ``import crash``) without the ``crash``
utility.  It follows /work/shared/pykdump-api.md (facts verified on crash
8.0.2 + PyKdump 3.5) and PyKdump's own sources (``Extension/functions.c``,
``Extension/epython.c``, ``pykdump/API.py``, ``pykdump/highlevel.py``),
errors and message texts included.

Configuration
-------------
Put this directory on ``sys.path`` and::

    import crash
    crash.standin_open(vmlinux, vmcore, pykdumppath=[...])  # once per "crash session"

or set ``CRASHEXT_STANDIN_VMLINUX`` / ``CRASHEXT_STANDIN_VMCORE`` (and
optionally ``PYKDUMPPATH``): the first call that needs the dump opens it.
``standin_reset()`` starts a fresh "crash session" on the open dump
(registrations, pending output, stats); ``standin_close()`` drops the dump.

Stats
-----
``crash.standin_stats`` is a :class:`collections.Counter` of calls into this
module by function name (``readmem``, ``readPtr``, ``readInt``, ``sym2addr``,
``member_offset``, ``exec_crash_command``, ``exec_crash_command:sys`` ...),
plus ``mem_calls`` (every call that reads dump memory: readmem, readPtr,
readInt, getListSize, getFullBuckets), ``bytes_read`` and ``read_errors``.
The pykdump.API readers (readU8..readS64, readSU members, readSymbol) go
through these C-level functions, exactly as the real API does, so they are
counted there.  ``standin_stats.reset()`` clears it; set
``standin_stats.trace = True`` to also append ``(func, addr, size)`` to
``standin_stats.log``.

Running scripts as crash would
------------------------------
``standin_epython(path, *args)`` is ``crash> epython path args``;
``standin_command(line)`` is typing ``line`` at the ``crash>`` prompt (a
registered epython command, ``epython ...`` or a crash command).  Both
return the text that would appear on crash's terminal during that command,
modelling PyKdump's buffered stdout: output is shown only when flushed
(the pykdump.API exit hook flushes it); unflushed output stays pending and
appears at the start of the next epython run (when PyKdump replaces
sys.stdout) -- see ``standin_pending_output()``.

``standin_strip_argv(argv)`` applies PyKdump's removal of its reserved
options (``--experimental --debug N --timeout N --maxel N --usens PID
--reload --dumpcache --ofile FILE`` and ``--ehelp``).

Faithful: return values for unknowns (sym2addr 0, member_offset /
member_size / struct_size -1, enumerator_value None, addr2sym None), error
types and texts (IndexError('readPtr NULL pointer') for address 0 in
readmem *and* readPtr; crash.error 'readmem error at addr 0x%x, reading %d
bytes' from readmem, 'readmem error at addr 0x%x' from readPtr,
'readmem/py_readInt error at addr 0x%x, reading %d bytes' from readInt;
KVADDR reads below the kernel half fail as in crash), exec_crash_command
(unknown command -> 'crash: command not found: NAME\n', empty output ->
crash.error, an epython command silently stops the calling script),
register_epython_prog (True; False plus crash's INFO line for a built-in,
'epython' or an already registered name), script lookup (/abs as is; ./,
PYKDUMPPATH read once at open, built-in progs; NAME then NAME.py;
' Cannot find the program <NAME>'), sys.exit(n) -> ' -- sys.exit(n) --',
option stripping with PyKdump's own algorithm, buffered stdout.

Simplified (see also pykdump/API.py): only KVADDR and PHYSADDR reads
(UVADDR always fails: no task context); ``exec_crash_command`` emulates
plain ``sys`` (fields other than RELEASE/KERNEL/DUMPFILE approximate) and
``help NAME`` for epython commands; other built-ins raise
:class:`StandinUnsupported` unless a test defines them with
``standin_define_command(name, func)``; an option error in the reserved
options raises :class:`StandinCrashExit` (real crash exits); sys.argv[0]
is the absolute script path (as the doc observed); stderr shares stdout's
buffer; no aliases, modules' symbols, timeouts or SIGINT handling.
"""

from __future__ import annotations

import collections
import io
import optparse
import os
import runpy
import shlex
import sys
import time
import traceback

try:
    import drgn  # test-only dependency (imported before crashsim.py
except ImportError:  # restricts the embedded interpreter's imports)
    drgn = None

# --------------------------------------------------------------------------
# Constants of the real module
# --------------------------------------------------------------------------
KVADDR = 1
UVADDR = 2
PHYSADDR = 4

PAGESIZE = 4096          # x86_64, the only architecture of the lab dumps
PAGE_CACHE_SHIFT = 12
HZ = 250                 # Debian amd64 CONFIG_HZ (not in DWARF)
default_timeout = 120
version = "3.5 (crashext stand-in)"

# Lowest x86_64 kernel virtual address.  crash refuses KVADDR reads below
# it ("invalid kernel virtual address"); drgn on QEMU's paging=false ELF
# dumps would happily read physical memory at small addresses instead.
_KVADDR_MIN = 0xFFFF800000000000
_U64 = (1 << 64) - 1


class error(Exception):
    """``crash.error``: what PyKdump raises for crash-level failures."""


class StandinUnsupported(NotImplementedError):
    """A real crash command or mode the stand-in does not emulate (so a
    test finds out instead of getting a made-up answer)."""


class StandinCrashExit(Exception):
    """The real crash process would exit here: the epython enter hook
    (pykdump.API option parsing) ended with SystemExit, e.g. ``--debug x``;
    PyKdump hands that to PyErr_Print(), which exits the process.
    ``code`` is the exit status."""

    def __init__(self, code):
        super().__init__("crash would exit with status %r" % (code,))
        self.code = code


class _StopScript(BaseException):
    """exec_crash_command() on an epython command: the real PyKdump
    silently stops the calling script.  The stand-in runner swallows it."""


# crash 8.0.2 built-in commands (help -a); a registration clashing with one
# of these (or with an extension command, 'epython' included) fails.
CRASH_BUILTINS = frozenset("""
    * alias ascii bpf bt btop dev dis eval exit extend files foreach fuser
    gdb help ipcs irq kmem list log mach mod mount net p ps pte ptob ptov q
    rd repeat runq sbitmapq search set sig struct swap sym sys task timer
    tree union vm vtop waitq whatis wr
""".split())

_HELP_EPYTHON = ("epython", "invokes embedded Python interpreter",
                 "program.py arg ...",
                 "  This command invokes embedded Python.\n"
                 "\nEXAMPLE\n"
                 "  Output help information for 'xportshow' tool:\n\n"
                 "    crash> epython xportshow.py --help")


# --------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------
class StandinStats(collections.Counter):
    """Counter of calls; see the module docstring."""

    MEM_FUNCS = ("readmem", "readPtr", "readInt", "getListSize",
                 "getFullBuckets")

    def __init__(self) -> None:
        super().__init__()
        self.trace = False
        self.log: list = []

    @property
    def mem_calls(self) -> int:
        return self["mem_calls"]

    def reset(self) -> None:
        self.clear()
        self.log = []

    def _mem(self, func: str, addr: int, size: int) -> None:
        self[func] += 1
        self["mem_calls"] += 1
        if self.trace:
            self.log.append((func, addr, size))


standin_stats = StandinStats()


def _count(name: str) -> None:
    standin_stats[name] += 1


# --------------------------------------------------------------------------
# Session state
# --------------------------------------------------------------------------
class _State:
    def __init__(self) -> None:
        self.prog = None
        self.vmlinux = None
        self.vmcore = None
        self.ext_filename = "mpykdump.so"
        self.pykdumppath: list = []
        self.progs_dir = None
        self.registered: dict = {}       # name -> (short, synopsis, help)
        self.commands: dict = {}         # name -> func(line) (test-defined)
        self.aliases: dict = {}          # crash's runtime aliases
        self.sys_output = None
        self.types: dict = {}
        self.pending = ""                # written but not flushed (Python buffer)
        self.shown: list = []            # what reached crash's terminal
        self.run_depth = 0
        self.hooks = None                # (enter, exit) set by pykdump.API
        self.entered = False             # enter hook ran for the current run
        self.last_output = ""
        # crashsim.py: crash's terminal is this real file descriptor (fp):
        # C output goes straight to it (fprintf + fflush), Python output
        # through a new buffered file object per epython run.
        self.fd = None


_st = _State()


def standin_open(vmlinux=None, vmcore=None, *, pykdumppath=None,
                 progs_dir=None, ext_filename="mpykdump.so"):
    """Open ``vmcore`` with ``vmlinux`` (default: the CRASHEXT_STANDIN_*
    environment variables) and start a fresh crash session.

    ``pykdumppath``: list of directories (or a colon-separated string) used
    like the PYKDUMPPATH environment variable, which is otherwise read here,
    once, as the real extension reads it when it loads.  ``progs_dir``
    plays the extension's built-in ``progs/``.  Returns the drgn Program.
    """
    if drgn is None:
        raise RuntimeError("pykdump stand-in: drgn is not installed")
    vmlinux = vmlinux or os.environ.get("CRASHEXT_STANDIN_VMLINUX")
    vmcore = vmcore or os.environ.get("CRASHEXT_STANDIN_VMCORE")
    if not vmlinux or not vmcore:
        raise RuntimeError(
            "pykdump stand-in: no dump configured; call "
            "crash.standin_open(vmlinux, vmcore) or set "
            "CRASHEXT_STANDIN_VMLINUX and CRASHEXT_STANDIN_VMCORE")
    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    prog.load_debug_info([vmlinux])
    standin_close()
    _st.prog = prog
    _st.vmlinux = os.path.abspath(vmlinux)
    _st.vmcore = os.path.abspath(vmcore)
    _st.ext_filename = ext_filename
    if pykdumppath is None:
        pykdumppath = os.environ.get("PYKDUMPPATH", "")
    if isinstance(pykdumppath, str):
        pykdumppath = [d for d in pykdumppath.split(":") if d]
    _st.pykdumppath = [os.fspath(d) for d in pykdumppath]
    _st.progs_dir = progs_dir
    standin_reset()
    return prog


def standin_reset(pykdumppath=None, progs_dir=None) -> None:
    """A fresh crash session on the open dump: no registrations, no pending
    output, zeroed stats; ``pykdumppath`` / ``progs_dir`` (when given)
    replace the PYKDUMPPATH directories / built-in progs dir, as if crash
    had been restarted with them.  (pykdump.API's hooks stay: the module
    stays imported, as in a real embedded interpreter.)"""
    if pykdumppath is not None:
        if isinstance(pykdumppath, str):
            pykdumppath = [d for d in pykdumppath.split(":") if d]
        _st.pykdumppath = [os.fspath(d) for d in pykdumppath]
    if progs_dir is not None:
        _st.progs_dir = os.fspath(progs_dir)
    _st.registered = {}
    _st.commands = {}
    _st.aliases = {}
    _st.pending = ""
    _st.shown = []
    _st.last_output = ""
    standin_stats.reset()


def standin_close() -> None:
    """Forget the dump (the next use reopens from the environment)."""
    _st.prog = None
    _st.vmlinux = _st.vmcore = None
    _st.sys_output = None
    _st.types = {}
    api = sys.modules.get("pykdump.API")
    if api is not None:               # caches of drgn types / values
        api._standin_forget()


def standin_is_open() -> bool:
    return _st.prog is not None


def standin_program():
    """The drgn Program behind the stand-in (opened from the environment on
    first use)."""
    if _st.prog is None:
        standin_open()
    return _st.prog


def standin_registrations() -> dict:
    """{name: (short_desc, synopsis, help)} of register_epython_prog()."""
    return dict(_st.registered)


def standin_define_command(name: str, func) -> None:
    """Emulate crash command ``name`` for this session: ``func(line)``
    returns its output, or raises crash.error(message) to fail as crash
    does.  (Takes precedence over the built-in emulations.)"""
    _st.commands[name] = func


def standin_pending_output() -> str:
    """Output written by scripts but not flushed yet."""
    return _st.pending


# --------------------------------------------------------------------------
# drgn helpers shared with pykdump/API.py (private to the stand-in)
# --------------------------------------------------------------------------
def _standin_type(name):
    """drgn Type for a C type name ('struct xa_node', 'unsigned long'), or
    None.  Like gdb in C mode, a bare struct tag ('xa_node') is unknown."""
    if not isinstance(name, str):
        return None
    cache = _st.types
    prog = standin_program()
    if name not in cache:
        try:
            cache[name] = prog.type(name)
        except Exception:
            cache[name] = None
    return cache[name]


def _strip_type(t):
    while True:
        t = t.unqualified()
        if t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type
            continue
        return t


def _is_su(t) -> bool:
    return _strip_type(t).kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION,
                                   drgn.TypeKind.CLASS)


def _standin_member(sname, path):
    """(bit_offset, member TypeMember) for a dotted member path, or None.
    Intermediate members must be structs/unions (not pointers), as in
    PyKdump's member_offset(); members of anonymous structs/unions are
    found by name.  Array subscripts are not accepted."""
    t = _standin_type(sname)
    if t is None or not isinstance(path, str) or not path:
        return None
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    bits = 0
    cur = t
    member = None
    for p in parts:
        if not _is_su(cur):
            return None
        try:
            member = _strip_type(cur).member(p)
        except (LookupError, ValueError, TypeError):
            return None
        bits += member.bit_offset
        cur = member.type
    return bits, member


def _sizeof(t):
    try:
        return drgn.sizeof(t)
    except Exception:
        return -1


# --------------------------------------------------------------------------
# Types and symbols (C-level versions)
# --------------------------------------------------------------------------
def struct_size(name):
    """sizeof(type) or -1 (works for any type name, as in PyKdump)."""
    _count("struct_size")
    if not isinstance(name, str):
        raise error("invalid parameter type")
    t = _standin_type(name)
    return -1 if t is None else _sizeof(t)


def union_size(name):
    _count("union_size")
    if not isinstance(name, str):
        raise error("invalid parameter type")
    t = _standin_type(name)
    return -1 if t is None else _sizeof(t)


def member_offset(sname, member):
    """Byte offset of ``member`` (dotted path allowed) or -1."""
    _count("member_offset")
    if not isinstance(sname, str) or not isinstance(member, str):
        raise error("invalid parameter(s) type")
    m = _standin_member(sname, member)
    return -1 if m is None else m[0] // 8


def member_size(sname, member):
    """sizeof(member) (whole array for arrays) or -1."""
    _count("member_size")
    if not isinstance(sname, str) or not isinstance(member, str):
        raise error("invalid parameter(s) type")
    m = _standin_member(sname, member)
    return -1 if m is None else _sizeof(m[1].type)


def enumerator_value(name):
    """Value of enumerator ``name``; None for unknown names and #defines."""
    _count("enumerator_value")
    if not isinstance(name, str):
        raise error("invalid parameter type")
    try:
        return int(standin_program().constant(name).value_())
    except (LookupError, ValueError):
        return None


def symbol_exists(name):
    _count("symbol_exists")
    if not isinstance(name, str):
        raise error("invalid parameter type")
    try:
        standin_program().symbol(name)
        return 1
    except LookupError:
        return 0


def sym2addr(name):
    """Address of symbol ``name``; 0 when unknown (no exception)."""
    _count("sym2addr")
    if not isinstance(name, str):
        raise error("invalid parameter type")
    try:
        return standin_program().symbol(name).address & _U64
    except LookupError:
        return 0


def sym2alladdr(name):
    _count("sym2alladdr")
    a = sym2addr(name)
    return [a] if a else []


def addr2sym(addr, loose_match=False):
    """Exact match -> name, else None.  ``loose_match``: (name, offset) or
    (None, None)."""
    _count("addr2sym")
    if not isinstance(addr, int):
        raise error("invalid parameter type")
    try:
        s = standin_program().symbol(addr)
    except (LookupError, ValueError, OverflowError):
        s = None
    if loose_match:
        if s is None:
            return (None, None)
        return (s.name, addr - s.address)
    if s is not None and s.address == addr:
        return s.name
    return None


def addr2mod(addr):
    _count("addr2mod")
    return None          # modules are not loaded in the stand-in


# --------------------------------------------------------------------------
# Reading memory
# --------------------------------------------------------------------------
def _as_u64(addr) -> int:
    if not isinstance(addr, int):
        raise TypeError("an integer is required")
    if addr < 0 or addr > _U64:
        # PyLong_AsUnsignedLongLong
        raise OverflowError("int too big to convert" if addr > 0 else
                            "can't convert negative int to unsigned")
    return int(addr)


def _raw_read(addr: int, size: int, mtype: int):
    """bytes, or None when crash's readmem() would fail."""
    if size < 0:
        return None
    if size == 0:
        return b""
    if addr + size - 1 > _U64:
        return None
    prog = standin_program()
    if mtype == KVADDR:
        if addr < _KVADDR_MIN:
            return None
        physical = False
    elif mtype == PHYSADDR:
        physical = True
    else:                       # UVADDR: no task context in the stand-in
        return None
    try:
        data = prog.read(addr, size, physical)
    except Exception:
        return None
    standin_stats["bytes_read"] += size
    return data


def readmem(addr, size, mtype=KVADDR):
    """``size`` bytes at ``addr``.  Address 0 -> IndexError('readPtr NULL
    pointer'); unreadable -> crash.error('readmem error at addr 0x..,
    reading N bytes')."""
    addr = _as_u64(addr)
    size = int(size)
    standin_stats._mem("readmem", addr, size)
    if not addr:
        raise IndexError("readPtr NULL pointer")
    data = _raw_read(addr, size, mtype)
    if data is None:
        standin_stats["read_errors"] += 1
        raise error("readmem error at addr 0x%x, reading %d bytes"
                    % (addr, size))
    return data


def readPtr(addr, mtype=KVADDR):
    """Pointer at ``addr``.  0 -> IndexError('readPtr NULL pointer');
    unreadable -> crash.error('readmem error at addr 0x..')."""
    addr = _as_u64(addr)
    standin_stats._mem("readPtr", addr, 8)
    if not addr:
        raise IndexError("readPtr NULL pointer")
    data = _raw_read(addr, 8, mtype)
    if data is None:
        standin_stats["read_errors"] += 1
        raise error("readmem error at addr 0x%x" % addr)
    return int.from_bytes(data, "little")


def _conv(data: bytes, signed) -> int:
    if len(data) not in (1, 2, 4, 8):
        raise error("bad size")
    return int.from_bytes(data, "little", signed=bool(signed))


def readInt(addr, size, signedvar=False, mtype=KVADDR):
    """Integer of ``size`` bytes (no NULL check: address 0 fails in
    readmem with crash.error, as in the C module)."""
    addr = _as_u64(addr)
    size = int(size)
    standin_stats._mem("readInt", addr, size)
    if size > 32:
        raise error("readInt cannot read reading %d bytes" % size)
    data = _raw_read(addr, size, mtype)
    if data is None:
        standin_stats["read_errors"] += 1
        raise error("readmem/py_readInt error at addr 0x%x, reading %d bytes"
                    % (addr, size))
    return _conv(data, signedvar)


def mem2long(source, signed=False, array=0):
    """Bytes -> int (or list of ``array`` ints), as the C module does."""
    _count("mem2long")
    if not isinstance(source, (bytes, bytearray)):
        raise TypeError("a bytes-like object is required")
    size = len(source)
    if array <= 1:
        return _conv(bytes(source), signed)
    sz1 = size // array
    if sz1 * array != size:
        raise error("bad size")
    return [_conv(bytes(source[i * sz1:(i + 1) * sz1]), signed)
            for i in range(array)]


def getListSize(addr, offset, maxel):
    """Number of list elements after ``addr`` following next at ``offset``."""
    standin_stats._mem("getListSize", addr, 0)
    count = 0
    ptr = addr
    while ptr and count < maxel:
        data = _raw_read(ptr + offset, 8, KVADDR)
        if data is None:
            raise error("readmem error at addr 0x%x" % addr)
        nxt = int.from_bytes(data, "little")
        if nxt == addr:
            break
        ptr = nxt
        count += 1
    return count


def getFullBuckets(start, bsize, items, chain_off):
    standin_stats._mem("getFullBuckets", start, bsize * items)
    data = _raw_read(start, bsize * items, KVADDR)
    if data is None:
        raise error("readmem error at addr 0x%x" % start)
    out = []
    for i in range(items):
        o = i * bsize + chain_off
        b = int.from_bytes(data[o:o + 8], "little")
        if b:
            out.append(b)
    return out


def set_readmem_task(taskaddr):
    _count("set_readmem_task")
    if taskaddr:
        raise StandinUnsupported("set_readmem_task(task): no task contexts")
    return None


def sLong(i):
    i &= _U64
    return i - (1 << 64) if i >> 63 else i


def le32_to_cpu(v):
    return v & 0xFFFFFFFF


def le16_to_cpu(v):
    return v & 0xFFFF


def cpu_to_le32(v):
    return v & 0xFFFFFFFF


def PAGEOFFSET(vaddr):
    return vaddr & (PAGESIZE - 1)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------
def _sys_output() -> str:
    if _st.sys_output is not None:
        return _st.sys_output
    prog = standin_program()
    rows = [("KERNEL", _st.vmlinux), ("DUMPFILE", _st.vmcore)]

    def add(key, fn):
        try:
            rows.append((key, fn()))
        except Exception:
            pass

    uts = prog["init_uts_ns"].name
    add("CPUS", lambda: "%d" % prog["__num_online_cpus"].counter.value_())

    def date():
        secs = prog["tk_core"].timekeeper.xtime_sec.value_()
        return time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(secs))
    add("DATE", date)

    def uptime():
        s = prog["tk_core"].timekeeper.ktime_sec.value_()
        return "%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)
    add("UPTIME", uptime)

    def loadavg():
        parts = []
        for v in prog["avenrun"].value_():
            v += 1 << 4                       # FIXED_1/200 rounding
            parts.append("%d.%02d" % (v >> 11, ((v & 2047) * 100) >> 11))
        return ", ".join(parts)
    add("LOAD AVERAGE", loadavg)
    add("TASKS", lambda: "%d" % prog["nr_threads"].value_())
    add("NODENAME", lambda: uts.nodename.string_().decode())
    add("RELEASE", lambda: uts.release.string_().decode())
    add("VERSION", lambda: uts.version.string_().decode())
    add("MACHINE", lambda: "%s  (unknown Mhz)" % uts.machine.string_().decode())

    def memory():
        b = prog["max_pfn"].value_() * PAGESIZE
        gb = b / (1 << 30)
        return "%d GB" % round(gb) if gb >= 1 else "%d MB" % (b >> 20)
    add("MEMORY", memory)
    rows.append(("PANIC", '""'))
    _st.sys_output = "".join("%12s: %s\n" % r for r in rows)
    return _st.sys_output


def _help_output(name: str) -> str:
    if name == "epython":
        h = _HELP_EPYTHON
    else:
        h = (name,) + _st.registered[name]
    _, short, synopsis, text = h
    body = "\n".join(text.splitlines())
    return ("\nNAME\n  %s - %s\n\nSYNOPSIS\n  %s %s\n\nDESCRIPTION\n%s\n\n"
            % (name, short, name, synopsis, body))


def _is_epython_cmd(name: str) -> bool:
    return name == "epython" or name in _st.registered


def _crash_command(line: str) -> str:
    try:
        argv = shlex.split(line)
    except ValueError:
        argv = line.split()
    if not argv:
        return ""
    name = argv[0]
    if _is_epython_cmd(name):
        # Real PyKdump: the calling script silently stops.
        raise _StopScript(line)
    if name in _st.commands:
        return _st.commands[name](line)
    if name == "alias":
        return _alias(argv[1:])
    if name == "sys" and len(argv) == 1:
        return _sys_output()
    if name == "help" and len(argv) == 2 and _is_epython_cmd(argv[1]):
        return _help_output(argv[1])
    if name in CRASH_BUILTINS:
        raise StandinUnsupported(
            "crash command %r is not emulated by the pykdump stand-in" % line)
    return "crash: command not found: %s\n" % name


def _alias(argv) -> str:
    """crash's ``alias [NAME [COMMAND...]]`` (runtime aliases): an alias
    named like a command is refused; the listing is crash's."""
    head = "ORIGIN   ALIAS    COMMAND\n"
    if not argv:
        return head + "".join("runtime  %-8s %s\n" % kv
                              for kv in _st.aliases.items())
    name = argv[0]
    if len(argv) == 1:
        if name not in _st.aliases:
            raise error("alias: %s: alias does not exist\n" % name)
        return head + "runtime  %-8s %s\n" % (name, _st.aliases[name])
    if name in CRASH_BUILTINS or _is_epython_cmd(name) \
            or name in _st.commands:
        raise error("alias: cannot alias existing command name: %s\n"
                    % name)
    _st.aliases[name] = " ".join(argv[1:])
    return head + "runtime  %-8s %s\n" % (name, _st.aliases[name])


def exec_crash_command(cmd, timeout=None):
    """Output of crash command ``cmd``.  An unknown command returns
    'crash: command not found: NAME'; a failing command (or one with no
    output) raises crash.error; an epython command stops the caller."""
    _count("exec_crash_command")
    if not isinstance(cmd, str):
        raise error("invalid parameter type")
    words = cmd.split()
    if words:
        _count("exec_crash_command:" + words[0])
    out = _crash_command(cmd)
    if not out:
        raise error(out)
    return out


def get_GDB_output(cmd):
    raise StandinUnsupported("gdb commands are not emulated")


# --------------------------------------------------------------------------
# epython commands
# --------------------------------------------------------------------------
def register_epython_prog(*args):
    """register_epython_prog(name, short_desc, synopsis, help) -> True, or
    False (with crash's INFO message) when ``name`` is already a command:
    a crash built-in, 'epython', or an epython command registered before
    (so registering the same name twice gives False, as in the C code)."""
    _count("register_epython_prog")
    if len(args) != 4 or not all(isinstance(a, str) for a in args):
        raise error("invalid parameter(s) type")
    name = args[0]
    if name in CRASH_BUILTINS or name in _st.commands or _is_epython_cmd(name):
        print('%s: "%s" is a duplicate of a currently-existing command'
              % (_st.ext_filename, name))
        return False
    _st.registered[name] = tuple(args[1:])
    if name in _st.aliases:
        # crash 8.0.2 (checked in test_real_crash_alias_and_registration)
        del _st.aliases[name]
        _show_direct('alias "%s" deleted: name clash with extension '
                     'command\n' % name)
    return True


def get_epython_cmds():
    return ["epython"] + list(_st.registered)


def _find_pyprog(prog: str):
    """PyKdump's find_pyprog(): '/path' as is; else ./NAME, ./NAME.py, then
    each PYKDUMPPATH dir (NAME, NAME.py), then the built-in progs dir."""
    if prog.startswith("/"):
        return prog
    dirs = ["."] + list(_st.pykdumppath)
    if _st.progs_dir:
        dirs.append(_st.progs_dir)
    for d in dirs:
        for cand in (os.path.join(d, prog), os.path.join(d, prog + ".py")):
            if os.path.isfile(cand):
                return cand
    return None


class _CrashFile:
    """sys.stdout/sys.stderr during an epython run: buffered; flush() shows
    the text on crash's terminal."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s"
                            % type(s).__name__)
        _st.pending += s
        return len(s)

    def writelines(self, lines):
        for s in lines:
            self.write(s)

    def flush(self):
        if _st.pending:
            _st.shown.append(_st.pending)
            _st.pending = ""

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("the stand-in's crash output has no file descriptor")

    def reconfigure(self, **kw):
        pass

    def writable(self):
        return True


def _show_direct(text: str) -> None:
    """fprintf(fp, ...) + fflush(fp) in C: bypasses the Python buffer."""
    if _st.fd is not None:
        os.write(_st.fd, text.encode("utf-8", "replace"))
        return
    _st.shown.append(text)


def standin_use_fd(fd: int) -> None:
    """Make ``fd`` crash's terminal (``fp``), as crashsim.py does: C-level
    lines are written to it at once, and every top-level epython run gets
    a new Python file object on it, as PyKdump's connect2fp() does
    (``PyFile_FromFd(fileno(fp), "<crash fp>", "w", -1, ..., closefd=0)``:
    line-buffered on a terminal, block-buffered on a file or pipe).  The
    object stays sys.stdout/sys.stderr after the run until the next run
    replaces it, so output a script did not flush is written only when
    that object is released."""
    _st.fd = fd


def _crash_fp():
    if _st.fd is None:
        return _CrashFile()
    return io.open(_st.fd, "w", -1, None, None, None, False)


def _execute_prog(argv) -> None:
    """epython_execute_prog(): run the script argv[0] with argv[1:]."""
    prog = argv[0]
    path = _find_pyprog(prog)
    if path is None:
        _show_direct(" Cannot find the program <%s>\n" % prog)
        return
    if not os.path.isfile(path):
        _show_direct(" Cannot open the file <%s>\n" % path)
        return
    path = os.path.abspath(path)
    stream = _crash_fp()
    saved = (sys.stdout, sys.stderr, sys.argv, list(sys.path), _st.entered)
    # PYKDUMPPATH directories are on the embedded interpreter's sys.path.
    for d in reversed(_st.pykdumppath):
        if d not in sys.path:
            sys.path.insert(0, d)
    sys.stdout = sys.stderr = stream
    sys.argv = [path] + [str(a) for a in argv[1:]]
    _st.run_depth += 1
    _st.entered = False
    try:
        if _st.hooks is not None:
            _call_enter_hook()
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code
            if isinstance(code, int) and code > 0:
                _show_direct(" -- sys.exit(%d) --\n" % code)
        except _StopScript:
            pass
        except Exception:
            traceback.print_exc(file=stream)
        if _st.hooks is not None:
            try:
                _st.hooks[1]()
            except Exception:
                stream.write("Error in sys.exitepython:\n")
                traceback.print_exc(file=stream)
    finally:
        _st.run_depth -= 1
        if _st.fd is not None:
            # PyKdump leaves sys.stdout (its crash fp object, or the
            # --ofile file) in place; the next run's connect2fp()
            # replaces it (a nested run, exec_epython_command(), too: the
            # calling script then writes to the nested run's object).
            # sys.path is reset (Py_SetPath(wstdpath)).
            _, _, sys.argv, sys.path[:], _st.entered = saved
        else:
            out = sys.stdout
            if out is not stream and hasattr(out, "close") \
                    and not out.closed:
                out.close()              # --ofile FILE
            sys.stdout, sys.stderr, sys.argv, sys.path[:], _st.entered = \
                saved


def _call_enter_hook() -> None:
    """call_sys_enterepython(): an exception is printed and the script runs
    anyway (with sys.argv unstripped); SystemExit (optparse rejecting a
    reserved option's value) goes to PyErr_Print(), which exits crash:
    StandinCrashExit."""
    _st.entered = True
    try:
        _st.hooks[0]()
    except SystemExit as e:
        sys.stdout.flush()
        raise StandinCrashExit(e.code)
    except Exception:
        sys.stderr.write("Error in sys.enterepython:\n")
        traceback.print_exc(file=sys.stderr)


def _top_level(fn, *a) -> str:
    """Run ``fn`` as one crash command and return what crash shows."""
    if _st.run_depth or _st.fd is not None:
        fn(*a)            # (with a real fd, crash's output is on it)
        return ""
    # PyKdump's connect2fp() replaces sys.stdout: the old object's unflushed
    # buffer is written when it is released, i.e. now.
    start = len(_st.shown)
    if _st.pending:
        _st.shown.append(_st.pending)
        _st.pending = ""
    try:
        fn(*a)
    except StandinCrashExit as e:
        e.output = "".join(_st.shown[start:])
        raise
    finally:
        out = "".join(_st.shown[start:])
        del _st.shown[start:]
        _st.last_output = out
    return out


def exec_epython_command(*argv):
    """crash.exec_epython_command('NAME', 'arg', ...): run epython command
    NAME (the script NAME / NAME.py found as crash finds it).  Returns None;
    output goes to crash's terminal (outside a stand-in run: printed to the
    real stdout and kept in ``standin_last_output()``)."""
    _count("exec_epython_command")
    if not argv or not all(isinstance(a, str) for a in argv):
        raise error("invalid parameter type")
    if argv[0] == "epython":
        argv = argv[1:]
        if not argv:
            return None
    if _st.run_depth:
        _execute_prog(list(argv))
    else:
        out = _top_level(_execute_prog, list(argv))
        sys.stdout.write(out)
    return None


def standin_last_output() -> str:
    return _st.last_output


def standin_epython(script, *args) -> str:
    """``crash> epython SCRIPT ARGS``: returns crash's output of the run."""
    return _top_level(_execute_prog, [os.fspath(script)] + [str(a) for a in args])


def standin_command(line: str) -> str:
    """Type ``line`` at the crash prompt; returns what crash shows."""
    try:
        argv = shlex.split(line)
    except ValueError:
        argv = line.split()
    if not argv:
        return ""
    if argv[0] == "epython":
        if len(argv) == 1:
            return (" You need to specify a program file or options\n"
                    "Check 'epython -h' for details\n")
        return _top_level(_execute_prog, argv[1:])
    if argv[0] in _st.registered:
        return _top_level(_execute_prog, argv)
    if argv[0] in _st.aliases and argv[0] not in _st.commands:
        rest = line.strip()[len(argv[0]):]
        return standin_command(_st.aliases[argv[0]] + rest)
    try:
        return exec_crash_command(line)
    except error as e:
        return str(e)


# --------------------------------------------------------------------------
# Reserved epython options (pykdump.API __epythonOptions/__preprocess)
# --------------------------------------------------------------------------
def _api_option_parser():
    op = optparse.OptionParser(add_help_option=False, option_class=optparse.Option)
    op.add_option("--experimental", dest="experimental", default=0,
                  action="store_true")
    op.add_option("--debug", dest="debug", default=-1, action="store",
                  type="int")
    op.add_option("--timeout", dest="timeout", default=120, action="store",
                  type="int")
    op.add_option("--maxel", dest="Maxel", default=10000, action="store",
                  type="int")
    op.add_option("--usens", dest="usens", action="store", type="int")
    op.add_option("--reload", dest="reload", default=0, action="store_true")
    op.add_option("--dumpcache", dest="dumpcache", default=0,
                  action="store_true")
    op.add_option("--ofile", dest="filename", metavar="FILE")
    op.add_option("--ehelp", default=0, dest="ehelp", action="store_true")
    return op


def standin_strip_argv(argv):
    """(stripped_argv, options) as PyKdump computes them before a script
    sees sys.argv: every element that is exactly one of the reserved long
    options (``--opt`` or ``--opt=value``) is removed, with the next
    element when the option takes a value and has no '='.  Everything
    else (short options, abbreviations, '--', positionals) is kept in
    order.  A bad value (``--debug x``) makes optparse exit (SystemExit 2);
    a value-taking option at the end raises IndexError, as in PyKdump.
    ``options`` is a dict: experimental, debug, timeout, Maxel, usens,
    reload, dumpcache, filename, ehelp."""
    argv = list(argv)
    op = _api_option_parser()
    iargv = argv[1:]
    aargv, uargv = [], []
    while iargv:
        el = iargv.pop(0)
        if el and (el[:2] == "--" or el[0] == "-"):
            opt = op.get_option(el.split("=")[0])
            if opt:
                aargv.append(el)
                if el.find("=") == -1 and opt.nargs:
                    aargv.append(iargv.pop(0))
            else:
                uargv.append(el)
        else:
            uargv.append(el)
    opts, _ = op.parse_args(aargv)
    return argv[:1] + uargv, dict(vars(opts))


def _standin_set_hooks(enter, exit_) -> None:
    """Called by pykdump.API on import (sys.enterepython/sys.exitepython)."""
    _st.hooks = (enter, exit_)


def _standin_in_run_needing_enter() -> bool:
    return _st.run_depth > 0 and not _st.entered


def _standin_mark_entered() -> None:
    _st.entered = True
