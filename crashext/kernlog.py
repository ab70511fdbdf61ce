"""The kernel log of a dump and the state the kernel was in when it
crashed: printk records, the panicking CPU and its task, the wall clock.

Kernel-model reader over :class:`crashext.memory.Memory`; every offset
comes from the dump's debug info, the rest from the kernel source cited
at each function.

* The log is the lockless printk ring buffer of 5.10+
  (kernel/printk/printk_ringbuffer.{h,c}): ``prb`` points at a
  ``struct printk_ringbuffer`` whose ``desc_ring`` holds
  ``2^count_bits`` descriptors (``struct prb_desc``: ``state_var``,
  ``text_blk_lpos``) and as many ``struct printk_info`` (``seq``,
  ``ts_nsec``, ``text_len``, ``caller_id``), and whose ``text_data_ring``
  holds the text.  Each array is read in one piece.  Older kernels
  (``log_buf`` of ``struct printk_log``) are refused with a
  :class:`LayoutError`.
* ``panic_cpu`` (kernel/panic.c) is the CPU that called panic(), -1 when
  none did.
* The task on a CPU is x86-64's per-CPU ``current_task`` (before 6.2 and
  again from 6.15) or ``pcpu_hot.current_task`` (6.2-6.14), at
  ``__per_cpu_offset[cpu]``; its kernel stack is ``task->stack``, of
  THREAD_SIZE bytes (:func:`thread_size`).
* The wall clock is ``struct timekeeper.xtime_sec`` of the
  timekeeper the kernel last updated (kernel/time/timekeeping.c:
  ``shadow_timekeeper`` up to 6.12, ``tk_core`` / ``timekeeper_data[0]``
  of ``struct tk_data`` after).

>>> recs = read_log(mem)                                  # doctest: +SKIP
>>> recs[-1].text                                         # doctest: +SKIP
'---[ end Kernel panic - not syncing: NMI: Not continuing ]---'
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

from .memory import CrashextError, LayoutError, Memory, UnreadableMemory

# kernel/printk/printk_ringbuffer.h (5.10+): the two top bits of
# prb_desc.state_var are the state, the rest the descriptor id.
_SV_BITS = 64
_FLAGS_SHIFT = _SV_BITS - 2
_ID_MASK = (1 << _FLAGS_SHIFT) - 1
_DESC_COMMITTED = 1
_DESC_FINALIZED = 2
#: Largest rings believed (log_buf_len= is at most 2 GiB; descriptors
#: are 1/32 of it).
MAX_DATA_BITS = 31
MAX_DESC_BITS = 26
#: caller_id: bit 31 set = logged outside task context, low bits = CPU
#: (kernel/printk/printk.c printk_caller_id()).
_CALLER_CPU = 0x80000000


class LogRecord(NamedTuple):
    """One printk record."""

    seq: int
    ts_nsec: int
    caller: str          # "T<pid>" (task context) or "C<cpu>"
    text: str

    def line(self) -> str:
        """As dmesg prints it: ``[   16.988363] text``."""
        return "[%5d.%06d] %s" % (self.ts_nsec // 10 ** 9,
                                  self.ts_nsec % 10 ** 9 // 1000, self.text)


class TaskInfo(NamedTuple):
    """A task: address, pid, comm, kernel stack (address, size)."""

    task: int
    pid: int
    comm: str
    stack: Optional[int]
    stack_size: Optional[int]


def _u(buf: bytes, off: int, size: int = 8) -> int:
    return int.from_bytes(buf[off:off + size], "little")


def _need(mem: Memory, struct: str, member: str) -> int:
    off = mem.member_offset(struct, member)
    if off is None:
        raise LayoutError("debug info has no %s.%s" % (struct, member))
    return off


def read_log(mem: Memory, limit: Optional[int] = None) -> List[LogRecord]:
    """Every finalized or committed record of the printk ring buffer, in
    ``seq`` order (the last ``limit`` ones when given).  Raises
    :class:`LayoutError` on a kernel without the 5.10 ring buffer and
    :class:`UnreadableMemory` when the rings cannot be read."""
    prb_ptr = mem.symbol("prb")
    if prb_ptr is None or mem.struct_size("struct printk_ringbuffer") is None:
        raise LayoutError("no printk ring buffer (prb) in the debug info: "
                          "kernel older than 5.10?")
    RB, DR, TR = ("struct printk_ringbuffer", "struct prb_desc_ring",
                  "struct prb_data_ring")
    D, I, L = ("struct prb_desc", "struct printk_info",
               "struct prb_data_blk_lpos")
    prb = mem.read_u64(prb_ptr)
    o_desc = _need(mem, RB, "desc_ring")
    o_text = _need(mem, RB, "text_data_ring")
    hdr = mem.read(prb, mem.struct_size(RB) or (o_text + 32))
    cbits = _u(hdr, o_desc + _need(mem, DR, "count_bits"), 4)
    descs = _u(hdr, o_desc + _need(mem, DR, "descs"))
    infos = _u(hdr, o_desc + _need(mem, DR, "infos"))
    sbits = _u(hdr, o_text + _need(mem, TR, "size_bits"), 4)
    data = _u(hdr, o_text + _need(mem, TR, "data"))
    if not 0 < cbits <= MAX_DESC_BITS or not 0 < sbits <= MAX_DATA_BITS:
        raise CrashextError("printk ring buffer at 0x%x: count_bits %d, "
                            "size_bits %d: implausible" % (prb, cbits, sbits))
    count, size = 1 << cbits, 1 << sbits
    dsz, isz = mem.struct_size(D), mem.struct_size(I)
    if not dsz or not isz:
        raise LayoutError("debug info cannot size prb_desc / printk_info")
    o_sv = _need(mem, D, "state_var")
    o_lpos = _need(mem, D, "text_blk_lpos")
    o_begin, o_next = _need(mem, L, "begin"), _need(mem, L, "next")
    o_seq, o_ts = _need(mem, I, "seq"), _need(mem, I, "ts_nsec")
    o_len, o_caller = _need(mem, I, "text_len"), _need(mem, I, "caller_id")
    dbuf = mem.read(descs, count * dsz)
    ibuf = mem.read(infos, count * isz)
    text = mem.read(data, size)
    out: List[LogRecord] = []
    for i in range(count):
        sv = _u(dbuf, i * dsz + o_sv)
        state = sv >> _FLAGS_SHIFT
        if state not in (_DESC_COMMITTED, _DESC_FINALIZED):
            continue
        if (sv & _ID_MASK) & (count - 1) != i:     # DESC_INDEX(id) == i
            continue
        ib = i * isz
        ln = _u(ibuf, ib + o_len, 2)
        begin = _u(dbuf, i * dsz + o_lpos + o_begin)
        nxt = _u(dbuf, i * dsz + o_lpos + o_next)
        s = _blk_text(text, sbits, begin, nxt, ln)
        if s is None:
            continue
        caller = _u(ibuf, ib + o_caller, 4)
        who = ("C%d" % (caller & ~_CALLER_CPU) if caller & _CALLER_CPU
               else "T%d" % caller)
        out.append(LogRecord(_u(ibuf, ib + o_seq), _u(ibuf, ib + o_ts), who,
                             s.decode("utf-8", "replace")))
    out.sort(key=lambda r: r.seq)
    return out[-limit:] if limit else out


def _blk_text(ring: bytes, sbits: int, begin: int, nxt: int,
              text_len: int) -> Optional[bytes]:
    """The text of a data block (printk_ringbuffer.c get_data()): a block
    is ``unsigned long id`` then the text; a wrapping block starts at the
    ring's start; a data-less one (both lpos odd) has no text."""
    if begin & 1 and nxt & 1:
        return b"" if text_len == 0 else None
    size = 1 << sbits
    if begin >> sbits == nxt >> sbits and begin < nxt:
        start, n = begin & (size - 1), nxt - begin
    elif (begin + size) >> sbits == nxt >> sbits:
        start, n = 0, nxt & (size - 1)
    else:
        return None
    if n < 8 or start + n > size:
        return None
    return ring[start + 8:start + min(n, 8 + text_len)]


