#!/usr/bin/env bash
# Builds the lighttpd-mod-sufcgi Debian package from an already built plugin:
#
#   packaging/lighttpd/build-deb.sh MODULE.so OUTDIR
#
# and prints the path of OUTDIR/lighttpd-mod-sufcgi_<version>_<arch>.deb.
# `make deb` runs it after `make build` (MODULE.so is build/lighttpd/mod_sufcgi.so);
# tests/test_deb.py runs it on the plugin the other integration tests use. A
# plain dpkg-deb over a staging tree, as packaging/debian/build-deb.sh does for
# the Apache module: it needs only dpkg (and dpkg-dev for dpkg-shlibdeps).
#
# Environment: LIGHTTPD_SRC (the lighttpd sources the plugin was built against,
# default build/lighttpd-src: its .debian-version names the lighttpd release),
# DEB_REVISION (default 1), DEB_MAINTAINER (default "sufcgi maintainers
# <sufcgi@example.org>"), SOURCE_DATE_EPOCH (the changelog's date; default:
# the last commit's, else now).
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 MODULE.so OUTDIR" >&2
	exit 2
fi
module=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared="$repo/packaging/debian" # copyright and changelog, shared with the Apache package
pkg=lighttpd-mod-sufcgi
moddir=/usr/lib/lighttpd # lighttpd's compiled-in server.modules-dir on Debian

[ -f "$module" ] || { echo "$module does not exist: run \`make build\` first" >&2; exit 1; }
# A lighttpd plugin exports <name>_plugin_init; the Apache module does not.
if ! nm -D --defined-only "$module" 2>/dev/null | grep -q ' T mod_sufcgi_plugin_init$'; then
	echo "$module is not the lighttpd plugin (no mod_sufcgi_plugin_init): use build/lighttpd/mod_sufcgi.so" >&2
	exit 1
fi

# --- what the package is built for -------------------------------------------
upstream=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$upstream" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
version="$upstream-${DEB_REVISION:-1}"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"sufcgi maintainers <sufcgi@example.org>"}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
# dpkg-deb takes it too: the ar members' dates, and file dates clamped to it.
export SOURCE_DATE_EPOCH

# The plugin ABI: lighttpd loads a plugin only if the version it was compiled
# with (LIGHTTPD_VERSION_ID, from the headers of Debian's source package for
# the release in .debian-version) equals its own, so the package depends on
# exactly that upstream release, whatever the Debian revision.
lighttpd_src=${LIGHTTPD_SRC:-"$repo/build/lighttpd-src"}
if [ -s "$lighttpd_src/.debian-version" ]; then
	lighttpd_version=$(cat "$lighttpd_src/.debian-version")
elif lighttpd_version=$(dpkg-query -W -f='${Version}' lighttpd 2>/dev/null) && [ -n "$lighttpd_version" ]; then
	echo "warning: no $lighttpd_src/.debian-version: assuming the plugin was built against the installed lighttpd $lighttpd_version" >&2
else
	echo "cannot tell which lighttpd the plugin was built against: no $lighttpd_src/.debian-version and lighttpd is not installed" >&2
	exit 1
fi
epoch=""
case "$lighttpd_version" in *:*) epoch="${lighttpd_version%%:*}:" ;; esac
lighttpd_upstream=${lighttpd_version#*:}
lighttpd_upstream=${lighttpd_upstream%-*}
if ! [[ "$lighttpd_upstream" =~ ^([0-9]+\.[0-9]+\.)([0-9]+)$ ]]; then
	echo "cannot read an upstream release from the lighttpd version '$lighttpd_version'" >&2
	exit 1
fi
next_release="${BASH_REMATCH[1]}$((BASH_REMATCH[2] + 1))"
if [ -f "$lighttpd_src/configure.ac" ] &&
	! grep -q "^AC_INIT(\[lighttpd\],\[$lighttpd_upstream\]" "$lighttpd_src/configure.ac"; then
	echo "$lighttpd_src/configure.ac is not lighttpd $lighttpd_upstream (.debian-version says $lighttpd_version)" >&2
	exit 1
fi
if installed=$(dpkg-query -W -f='${Version}' lighttpd 2>/dev/null) && [ -n "$installed" ]; then
	inst_upstream=${installed#*:}
	inst_upstream=${inst_upstream%-*}
	if [ "$inst_upstream" != "$lighttpd_upstream" ]; then
		echo "warning: the plugin was built against lighttpd $lighttpd_upstream, the installed lighttpd is $installed" >&2
	fi
fi
# "<< next~": no pre-release of the next upstream release either.
depends="lighttpd (>= $epoch$lighttpd_upstream), lighttpd (<< $epoch$next_release~)"

# --- staging tree ------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/root"
doc="$stage/usr/share/doc/$pkg"
install -d -m 755 "$stage/DEBIAN" "$stage$moddir" "$stage/etc/lighttpd/conf-available" "$doc/examples"

# Debian ships modules stripped and mode 0644, as dh_strip would.
install -m 644 "$module" "$stage$moddir/mod_sufcgi.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$stage$moddir/mod_sufcgi.so"

install -m 644 "$here/20-sufcgi.conf" "$stage/etc/lighttpd/conf-available/20-sufcgi.conf"

install -m 644 "$repo/README.md" "$repo/SECURITY.md" "$shared/copyright" "$doc/"
sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@DATE@|$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")|" "$shared/changelog.in" |
	gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/changelog.Debian.gz"
install -d -m 755 "$stage/usr/share/lintian/overrides"
install -m 644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/$pkg"
# The htaccess examples as sources (dotfiles included); nothing compiled or cached.
tar -C "$repo/htaccess-examples" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.o' -cf - . |
	tar -C "$doc/examples" --no-same-owner -xf -
find "$doc/examples" -type f -exec bash -c 'if head -c4 "$1" | cmp -s - <(printf "\177ELF"); then rm -f "$1"; fi' _ {} \;
find "$doc/examples" -type d -exec chmod 755 {} +
find "$doc/examples" -type f -exec chmod go-w,u+rw,a+r {} +

# --- control ------------------------------------------------------------------
install -m 644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 755 "$here/prerm" "$here/postrm" "$stage/DEBIAN/"

# Shared-library dependencies (libc6, libgcc-s1) as dh_shlibdeps would compute
# them; dpkg-shlibdeps wants a debian/control in its working directory. The
# lighttpd symbols the plugin leaves undefined are resolved by lighttpd itself,
# so their warnings are silenced.
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
	mkdir -p "$work/src/debian"
	printf 'Source: sufcgi\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$work/src/debian/control"
	shlibs=$(cd "$work/src" && dpkg-shlibdeps --warnings=0 -O "$stage$moddir/mod_sufcgi.so" 2>/dev/null |
		sed -n 's/^shlibs:Depends=//p')
	if [ -n "$shlibs" ]; then depends="$depends, $shlibs"; fi
else
	echo "warning: dpkg-shlibdeps not found (apt-get install dpkg-dev): Depends gets a bare libc6" >&2
	depends="$depends, libc6"
fi

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
	"$here/control.in" >"$stage/DEBIAN/control"

# --- build ---------------------------------------------------------------------
mkdir -p "$outdir"
deb="$outdir/${pkg}_${version}_${arch}.deb"
# Build under a temporary name and rename: never a half-written .deb at $deb.
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb"
