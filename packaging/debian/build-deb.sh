#!/usr/bin/env bash
# Builds the sufcgi Debian package from an already built module:
#
#   packaging/debian/build-deb.sh MODULE.so OUTDIR
#
# and prints the path of OUTDIR/sufcgi_<version>_<arch>.deb. `make deb` runs it
# after `make build`; tests/test_deb.py runs it on the module the other
# integration tests use. A plain dpkg-deb over a staging tree: no debhelper
# source package, so it needs only dpkg (and dpkg-dev for dpkg-shlibdeps).
#
# Environment: APXS (default apxs), DEB_REVISION (default 1),
# DEB_MAINTAINER (default "sufcgi maintainers <sufcgi@example.org>"),
# SOURCE_DATE_EPOCH (the changelog's date; default: the last commit's, else now).
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 MODULE.so OUTDIR" >&2
	exit 2
fi
module=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
apxs=${APXS:-apxs}

[ -f "$module" ] || { echo "$module does not exist: run \`make build\` first" >&2; exit 1; }

# --- what the package is built for -------------------------------------------
upstream=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$upstream" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
version="$upstream-${DEB_REVISION:-1}"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-"sufcgi maintainers <sufcgi@example.org>"}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi

# Apache's module directory and the headers the module was compiled against
# (build.rs asks the same apxs).
libexecdir=$("$apxs" -q LIBEXECDIR)
includedir=$("$apxs" -q INCLUDEDIR)
[ -n "$libexecdir" ] && [ -n "$includedir" ] || { echo "$apxs -q failed: install apache2-dev" >&2; exit 1; }

# The module ABI: Debian's apache2-bin provides apache2-api-<MMN major>, and a
# module built against a given MMN major loads only into such an httpd.
mmn=$(sed -n 's/^#define MODULE_MAGIC_NUMBER_MAJOR  *\([0-9][0-9]*\).*/\1/p' "$includedir/ap_mmn.h")
[ -n "$mmn" ] || { echo "no MODULE_MAGIC_NUMBER_MAJOR in $includedir/ap_mmn.h" >&2; exit 1; }
api="apache2-api-$mmn"
if provides=$(dpkg-query -W -f='${Provides}' apache2-bin 2>/dev/null); then
	case ", $provides," in
	*", $api,"* | *", $api "*) ;;
	*) echo "warning: the installed apache2-bin provides '$provides', not $api" >&2 ;;
	esac
fi
# Minor MMN bumps add API: the module may use functions of the httpd release
# whose headers it was compiled against, so it needs at least that release.
rel() { sed -n "s/^#define AP_SERVER_$1_NUMBER  *\([0-9][0-9]*\).*/\1/p" "$includedir/ap_release.h"; }
httpd_version="$(rel MAJORVERSION).$(rel MINORVERSION).$(rel PATCHLEVEL)"
case "$httpd_version" in
[0-9]*.[0-9]*.[0-9]*) ;;
*) echo "cannot read the httpd version from $includedir/ap_release.h" >&2; exit 1 ;;
esac
depends="$api, apache2-bin (>= $httpd_version)"

# --- staging tree ------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/root"
doc="$stage/usr/share/doc/sufcgi"
install -d -m 755 "$stage/DEBIAN" "$stage$libexecdir" "$stage/etc/apache2/mods-available" "$doc/examples"

# Debian ships modules stripped and mode 0644, as dh_strip would.
install -m 644 "$module" "$stage$libexecdir/mod_sufcgi.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$stage$libexecdir/mod_sufcgi.so"

sed "s|@LIBEXECDIR@|$libexecdir|" "$here/sufcgi.load.in" >"$stage/etc/apache2/mods-available/sufcgi.load"
install -m 644 "$here/sufcgi.conf" "$stage/etc/apache2/mods-available/sufcgi.conf"
chmod 644 "$stage/etc/apache2/mods-available/sufcgi.load"

install -m 644 "$repo/README.md" "$repo/SECURITY.md" "$here/copyright" "$doc/"
sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@DATE@|$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")|" "$here/changelog.in" |
	gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/changelog.Debian.gz"
install -d -m 755 "$stage/usr/share/lintian/overrides"
install -m 644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/sufcgi"
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
# httpd/APR symbols the module leaves undefined are resolved by httpd itself,
# so their warnings are silenced.
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
	mkdir -p "$work/src/debian"
	printf 'Source: sufcgi\n\nPackage: sufcgi\nArchitecture: any\n' >"$work/src/debian/control"
	shlibs=$(cd "$work/src" && dpkg-shlibdeps --warnings=0 -O "$stage$libexecdir/mod_sufcgi.so" 2>/dev/null |
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
deb="$outdir/sufcgi_${version}_${arch}.deb"
# Build under a temporary name and rename: never a half-written .deb at $deb.
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb"
