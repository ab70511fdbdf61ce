"""The ``crashext`` command line (click): analyse trees in a vmcore (drgn)
or a snapshot file, capture snapshots, scan and triage dumps.

Exit codes: 0 = no findings, 1 = findings, 2 = could not analyse (the
reason on one line on stderr).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional, Sequence

import click

from . import frontdoor
from .frontdoor import EXIT_CLEAN, EXIT_FAILED, EXIT_FINDINGS, FORMATS  # noqa: F401
from .memory import CrashextError, Memory


def _fail(msg: str) -> None:
    click.echo("crashext: error: %s" % msg.replace("\n", " "), err=True)


#: Searches a running kernel changes faster than they can be read.
NOT_LIVE = ("%s is not supported with --live: a running kernel allocates "
            "and frees xa_nodes and folios while they are searched")


def is_kcore(path: Optional[str]) -> bool:
    """``path`` is the running kernel's ``/proc/kcore``."""
    if not path:
        return False
    try:
        return os.path.realpath(path) == "/proc/kcore"
    except (OSError, ValueError):
        return False


def open_memory(vmcore: Optional[str], vmlinux: Optional[str],
                snapshot: Optional[str], whole_dump: str = "",
                live: bool = False) -> Memory:
    """The backend for the given source options.  ``whole_dump`` names a
    command that needs the whole dump (a snapshot holds only the trees
    it captured).  ``live`` (or ``--vmcore /proc/kcore``) opens the
    running kernel (drgn, /proc/kcore; debug info where the
    distribution puts it for ``uname -r``, or ``vmlinux``)."""
    if live or is_kcore(vmcore):
        if snapshot:
            raise CrashextError("--live reads the running kernel: give no "
                                "--snapshot")
        if vmcore and not is_kcore(vmcore):
            raise CrashextError("--live reads the running kernel "
                                "(/proc/kcore): give no --vmcore %s" % vmcore)
        return _drgn_memory().open_live(vmlinux)
    check_sources(vmcore, vmlinux, snapshot, whole_dump)
    if snapshot:
        from .backends.snapshot import SnapshotMemory
        return SnapshotMemory.load(snapshot)
    return _drgn_memory().open(vmcore, vmlinux)


def _drgn_memory() -> type:
    """crashext.backends.drgn.DrgnMemory, or one error line when drgn is
    not installed."""
    try:
        from .backends.drgn import DrgnMemory
    except ImportError:
        raise CrashextError("drgn is not installed: pip install drgn")
    return DrgnMemory


