#!/usr/bin/env bash
# Install crashext with its test dependencies, make one real lab vmcore
# (Debian 6.1 kernel under QEMU, ../shared/lab) and run every test.
# Usage: bash tests/run_all.sh [pytest args]
#   CRASHEXT_NO_LAB=1   skip making the lab dump (lab tests then skip)
#   LAB_KERNEL=6.12     which kernel family the lab boots (default 6.1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== install"
$PY -m pip install -q --disable-pip-version-check -e '.[test]'
LAB_SCRIPT=../shared/lab/mkdump.sh
if [ "${CRASHEXT_NO_LAB:-0}" != 1 ] && [ -x "$LAB_SCRIPT" ]; then
	echo "== lab vmcore (${LAB_KERNEL:-6.1}, one boot)"
	if ! "$LAB_SCRIPT" --quick --kernel "${LAB_KERNEL:-6.1}" > lab.log 2>&1; then
		tail -20 lab.log
		echo "lab run failed (see lab.log); lab tests will skip" >&2
	else
		tail -2 lab.log
	fi
fi
echo "== tests"
exec $PY -m pytest -q "$@"
