"""Stand-in for ``pykdump.API`` (test code; the C side is ../crash.py).

``from pykdump.API import *`` gives the names PyKdump programs use, with
PyKdump's semantics (see /work/shared/pykdump-api.md and PyKdump's
``pykdump/highlevel.py`` / ``lowlevel.py``):

* readU8/U16/U32/U64/S32/S64 = ``readmem`` + ``mem2long`` (so they fail
  like readmem: IndexError('readPtr NULL pointer') at 0, crash.error
  'readmem error at addr 0x.., reading N bytes' otherwise); ``readInt`` is
  readS32 here (``crash.readInt(addr, size, signed)`` is the C one);
* struct_size / getSizeOf / union_size: any type name, -1 unknown;
  member_offset: dotted paths, -1 unknown; member_size: one level only
  (PyKdump looks the name up without splitting dots), -1 unknown;
  struct_exists: bool; symbol_exists: 1/0 (cached); enumerator_value:
  int or None;
* readSU('struct T', addr) -> StructResult (int subclass, lazy members:
  unknown member KeyError '<struct T> does not have a field <x>', unknown
  struct TypeError, bad address crash.error on member access);
  readSymbol(name) -> value, unknown TypeError("There's no symbol <name>");
* importing the module inside a stand-in epython run strips the reserved
  options from sys.argv (as the real first import does); later runs do it
  through the enter hook, and the exit hook prints the ' ** Execution
  took' line and flushes stdout.  Importing it outside a run (e.g. from a
  test) leaves sys.argv alone.

Simplified: pointers are ``tPtr`` ints with ``.Deref``; char arrays are
``SmartString`` (str); other arrays lists (read in one readmem);
no whatis/gdb typeinfo, ListHead, percpu, namespaces (--usens only prints
the banner), no sys_info-based banner when stdout is a file.
"""

import os
import stat
import sys
import time

import crash
import pykdump
from crash import (readmem, readPtr, mem2long, sym2addr, sym2alladdr,
                   addr2sym, addr2mod, enumerator_value, exec_crash_command,
                   set_readmem_task, sLong, le32_to_cpu, le16_to_cpu,
                   cpu_to_le32, getListSize, getFullBuckets)

WARNING = "+++WARNING+++"
ERROR = "+++ERROR+++"
INFO = "...INFO..."

debug = 0
long = int
_MAXEL = 10000

HZ = crash.HZ
PAGESIZE = crash.PAGESIZE
PAGE_CACHE_SHIFT = crash.PAGE_CACHE_SHIFT


