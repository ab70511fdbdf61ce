"""Build ``/var/crash``-shaped folders from lab dumps, as the real kdump
tools lay them out (test support), and a debug-info folder in the
layouts distributions install vmlinux in.

* kexec-tools (RHEL/Fedora, kdump-lib.sh): ``<host-ip>-<YYYY-MM-DD-HH:MM:SS>/``
  holding ``vmcore`` (renamed from ``vmcore-incomplete`` when the save
  completes) and ``vmcore-dmesg.txt`` (vmcore-dmesg: the kernel log,
  ``[   16.589732] text``);
* kdump-tools (Debian/Ubuntu, kdump-config): ``<YYYYMMDDHHMM>/``
  holding ``dump.<stamp>`` (renamed from ``dump-incomplete``) and
  ``dmesg.<stamp>``, plus ``kexec_cmd`` at the top.

Dumps are symlinks to the lab's files (the names are the tools', the
bytes the lab's); a truncated dump is a real prefix copy.  The kernel
logs are the kernel lines of the run's ``console.log`` (what the kernel
printed on the serial console: the same records vmcore-dmesg reads from
the ring buffer).

:func:`build` returns the expected outcome for each entry, from the
lab's manifests and the planted dumps' truth files (no hard-coded
release, address or count).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional

from . import labdumps

_KLINE = re.compile(r"^\[\s*\d+\.\d+\] ")


def kernel_log(run_dir: str) -> str:
    """The kernel's lines of a lab run's console.log."""
    with open(os.path.join(run_dir, "console.log"), errors="replace") as f:
        return "".join(ln if ln.endswith("\n") else ln + "\n"
                       for ln in f if _KLINE.match(ln))


def _link(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.symlink(src, dst)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _dump(m: Dict[str, Any], name: str) -> Optional[str]:
    for d in m.get("dumps", []):
        if d.get("name") == name and d.get("drgn_ok", True) \
                and os.path.exists(d["path"]):
            return d["path"]
    return None


def debug_tree(root: str, manifests: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A debug-info folder: each release's vmlinux in another layout
    (Debian ``usr/lib/debug/boot``, the build-id tree, plain
    ``vmlinux-<rel>``, ``usr/lib/debug/lib/modules/<rel>/vmlinux``), and
    a wrong file under the last release's plain name (another kernel's
    vmlinux: it must never be used).  Returns {release: layout} and
    ``wrong``."""
    from crashext.triage.debuginfo import elf_build_id
    rels: Dict[str, str] = {}
    seen = []
    for m in manifests:
        if m["release"] not in seen:
            seen.append(m["release"])
    vml = {m["release"]: m["vmlinux"] for m in manifests}
    layouts = ["deb", "build-id", "plain", "modules"]
    out: Dict[str, Any] = {"layouts": rels, "wrong": None}
    for i, rel in enumerate(seen):
        # the last release in the modules layout, so a wrong file under
        # its plain name is met first
        lay = "modules" if i == len(seen) - 1 else layouts[i % 3]
        src = vml[rel]
        if lay == "deb":
            _link(src, os.path.join(root, "usr/lib/debug/boot",
                                    "vmlinux-" + rel))
        elif lay == "build-id":
            bid = elf_build_id(src)
            _link(src, os.path.join(root, "usr/lib/debug/.build-id",
                                    bid[:2], bid[2:] + ".debug"))
        elif lay == "plain":
            _link(src, os.path.join(root, "vmlinux-" + rel))
        else:
            _link(src, os.path.join(root, "usr/lib/debug/lib/modules", rel,
                                    "vmlinux"))
        rels[rel] = lay
    if len(seen) > 1:
        # another kernel's vmlinux under this release's plain name,
        # searched before the right one
        wrong = os.path.join(root, "vmlinux-" + seen[-1])
        _link(vml[seen[0]], wrong)
        out["wrong"] = wrong
    return out


