"""drgn_xa.py XARRAY: crashext's ``xa`` command in drgn on the RUNNING
kernel (``drgn drgn_xa.py ...`` without -c: drgn opens /proc/kcore and
says the program is live).  One ``RESULT {json}`` line per command."""
import contextlib
import io
import json
import sys

from drgn.commands import run_command

xa = sys.argv[1]
for cmd in ("xa check --live -f json xarray:%s" % xa,
            "xa check -f json /data/big64",
            "xa scan -f json --fs tmpfs"):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = run_command(prog, cmd)          # noqa: F821 (drgn's global)
    rec = {"kind": "drgnxa", "cmd": cmd, "rc": rc,
           "live": bool(prog.flags & __import__("drgn").ProgramFlags.IS_LIVE)}  # noqa: F821
    try:
        d = json.loads(out.getvalue())
        if str(d.get("format", "")).startswith("crashext.scan/"):
            # a scan document has a verdict too, but rows, not findings
            rec.update(verdict=d.get("verdict"),
                       by_verdict=d.get("by_verdict"))
        else:
            rec.update(verdict=d["verdict"], live_judgement=d.get("live"),
                       codes=sorted({f["code"] for f in d["findings"]}))
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        rec["stdout"] = out.getvalue()[-500:]
        rec["unread"] = "%s: %s" % (type(e).__name__, e)
    print("RESULT " + json.dumps(rec, sort_keys=True), flush=True)