class Bunch(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value


class _SysInfo(Bunch):
    """sys_info: the parsed output of crash's ``sys`` (filled when the API
    is imported with a dump open, else on first use)."""

    def _fill(self):
        if dict.get(self, "_filled"):
            return
        dict.__setitem__(self, "_filled", True)
        _doSys()

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def __getattr__(self, name):
        self._fill()
        return Bunch.__getattr__(self, name)

    def get(self, key, default=None):
        self._fill()
        return dict.get(self, key, default)


sys_info = _SysInfo()
API_options = Bunch(debug=0, experimental=0, dumpcache=0)


def _doSys():
    key = "UNKNOWN"
    for il in exec_crash_command("sys").splitlines():
        spl = il.split(":", 1)
        if len(spl) == 2:
            key = spl[0].strip()
            dict.__setitem__(sys_info, key, spl[1].strip())
        elif key in sys_info:
            dict.__setitem__(sys_info, key,
                             dict.__getitem__(sys_info, key) + "|" + il.strip())


class PyLog:
    def warning(self, *args, **kwargs):
        print(WARNING, *args, **kwargs)

    def error(self, *args, **kwargs):
        print(ERROR, *args, **kwargs)

    def info(self, *args, **kwargs):
        pass

    def timeout(self, msg):
        print(WARNING, msg)


pylog = PyLog()

# --------------------------------------------------------------------------
# Integer readers (readmem + mem2long, as in pykdump/highlevel.py)
# --------------------------------------------------------------------------
pointersize = PTR_SIZE = 8
INT_SIZE = 4
LONG_SIZE = 8
INT_MASK = 0xFFFFFFFF
LONG_MASK = 0xFFFFFFFFFFFFFFFF
BITS_PER_INT = 32
BITS_PER_LONG = 64
INT_MAX = ~0 & (INT_MASK) >> 1
LONG_MAX = ~0 & (LONG_MASK) >> 1


def unsigned16(v):
    return v & 0xFFFF


def unsigned32(v):
    return v & 0xFFFFFFFF


def unsigned64(v):
    return v & 0xFFFFFFFFFFFFFFFF


uInt = unsigned32
uLong = unsigned64


def readU8(addr):
    return mem2long(readmem(addr, 1))


def readU16(addr):
    return mem2long(readmem(addr, 2))


def readU32(addr):
    return mem2long(readmem(addr, 4))


def readS32(addr):
    return mem2long(readmem(addr, 4), signed=True)


def readU64(addr):
    return mem2long(readmem(addr, 8))


def readS64(addr):
    return mem2long(readmem(addr, 8), signed=True)


readInt = readS32
readUInt = readU32
readLong = readS64
readULong = readU64


def ALIGN(addr, align):
    return (int(addr) + align - 1) & (~(align - 1))


# --------------------------------------------------------------------------
# Type info
# --------------------------------------------------------------------------
def struct_size(sname):
    t = crash._standin_type(sname)
    if t is None:
        return -1
    return crash._sizeof(t)


union_size = struct_size


def getSizeOf(vtype):
    return struct_size(vtype)


def struct_exists(sname):
    return struct_size(sname) != -1


def member_offset(sname, fname):
    m = crash._standin_member(sname, fname)
    return -1 if m is None else m[0] // 8


def member_size(sname, fname):
    # PyKdump: getStructInfo(sname)[fname] -- no dotted paths.
    if not isinstance(fname, str) or "." in fname:
        return -1
    m = crash._standin_member(sname, fname)
    return -1 if m is None else crash._sizeof(m[1].type)


_symbol_exists_cache = {}


def symbol_exists(sym):
    try:
        return _symbol_exists_cache[sym]
    except KeyError:
        rc = crash.symbol_exists(sym)
        _symbol_exists_cache[sym] = rc
        return rc


# --------------------------------------------------------------------------
# Values: StructResult, tPtr, SmartString and type-driven readers
# --------------------------------------------------------------------------
def _kinds():
    # drgn lives behind the C module (the real API has no drgn to import).
    return crash.drgn.TypeKind, crash.drgn.PrimitiveType


class SmartString(str):
    pass


class tPtr(int):
    """A pointer value; ``.ptype`` is the target type name, ``.Deref``
    the object it points to."""

    def __new__(cls, value, target):
        o = int.__new__(cls, value)
        o._target = target
        return o

    @property
    def ptype(self):
        return self._target.type_name()

    def getDeref(self):
        if crash._is_su(self._target):
            return StructResult._from_type(self._target, int(self))
        return _type_reader(self._target)(int(self))

    Deref = property(getDeref)

    def __repr__(self):
        return "<tPtr %s * 0x%x>" % (self.ptype, int(self))


def _type_reader(t):
    """addr -> value reader for drgn type ``t``."""
    TypeKind, PrimitiveType = _kinds()
    u = crash._strip_type(t)
    k = u.kind
    if k in (TypeKind.INT, TypeKind.BOOL):
        size, signed = u.size, bool(getattr(u, "is_signed", False))
        return lambda a: crash.readInt(a, size, signed)
    if k == TypeKind.ENUM:
        size = u.size
        signed = bool(u.type is not None and u.type.is_signed)
        return lambda a: crash.readInt(a, size, signed)
    if k == TypeKind.POINTER:
        target = u.type
        return lambda a: tPtr(readPtr(a), target)
    if k in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.CLASS):
        return lambda a: StructResult._from_type(u, a)
    if k == TypeKind.FUNCTION:
        return lambda a: a
    if k == TypeKind.ARRAY:
        n = u.length or 0
        et = crash._strip_type(u.type)
        esz = crash._sizeof(et)
        if n == 0 or esz <= 0:
            return lambda a: []
        if et.kind == TypeKind.INT and et.primitive == PrimitiveType.C_CHAR:
            def rstr(a):
                s = readmem(a, n)
                return SmartString(s.split(b"\0", 1)[0].decode("utf-8", "replace"))
            return rstr
        if et.kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.ENUM,
                       TypeKind.POINTER):
            if et.kind == TypeKind.ENUM:
                signed = bool(et.type is not None and et.type.is_signed)
            else:
                signed = bool(getattr(et, "is_signed", False))
            ptr = et.kind == TypeKind.POINTER

            def rarr(a):
                data = readmem(a, n * esz)
                vals = [int.from_bytes(data[i * esz:(i + 1) * esz], "little",
                                       signed=signed) for i in range(n)]
                if ptr:
                    return [tPtr(v, et.type) for v in vals]
                return vals
            return rarr
        sub = _type_reader(et)
        return lambda a: [sub(a + i * esz) for i in range(n)]
    raise TypeError("stand-in cannot read values of type %s" % t.type_name())


