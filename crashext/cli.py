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
    return frontdoor.target_specs(mem, targets)


#: The renderer choice is shared with crash/drgn's ``xa`` (frontdoor).
_render = frontdoor.render


class _ClickReporter(frontdoor.Reporter):
    """frontdoor output through click (results to stdout, errors and
    notes to stderr)."""

    def __init__(self) -> None:
        super().__init__(prefix="crashext")

    def echo(self, text: str) -> None:
        click.echo(text)

    def info(self, text: str) -> None:
        click.echo(text, err=True)

    def fail(self, msg: str) -> None:
        _fail(msg)


def _run(command: str, vmcore, vmlinux, snapshot, targets, fmt,
         png: Optional[str] = None, debug: bool = False, **opts) -> int:
    """Analyse every target; print; return the exit code."""
    try:
        mem = open_memory(vmcore, vmlinux, snapshot)
        return frontdoor.analyze_targets(mem, command, _targets(mem, targets),
                                         fmt, _ClickReporter(), png, **opts)
    except CrashextError as e:
        _fail(str(e))
        return EXIT_FAILED
    except Exception as e:             # never a traceback for a user
        if debug:
            raise
        _fail("internal error: %s: %s (rerun with --debug)"
              % (type(e).__name__, e))
        return EXIT_FAILED


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
    opts = frontdoor.render_opts("chat", "chat", grouped=grouped)
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
    opts = frontdoor.render_opts("dump", fmt, flat=flat)
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
    try:
        mem = open_memory(vmcore, vmlinux, snapshot)
        status = frontdoor.capture(mem, targets, output, note,
                                   _ClickReporter())
    except CrashextError as e:
        _fail(str(e))
        sys.exit(EXIT_FAILED)
    except Exception as e:
        if debug:
            raise
        _fail("internal error: %s: %s" % (type(e).__name__, e))
        sys.exit(EXIT_FAILED)
    sys.exit(status)


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


if __name__ == "__main__":      # pragma: no cover
    main()