def check_sources(vmcore: Optional[str], vmlinux: Optional[str],
                  snapshot: Optional[str], whole_dump: str = "") -> None:
    """Raise :class:`CrashextError` (one line) for source options that
    cannot work, before anything is opened."""
    if snapshot and vmcore:
        raise CrashextError("give either --vmcore or --snapshot, not both")
    if snapshot and whole_dump:
        raise CrashextError("%s needs the whole dump (--vmcore): a snapshot "
                            "holds only the trees it captured; use check "
                            "or chat on it" % whole_dump)
    if snapshot:
        return
    if not vmcore:
        raise CrashextError("no dump given: use --vmcore FILE [--vmlinux "
                            "FILE] or --snapshot FILE")
    if not os.path.exists(vmcore):
        raise CrashextError("vmcore %s does not exist" % vmcore)
    if vmlinux and not os.path.exists(vmlinux):
        raise CrashextError("vmlinux %s does not exist" % vmlinux)
    if vmlinux and os.path.isdir(vmlinux):
        raise CrashextError("vmlinux %s is a directory" % vmlinux)
    if vmlinux and os.path.isfile(vmlinux):
        try:
            with open(vmlinux, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise CrashextError("cannot read vmlinux %s: %s"
                                % (vmlinux, e.strerror or e))
        if magic != b"\x7fELF":
            raise CrashextError("vmlinux %s is not an ELF file (give the "
                                "debug vmlinux, e.g. /usr/lib/debug/boot/"
                                "vmlinux-RELEASE)" % vmlinux)


def _targets(mem: Memory, targets: Sequence[str]) -> List[str]:
    return frontdoor.target_specs(mem, targets)


#: The renderer choice is shared with crash/drgn's ``xa`` (frontdoor).
_render = frontdoor.render


class _ClickReporter(frontdoor.Reporter):
    """frontdoor output through click (results to stdout, errors and
    notes to stderr).  A progress line on the terminal is erased before
    anything else is written."""

    def __init__(self, progress=None) -> None:
        super().__init__(prefix="crashext")
        self.progress = progress

    def _clear(self) -> None:
        if self.progress is not None:
            self.progress.clear()

    def echo(self, text: str) -> None:
        self._clear()
        click.echo(text)

    def write(self, text: str) -> None:
        self._clear()
        click.echo(text, nl=False)

    def info(self, text: str) -> None:
        self._clear()
        click.echo(text, err=True)

    def fail(self, msg: str) -> None:
        self._clear()
        _fail(msg)


def _reader_left() -> None:
    """stdout's reader went away: say nothing more (what is still
    buffered, and the interpreter's own flush at exit, go nowhere)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return                          # not a real file (tests)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _guarded(debug: bool, body: Callable[[], int]) -> int:
    """Run ``body``; a CrashextError or any other error becomes one
    ``crashext: error:`` line and EXIT_FAILED (a traceback only with
    --debug)."""
    try:
        return body()
    except BrokenPipeError:            # the reader left (crashext ... | head)
        _reader_left()
    except CrashextError as e:
        _fail(str(e))
    except Exception as e:             # never a traceback for a user
        if debug:
            raise
        _fail("internal error: %s: %s (rerun with --debug)"
              % (type(e).__name__, e))
    return EXIT_FAILED


def _run(command: str, vmcore, vmlinux, snapshot, targets, fmt,
         png: Optional[str] = None, debug: bool = False, live: bool = False,
         memmap: bool = False, slab: bool = False, **opts) -> int:
    """Analyse every target; print; return the exit code."""

    def body() -> int:
        mem = open_memory(vmcore, vmlinux, snapshot, live=live)
        if mem.live() and (memmap or slab):
            raise CrashextError(NOT_LIVE % ("--memmap" if memmap
                                            else "--slab"))
        return frontdoor.analyze_targets(mem, command, _targets(mem, targets),
                                         fmt, _ClickReporter(), png,
                                         memmap=memmap, slab=slab, **opts)
    return _guarded(debug, body)


def source_options(f: Callable) -> Callable:
    f = click.option("--live", is_flag=True,
                     help="The running kernel (/proc/kcore, as root; debug "
                          "info found for uname -r): findings only on "
                          "evidence that holds when read again.")(f)
    f = click.option("--debug", is_flag=True, hidden=True,
                     help="Show Python tracebacks.")(f)
    f = click.option("--snapshot", "-s", metavar="FILE",
                     help="A snapshot written by 'crashext capture'.")(f)
    f = click.option("--vmlinux", "-k", metavar="FILE",
                     help="Debug vmlinux matching the dump.")(f)
    f = click.option("--vmcore", "-c", metavar="FILE",
                     help="The vmcore (ELF or kdump-compressed).")(f)
    return f


def format_option(default: str) -> Callable:
    return click.option("--format", "-f", "fmt", default=default,
                        show_default=True, type=click.Choice(FORMATS),
                        help="Output form.")


def lost_options(f: Callable) -> Callable:
    """--memmap and --slab: where the tree's lost pages went."""
    f = click.option("--slab", is_flag=True,
                     help="Also search the radix_tree_node slab for nodes "
                          "cut off the tree.")(f)
    f = click.option("--memmap", is_flag=True,
                     help="Also search the memory map (struct pages) for "
                          "this file's folios the tree lost.")(f)
    return f


TARGET_HELP = ("TARGET: an inode, address_space, struct xarray, struct file "
               "or folio address (hex, 0x optional; prefix inode:, mapping:, "
               "xarray:, file:, folio: to force the kind), or a file path in "
               "the dump.  A snapshot remembers its targets.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crashext")
def main() -> None:
    """Find page-cache (large folio XArray) corruption in vmcores."""


@main.command(epilog=TARGET_HELP)
@source_options
@format_option("table")
@click.option("--png", metavar="FILE", help="Also draw the broken node(s).")
@lost_options
@click.argument("targets", nargs=-1)
def check(vmcore, vmlinux, snapshot, debug, live, fmt, png, memmap, slab,
          targets):
    """Walk TARGET's i_pages, run every check, print the findings."""
    sys.exit(_run("check", vmcore, vmlinux, snapshot, targets, fmt, png,
                  debug, live, memmap, slab))


@main.command(epilog=TARGET_HELP)
@source_options
@click.option("--png", metavar="FILE", help="Also draw the broken node(s).")
@click.option("--grouped", is_flag=True,
              help="Write addresses as ffff8880_0a3c4000.")
@lost_options
@click.argument("targets", nargs=-1)
def chat(vmcore, vmlinux, snapshot, debug, live, png, grouped, memmap, slab,
         targets):
    """A chat-ready summary (60 columns, verdict first)."""
    opts = frontdoor.render_opts("chat", "chat", grouped=grouped)
    sys.exit(_run("chat", vmcore, vmlinux, snapshot, targets, "chat", png,
                  debug, live, memmap, slab, **opts))


@main.command(epilog=TARGET_HELP)
@source_options
@format_option("table")
@click.option("--flat", is_flag=True,
              help="One line per entry: index folio order.")
@click.argument("targets", nargs=-1)
def dump(vmcore, vmlinux, snapshot, debug, live, fmt, flat, targets):
    """List TARGET's tree: nodes and multi-index entries."""
    opts = frontdoor.render_opts("dump", fmt, flat=flat)
    sys.exit(_run("dump", vmcore, vmlinux, snapshot, targets, fmt, None,
                  debug, live, **opts))


@main.command(epilog=TARGET_HELP)
@source_options
@click.option("--output", "-o", required=True, metavar="FILE",
              help="Snapshot file to write.")
@click.option("--note", default="", help="Free text stored in the file.")
@click.argument("targets", nargs=-1, required=True)
def capture(vmcore, vmlinux, snapshot, debug, live, output, note, targets):
    """Save what the analysis of TARGET(s) read, for analysis anywhere."""
    sys.exit(_guarded(debug, lambda: frontdoor.capture(
        open_memory(vmcore, vmlinux, snapshot, live=live), targets, output,
        note, _ClickReporter())))


@main.command()
@click.option("--mpykdump", metavar="PATH",
              help="PyKdump's mpykdump.so (the 'extend' line).")
@click.option("--wrapper", metavar="FILE",
              help="Also write a crash-xa script that sets PYKDUMPPATH "
                   "and starts crash.")
@click.option("--crash", "crash_bin", default="crash", show_default=True,
              metavar="PATH", help="The crash the wrapper starts.")
@click.option("--shell", is_flag=True,
              help="Print only the 'export PYKDUMPPATH=...' line.")
def crashrc(mpykdump, wrapper, crash_bin, shell):
    """Print the ~/.crashrc lines that add 'xa' to crash (PyKdump).

    \b
    crashext crashrc --mpykdump /path/mpykdump.so >> ~/.crashrc
    """
    from . import crashrc as rc
    if shell:
        click.echo(rc.export_line())
        sys.exit(EXIT_CLEAN)
    for warning in rc.warnings(mpykdump):
        click.echo("crashext: warning: %s" % warning, err=True)
    click.echo(rc.crashrc_text(mpykdump), nl=False)
    if wrapper:
        try:
            rc.write_wrapper(wrapper, crash_bin)
        except OSError as e:
            _fail("cannot write %s: %s" % (wrapper, e.strerror or e))
            sys.exit(EXIT_FAILED)
        click.echo("crashext: wrote %s (starts %s with PYKDUMPPATH set: "
                   "'help xa' works)" % (wrapper, crash_bin), err=True)
    else:
        click.echo("crashext: for 'help xa' as well, start crash with\n  %s"
                   "\nor through a wrapper: crashext crashrc --wrapper "
                   "~/bin/crash-xa" % rc.export_line(), err=True)
    sys.exit(EXIT_CLEAN)


@main.command()
@source_options
@click.option("--format", "-f", "fmt", default=None,
              type=click.Choice(("table", "json", "jsonl")),
              help="Output form: table (default), json, or jsonl (one JSON "
                   "line per tree as it is scanned, then a summary line; "
                   "default with --live).")
@click.option("--all", "include_clean", is_flag=True,
              help="List clean trees too (every tree, worst first).")
@click.option("--top", type=click.IntRange(min=0), default=None,
              metavar="N", help="Table: the N worst trees (default 50; "
                                "0: every tree with findings).")
@click.option("--fs", "fs_types", multiple=True, metavar="TYPE",
              help="Only these filesystem types (repeatable; 'swap' for "
                   "the swap cache).")
@click.option("--slab", is_flag=True,
              help="Also walk every xa_node of the radix_tree_node slab "
                   "(finds nodes no tree reaches; counts cut-off subtrees "
                   "in each tree's nrpages; not with --live).")
@click.option("--no-memmap", "no_memmap", is_flag=True,
              help="Never search the memory map for lost folios (by "
                   "default: for trees whose nrpages is not accounted "
                   "for; never with --live).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1,
              show_default=True, metavar="N",
              help="Processes to split the scan of a dump over (each opens "
                   "the dump; same output as -j 1).")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress line on a terminal.")
@click.option("--max-seconds", type=float, default=0.0, show_default=True,
              help="jsonl: stop after this much wall time (0: no limit).")
@click.option("--max-cpu-seconds", type=float, default=0.0,
              show_default=True,
              help="jsonl: stop after this much CPU time (0: no limit).")
@click.option("--cpu-percent", type=float, default=None,
              help="jsonl: pause between trees to use at most this share "
                   "of one CPU (default 50 with --live, else 100).")
@click.option("--nice", type=int, default=None,
              help="jsonl: run at this niceness (default 19 with --live).")
def scan(vmcore, vmlinux, snapshot, debug, live, fmt, include_clean, top,
         fs_types, slab, no_memmap, jobs, quiet, max_seconds,
         max_cpu_seconds, cpu_percent, nice):
    """Check every page cache of a dump or of the running kernel
    (--live), worst first.

    Progress (done/total inodes, rate, ETA) goes to stderr when it is a
    terminal.

    \b
    Fleet job (exit 0 clean, 1 findings, 2 could not analyse):
      crashext scan --live --max-seconds 300 > scan.jsonl
    """
    from .triage.progress import Progress
    prog = Progress("scan", unit="inodes", quiet=quiet)
    rep = _ClickReporter(prog)
    budgeted = bool(max_seconds or max_cpu_seconds or cpu_percent is not None
                    or nice is not None)

    def run() -> int:
        if jobs > 1:
            return run_parallel()
        mem = open_memory(vmcore, vmlinux, snapshot, whole_dump="scan",
                          live=live)
        is_live = mem.live()
        if slab and is_live:
            raise CrashextError(NOT_LIVE % "--slab")
        form = fmt or ("jsonl" if is_live else "table")
        if form == "jsonl" and (is_live or budgeted):
            # A fleet job: low priority, a CPU / time budget, the cost in
            # its summary line (crashext.triage.fleet).
            if slab:
                raise CrashextError("--slab needs -f table or -f json")
            from .triage.fleet import Budget, fleet_scan
            budget = Budget(
                max_seconds=max_seconds, max_cpu_seconds=max_cpu_seconds,
                cpu_percent=(cpu_percent if cpu_percent is not None
                             else 50.0 if is_live else 100.0),
                nice=nice if nice is not None else 19 if is_live else 0)
            return fleet_scan(mem, lambda line: click.echo(line, nl=False),
                              budget, include_clean, fs_types or None,
                              memmap=not no_memmap)
        return frontdoor.scan(mem, rep, form, include_clean, fs_types,
                              progress=prog.scan_callback(), top=top,
                              slab=slab, memmap=not no_memmap)

    def run_parallel() -> int:
        if live or is_kcore(vmcore):
            raise CrashextError("-j %d needs a dump: a running kernel "
                                "changes while it is read (use -j 1)" % jobs)
        if budgeted:
            raise CrashextError("--max-seconds, --max-cpu-seconds, "
                                "--cpu-percent and --nice need -j 1")
        # Check the sources here (one error line, no worker started);
        # each worker opens the dump itself.
        check_sources(vmcore, vmlinux, snapshot, whole_dump="scan")
        _drgn_memory()
        import functools
        from .triage.scanjobs import ParallelScan
        from .triage.scanout import Form
        form = fmt or "table"
        source = ParallelScan(
            functools.partial(open_memory, vmcore, vmlinux, None, "scan"),
            jobs, Form(form, include_clean), progress=prog.scan_callback(),
            slab=slab, fs_types=fs_types or None,
            memmap=False if no_memmap else "auto")
        return frontdoor.scan(None, rep, form, include_clean, fs_types,
                              top=top, source=source)
    try:
        status = _guarded(debug, run)     # a reader that leaves: quiet
    except KeyboardInterrupt:           # workers end with their parent
        prog.close()
        _fail("interrupted")
        status = EXIT_FAILED
    finally:
        prog.close()
    sys.exit(status)


@main.command()
@source_options
@click.option("--slab", "via", flag_value="slab",
              help="Search every radix_tree_node slab object (finds copies "
                   "in orphaned or freed nodes).")
@click.option("--trees", "via", flag_value="trees", default=True,
              help="Search every page-cache tree (default).")
@click.argument("addresses", nargs=-1, required=True)
def folio(vmcore, vmlinux, snapshot, debug, live, via, addresses):
    """Every slot of every tree that holds a folio (reverse lookup).

    With --live, a slot counts only if it still holds the folio when
    read again after a pause (the tree changes while it is searched)."""
    from .targets import parse_address
    from .triage.reverse import find_folio

    def body() -> int:
        status = EXIT_CLEAN
        mem = open_memory(vmcore, vmlinux, snapshot,
                          whole_dump="folio (reverse lookup)", live=live)
        if via == "slab" and mem.live():
            raise CrashextError(NOT_LIVE % "--slab")
        for a in addresses:
            addr = parse_address(a)
            hits = list(find_folio(mem, addr, via=via))
            gone = 0
            if mem.live():
                from .stable import stable_slots
                kept = stable_slots(mem, hits)
                gone = len(hits) - len(kept)
                hits = kept
            click.echo("folio 0x%x: %d slot(s)%s" % (
                addr, len(hits),
                " (%d more gone when read again)" % gone if gone else ""))
            for h in hits:
                where = ("index ?" if h.index is None else
                         "index 0x%x (%d)" % (h.index, h.index))
                click.echo("  %s node 0x%x slot %d ino %s %s"
                           % (where, h.node or 0, h.slot, h.i_ino,
                              h.fs_type or ""))
            if len(hits) > 1:
                status = EXIT_FINDINGS
        return status
    sys.exit(_guarded(debug, body))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              help="Where one JSON result per dump goes (resumable).")
