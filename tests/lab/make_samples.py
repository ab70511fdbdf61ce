"""Regenerate ``sample_dumps/``: snapshots captured from real lab vmcores,
clean and with planted corruption (tests/lab/plant.py).

    python -m tests.lab.make_samples [--out sample_dumps]

Each sample is ``crashext capture`` of named files of one dump; the
provenance (lab release, dump, planted cases) is stored in the snapshot's
note and printed for sample_dumps/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from crashext.analyze import analyze                      # noqa: E402
from crashext.backends.drgn import DrgnMemory             # noqa: E402
from crashext.backends.snapshot import RecordingMemory, save  # noqa: E402

from tests.lab import labdumps, plant                     # noqa: E402

#: name -> (family, planted cases (empty: the clean ELF dump), files)
SAMPLES = {
    "seed-6.1": ("6.1", ["seed"], ["/mnt/xfs/big200"]),
    "clean-6.1": ("6.1", [], ["/mnt/xfs/big64", "/mnt/xfs/shadow64",
                              "/mnt/xfs/dirty32", "/mnt/thp/thp16"]),
    "clean-6.12": ("6.12", [], ["/mnt/xfs/big200", "/mnt/xfs/split64"]),
    "crosslink-6.12": ("6.12", ["cross_linked"], ["/mnt/xfs/dirty32"]),
    "stale-siblings-6.1": ("6.1", ["sibling_to_null", "split_stale"],
                           ["/mnt/xfs/shadow64", "/mnt/xfs/big200"]),
    "unreadable-6.12": ("6.12", ["unreadable_node", "wrong_index"],
                        ["/mnt/xfs/split64"]),
}


def make(name: str, out_dir: str) -> str:
    family, cases, files = SAMPLES[name]
    m = labdumps.load_manifest(family)
    if m is None:
        raise SystemExit("no lab run for %s" % family)
    vml = labdumps.vmlinux_path(m)
    truth = {"sample": name, "family": family, "release": m["release"],
             "files": files, "cases": []}
    if cases:
        core, _tp, t = plant.make_planted(family, cases)
        src = "planted %s into vmcore.elf" % "+".join(cases)
        keep = ("case", "file", "codes", "indices", "may_also", "must_not",
                "node", "slots")
        truth["cases"] = [{k: c.get(k) for k in keep} for c in t["cases"]]
    else:
        core = labdumps.dump_path(m, "elf")
        src = "vmcore.elf, unmodified"
    rec = RecordingMemory(DrgnMemory.open(core, vml))
    verdicts = []
    for f in files:
        a = analyze(rec, f)
        rec.targets.append(f)
        verdicts.append("%s %s" % (f, a.verdict))
    note = "lab %s (%s), %s" % (family, m["release"], src)
    path = os.path.join(out_dir, name + ".snap")
    size = save(rec, path, note)
    with open(os.path.join(out_dir, name + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")
    print("%-20s %7d B  %s; %s" % (name + ".snap", size, note,
                                   ", ".join(verdicts)))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "sample_dumps"))
    ap.add_argument("names", nargs="*", default=list(SAMPLES))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for n in args.names:
        make(n, args.out)


if __name__ == "__main__":
    main()