def build(root: str, planted: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Lay out ``root`` as /var/crash of both tool families.  ``planted``:
    {tag: truth} of planted dumps (tags ``seed``, ``seed2``,
    ``panic-seed``, ``cross``).  Returns ``entries`` ({name: expected})
    and ``skipped`` (names that must be skipped), ``manifests``."""
    m61 = labdumps.load_manifest("6.1")
    mpanic = labdumps.load_manifest("6.1-panic")
    m612 = labdumps.load_manifest("6.12")
    # a third kernel when the lab has it (7.3, panic or not), else 6.12
    m73 = (labdumps.load_manifest("7.3-panic") or
           labdumps.load_manifest("7.3") or m612)
    entries: Dict[str, Dict[str, Any]] = {}
    skipped: List[str] = []

    def panic_of(m):
        return (m.get("panic") or {}).get("line")

    def add(name, src, log_run, expect, log_name):
        _link(src, os.path.join(root, name))
        if log_run:
            _write(os.path.join(root, os.path.dirname(name), log_name),
                   kernel_log(log_run))
        entries[name] = expect

    # kexec-tools
    t = planted["seed"]
    add("127.0.0.1-2026-11-20-03:14:07/vmcore", t["planted"],
        os.path.dirname(t["source"]),
        {"kind": "planted", "truth": t, "panic": None,
         "release": t["release"]}, "vmcore-dmesg.txt")
    add("10.0.0.7-2026-11-21-08:02:55/vmcore",
        _dump(mpanic, "makedumpfile-d31") or _dump(mpanic, "elf"),
        mpanic["_run_dir"], {"kind": "panic", "panic": panic_of(mpanic),
                             "release": mpanic["release"]},
        "vmcore-dmesg.txt")
    inc = os.path.join(root, "10.0.0.8-2026-11-22-11:40:10/vmcore-incomplete")
    _link(_dump(m61, "elf"), inc)
    skipped.append("10.0.0.8-2026-11-22-11:40:10/vmcore-incomplete")
    # a dump cut short (the save ran out of disk): only its first 4 MiB,
    # a real prefix; its kernel log survives in vmcore-dmesg.txt
    trunc = os.path.join(root, "10.0.0.9-2026-11-23-01:00:00/vmcore")
    os.makedirs(os.path.dirname(trunc))
    with open(_dump(mpanic, "elf"), "rb") as f, open(trunc, "wb") as g:
        g.write(f.read(4 << 20))
    _write(os.path.join(os.path.dirname(trunc), "vmcore-dmesg.txt"),
           kernel_log(mpanic["_run_dir"]))
    entries["10.0.0.9-2026-11-23-01:00:00/vmcore"] = {
        "kind": "truncated", "panic": panic_of(mpanic),
        "release": mpanic["release"]}
    # kdump-tools
    _write(os.path.join(root, "kexec_cmd"),
           "/sbin/kexec -p --command-line=\"...\"\n")
    t = planted["panic-seed"]
    add("202611240310/dump.202611240310", t["planted"], mpanic["_run_dir"],
        {"kind": "planted", "truth": t, "panic": panic_of(mpanic),
         "release": t["release"]}, "dmesg.202611240310")
    t = planted["cross"]
    add("202611250411/dump.202611250411", t["planted"],
        os.path.dirname(t["source"]),
        {"kind": "planted", "truth": t, "panic": None,
         "release": t["release"]}, "dmesg.202611250411")
    d73 = (_dump(m73, "makedumpfile-d17") if m73 is not m612 else None) \
        or _dump(m73, "elf")
    add("202611260512/dump.202611260512", d73, m73["_run_dir"],
        {"kind": "panic" if panic_of(m73) else "clean",
         "panic": panic_of(m73), "release": m73["release"]},
        "dmesg.202611260512")
    # kdump-tools piping makedumpfile -F: a flattened dump
    d31 = _dump(m61, "makedumpfile-d31")
    flat = flattened(d31, m61["vmlinux"], str(labdumps.planted_dir())) \
        if d31 else None
    if flat:
        add("202611290815/dump.202611290815", flat, m61["_run_dir"],
            {"kind": "clean", "panic": None, "release": m61["release"],
             "format": "flattened"}, "dmesg.202611290815")
    _write(os.path.join(root, "202611270613/dump-incomplete"), "")
    skipped.append("202611270613/dump-incomplete")
    _write(os.path.join(root, "202611280714/dump.202611280714"), "")
    skipped.append("202611280714/dump.202611280714")
    # a list of plain files, elsewhere
    lst = os.path.join(os.path.dirname(root), "more-dumps.txt")
    t = planted["seed2"]
    with open(lst, "w") as f:
        f.write("# dumps copied off two other hosts\n%s\n%s\n"
                % (_dump(m61, "elf"), t["planted"]))
    entries[os.path.basename(_dump(m61, "elf"))] = {
        "kind": "clean", "panic": None, "release": m61["release"],
        "list": True}
    entries[os.path.basename(t["planted"])] = {
        "kind": "planted", "truth": t, "panic": None,
        "release": t["release"], "list": True}
    return {"entries": entries, "skipped": skipped, "list": lst,
            "manifests": [m for i, m in enumerate([m61, mpanic, m612, m73])
                          if m not in [m61, mpanic, m612, m73][:i]]}


def flattened(src: str, vmlinux: str, out_dir: str) -> Optional[str]:
    """A makedumpfile-flattened copy of the kdump-compressed ``src``, as
    kdump-tools writes it when the dump is piped (``makedumpfile -F``,
    e.g. to ssh): made once by the real makedumpfile and reused while
    ``src`` is unchanged; None when makedumpfile is not installed."""
    import shutil
    import subprocess
    mk = shutil.which("makedumpfile")
    if mk is None:
        return None
    st = os.stat(src)
    key = {"src": os.path.realpath(src), "size": st.st_size,
           "mtime_ns": st.st_mtime_ns}
    out = os.path.join(out_dir, os.path.basename(os.path.dirname(
        os.path.realpath(src))) + ".flat")
    side = out + ".src.json"
    try:
        with open(side) as f:
            if json.load(f) == key and os.path.isfile(out):
                return out
    except (OSError, ValueError):
        pass
    os.makedirs(out_dir, exist_ok=True)
    tmp = out + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        r = subprocess.run([mk, "-F", "-c", "-d", "31", "-x", vmlinux, src],
                           stdout=f, stderr=subprocess.PIPE)
    if r.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError("makedumpfile -F failed: %s"
                           % r.stderr.decode(errors="replace")[-500:])
    os.replace(tmp, out)
    with open(side, "w") as f:
        json.dump(key, f)
    return out


def make_planted_set(out_dir: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """The planted dumps the crash folder uses (made once, reused)."""
    from . import plant
    d = out_dir or str(labdumps.planted_dir())
    spec = {"seed": ("6.1", ["seed"], "6.1-seed"),
            "seed2": ("6.1", ["seed", "wrong_index"], "6.1-seed+wrong_index"),
            "panic-seed": ("6.1-panic", ["seed"], "6.1-panic-seed"),
            "cross": ("6.12", ["cross_linked"], "6.12-cross_linked")}
    out = {}
    for tag, (fam, cases, name) in spec.items():
        _p, _tp, truth = plant.make_planted(
            fam, cases, os.path.join(d, name + ".elf"))
        out[tag] = truth
    return out