@click.option("--debug-dir", "-d", "debug_dirs", multiple=True,
              metavar="DIR", help="Where to look for vmlinux files, by "
                                  "release and build ID (repeatable; "
                                  "vmlinux-<release>, usr/lib/debug/..., "
                                  ".build-id/; / is searched last).")
@click.option("--workers", "-j", default=2, show_default=True,
              help="Parallel worker processes (process engine, local "
                   "Dask cluster).")
@click.option("--engine", default=None,
              type=click.Choice(("process", "dask", "inline")),
              help="process pool (default), Dask (the cluster of "
                   "--scheduler, else a local one), or inline.")
@click.option("--scheduler", metavar="ADDRESS",
              envvar="DASK_SCHEDULER_ADDRESS",
              help="Run on this existing Dask cluster (tcp://host:8786; "
                   "default $DASK_SCHEDULER_ADDRESS); its workers read the "
                   "dumps and write the results by path.")
@click.option("--no-slab", is_flag=True, help="Skip the slab-wide walk.")
@click.option("--force", is_flag=True, help="Redo finished dumps.")
@click.option("--retry-errors", is_flag=True,
              help="Redo dumps whose result is an error.")
@click.option("--no-png", is_flag=True,
              help="Do not draw each corrupted dump's primary tree "
                   "(p-<hash>.png next to the results; needs Pillow).")
