#!/usr/bin/env bash
# Install crashext with its test dependencies, make real lab vmcores
# (Debian 6.1 and 6.12 kernels under QEMU, ../shared/lab: one boot each)
# and run every test.
# Usage: bash tests/run_all.sh [pytest args]
#   CRASHEXT_NO_LAB=1     skip making lab dumps (lab tests then skip)
#   LAB_KERNELS="6.1"     which kernel families to boot (default "6.1 6.12")
#   LAB_PANIC="6.1 7.3"   families that also get a real panic dump
#                         (mkdump.sh --quick --panic; default "6.1")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== install"
# dask: the triage tests start a real Dask scheduler and workers
$PY -m pip install -q --disable-pip-version-check -e '.[test,dask]'
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
	for k in ${LAB_PANIC-6.1}; do
		echo "== lab panic vmcore $k (one boot): mkdump.sh --quick --kernel $k --panic"
		if ! "$LAB_SCRIPT" --quick --kernel "$k" --panic > "lab-$k-panic.log" 2>&1; then
			tail -20 "lab-$k-panic.log"
			echo "lab panic run $k failed (see lab-$k-panic.log); its tests will skip" >&2
		else
			tail -1 "lab-$k-panic.log"
		fi
	done
fi
echo "== tests"
exec $PY -m pytest -q "$@"
