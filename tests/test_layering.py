"""The import arrows of crashext point down its floors (DESIGN: front doors
-> engine -> kernel model -> ground), lazy imports inside functions
included: the ground (memory interface, backends) never reaches up into
the kernel model, the kernel model never into checks or renderers."""

from __future__ import annotations

import ast
import os
from typing import Iterator, Tuple

ROOT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "crashext")

FLOORS = {
    0: ("", "__version__", "memory", "findings", "fmt", "jsontext", "record",
        "backends"),
    1: ("layout", "xarray", "folio", "targets", "vfs", "explain", "memmap",
        "lost", "impact", "kernlog"),
    2: ("analyze", "checks", "render", "stable"),
    # 3: everything else (cli, frontdoor, crash, drgn_plugin, triage, ...)
}


def floor(module: str) -> int:
    """crashext.X.Y -> the floor of X."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for n, tops in FLOORS.items():
        if top in tops:
            return n
    return 3


def imports() -> Iterator[Tuple[str, str, int]]:
    """(importing module, imported crashext module, line) for every
    import statement of the package, nested ones included."""
    for dirpath, _dirs, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3]
            mod = rel.replace(os.sep, ".")
            pkg = mod[:-len(".__init__")] if f == "__init__.py" \
                else mod.rsplit(".", 1)[0]
            if mod.endswith(".__init__"):
                mod = pkg
            with open(path) as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = pkg.split(".")
                        base = base[:len(base) - (node.level - 1)]
                        if node.module:
                            yield mod, ".".join(base + [node.module]), \
                                node.lineno
                        else:
                            for a in node.names:
                                yield mod, ".".join(base + [a.name]), \
                                    node.lineno
                    elif (node.module or "").startswith("crashext"):
                        yield mod, node.module, node.lineno
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.startswith("crashext"):
                            yield mod, a.name, node.lineno


def test_imports_point_down():
    seen = list(imports())
    assert len(seen) > 100               # the walk found the package
    up = ["%s:%d imports %s (floor %d -> %d)"
          % (m, line, t, floor(m), floor(t))
          for m, t, line in seen if floor(t) > floor(m)]
    assert up == [], "\n".join(up)


def test_floor_map_knows_every_module():
    """A new top-level module must be placed on a floor on purpose: only
    front doors may fall through to floor 3."""
    front = {"cli", "frontdoor", "crash", "drgn_plugin", "triage",
             "crashrc", "__main__"}
    tops = {n[:-3] if n.endswith(".py") else n for n in os.listdir(ROOT)
            if not n.startswith((".", "__pycache__")) and
            (n.endswith(".py") or os.path.isdir(os.path.join(ROOT, n)))}
    tops.discard("__init__")
    unplaced = {t for t in tops if floor("crashext." + t) == 3} - front
    assert unplaced == set()
