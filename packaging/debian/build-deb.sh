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
# shellcheck source=../common.sh
. "$repo/packaging/common.sh"

# --- what the package is built for -------------------------------------------
package_identity

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

install_module "$module" "$stage$libexecdir/mod_sufcgi.so"
install_supervisor "$module" "$stage$libexecdir"

sed "s|@LIBEXECDIR@|$libexecdir|" "$here/sufcgi.load.in" >"$stage/etc/apache2/mods-available/sufcgi.load"
install -m 644 "$here/sufcgi.conf" "$stage/etc/apache2/mods-available/sufcgi.conf"
chmod 644 "$stage/etc/apache2/mods-available/sufcgi.load"

stage_systemd_dropin apache2.service sufcgi
stage_docs "$doc" "$here/lintian-overrides" sufcgi

# --- control ------------------------------------------------------------------
install -m 644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 755 "$here/prerm" "$here/postinst" "$here/postrm" "$stage/DEBIAN/"

shlib_depends "$stage$libexecdir/mod_sufcgi.so" sufcgi

# --- build ---------------------------------------------------------------------
build_deb "$here/control.in" "$outdir" sufcgi
