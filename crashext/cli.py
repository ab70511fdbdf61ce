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

from .memory import CrashextError, Memory

FORMATS = ("table", "chat", "json")
EXIT_CLEAN, EXIT_FINDINGS, EXIT_FAILED = 0, 1, 2


def _fail(msg: str) -> None:
    click.echo("crashext: error: %s" % msg.replace("\n", " "), err=True)


def open_memory(vmcore: Optional[str], vmlinux: Optional[str],
                snapshot: Optional[str]) -> Memory:
    """The backend for the given source options."""
    if snapshot and vmcore:
        raise CrashextError("give either --vmcore or --snapshot, not both")
    if snapshot:
        from .backends.snapshot import SnapshotMemory
        return SnapshotMemory.load(snapshot)
    if not vmcore:
        raise CrashextError("no dump given: use --vmcore FILE [--vmlinux "
                            "FILE] or --snapshot FILE")
    if not os.path.exists(vmcore):
        raise CrashextError("vmcore %s does not exist" % vmcore)
    if vmlinux and not os.path.exists(vmlinux):
        raise CrashextError("vmlinux %s does not exist" % vmlinux)
    try:
        from .backends.drgn import DrgnMemory
    except ImportError:
        raise CrashextError("drgn is not installed: pip install drgn")
    return DrgnMemory.open(vmcore, vmlinux)


def _targets(mem: Memory, targets: Sequence[str]) -> List[str]:
    if targets:
        return list(targets)
    saved = list(getattr(mem, "targets", None) or [])
    if not saved:
        raise CrashextError("no TARGET given (an inode, address_space, "
                            "xarray, file or folio address, or a path)")
    return saved


def _render(fmt: str, analyses: list, command: str, **opts) -> str:
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


def _run(command: str, vmcore, vmlinux, snapshot, targets, fmt,
         png: Optional[str] = None, debug: bool = False, **opts) -> int:
    """Analyse every target; print; return the exit code."""
    from .analyze import analyze
    status = EXIT_CLEAN
    analyses = []
    try:
        mem = open_memory(vmcore, vmlinux, snapshot)
        for spec in _targets(mem, targets):
            try:
                a = analyze(mem, spec)
            except CrashextError as e:
                _fail("%s: %s" % (spec, e))
                status = EXIT_FAILED
                continue
            analyses.append(a)
            if a.findings and status == EXIT_CLEAN:
                status = EXIT_FINDINGS
        if analyses:
            click.echo(_render(fmt, analyses, command, **opts))
        if png and analyses:
            from .render.png import render_png
            render_png(analyses[0], png)
            click.echo("picture written to %s" % png, err=True)
    except CrashextError as e:
        _fail(str(e))
        return EXIT_FAILED
    except Exception as e:             # never a traceback for a user
        if debug:
            raise
        _fail("internal error: %s: %s (rerun with --debug)"
              % (type(e).__name__, e))
        return EXIT_FAILED
    return status


def source_options(f: Callable) -> Callable:
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
@click.argument("targets", nargs=-1)
def check(vmcore, vmlinux, snapshot, debug, fmt, png, targets):
    """Walk TARGET's i_pages, run every check, print the findings."""
    sys.exit(_run("check", vmcore, vmlinux, snapshot, targets, fmt, png,
                  debug))


@main.command(epilog=TARGET_HELP)
@source_options
@click.option("--png", metavar="FILE", help="Also draw the broken node(s).")
@click.option("--grouped", is_flag=True,
              help="Write addresses as ffff8880_0a3c4000.")
@click.argument("targets", nargs=-1)
def chat(vmcore, vmlinux, snapshot, debug, png, grouped, targets):
    """A chat-ready summary (60 columns, verdict first)."""
    opts = {"grouped": True} if grouped else {}
    sys.exit(_run("chat", vmcore, vmlinux, snapshot, targets, "chat", png,
                  debug, **opts))


@main.command(epilog=TARGET_HELP)
@source_options
@format_option("table")
@click.option("--flat", is_flag=True,
              help="One line per entry: index folio order.")
@click.argument("targets", nargs=-1)
def dump(vmcore, vmlinux, snapshot, debug, fmt, flat, targets):
    """List TARGET's tree: nodes and multi-index entries."""
    opts = {"flat": True} if flat and fmt == "table" else {}
    if fmt == "json":
        opts["full"] = True
    sys.exit(_run("dump", vmcore, vmlinux, snapshot, targets, fmt, None,
                  debug, **opts))


@main.command(epilog=TARGET_HELP)
@source_options
@click.option("--output", "-o", required=True, metavar="FILE",
              help="Snapshot file to write.")
@click.option("--note", default="", help="Free text stored in the file.")
@click.argument("targets", nargs=-1, required=True)
def capture(vmcore, vmlinux, snapshot, debug, output, note, targets):
    """Save what the analysis of TARGET(s) read, for analysis anywhere."""
    from .analyze import analyze
    from .backends.snapshot import RecordingMemory, save
    try:
        rec = RecordingMemory(open_memory(vmcore, vmlinux, snapshot))
        status = EXIT_CLEAN
        for spec in targets:
            a = analyze(rec, spec)
            rec.targets.append(spec)
            click.echo("%s: %s, %d finding(s)" % (spec, a.verdict,
                                                  len(a.findings)))
            if a.findings:
                status = EXIT_FINDINGS
        size = save(rec, output, note)
        click.echo("wrote %s (%d bytes)" % (output, size))
    except CrashextError as e:
        _fail(str(e))
        sys.exit(EXIT_FAILED)
    except Exception as e:
        if debug:
            raise
        _fail("internal error: %s: %s" % (type(e).__name__, e))
        sys.exit(EXIT_FAILED)
    sys.exit(status)


if __name__ == "__main__":      # pragma: no cover
    main()
