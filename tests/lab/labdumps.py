"""Find the vmcore lab's runs (see /work/shared/lab/README.md) and read their
``manifest.json``.

The lab directory is ``$CRASHEXT_LAB``, else ``$LAB``, else
``/var/cache/crashext-lab``; a run of a kernel family is reached through the
family link (``<lab>/6.1``, ``<lab>/6.12``, ``<lab>/7.3``,
``<lab>/6.12-kaslr``, ...) or by its release directory name.  A family
falls back to its big-file run (``6.1-big256M``, what CI makes) and then to
its KASLR run when there is no plain one, and prefers the KASLR run when
``$CRASHEXT_LAB_KASLR=1`` (run the suite on KASLR dumps).

:data:`FAMILIES` is the ONE list of kernel families the lab tests run on
(``$CRASHEXT_LAB_FAMILIES``, space or comma separated, overrides it, e.g.
``"6.1 6.12 7.3 6.12+deb13"``); tests parametrize over it instead of
naming families.  Under CI (:func:`ci`) a lab test that would skip fails
instead (tests/conftest.py).

Nothing here needs drgn; every helper returns ``None`` rather than raising
when a run, dump or file is absent, so tests can skip cleanly.

>>> m = load_manifest("6.1")                      # doctest: +SKIP
>>> dump_path(m, "elf"), file_entry(m, "/mnt/xfs/big64")["i_pages"]   # doctest: +SKIP
('/var/cache/crashext-lab/6.1.0-50-amd64/vmcore.elf', '0xffff888006e6deb8')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

DEFAULT_LAB = "/var/cache/crashext-lab"
DEFAULT_FAMILIES = ("6.1", "6.12", "7.3")


def _families() -> tuple:
    v = os.environ.get("CRASHEXT_LAB_FAMILIES", "")
    got = tuple(v.replace(",", " ").split())
    return got or DEFAULT_FAMILIES


#: The kernel families every lab test runs on (CI boots each of them).
FAMILIES = _families()


def ci() -> bool:
    """True when running under CI (``$CI`` set, not "0"/"false"): a lab
    test that cannot run is then a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def lab_dir() -> Path:
    """The lab output directory: $CRASHEXT_LAB, $LAB or the default."""
    for var in ("CRASHEXT_LAB", "LAB"):
        v = os.environ.get(var)
        if v:
            return Path(v)
    return Path(DEFAULT_LAB)


def planted_dir() -> Path:
    """Where planted dumps go: $CRASHEXT_PLANTED_DIR, else <lab>/planted."""
    v = os.environ.get("CRASHEXT_PLANTED_DIR")
    return Path(v) if v else lab_dir() / "planted"


def run_dir(family: str) -> Optional[Path]:
    """Directory of the latest run of ``family`` ("6.1", "6.12",
    "6.12-kaslr", or an exact release directory name), resolved through the
    family symlink; None when absent."""
    if "-kaslr" not in family and os.environ.get("CRASHEXT_LAB_KASLR") == "1":
        # KASLR runs preferred: "6.1" -> "6.1-kaslr", "6.1-panic" ->
        # "6.1-kaslr-panic" (mkdump.sh names runs
        # <family>[-kaslr][-big<SIZE>][-many<N>][-panic])
        base, _, rest = family.partition("-")
        k = run_dir(base + "-kaslr" + ("-" + rest if rest else ""))
        if k is not None and (k / "manifest.json").is_file():
            return k
    d = lab_dir() / family
    if d.is_dir() and (d / "manifest.json").is_file():
        return d.resolve()
    # A family run with a big file ("6.1-big256M") also holds every
    # standard test file: use the newest one when the plain link is absent.
    if "-" not in family or family.endswith("-kaslr"):
        cands = sorted(lab_dir().glob(family + "-big*"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for c in cands:
            if (c / "manifest.json").is_file():
                return c.resolve()
        # Only a KASLR run of the family (CI boots 6.12 with --kaslr).
        k = lab_dir() / (family + "-kaslr")
        if (k / "manifest.json").is_file():
            return k.resolve()
    return d.resolve() if d.is_dir() else None


def manifest_path(family: str) -> Optional[Path]:
    d = run_dir(family)
    if d is None:
        return None
    p = d / "manifest.json"
    return p if p.is_file() else None


def load_manifest(family: str = "6.1") -> Optional[Dict[str, Any]]:
    """Parsed manifest.json of the latest ``family`` run, or None when there
    is none (or it is unreadable / half written).  The run directory is added
    under the key ``"_run_dir"``, the family asked for under ``"_family"``."""
    p = manifest_path(family)
    if p is None:
        return None
    try:
        with open(p) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or "files" not in m:
        return None
    m["_run_dir"] = str(p.parent)
    m["_family"] = family
    return m


def available_families() -> List[str]:
    """The families of :data:`FAMILIES` that have a manifest."""
    return [f for f in FAMILIES if manifest_path(f) is not None]


def elf_run(family: str):
    """(manifest, ELF dump path, vmlinux path) of ``family``'s run when all
    three exist, else None."""
    m = load_manifest(family)
    if m is None:
        return None
    elf, vml = dump_path(m, "elf"), vmlinux_path(m)
    if elf is None or vml is None:
        return None
    return m, elf, vml


def makedumpfile_dumps(manifest: Dict[str, Any]) -> List[str]:
    """Names of the run's makedumpfile dumps ("makedumpfile-d31", ...)
    whose files exist (a --quick run makes one; which one depends on the
    kernel family)."""
    return [d["name"] for d in manifest.get("dumps", [])
            if str(d.get("name", "")).startswith("makedumpfile-")
            and d.get("drgn_ok", True) and dump_path(manifest, d["name"])]


def dump_entry(manifest: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """The ``dumps[]`` record called ``name`` ("elf", "makedumpfile-d31",
    "makedumpfile-d17", "kdump-zlib-reassembled", ...)."""
    for d in manifest.get("dumps", []):
        if d.get("name") == name:
            return d
    return None


def dump_path(manifest: Dict[str, Any], name: str = "elf") -> Optional[str]:
    """Path of dump ``name`` when the file exists (the manifest's path, else
    ``<run dir>/vmcore.<name>``), or None."""
    d = dump_entry(manifest, name)
    cands = []
    if d and d.get("path"):
        cands.append(d["path"])
    if manifest.get("_run_dir"):
        cands.append(os.path.join(manifest["_run_dir"], "vmcore." + name))
    for c in cands:
        if os.path.isfile(c):
            return c
    return None


def vmlinux_path(manifest: Dict[str, Any]) -> Optional[str]:
    """The run's vmlinux (manifest ``vmlinux``, else ``<run dir>/vmlinux``)
    when it exists, or None."""
    cands = [manifest.get("vmlinux")]
    if manifest.get("_run_dir"):
        cands.append(os.path.join(manifest["_run_dir"], "vmlinux"))
    for c in cands:
        if c and os.path.isfile(c):
            return c
    return None


def file_entry(manifest: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
    """The ``files[]`` record of the guest path (e.g. "/mnt/xfs/big64"), or
    None.  A bare name ("big64") matches the last path component."""
    for f in manifest.get("files", []):
        p = f.get("path", "")
        if p == path or ("/" not in path and p.rsplit("/", 1)[-1] == path):
            return f
    return None


def hexint(v: Any) -> int:
    """Manifest addresses are hex strings; accept ints too."""
    return v if isinstance(v, int) else int(str(v), 0)
