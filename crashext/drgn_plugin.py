"""drgn plugin (``drgn.plugins`` entry point ``crashext``): the ``xa``
command in drgn and in drgn's crash mode, on the engine the CLI and the
crash (PyKdump) command use.

* drgn: ``%xa check ffff888006cbc938`` at the drgn prompt, or
  ``drgn.commands.run_command(prog, "xa check ...")`` in a script;
* drgn-crash (``drgn-crash VMLINUX VMCORE``, or ``%crash`` in drgn):
  ``xa check ffff888006cbc938``, ``help xa``.  This works on dumps that
  crash 8.0.2 cannot open (Debian's 6.12 kernels).

The command parses its arguments with :func:`crashext.frontdoor.run_xa`
(the one ``xa`` parser); drgn only splits the words and handles ``>``
redirections and ``|`` pipes.  It returns the status (0 clean, 1 findings,
2 could not analyse).

drgn imports this module for every Program (plugin loading): it must
print nothing and never fail.  Older drgn without ``drgn.commands`` gets
no command; the crash namespace lives in a private drgn module and is
used only when it imports.
"""

from __future__ import annotations

from typing import Any, List

NAME = "xa"
_CACHE_KEY = "crashext.DrgnMemory"
registered: List[str] = []          # namespaces xa went into ("drgn", "crash")


def memory_for(prog: Any) -> Any:
    """A DrgnMemory around ``prog``, kept in ``prog.cache`` so the struct
    layout is discovered once per program."""
    from .backends.drgn import DrgnMemory
    cache = getattr(prog, "cache", None)
    mem = cache.get(_CACHE_KEY) if isinstance(cache, dict) else None
    if mem is None or getattr(mem, "prog", None) is not prog:
        mem = DrgnMemory(prog, "drgn program")
        if isinstance(cache, dict):
            cache[_CACHE_KEY] = mem
    return mem


def run(prog: Any, args: List[str]) -> int:
    """``xa ARGS`` on ``prog`` (output to the current sys.stdout, errors to
    sys.stderr, looked up at write time: drgn redirects them)."""
    import sys
    from .frontdoor import run_xa
    return run_xa(memory_for(prog), args, None, sys.stderr)


class XaCommand:
    """drgn :class:`drgn.commands.Command` for ``xa``: the help is the
    crash page (:data:`crashext.frontdoor.HELP`), the arguments are parsed
    by frontdoor."""

    def __init__(self, parse: Any, enabled: Any = None) -> None:
        self.parse = parse                  # drgn.commands.parse_shell_command
        self._enabled = enabled

    def description(self) -> str:
        from .frontdoor import SHORT
        return SHORT

    def format_usage(self) -> str:
        from .frontdoor import PROG, SYNOPSIS
        return "%s %s" % (PROG, SYNOPSIS)

    def format_help(self, *, indent: str = "") -> str:
        """The crash page's DESCRIPTION: its text is indented by two
        spaces and its section heads (EXAMPLES) by none; drgn's ``help``
        passes ``indent="  "``, which gives crash's page exactly."""
        from .frontdoor import HELP
        head = " " * max(len(indent) - 2, 0)
        out = []
        for line in HELP.splitlines():
            if not line.strip():
                out.append("")
            elif line.startswith("  "):
                out.append(indent + line[2:])
            else:
                out.append(head + line)
        return "\n".join(out).rstrip()

    def enabled(self, prog: Any) -> bool:
        if self._enabled is None:
            return True
        try:
            return bool(self._enabled(prog))
        except Exception:
            return False

    def run(self, prog: Any, name: str, args: Any, **kwargs: Any) -> int:
        return run(prog, list(args))


def _register() -> None:
    try:
        from drgn import ProgramFlags
        from drgn.commands import DEFAULT_COMMAND_NAMESPACE, parse_shell_command
    except Exception:                       # drgn without commands
        return

    def is_kernel(prog: Any) -> bool:
        return bool(prog.flags & ProgramFlags.IS_LINUX_KERNEL)

    cmd = XaCommand(parse_shell_command, is_kernel)
    try:
        DEFAULT_COMMAND_NAMESPACE.register(NAME, cmd)
        registered.append("drgn")
    except Exception:
        pass
    try:
        # Private drgn module (drgn >= 0.0.31): crash compatibility mode.
        from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE
        CRASH_COMMAND_NAMESPACE.register(NAME, cmd)
        registered.append("crash")
    except Exception:
        pass


_register()
