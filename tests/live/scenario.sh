#!/bin/bash
# The livelab LIVE_SCRIPT of crashext's live tests (tests/live/run_live.sh
# bundles it with its payload: the test module crashext_xadamage.ko built
# against Debian's headers of the guest's kernel, guest_live.py, drgn_xa.py,
# all unpacked into /root/crashext-live before this runs).  Runs in the
# guest as root while live-init's loops rewrite /data/churn, /data/churn2
# and /mnt/thp/churn.  Prints "RESULT {json}" lines (read on the host by
# tests/test_live.py), "SCAN ..." per background scan, "XAD ..." lines of
# the module's ground truth.
# Env: CHECKS (live checks of the files being rewritten, 240), SCAN_PAUSE
# (seconds between two background "crashext scan --live", 3).
set -u
D=/root/crashext-live
CHECKS=${CHECKS:-240}
SCAN_PAUSE=${SCAN_PAUSE:-3}
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "SCEN [$(up)] $*"; }
result() { echo "RESULT $*"; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))'; }
KVER=$(uname -r)
VMLINUX=/usr/lib/debug/boot/vmlinux-$KVER

# --- the test module: a private XArray with the seed's damage patterns ----
insmod "$D/crashext_xadamage.ko"; rc=$?
say "insmod crashext_xadamage.ko rc=$rc"
sed 's/^/XAD /' /proc/crashext_xadamage
XA=$(awk '$1 == "xarray" {print $2}' /proc/crashext_xadamage)
result "{\"kind\": \"insmod\", \"rc\": $rc, \"xarray\": \"$XA\", \"taint\": \"$(cat /proc/sys/kernel/tainted)\"}"

# --- the module's XArray through the CLI: live, and replayed from a
# snapshot (what the same bytes give in dump mode) -------------------------
t=$(up)
crashext check --live -f json "xarray:$XA" > "$D/mod-live.json" 2> "$D/mod-live.err"; rc=$?
say "check --live xarray:$XA rc=$rc in $(awk -v a=$t -v b=$(up) 'BEGIN{print b-a}')s"
crashext capture --live -o "$D/mod.snap" "xarray:$XA" > /dev/null 2>&1; crc=$?
crashext check --snapshot "$D/mod.snap" -f json > "$D/mod-snap.json" 2>&1; src=$?
crashext chat --live "xarray:$XA" 2>&1 | sed 's/^/CHAT /' | head -n 40
python3 - "$D/mod-live.json" "$D/mod-snap.json" $rc $crc $src <<'PY'
import json, sys
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
def fs(d):
    return [{k: f.get(k) for k in ("code", "indices", "node", "slots", "folio")}
            for f in d.get("findings", [])]
live, snap = load(sys.argv[1]), load(sys.argv[2])
print("RESULT " + json.dumps({"kind": "cli_module", "rc": int(sys.argv[3]),
      "capture_rc": int(sys.argv[4]), "snapshot_rc": int(sys.argv[5]),
      "verdict": live.get("verdict"), "live": live.get("live"),
      "findings": fs(live), "snapshot_verdict": snap.get("verdict"),
      "snapshot_findings": fs(snap), "error": live.get("error") or snap.get("error")},
      sort_keys=True))
PY

# --- "crashext scan --live" of the whole guest, again and again -----------
rm -f "$D/stop"
(
	i=0
	while [ ! -e "$D/stop" ]; do
		i=$((i + 1)); t=$(up)
		crashext scan --live --nice 0 --cpu-percent 100 > "$D/scan-$i.jsonl" 2> "$D/scan-$i.err"; rc=$?
		rows=$(grep -vc '"kind": "summary"' "$D/scan-$i.jsonl")
		echo "SCAN $i rc=$rc start=$t end=$(up) rows=$rows err=$(head -c 300 "$D/scan-$i.err" | tr '\n' ' ')"
		grep -v '"kind": "summary"' "$D/scan-$i.jsonl" | head -n 5 | cut -c1-400 | sed "s/^/SCANROW $i /"
		echo "SCANSUM $i $(tail -n 1 "$D/scan-$i.jsonl")"
		sleep "$SCAN_PAUSE"
	done
) &
SCANLOOP=$!

# --- one process, one live drgn Program: static files, the module, and
# CHECKS checks of the files being rewritten -------------------------------
t=$(up)
python3 "$D/guest_live.py" --checks "$CHECKS" --xarray "$XA" --folio-file "$D/folio.addr" ${PROFILE:+--profile-scan}; rc=$?
say "guest_live.py rc=$rc in $(awk -v a=$t -v b=$(up) 'BEGIN{print b-a}')s"
touch "$D/stop"; wait "$SCANLOOP"
say "scan loop done"

# --- a scan within a time budget (stops early, says so) -------------------
crashext scan --live --max-seconds 3 --cpu-percent 50 > "$D/scan-budget.jsonl" 2>&1; rc=$?
echo "SCANBUDGET rc=$rc $(tail -n 1 "$D/scan-budget.jsonl")"

# --- drgn's xa command on the live kernel ----------------------------------
t=$(up)
drgn "$D/drgn_xa.py" "$XA" 2> "$D/drgn.err"; rc=$?
say "drgn xa rc=$rc in $(awk -v a=$t -v b=$(up) 'BEGIN{print b-a}')s $(grep -v -i 'missing\|debugging symbols' "$D/drgn.err" | head -c 300 | tr '\n' ' ')"

# --- folio --live: a folio of a file nobody changes is in exactly 1 slot --
FOLIO=$(cat "$D/folio.addr" 2>/dev/null)
if [ -n "$FOLIO" ]; then
	crashext folio --live "$FOLIO" > "$D/folio.out" 2>&1; rc=$?
	result "{\"kind\": \"cli_folio\", \"rc\": $rc, \"folio\": \"$FOLIO\", \"out\": $(jstr < "$D/folio.out")}"
fi

# --- one-line errors: not root, no debug info, kernel lockdown ------------
err_case() {   # name, command...
	local name=$1; shift
	"$@" > "$D/err.out" 2> "$D/err.err"; local rc=$?
	result "{\"kind\": \"error_case\", \"case\": \"$name\", \"rc\": $rc, \"stdout\": $(jstr < "$D/err.out"), \"stderr\": $(jstr < "$D/err.err")}"
}
err_case not_root setpriv --reuid=65534 --regid=65534 --clear-groups /opt/venv/bin/crashext check --live /data/big64
mv "$VMLINUX" "$VMLINUX.away"
err_case no_debuginfo crashext check --live /data/big64
err_case no_debuginfo_scan crashext scan --live
mv "$VMLINUX.away" "$VMLINUX"
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
result "{\"kind\": \"lockdown_before\", \"mode\": \"$(cat /sys/kernel/security/lockdown 2>&1)\"}"
if echo confidentiality > /sys/kernel/security/lockdown 2>/dev/null; then
	err_case lockdown crashext check --live /data/big64
	err_case lockdown_kcore crashext check --vmcore /proc/kcore --vmlinux "$VMLINUX" /data/big64
else
	result "{\"kind\": \"error_case\", \"case\": \"lockdown\", \"skipped\": \"$(cat /sys/kernel/security/lockdown 2>&1)\"}"
fi
say "done"
