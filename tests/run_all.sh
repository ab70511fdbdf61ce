#!/usr/bin/env bash
# Install crashext with its test dependencies, make real lab vmcores
# (Debian 6.1, 6.12 and 7.3 kernels under QEMU, ../shared/lab: one --quick
# boot each, and one 6.1 boot with 10000 small cached files), run the
# live lab once (a running 6.1 kernel, ../shared/lab/live:
# tests/live/run_live.sh) and run every test.
# Usage: bash tests/run_all.sh [pytest args]
#   CRASHEXT_NO_LAB=1     skip making lab dumps and the live lab (lab tests
#                         then skip)
#   CRASHEXT_NO_LIVE=1    skip the live lab only
#   CRASHEXT_LIVE_OUT     live lab directory (default $LAB/live-ci)
#   LAB_KERNELS="6.1"     which kernel families to boot (default
#                         "6.1 6.12 7.3"); the lab tests run on the same
#                         families (CRASHEXT_LAB_FAMILIES, tests/lab/labdumps.py)
#   LAB_PANIC="6.1"       families of those that also get a real panic dump
#                         (mkdump.sh --quick --panic; default "6.1 7.3";
#                         the fleet tests read CRASHEXT_LAB_PANIC_FAMILIES)
#   LAB_KASLR=1           boot them with --kaslr (tests then use the KASLR runs)
#   LAB_MKDUMP=CMD        run lab boots through CMD (same arguments as
#                         mkdump.sh; e.g. a wrapper that takes a lock)
#   CI=true               a failed lab run fails this script, and every
#                         test that would skip fails (tests/conftest.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
KERNELS=${LAB_KERNELS:-6.1 6.12 7.3}
export CRASHEXT_LAB_FAMILIES=${CRASHEXT_LAB_FAMILIES:-$KERNELS}
PANIC=""
for k in ${LAB_PANIC-6.1 7.3}; do
	case " $KERNELS " in *" $k "*) PANIC="$PANIC $k" ;; esac
done
export CRASHEXT_LAB_PANIC_FAMILIES=${CRASHEXT_LAB_PANIC_FAMILIES:-$PANIC}
ci=0
case "${CI:-}" in ""|0|false|no) ;; *) ci=1 ;; esac
echo "== install"
# dask[distributed]: the triage tests start a real Dask scheduler and
# workers (and a local cluster).
$PY -m pip install -q --disable-pip-version-check -e '.[test,dask]'
# crash 8.0.2 (and its defs.h) is the oracle for order-0 trees and rd, and
# a C compiler builds the test that stands in for PyKdump's registration.
need=()
command -v crash > /dev/null || need+=(crash)
command -v cc > /dev/null || command -v gcc > /dev/null || need+=(gcc)
if [ "$(id -u)" = 0 ] && [ ${#need[@]} -gt 0 ]; then
	(apt-get install -y -q "${need[@]}" > /dev/null 2>&1 ||
	 { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q "${need[@]}" > /dev/null 2>&1; }) ||
		echo "could not install ${need[*]}; the tests that need them will skip"
fi
LAB_SCRIPT=${LAB_MKDUMP:-../shared/lab/mkdump.sh}
failed=""
if [ "${CRASHEXT_NO_LAB:-0}" != 1 ]; then
	if [ ! -x "$LAB_SCRIPT" ]; then
		echo "no lab script at $LAB_SCRIPT: lab tests will skip" >&2
		failed="(no lab script)"
	fi
	[ -n "${LAB_KASLR:-}" ] && [ "$LAB_KASLR" != 0 ] && export CRASHEXT_LAB_KASLR=1
	# boot NAME LOG MKDUMP-ARGS...: one lab boot, its time, its failure
	# remembered (CI fails on it).
	boot() {
		local name=$1 log=$2 start
		shift 2
		[ "${CRASHEXT_LAB_KASLR:-0}" = 1 ] && set -- "$@" --kaslr
		echo "== lab $name (one boot): mkdump.sh $*"
		start=$(date +%s)
		if ! "$LAB_SCRIPT" "$@" > "$log" 2>&1; then
			tail -20 "$log"
			echo "lab run $name failed (see $log); its tests will skip" >&2
			failed="$failed $name"
		else
			tail -1 "$log"
			echo "   ($(( $(date +%s) - start )) s)"
		fi
	}
	if [ -x "$LAB_SCRIPT" ]; then
		for k in $KERNELS; do
			# 6.1 also gets a file of order-0 folios, where crash is right.
			if [ "$k" = 6.1 ]; then
				boot "vmcore $k" "lab-$k.log" --quick --kernel "$k" \
					--bigfile 256M --bigfile-ra 0
			else
				boot "vmcore $k" "lab-$k.log" --quick --kernel "$k"
			fi
		done
		# 10000 small cached files (6.1): scan output that does not fit
		# in a pipe, for the scale tests (tests/test_scan_scale.py).
		case " $KERNELS " in *" 6.1 "*)
			boot "manyfiles 6.1" lab-6.1-many.log --quick --kernel 6.1 \
				--manyfiles 10000 ;;
		esac
		for k in $PANIC; do
			boot "panic vmcore $k" "lab-$k-panic.log" --quick --kernel "$k" --panic
		done
	fi
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
	start=$(date +%s)
	if ! bash tests/live/run_live.sh "$CRASHEXT_LIVE_OUT" > lab-live.log 2>&1; then
		tail -20 lab-live.log
		echo "live lab failed (see lab-live.log); tests/test_live.py fails" >&2
		failed="$failed live"
	else
		tail -3 lab-live.log
		echo "   ($(( $(date +%s) - start )) s)"
	fi
fi
echo "== tests (lab families: $CRASHEXT_LAB_FAMILIES; panic:$PANIC)"
rc=0
$PY -m pytest -q "$@" || rc=$?
if [ -n "$failed" ] && [ $ci = 1 ]; then
	echo "CI: lab run(s) failed:$failed" >&2
	[ $rc = 0 ] && rc=1
fi
exit $rc