def _member_reader(t, name):
    try:
        m = crash._strip_type(t).member(name)
    except (LookupError, ValueError, TypeError):
        return None
    off = m.bit_offset
    bits = m.bit_field_size
    if bits:
        first, shift = off // 8, off % 8
        nbytes = (shift + bits + 7) // 8
        u = crash._strip_type(m.type)
        signed = bool(getattr(u, "is_signed", False))

        def rbits(a):
            v = int.from_bytes(readmem(a + first, nbytes), "little")
            v = (v >> shift) & ((1 << bits) - 1)
            if signed and v >> (bits - 1):
                v -= 1 << bits
            return v
        return rbits
    boff = off // 8
    try:
        r = _type_reader(m.type)
    except TypeError as e:
        def fail(a, e=e):
            raise e
        return fail
    return lambda a: r(a + boff)


_su_classes = {}


class StructResult(int):
    """readSU() result: the address as an int, members read on access."""

    PYT_symbol = None
    PYT_size = 0
    PYT_type = None
    PYT_attrcache = {}

    def __new__(cls, sname, addr=0):
        if cls is StructResult:
            cls = _su_class(sname)
        return int.__new__(cls, addr)

    @classmethod
    def _from_type(cls, t, addr):
        return int.__new__(_su_class_for_type(t), addr)

    def __getattr__(self, name):
        cls = type(self)
        try:
            reader = cls.PYT_attrcache[name]
        except KeyError:
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            reader = _member_reader(cls.PYT_type, name)
            if reader is None:
                raise KeyError("<%s> does not have a field <%s>"
                               % (cls.PYT_symbol, name))
            cls.PYT_attrcache[name] = reader
        return reader(int(self))

    def __getitem__(self, i):
        return type(self)._from_type(self.PYT_type, int(self) + i * self.PYT_size)

    def __add__(self, i):
        return self[i]

    def __eq__(self, other):
        return int(self) == other

    def __hash__(self):
        return int(self)

    def __len__(self):
        return self.PYT_size

    def __str__(self):
        return "<%s 0x%x>" % (self.PYT_symbol, int(self))

    def __repr__(self):
        return "StructResult <%s 0x%x> \tsize=%d" % (
            self.PYT_symbol, int(self), self.PYT_size)

    def shortStr(self):
        return "<%s 0x%x>" % (self.PYT_symbol.split()[-1], int(self))

    def hasField(self, fname):
        return _member_reader(self.PYT_type, fname) is not None

    def isNamed(self, sname):
        return sname == self.PYT_symbol

    def fieldOffset(self, fname):
        m = crash._standin_member(self.PYT_symbol, fname) \
            if crash._standin_type(self.PYT_symbol) is not None else None
        if m is None:
            raise KeyError(fname)
        return m[0] // 8

    def castTo(self, sname):
        return StructResult(sname, int(self))

    def getDeref(self):
        return self

    Deref = property(getDeref)


def _make_su_class(name, t):
    u = crash._strip_type(t)
    clsname = ("StructResult_" + name).replace(" ", "_").replace("-", "_") \
        .replace("<", "").replace(">", "")
    return type(clsname, (StructResult,), {
        "PYT_symbol": name, "PYT_type": u, "PYT_size": crash._sizeof(u),
        "PYT_attrcache": {}})


def _su_class(sname):
    try:
        return _su_classes[sname]
    except (KeyError, TypeError):
        pass
    t = crash._standin_type(sname) if isinstance(sname, str) else None
    if t is None or not crash._is_su(t):
        raise TypeError("no type <%s>" % (sname,))
    cls = _su_classes[sname] = _make_su_class(sname, t)
    return cls


def _su_class_for_type(t):
    u = crash._strip_type(t)
    name = u.type_name()
    if u.tag is not None:
        try:
            return _su_class(name)
        except TypeError:
            pass
    key = ("anon", id(u))
    if key not in _su_classes:
        _su_classes[key] = _make_su_class(name, u)
    return _su_classes[key]


def readSU(symbol, addr):
    return StructResult(symbol, addr)


def readSUArray(suname, startaddr, dim=0):
    sz = struct_size(suname)
    return [StructResult(suname, startaddr + i * sz) for i in range(dim)]


