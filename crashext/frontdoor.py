"""The ``xa`` command shared by crash (PyKdump) and drgn / drgn-crash, and
the analyse-render-print path the standalone CLI uses too.

One argument parser (stdlib :mod:`argparse`: this module runs inside
PyKdump's embedded Python 3.11, which only has the standard library and
what the shim puts on ``sys.path``) for::

    xa [check|chat|dump|capture|scan|help] [options] TARGET...

and one function, :func:`run_xa`, that every front door calls with its
own :class:`~crashext.memory.Memory`.  The analysis, rendering and exit
status code (:func:`analyze_targets`, :func:`render`, :func:`capture`)
is the code ``crashext check/chat/dump/capture`` runs, so ``xa check T``
inside crash prints exactly what ``crashext check --vmcore ... T`` prints.

Exit status (``run_xa``'s return value): 0 clean, 1 findings, 2 could not
analyse (the reason is one ``xa: error: ...`` line, never a traceback).

>>> run_xa(mem, ["check", "-f", "chat", "ffff888006cbc938"], sys.stdout)  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, Optional, Sequence, TextIO, Tuple

from .memory import CrashextError, Memory

PROG = "xa"
COMMANDS = ("check", "chat", "dump", "capture", "scan", "help")
FORMATS = ("table", "chat", "json")
EXIT_CLEAN, EXIT_FINDINGS, EXIT_FAILED = 0, 1, 2

#: crash's ``help xa`` page: NAME line, SYNOPSIS (arguments only: crash
#: puts the command name in front), DESCRIPTION.  ``xa help`` prints the
#: same page and drgn's ``help xa`` shows it too.
SHORT = "find page-cache (large folio XArray) corruption"
SYNOPSIS = ("[check|chat|dump|capture|scan|help] [-f table|chat|json] "
            "[--memmap] [--slab] [-o FILE] [TARGET...]")
HELP = """\
  Walks the page-cache XArray (i_pages) of each TARGET, checks it against
  the kernel's invariants (multi-index sibling entries, duplicate folios,
  xa_node headers, folio order/index/mapping, marks) and prints what it
  found.  It is the engine of the standalone "crashext" command: the same
  target gives the same text.

    check TARGET...      findings as a table (-f chat or -f json for the
                         other forms); "xa TARGET" is "xa check TARGET"
    chat TARGET...       a chat-ready summary: verdict first, 60 columns
    dump TARGET...       the tree: nodes and multi-index entries
                         (--flat: one "index folio order" line per entry)
    capture -o FILE TARGET...
                         save everything the analysis read to a snapshot
                         file ("crashext check --snapshot FILE" anywhere)
    scan                 every page-cache tree of the dump, worst first
    help                 this page; "xa COMMAND -h" lists its options

  TARGET is an inode, address_space, struct xarray, struct file or folio
  address in hex (0x optional); prefix inode:, mapping:, xarray:, file: or
  folio: to force the kind.  A path in the dump also works (found in the
  dcache: the file must have been open or looked up recently).

    -f table|chat|json   output form (check, dump; scan: table, json or
                         jsonl, one line per tree as it is scanned)
    -o FILE              write the result to FILE (check, chat, dump,
                         scan); capture: the snapshot file to write
                         (--note TEXT adds a remark to it)
    --flat               dump: one line per entry
    --grouped            chat: write addresses as ffff8880_0a3c4000
    --png FILE           check, chat: also draw the broken node(s) (needs
                         Pillow)
    --memmap             check, chat: also search the memory map (struct
                         pages) for this file's folios the tree lost
    --slab               check, chat: also search the radix_tree_node
                         slab for nodes cut off the tree; scan: also walk
                         every xa_node of the slab (nodes no tree reaches,
                         cut-off nodes counted in each tree's nrpages)
    --all                scan: list clean trees too
    --top N              scan: the N worst trees (default 50; 0: all)
    --no-memmap          scan: never search the memory map (by default
                         it is searched for trees whose nrpages the tree
                         does not account for)

  Status (drgn: the command's return value): 0 clean, 1 findings, 2 could
  not analyse.  Errors are one "xa: error: ..." line.

EXAMPLES
  Check the page cache of an inode (hex address, 0x optional):

    crash> xa check ffff888006cbc938

  The same as JSON, then a chat summary of an address_space:

    crash> xa check -f json 0xffff888006cbc938
    crash> xa chat mapping:ffff888006cbcab0

  List the tree, one line per folio:

    crash> xa dump --flat ffff888006cbc938

  Save a snapshot for a bug report, then analyse it anywhere:

    crash> xa capture -o /tmp/shadow64.snap ffff888006cbc938
    $ crashext chat --snapshot /tmp/shadow64.snap

  The same command in drgn and in drgn-crash (which opens 6.12 dumps):

    >>> %xa check ffff888006cbc938
    %crash> xa chat /mnt/xfs/big64"""


# ----------------------------------------------------------------------
# Output: what the CLI (click) and xa (a stream) print through


class Reporter:
    """Where results, error lines and notes go.  ``prefix`` starts every
    error line (``xa: error: ...`` / ``crashext: error: ...``)."""

    def __init__(self, out: Optional[TextIO] = None,
                 err: Optional[TextIO] = None, prefix: str = PROG) -> None:
        self.out = out
        self.err = err if err is not None else out
        self.prefix = prefix

    def _stream(self, which: Optional[TextIO], default: str) -> TextIO:
        # Looked up when written: drgn redirects sys.stdout per command.
        return which if which is not None else getattr(sys, default)

    def echo(self, text: str) -> None:
        """``text`` and a newline (as click.echo)."""
        self._stream(self.out, "stdout").write(text + "\n")

    def write(self, text: str) -> None:
        """``text`` as it is (a part of a longer output)."""
        self._stream(self.out, "stdout").write(text)

    def info(self, text: str) -> None:
        self._stream(self.err, "stderr").write(text + "\n")

    def fail(self, msg: str) -> None:
        """One error line."""
        self._stream(self.err, "stderr").write(
            "%s: error: %s\n" % (self.prefix, one_line(msg)))


def one_line(msg: Any) -> str:
    return " ".join(str(msg).split("\n")).strip()


# ----------------------------------------------------------------------
# The shared analyse / render / capture path (CLI and xa)


def target_specs(mem: Memory, targets: Sequence[str]) -> List[str]:
    """The targets given, else those a snapshot remembers."""
    if targets:
        return list(targets)
    saved = list(getattr(mem, "targets", None) or [])
    if not saved:
        raise CrashextError("no TARGET given (an inode, address_space, "
                            "xarray, file or folio address, or a path)")
    return saved


def render(fmt: str, analyses: list, command: str, **opts: Any) -> str:
    """The text for ``analyses`` in form ``fmt`` (``dump`` in table form is
    the tree listing)."""
    if command == "dump" and fmt == "table":
        from .render import dump as r
    elif fmt == "table":
        from .render import table as r
    elif fmt == "chat":
        from .render import chat as r
    else:
        from .render import jsonout as r
        if len(analyses) > 1 and hasattr(r, "render_many"):
            return r.render_many(analyses, **opts)
    return "\n".join(r.render(a, **opts) for a in analyses)


def render_opts(command: str, fmt: str, flat: bool = False,
                grouped: bool = False) -> dict:
    """Renderer options of ``command`` (what the CLI passes)."""
    opts: dict = {}
    if command == "chat" and grouped:
        opts["grouped"] = True
    if command == "dump":
        if flat and fmt == "table":
            opts["flat"] = True
        if fmt == "json":
            opts["full"] = True
    return opts


def slab_nodes(mem: Memory, rep: Reporter) -> Optional[list]:
    """Every node header of the radix_tree_node slab (crashext.triage.slab)
    for the accounting of cut-off subtrees, or None (one note line: the
    analysis goes on, and its nrpages line says the slab was not
    searched) when the slab cannot be walked."""
    try:
        from .triage.slab import walk_slab
        return list(walk_slab(mem, check=False).nodes.values())
    except CrashextError as e:
        rep.info("%s: note: slab walk: %s (cut-off nodes not searched)"
                 % (rep.prefix, one_line(e)))
        return None


def analyze_targets(mem: Memory, command: str, specs: Sequence[str],
                    fmt: str, rep: Reporter, png: Optional[str] = None,
                    memmap: bool = False, slab: bool = False,
                    **opts: Any) -> int:
    """Analyse every target, print the rendering and return the status.

    ``memmap``/``slab``: also search the memory map / the slab for what
    the tree lost (:func:`crashext.analyze.analyze`).  A target that
    cannot be analysed gives one error line and status 2; the others are
    still analysed and printed.  Errors outside a target (the picture)
    raise :class:`CrashextError` to the caller."""
    from .analyze import analyze
    if png:
        # Before any output: no table followed by an error (exit 2).
        from .render.png import need_pillow
        need_pillow()
    nodes = slab_nodes(mem, rep) if slab else None
    status = EXIT_CLEAN
    analyses = []
    for spec in specs:
        try:
            a = analyze(mem, spec, memmap=bool(memmap), slab_nodes=nodes)
        except CrashextError as e:
            rep.fail("%s: %s" % (spec, e))
            status = EXIT_FAILED
            continue
        analyses.append(a)
        if a.findings and status == EXIT_CLEAN:
            status = EXIT_FINDINGS
    if analyses:
        rep.echo(render(fmt, analyses, command, **opts))
    if png and analyses:
        from .render.png import render_png
        # The first target with findings (the picture is of broken nodes).
        render_png(next((a for a in analyses if a.findings), analyses[0]),
                   png)
        rep.info("picture written to %s" % png)
    return status


def capture(mem: Memory, specs: Sequence[str], output: str, note: str,
            rep: Reporter) -> int:
    """Analyse ``specs`` through a recorder and save the snapshot."""
    from .analyze import analyze
    from .backends.snapshot import RecordingMemory, save
    try:
        rec = RecordingMemory(mem)
        status = EXIT_CLEAN
        for spec in specs:
            a = analyze(rec, spec)
            rec.targets.append(spec)
            rep.echo("%s: %s, %d finding(s)" % (spec, a.verdict,
                                               len(a.findings)))
            if a.findings:
                status = EXIT_FINDINGS
        size = save(rec, output, note)
        rep.echo("wrote %s (%d bytes)" % (output, size))
    except CrashextError as e:
        rep.fail(str(e))
        return EXIT_FAILED
    except OSError as e:
        rep.fail("cannot write %s: %s" % (output, e.strerror or e))
        return EXIT_FAILED
    return status


def scan(mem: Optional[Memory], rep: Reporter, fmt: str = "table",
         include_clean: bool = False,
         fs_types: Optional[Sequence[str]] = None,
         progress: Optional[Callable[[dict], None]] = None,
         top: Optional[int] = None, slab: bool = False,
         memmap: bool = True, source: Any = None) -> int:
    """Every page-cache tree of the dump (crashext.triage.scan, when it
    is installed), printed as it is scanned: ``table`` (the totals, then
    the ``top`` worst trees; every tree with ``include_clean`` or ``top``
    0), ``json`` (one document) or ``jsonl`` (one line per tree).  Clean
    trees are counted, and listed only with ``include_clean``.  ``slab``
    also walks every xa_node of the radix_tree_node slab
    (crashext.triage.slab) first, and counts the nodes cut off each tree
    in its nrpages; ``memmap``: search the memory map for trees whose
    nrpages is not accounted for.

    ``source`` replaces the scan of ``mem`` in this process by another
    source of the same batches (``crashext scan -j N``:
    crashext.triage.scanjobs.ParallelScan)."""
    try:
        from .triage import scan as S
        from .triage import scanout as O
        S.LocalScan                                 # noqa: B018
    except (ImportError, AttributeError):
        rep.fail("scan not available in this crashext")
        return EXIT_FAILED
    form = O.Form(fmt, include_clean)
    if source is None:
        source = S.LocalScan(mem, form, progress=progress, slab=slab,
                             fs_types=fs_types or None,
                             memmap="auto" if memmap else False)
    def new_writer() -> Any:
        return O.writer(fmt, rep.write, include_clean,
                        O.DEFAULT_TOP if top is None else top)
    out = None
    totals = O.Totals()
    for pieces, t in source:
        if out is None:     # nothing printed when the source fails first
            out = new_writer()
        totals.merge(t)
        out.put_all(pieces)
    if out is None:
        out = new_writer()
    slab_result = getattr(source, "slab", None)
    out.finish(totals, slab_result)
    findings = bool(totals.by_verdict.get("corrupt")
                    or totals.by_verdict.get("suspect"))
    failed = bool(totals.by_verdict.get("error"))
    if slab_result is not None:
        if "error" in slab_result:
            rep.fail("slab: %s" % slab_result["error"])
            failed = True
        elif slab_result.get("findings"):
            findings = True
    if findings:
        return EXIT_FINDINGS
    return EXIT_FAILED if failed else EXIT_CLEAN


# ----------------------------------------------------------------------
# The xa parser


class XaUsage(CrashextError):
    """A command-line mistake (one line)."""


class _Done(Exception):
    """Help was printed: stop with status 0."""


def _pillow_present() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("PIL") is not None
    except (ImportError, ValueError):
        return False


def _parser_class(out: Callable[[str], None]):
    class _Parser(argparse.ArgumentParser):
        """Never exits, never prints to the real stdout: errors raise
        :class:`XaUsage`, help goes to ``out``."""

        def error(self, message: str):            # type: ignore[override]
            raise XaUsage(message)

        def exit(self, status: int = 0, message: Optional[str] = None):
            if message:
                raise XaUsage(message.strip())
            raise _Done()

        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                out(message)
    return _Parser


def build_parser(command: str, out: Callable[[str], None] = None
                 ) -> argparse.ArgumentParser:
    """The parser of ``xa COMMAND``.  (PyKdump removes --debug N,
    --timeout N, --maxel N, --usens PID, --ofile FILE, --reload,
    --dumpcache, --experimental and --ehelp from crash's argv before the
    shim sees it: none of them is an xa option.)"""
    cls = _parser_class(out or (lambda s: sys.stdout.write(s)))
    p = cls(prog="%s %s" % (PROG, command), allow_abbrev=False,
            description={
                "check": "Walk TARGET's i_pages, run every check, print "
                         "the findings.",
                "chat": "A chat-ready summary (60 columns, verdict first).",
                "dump": "List TARGET's tree: nodes and multi-index entries.",
                "capture": "Save what the analysis of TARGET(s) read, for "
                           "analysis anywhere.",
                "scan": "Analyse every page-cache tree of the dump.",
            }[command])
    if command in ("check", "dump", "scan"):
        forms = FORMATS if command != "scan" else ("table", "json", "jsonl")
        p.add_argument("-f", "--format", dest="fmt", default="table",
                       choices=forms, metavar="|".join(forms),
                       help="output form (default table)")
    if command in ("check", "chat"):
        p.add_argument("--memmap", action="store_true",
                       help="also search the memory map for this file's "
                       "folios the tree lost")
        p.add_argument("--slab", action="store_true",
                       help="also search the radix_tree_node slab for "
                       "nodes cut off the tree")
        p.add_argument("--png", metavar="FILE",
                       help=("also draw the broken node(s)"
                             if _pillow_present() else argparse.SUPPRESS))
    if command == "chat":
        p.add_argument("--grouped", action="store_true",
                       help="write addresses as ffff8880_0a3c4000")
    if command == "dump":
        p.add_argument("--flat", action="store_true",
                       help="one line per entry: index folio order")
    if command == "capture":
        p.add_argument("-o", "--output", required=True, metavar="FILE",
                       help="snapshot file to write")
        p.add_argument("--note", default="", help="free text stored in "
                       "the file")
    if command in ("check", "chat", "dump", "scan"):
        p.add_argument("-o", "--output", metavar="FILE",
                       help="write the result to FILE instead of the "
                       "screen")
    if command == "scan":
        p.add_argument("--all", dest="include_clean", action="store_true",
                       help="list clean trees too (every tree, worst "
                       "first)")
        p.add_argument("--top", type=int, default=None, metavar="N",
                       help="table: the N worst trees (default 50; 0: "
                       "every tree with findings)")
        p.add_argument("--slab", action="store_true",
                       help="also walk every xa_node of the "
                       "radix_tree_node slab")
        p.add_argument("--fs", dest="fs_types", action="append",
                       metavar="TYPE", help="only this filesystem type "
                       "(repeatable; 'swap' is the swap cache)")
        p.add_argument("--no-memmap", dest="memmap", action="store_false",
                       help="never search the memory map for lost folios")
    else:
        p.add_argument("targets", nargs="*", metavar="TARGET",
                       help="inode, address_space, xarray, file or folio "
                       "address (hex, 0x optional; kind: prefix allowed)")
    p.add_argument("--live", action="store_true",
                   help="insist on a running kernel (drgn without -c); "
                        "live is recognised anyway")
    p.add_argument("--traceback", action="store_true",
                   help=argparse.SUPPRESS)
    return p


def help_page() -> str:
    """crash's ``help xa`` page (NAME, SYNOPSIS, DESCRIPTION)."""
    return ("NAME\n  %s - %s\n\nSYNOPSIS\n  %s %s\n\nDESCRIPTION\n%s\n"
            % (PROG, SHORT, PROG, SYNOPSIS, HELP))


def parse_xa(argv: Sequence[str], out: Callable[[str], None] = None
             ) -> Tuple[str, Optional[argparse.Namespace]]:
    """``(command, options)``; ``("help", None)`` for the help page.
    Raises :class:`XaUsage` on a mistake and ``_Done`` after ``-h``."""
    argv = [str(a) for a in argv]
    if not argv or argv[0] in ("help", "-h", "--help"):
        if len(argv) > 1 and argv[1] in COMMANDS[:-1]:
            argv = [argv[1], "-h"]
        else:
            return "help", None
    if argv[0] in COMMANDS:
        command, rest = argv[0], argv[1:]
    elif argv[0].startswith("-") or ":" in argv[0] or _looks_hex(argv[0]) \
            or argv[0].startswith("/"):
        command, rest = "check", argv          # xa TARGET = xa check TARGET
    else:
        raise XaUsage("unknown command %r (one of %s)"
                      % (argv[0], ", ".join(COMMANDS)))
    p = build_parser(command, out)
    ns = p.parse_intermixed_args(rest) if command != "scan" \
        else p.parse_args(rest)
    return command, ns


def _looks_hex(s: str) -> bool:
    t = s[2:] if s.lower().startswith("0x") else s
    return bool(t) and all(c in "0123456789abcdefABCDEF_" for c in t)


# ----------------------------------------------------------------------
# xa


def _run_command(mem: Memory, command: str, ns: argparse.Namespace,
                 rep: Reporter) -> int:
    """check, chat, dump or scan, printed through ``rep``."""
    if command == "scan":
        return scan(mem, rep, ns.fmt, ns.include_clean, ns.fs_types,
                    top=ns.top, slab=ns.slab, memmap=ns.memmap)
    specs = target_specs(mem, ns.targets)
    fmt = "chat" if command == "chat" else ns.fmt
    opts = render_opts(command, fmt, getattr(ns, "flat", False),
                       getattr(ns, "grouped", False))
    return analyze_targets(mem, command, specs, fmt, rep,
                           getattr(ns, "png", None),
                           memmap=getattr(ns, "memmap", False),
                           slab=getattr(ns, "slab", False), **opts)


def _to_file(mem: Memory, command: str, ns: argparse.Namespace,
             rep: Reporter) -> int:
    """``-o FILE``: the result into FILE (written whole, then renamed into
    place), errors and a one-line note on the screen."""
    path = ns.output
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            status = _run_command(mem, command, ns,
                                  Reporter(f, rep._stream(rep.err, "stdout"),
                                           PROG))
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise CrashextError("cannot write %s: %s" % (path, e.strerror or e))
    rep.info("wrote %s (%d bytes)" % (path, size))
    return status


def run_xa(mem: Memory, argv: Sequence[str], out: Optional[TextIO] = None,
           err: Optional[TextIO] = None) -> int:
    """Run ``xa ARGV`` on ``mem``; print to ``out`` (errors and notes to
    ``err``, default ``out``; both default to sys.stdout at write time).
    Returns 0 clean, 1 findings, 2 could not analyse.  Never raises for a
    user mistake or a bad dump: one ``xa: error:`` line instead."""
    rep = Reporter(out, err if err is not None else out, PROG)
    write = lambda s: rep._stream(rep.out, "stdout").write(s)  # noqa: E731
    tb = "--traceback" in argv
    try:
        command, ns = parse_xa(argv, write)
        if command == "help":
            write(help_page())
            return EXIT_CLEAN
        if getattr(ns, "live", False) and not mem.live():
            raise XaUsage("--live: %s is not a running kernel"
                          % mem.describe())
        if command == "capture":
            return capture(mem, target_specs(mem, ns.targets), ns.output,
                           ns.note, rep)
        if ns.output:
            return _to_file(mem, command, ns, rep)
        return _run_command(mem, command, ns, rep)
    except _Done:
        return EXIT_CLEAN
    except XaUsage as e:
        rep.fail("%s (see '%s help')" % (e, PROG))
        return EXIT_FAILED
    except CrashextError as e:
        rep.fail(str(e))
        return EXIT_FAILED
    except ImportError as e:
        if tb:
            raise
        rep.fail("cannot import %s: %s (run 'crashext crashrc' again, or "
                 "use -f chat)" % (getattr(e, "name", None) or "a module", e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        rep.fail("interrupted")
        return EXIT_FAILED
    except Exception as e:                  # never a traceback for a user
        if tb:
            raise
        rep.fail("internal error: %s: %s (rerun with --traceback)"
                 % (type(e).__name__, e))
        return EXIT_FAILED
