#!/bin/sh
# bakeoff's recipe for a Rumprun toolchain: Rumprun's `xen` and `hw` platforms built from one
# source tree into one prefix, so that `rumprun-bake` offers both `xen_pv` and `hw_virtio`.
# `bakeoff toolchain build` runs this script (crates/pack/src/toolchain.rs); the script's bytes
# are part of the toolchain's cache key, so any change here builds a new toolchain.
#
#   build-toolchain.sh SRC WORK PREFIX JOBS
#
# SRC     a writable copy of the source tree (rumprun with buildrump.sh and src-netbsd in place)
# WORK    an empty scratch directory (object files; removed by the caller afterwards)
# PREFIX  where the toolchain will finally live; it is installed into WORK/dest and every
#         text file that names WORK/dest is rewritten to name PREFIX (the caller renames it)
# JOBS    make jobs
#
# What Debian 12 (gcc 12, binutils 2.40, Xen 4.17 headers) needs beyond upstream's steps:
#  - `-fcommon` for the host tools, the rump kernel and Mini-OS, which define globals in headers
#    (gcc 10 made -fno-common the default);
#  - warnings are not errors (`-Wno-error`, NOGCCERROR, `-Werror` out of Mini-OS's flags);
#  - the Xen header probe with `-idirafter`: Xen's features.h would shadow glibc's;
#  - `-mstackrealign` for Mini-OS: its event handler enters C with a stack that is not 16-byte
#    aligned, and gcc's SSE stores to the stack then fault (a general protection fault in
#    Mini-OS's `down()` at the first packet a PV domain receives);
#  - C++ left out (CXX=false makes buildrump.sh's C++ probe fail): bakeoff bakes C programs
#    only, and libc++ is the longest single part of the build.
# The rump kernel and NetBSD's libc are the same for both platforms, so they are built once:
# both platforms share one object directory, and only what is the platform's own (Rumprun's
# platform libraries, the app tools, the baked-in linker scripts) is removed between the two.
# Xen goes first because its platform sets MAXPHYS=32768 for the rump kernel (Xen's block
# front end moves at most 44 KiB per request); the hw platform is content with that value.
set -eu

src=$1
work=$2
prefix=$3
jobs=$4

say() { echo "recipe: $*"; }
die() { echo "recipe: $*" >&2; exit 1; }

cd "$src"
[ -f build-rr.sh ] && [ -f buildrump.sh/buildrump.sh ] && [ -d src-netbsd/sys ] ||
  die "$src is not Rumprun's source tree (build-rr.sh, buildrump.sh/buildrump.sh and src-netbsd/sys are expected)"

# The recipe's edits; each one must find what it changes, or the source is not the one the
# recipe was written for.
edit() { # FILE SED-EXPR WHAT-MUST-BE-THERE-AFTERWARDS
  sed -i "$2" "$1"
  grep -q -- "$3" "$1" || die "the recipe's edit of $1 did not apply (this Rumprun source differs from the one the recipe knows)"
}
edit build-rr.sh 's/| ${CC} -I${loc} -x c/| ${CC} -idirafter ${loc} -x c/' '-idirafter ${loc}'
edit platform/xen/xen/minios.mk 's/^DEF_CFLAGS += -fno-builtin -Wall -Werror /DEF_CFLAGS += -fno-builtin -fcommon -mstackrealign -Wall /' '-fcommon -mstackrealign -Wall'

dest="$work/dest"
obj="$work/obj"
mkdir -p "$dest" "$obj"

pcidevs=$(sed -n 's/^RUMPPCIDEVS+\{0,1\}=[[:space:]]*//p' src-netbsd/sys/rump/dev/Makefile.rumpdevcomp)
case "$pcidevs" in *virtio_if_vioif*) ;; *) die "no PCI device list in src-netbsd/sys/rump/dev/Makefile.rumpdevcomp" ;; esac

export GIT=/nonexistent/git   # a tree without .git: build-rr.sh's branch test needs no git
export CXX=false
export HOST_CFLAGS="-O -fcommon"
for platform in xen hw; do
  say "building the $platform platform (rump kernel shared: $( [ -d "$obj/buildrump.sh" ] && echo reused || echo first build))"
  # What build-rr.sh builds per platform in its object directory, but decides by timestamp:
  # Rumprun's platform libraries and app tools, and the rump kernel's PCI drivers, which each
  # platform compiles with its own hypercalls and features (hw maps PCI I/O space, xen does not).
  rm -rf "$obj/lib" "$obj/app-tools" "$obj/rumprun.o" "$obj/pseudolinkstubs.c" \
    "$obj/pseudolinkstubs.o" "$obj/bmk.ldscript" "$obj/config" "$obj/config.mk" \
    "$obj/config.sh" "$obj/config-PATH.sh"
  for dev in $pcidevs; do rm -rf "$obj/buildrump.sh/sys/rump/dev/lib/lib$dev"; done
  ./build-rr.sh -j"$jobs" -o "$obj" -d "$dest" "$platform" -- \
    -F CFLAGS=-fcommon -F CWARNFLAGS=-Wno-error -V NOGCCERROR=yes
done

# Move the prefix: the app tools name their own directory in scripts and specs.
say "relocating $dest to $prefix"
grep -rlI -- "$dest" "$dest" | while IFS= read -r f; do
  sed -i "s#$dest#$prefix#g" "$f"
done
left=$(grep -rlI -- "$work" "$dest" | head -3 || true)
[ -z "$left" ] || die "the toolchain still names its build directory in: $left"
for tool in bin/x86_64-rumprun-netbsd-gcc bin/rumprun-bake; do
  [ -x "$dest/$tool" ] || die "the build finished without $tool"
done
say "done"