@click.option("--format", "-f", "fmt", default="md", show_default=True,
              type=click.Choice(("md", "json")), help="Report form.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress line on a terminal.")
def triage(inputs, out_dir, debug_dirs, workers, engine, scheduler, no_slab,
           force, retry_errors, no_png, fmt, quiet):
    """Analyse many vmcores in parallel; one bucket per dump.

    INPUTS: crash folders (/var/crash as kexec-tools or kdump-tools lay
    it out, searched recursively; dumps are recognised by content),
    dump files, or lists of paths (text, JSON).  Exit 1 when any dump
    shows findings, 2 when no dump was found, or a dump could not be
    analysed and none shows findings.
    """
    from .triage import batch, report
    from .triage.progress import Progress
    if engine is None:
        engine = "dask" if scheduler else "process"
    elif engine != "dask":
        scheduler = None
    # Progress on stderr (a terminal only): dumps done of the total, rate,
    # time left; each log line erases it first.
    prog = Progress("triage", unit="dumps", quiet=quiet)

    def log(line: str) -> None:
        prog.clear()
        click.echo(line, err=True)
    try:
        with prog:
            res = batch.triage(
                list(inputs), out_dir, workers=workers, engine=engine,
                debug_dirs=list(debug_dirs), slab=not no_slab, force=force,
                retry_errors=retry_errors, png=not no_png,
                scheduler=scheduler, log=log,
                progress=lambda done, total, _s: prog.update(done, total))
        click.echo(report.report(out_dir, fmt), nl=False)
    except (CrashextError, ValueError, OSError, RuntimeError) as e:
        _fail(str(e))
        sys.exit(EXIT_FAILED)
    verdicts = {r.get("verdict") for r in res}
    if verdicts & {"corrupt", "suspect"}:
        sys.exit(EXIT_FINDINGS)
    if any(r.get("status") == "error" or r.get("error") for r in res):
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_CLEAN)


@main.command("report")
@click.argument("results", metavar="DIR")
@click.option("--format", "-f", "fmt", default="md", show_default=True,
              type=click.Choice(("md", "json")), help="Report form.")
def report_cmd(results, fmt):
    """The report of an earlier 'crashext triage': buckets, then the
    index by finding code."""
    from .triage import report
    try:
        click.echo(report.report(results, fmt), nl=False)
    except (CrashextError, ValueError, OSError) as e:
        _fail(str(e))
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":      # pragma: no cover
    main()