def panic_cpu(mem: Memory) -> Optional[int]:
    """The CPU that called panic() (``atomic_t panic_cpu``), None when no
    CPU did or it cannot be read."""
    a = mem.symbol("panic_cpu")
    if a is None:
        return None
    try:
        v = int.from_bytes(mem.read(a, 4), "little", signed=True)
    except UnreadableMemory:
        return None
    return v if v >= 0 else None


def cpu_task(mem: Memory, cpu: int) -> Optional[TaskInfo]:
    """The task that was current on ``cpu`` (x86-64 per-CPU
    ``current_task``), or None when this kernel's layout has no such
    variable or it cannot be read."""
    pco = mem.symbol("__per_cpu_offset")
    var = mem.symbol("current_task")
    if var is None:
        hot = mem.symbol("pcpu_hot")
        off = mem.member_offset("struct pcpu_hot", "current_task")
        if hot is None or off is None:
            return None
        var = hot + off
    if pco is None:
        return None
    try:
        base = mem.read_u64(pco + 8 * cpu)
        task = mem.read_u64((var + base) & ((1 << 64) - 1))
        return task_info(mem, task)
    except UnreadableMemory:
        return None


def task_info(mem: Memory, task: int) -> Optional[TaskInfo]:
    """pid, comm and kernel stack of the ``struct task_struct`` at
    ``task``."""
    T = "struct task_struct"
    o_pid, o_comm = mem.member_offset(T, "pid"), mem.member_offset(T, "comm")
    if not task or o_pid is None or o_comm is None:
        return None
    o_stack = mem.member_offset(T, "stack")
    pid = int.from_bytes(mem.read(task + o_pid, 4), "little", signed=True)
    comm = mem.read(task + o_comm, 16).split(b"\0", 1)[0]
    stack = mem.read_u64(task + o_stack) if o_stack is not None else None
    return TaskInfo(task, pid, comm.decode("utf-8", "replace"), stack,
                    thread_size(mem))


