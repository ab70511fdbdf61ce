#!/bin/bash
# build_module.sh OUTDIR KVER
# Builds the test module tests/live/xadamage (a private XArray with the
# seed's damage patterns) for kernel release KVER (e.g. 6.1.0-50-amd64)
# against Debian's own linux-headers of that release: linux-headers-KVER,
# linux-headers-<abi>-common and linux-kbuild-X.Y of the exact package
# version of the lab's kernel, fetched with "apt-get download" into a cache
# ($HDR_CACHE, default $LAB/headers) and unpacked there (dpkg-deb -x; the
# only absolute path, the -common Makefile include, is pointed at the
# unpacked copy).  Nothing installed on the machine is used but gcc-12 and
# make.  Writes OUTDIR/crashext_xadamage.ko (debug info stripped).
# Env: LAB (/var/cache/crashext-lab), HDR_CACHE, KDEB_VERSION (default: the
# version of the lab's linux-image-KVER deb, else apt's candidate).
set -euo pipefail
OUT=$(realpath -m "$1"); KVER=$2
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${LAB:-/var/cache/crashext-lab}
CACHE=${HDR_CACHE:-$LAB/headers}
say() { echo "build_module: $*" >&2; }
die() { say "$*"; exit 1; }
mkdir -p "$OUT" "$CACHE"
for c in gcc-12 make dpkg-deb apt-get; do
	command -v "$c" > /dev/null || die "needs $c (apt-get install gcc-12 make)"
done

# The package version: the lab's kernel deb says it.
VER=${KDEB_VERSION:-}
if [ -z "$VER" ]; then
	deb=$(ls "$LAB"/debs/linux-image-"$KVER"-unsigned_*.deb "$LAB"/debs/linux-image-"$KVER"_*.deb 2>/dev/null | head -n 1 || true)
	[ -n "$deb" ] && VER=$(dpkg-deb -f "$deb" Version)
fi
apt_show() { apt-cache show "$1" 2>/dev/null; }
if [ -z "$VER" ]; then
	VER=$(apt_show "linux-headers-$KVER" | awk '/^Version:/ {print $2; exit}')
fi
[ -n "$VER" ] || die "no package version known for $KVER (no lab deb, apt knows no linux-headers-$KVER)"

# Which kbuild package the headers need (linux-kbuild-6.1 for 6.1.0-N).
deps=$(apt_show "linux-headers-$KVER=$VER" | awk '/^Depends:/ {print; exit}')
if [ -z "$deps" ] && [ "$(id -u)" = 0 ]; then
	say "apt-get update (apt does not know linux-headers-$KVER=$VER)"
	apt-get update -q > "$CACHE/apt-update.log" 2>&1 || true
	deps=$(apt_show "linux-headers-$KVER=$VER" | awk '/^Depends:/ {print; exit}')
fi
[ -n "$deps" ] || die "apt offers no linux-headers-$KVER=$VER"
common=$(echo "$deps" | grep -o 'linux-headers-[^ ,]*-common' | head -n 1)
kbuild=$(echo "$deps" | grep -o 'linux-kbuild-[0-9.]*' | head -n 1)
[ -n "$common" ] && [ -n "$kbuild" ] || die "cannot read the headers' dependencies: $deps"

DEBS=$CACHE/debs; mkdir -p "$DEBS"
need=()
for p in "linux-headers-$KVER" "$common" "$kbuild"; do
	ls "$DEBS/${p}_${VER}_"*.deb > /dev/null 2>&1 || need+=("$p=$VER")
done
if [ ${#need[@]} -gt 0 ]; then
	say "apt-get download ${need[*]}"
	# apt's sandbox user cannot write into root-owned caches; that is a
	# warning, not an error.
	(cd "$DEBS" && apt-get download -q "${need[@]}") > "$CACHE/download.log" 2>&1 \
		|| { tail -n 5 "$CACHE/download.log" >&2; die "apt-get download failed"; }
fi

TREE=$CACHE/tree-$KVER-$VER
HDR=$TREE/usr/src/linux-headers-$KVER
if [ ! -f "$TREE/.done" ]; then
	rm -rf "$TREE"; mkdir -p "$TREE"
	for p in "linux-headers-$KVER" "$common" "$kbuild"; do
		dpkg-deb -x "$(ls "$DEBS/${p}_${VER}_"*.deb | head -n 1)" "$TREE"
	done
	# "include /usr/src/linux-headers-...-common/Makefile" -> the copy.
	sed -i "s#^include /usr/src/#include $TREE/usr/src/#" "$HDR/Makefile"
	touch "$TREE/.done"
fi

B=$OUT/xadamage-build; rm -rf "$B"; mkdir -p "$B"
cp "$HERE"/xadamage/Kbuild "$HERE"/xadamage/*.c "$B"/
make -s -C "$HDR" M="$B" modules > "$B/build.log" 2>&1 \
	|| { tail -n 30 "$B/build.log" >&2; die "module build failed (see $B/build.log)"; }
if grep -qi "warning" "$B/build.log"; then grep -i warning "$B/build.log" >&2; fi
cp "$B/crashext_xadamage.ko" "$OUT/crashext_xadamage.ko"
strip --strip-debug "$OUT/crashext_xadamage.ko"
magic=$(modinfo -F vermagic "$OUT/crashext_xadamage.ko" 2>/dev/null || true)
case "$magic" in "$KVER "*) ;; *) die "vermagic '$magic' is not for $KVER";; esac
say "built $OUT/crashext_xadamage.ko for $KVER ($VER): $(stat -c %s "$OUT/crashext_xadamage.ko") bytes, vermagic $magic"
