#!/usr/bin/env bash
# Install crashext with its test dependencies, make real lab vmcores
# (Debian 6.1 and 6.12 kernels under QEMU, ../shared/lab: one boot each),
# run the live lab once (a running 6.1 kernel, ../shared/lab/live:
# tests/live/run_live.sh) and run every test.
# Usage: bash tests/run_all.sh [pytest args]
#   CRASHEXT_NO_LAB=1     skip making lab dumps and the live lab (lab tests
#                         then skip)
#   CRASHEXT_NO_LIVE=1    skip the live lab only
#   CRASHEXT_LIVE_OUT     live lab directory (default $LAB/live-ci)
#   LAB_KERNELS="6.1"     which kernel families to boot (default "6.1 6.12")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== install"
$PY -m pip install -q --disable-pip-version-check -e '.[test]'
if [ "$(id -u)" = 0 ] && ! command -v crash > /dev/null; then
	# crash 8.0.2 is the oracle for order-0 trees and rd
	(apt-get install -y -q crash > /dev/null 2>&1 ||
	 { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q crash > /dev/null 2>&1; }) ||
		echo "could not install crash; crash oracle tests will skip"
fi
LAB_SCRIPT=../shared/lab/mkdump.sh
if [ "${CRASHEXT_NO_LAB:-0}" != 1 ] && [ -x "$LAB_SCRIPT" ]; then
	for k in ${LAB_KERNELS:-6.1 6.12}; do
		args=(--quick --kernel "$k")
		# 6.1 also gets a file of order-0 folios, where crash is right.
		[ "$k" = 6.1 ] && args+=(--bigfile 256M --bigfile-ra 0)
		echo "== lab vmcore $k (one boot): mkdump.sh ${args[*]}"
		if ! "$LAB_SCRIPT" "${args[@]}" > "lab-$k.log" 2>&1; then
			tail -20 "lab-$k.log"
			echo "lab run $k failed (see lab-$k.log); its tests will skip" >&2
		else
			tail -1 "lab-$k.log"
		fi
	done
fi
LIVE_LAB=../shared/lab/live/livelab.sh
export CRASHEXT_LIVE_OUT=${CRASHEXT_LIVE_OUT:-${LAB:-/var/cache/crashext-lab}/live-ci}
if [ "${CRASHEXT_NO_LAB:-0}" != 1 ] && [ "${CRASHEXT_NO_LIVE:-0}" != 1 ] \
		&& [ -x "$LIVE_LAB" ] && [ "$(id -u)" = 0 ]; then
	# The test module is built here against Debian's headers: gcc-12, make.
	command -v gcc-12 > /dev/null && command -v make > /dev/null ||
		{ apt-get install -y -q gcc-12 make > /dev/null 2>&1 ||
		  { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q gcc-12 make > /dev/null 2>&1; }; } ||
		echo "could not install gcc-12/make; the live lab will fail"
	echo "== live lab (one boot): tests/live/run_live.sh $CRASHEXT_LIVE_OUT"
	if ! bash tests/live/run_live.sh "$CRASHEXT_LIVE_OUT" > lab-live.log 2>&1; then
		tail -20 lab-live.log
		echo "live lab failed (see lab-live.log)" >&2
	else
		tail -3 lab-live.log
	fi
fi
echo "== tests"
exec $PY -m pytest -q "$@"