def readSymbol(symbol):
    prog = crash.standin_program()
    try:
        obj = prog.object(symbol)
    except (LookupError, ValueError):
        raise TypeError("There's no symbol <%s>" % symbol)
    addr = obj.address_
    if addr is None:
        raise TypeError("There's no symbol <%s>" % symbol)
    return _type_reader(obj.type_)(addr)


def Addr(obj, extra=None):
    if extra is not None:
        return int(obj) + obj.fieldOffset(extra)
    return int(obj)


def Deref(obj):
    return obj.Deref


def container_of(ptr, ctype, member):
    offset = member_offset(ctype, member)
    return readSU(ctype, int(ptr) - offset)


def readList(start, offset=0, *, maxel=_MAXEL, inchead=True, warn=True):
    start = int(start)
    if start == 0:
        return []
    out = [start] if inchead else []
    count = len(out)
    nxt = start
    known = set()
    while count < maxel + 1:
        try:
            nxt = readPtr(nxt + offset)
        except crash.error as val:
            print(val)
            break
        if nxt == 0 or nxt == start:
            break
        if nxt in known:
            pylog.error("Circular dependency in list")
            break
        known.add(nxt)
        out.append(nxt)
        count += 1
    if count > maxel:
        del out[-1]
    return out


def readListByHead(start, offset=0, *, maxel=_MAXEL, warn=True):
    return readList(start, offset, maxel=maxel, inchead=False, warn=warn)


list_for_each_entry = readListByHead


def exec_command(cmdline):
    argv = cmdline.split()
    if argv[0] in crash.get_epython_cmds():
        crash.exec_epython_command(*argv)
    else:
        print(crash.exec_crash_command(cmdline))


def atomic_t(o):
    try:
        return o.counter
    except (AttributeError, KeyError):
        return o


# --------------------------------------------------------------------------
# epython enter/exit hooks (sys.enterepython / sys.exitepython)
# --------------------------------------------------------------------------
_t_starta = time.time()
_t_start = 0.0
_oldargv = []


def _print_ehelp():
    crash._api_option_parser().print_help()
    print("Current debug level=%d" % debug)


def enter_epython():
    """Strip the reserved options from sys.argv, apply them, put the
    script's directory first on sys.path."""
    global _t_starta, _t_start, _oldargv, debug
    crash._standin_mark_entered()
    ost = os.times()
    _t_start = ost[0] + ost[1]
    _t_starta = time.time()
    _oldargv = list(sys.argv)
    stripped, o = crash.standin_strip_argv(sys.argv)
    API_options.experimental = o["experimental"]
    if o["debug"] != -1:
        debug = o["debug"]
    API_options.debug = debug
    if o["ehelp"]:
        _print_ehelp()
    if o["timeout"]:
        crash.default_timeout = o["timeout"]
    if o["usens"]:
        print(" *=*=* Using namespaces of PID {}  *=*=*".format(o["usens"]))
    if o["filename"]:
        sys.stdout = open(o["filename"], "w")
    sys.argv[1:] = stripped[1:]
    API_options.dumpcache = o["dumpcache"]
    if isfileoutput():
        # PyKdump names the command and the dump when stdout is a file.
        text = " %s (%s) " % (os.path.abspath(
            sys_info.DUMPFILE.split()[0]), sys_info.RELEASE)
        print("\n   {:*^60s}".format(" ".join(_oldargv)))
        print(" {:o^77s}".format(text))
    sys.path.insert(0, os.path.dirname(sys.argv[0]))


def isfileoutput():
    """stdout is a regular file (not a terminal, not a pipe)."""
    try:
        if sys.stdout.isatty():
            return False
        return stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, AttributeError, ValueError):
        return False


def exit_epython():
    """Print the timing line and flush stdout (PyKdump's cleanup())."""
    if sys.path:
        sys.path.pop(0)
    ost = os.times()
    print("\n ** Execution took %6.2fs (real) %6.2fs (CPU)"
          % (time.time() - _t_starta, ost[0] + ost[1] - _t_start))
    sys.stdout.flush()


def _standin_forget():
    """Called by crash.standin_close(): drop caches tied to the old dump."""
    _su_classes.clear()
    _symbol_exists_cache.clear()
    dict.clear(sys_info)


crash._standin_set_hooks(enter_epython, exit_epython)
if crash.standin_is_open():
    sys_info._fill()
if crash._standin_in_run_needing_enter():
    enter_epython()
