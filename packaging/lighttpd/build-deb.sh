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
pkg=lighttpd-mod-sufcgi
moddir=/usr/lib/lighttpd # lighttpd's compiled-in server.modules-dir on Debian

[ -f "$module" ] || { echo "$module does not exist: run \`make build\` first" >&2; exit 1; }
# A lighttpd plugin exports <name>_plugin_init; the Apache module does not.
if ! nm -D --defined-only "$module" 2>/dev/null | grep -q ' T mod_sufcgi_plugin_init$'; then
	echo "$module is not the lighttpd plugin (no mod_sufcgi_plugin_init): use build/lighttpd/mod_sufcgi.so" >&2
	exit 1
fi
# shellcheck source=../common.sh
. "$repo/packaging/common.sh"

# --- what the package is built for -------------------------------------------
package_identity
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

install_module "$module" "$stage$moddir/mod_sufcgi.so"
install_supervisor "$module" "$stage$moddir"

install -m 644 "$here/20-sufcgi.conf" "$stage/etc/lighttpd/conf-available/20-sufcgi.conf"

stage_systemd_dropin lighttpd.service "$pkg"
stage_docs "$doc" "$here/lintian-overrides" "$pkg"

# --- control ------------------------------------------------------------------
install -m 644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 755 "$here/prerm" "$here/postinst" "$here/postrm" "$stage/DEBIAN/"

shlib_depends "$stage$moddir/mod_sufcgi.so" "$pkg"

# --- build ---------------------------------------------------------------------
build_deb "$here/control.in" "$outdir" "$pkg"
