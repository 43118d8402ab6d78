#!/usr/bin/env bash
# Installs libws: libws.so with its soname links, libws.a, ws.h and ws.pc.
#   PREFIX     where it will live (default /usr/local)
#   DESTDIR    a staging root prepended to every path (default none)
#   LIBDIR, INCLUDEDIR   default $PREFIX/lib and $PREFIX/include
#   BUILD_DIR  where the libraries were built (default target/release)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
libdir=${LIBDIR:-$prefix/lib}
includedir=${INCLUDEDIR:-$prefix/include}
build=${BUILD_DIR:-$root/target/release}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
# Written once each: the soname, and what linking libws.a takes.
soname=$(grep -v -e '^#' -e '^$' "$root/scripts/soname.txt")
static_libs=$(grep -v -e '^#' -e '^$' "$root/scripts/static-libs.txt")

for f in libws.so libws.a; do
  [ -f "$build/$f" ] || { echo "install.sh: $build/$f is missing: run 'make build' first" >&2; exit 1; }
done
install -d "$destdir$libdir/pkgconfig" "$destdir$includedir"
install -m 0755 "$build/libws.so" "$destdir$libdir/libws.so.$version"
ln -sfn "libws.so.$version" "$destdir$libdir/$soname"
ln -sfn "$soname" "$destdir$libdir/libws.so"
install -m 0644 "$build/libws.a" "$destdir$libdir/libws.a"
install -m 0644 "$root/include/ws.h" "$destdir$includedir/ws.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@INCLUDEDIR@|$includedir|g" \
    -e "s|@VERSION@|$version|g" -e "s|@STATIC_LIBS@|$static_libs|g" "$root/ws.pc.in" > "$destdir$libdir/pkgconfig/ws.pc"
echo "installed libws $version under $destdir$prefix"