def thread_size(mem: Memory) -> Optional[int]:
    """THREAD_SIZE: ``sizeof(union thread_union)`` when the debug info
    has the type, else the size of the init task's stack, which the
    linker script lays out (include/asm-generic/vmlinux.lds.h
    INIT_TASK_DATA) as ``__start_init_task`` .. ``__end_init_task`` up
    to 6.x (6.1, 6.12 here) and ``__start_init_stack`` ..
    ``__end_init_stack`` in newer kernels (7.3 here)."""
    n = mem.struct_size("union thread_union")
    if n:
        return n
    for lo, hi in (("__start_init_task", "__end_init_task"),
                   ("__start_init_stack", "__end_init_stack")):
        a, b = mem.symbol(lo), mem.symbol(hi)
        if a is not None and b is not None and 0 < b - a <= 1 << 20:
            return b - a
    return None


def stack_words(mem: Memory, t: TaskInfo) -> List[int]:
    """Every 8-byte word of a task's kernel stack (one read), [] when it
    cannot be read."""
    if not t.stack or not t.stack_size or t.stack_size > 1 << 20:
        return []
    try:
        buf = mem.read(t.stack, t.stack_size)
    except UnreadableMemory:
        return []
    return [int.from_bytes(buf[i:i + 8], "little")
            for i in range(0, len(buf) - 7, 8)]


def wall_clock(mem: Memory) -> Optional[int]:
    """Seconds since the epoch on the dumped kernel's clock at its last
    timekeeping update (``timekeeper.xtime_sec``), None when unknown."""
    off = mem.member_offset("struct timekeeper", "xtime_sec")
    if off is None:
        return None
    cands = []
    a = mem.symbol("shadow_timekeeper")
    if a is not None:
        cands.append(a)
    tk = mem.member_offset("struct tk_data", "timekeeper")
    if tk is not None:
        for sym in ("tk_core", "timekeeper_data"):
            a = mem.symbol(sym)
            if a is not None:
                cands.append(a + tk)
    for a in cands:
        try:
            v = int.from_bytes(mem.read(a + off, 8), "little", signed=True)
        except UnreadableMemory:
            continue
        if 946684800 <= v < 4102444800:         # 2000 .. 2100
            return v
    return None
