# Sourced by packaging/debian/build-deb.sh (Apache module) and
# packaging/lighttpd/build-deb.sh (lighttpd plugin): the steps the two
# packages share. Each function uses the caller's $repo, $work and $stage.
# (bash; the callers run with `set -euo pipefail`.)

shared_dir="$repo/packaging/debian" # copyright and changelog.in, for both packages

# Sets upstream, version, arch, maintainer and SOURCE_DATE_EPOCH (not exported).
package_identity() {
	upstream=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)
	[ -n "$upstream" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
	version="$upstream-${DEB_REVISION:-1}"
	arch=$(dpkg --print-architecture)
	maintainer=${DEB_MAINTAINER:-"sufcgi maintainers <sufcgi@example.org>"}
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
	fi
}

# install_module SO DEST: Debian ships modules stripped and mode 0644, as dh_strip would.
install_module() {
	install -m 644 "$1" "$2"
	strip --remove-section=.comment --remove-section=.note --strip-unneeded "$2"
}

# install_supervisor MODULE_SO DEST_DIR: the supervisor program the module
# execs, from beside the built module to beside the installed one (it looks
# for it there), stripped, mode 0755.
install_supervisor() {
	local prog
	prog="$(dirname "$1")/sufcgi-supervisor"
	[ -f "$prog" ] || { echo "$prog does not exist: run \`make build\` first" >&2; exit 1; }
	install -m 755 "$prog" "$2/sufcgi-supervisor"
	strip --remove-section=.comment --remove-section=.note --strip-unneeded "$2/sufcgi-supervisor"
}

# stage_systemd_dropin UNIT PKG: the drop-in that delegates UNIT's cgroup to
# the server (Delegate=yes), in the package's unit directory, so an admin's
# /etc/systemd/system/UNIT.d/ file of the same name overrides it.
stage_systemd_dropin() {
	local unit=$1 pkg=$2 dir="$stage/lib/systemd/system/$1.d"
	install -d -m 755 "$dir"
	sed -e "s|@UNIT@|$unit|g" -e "s|@PACKAGE@|$pkg|g" "$repo/packaging/sufcgi-delegate.conf.in" >"$dir/sufcgi-delegate.conf"
	chmod 644 "$dir/sufcgi-delegate.conf"
}

# stage_docs DOC LINTIAN_OVERRIDES PKG: README, SECURITY.md, copyright,
# changelog, lintian overrides and the htaccess examples.
stage_docs() {
	local doc=$1 overrides=$2 pkg=$3
	install -m 644 "$repo/README.md" "$repo/SECURITY.md" "$shared_dir/copyright" "$doc/"
	sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" \
		-e "s|@DATE@|$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")|" "$shared_dir/changelog.in" |
		gzip -9n >"$doc/changelog.Debian.gz"
	chmod 644 "$doc/changelog.Debian.gz"
	install -d -m 755 "$stage/usr/share/lintian/overrides"
	install -m 644 "$overrides" "$stage/usr/share/lintian/overrides/$pkg"
	# The htaccess examples as sources (dotfiles included); nothing compiled or cached.
	tar -C "$repo/htaccess-examples" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.o' -cf - . |
		tar -C "$doc/examples" --no-same-owner -xf -
	find "$doc/examples" -type f -exec bash -c 'if head -c4 "$1" | cmp -s - <(printf "\177ELF"); then rm -f "$1"; fi' _ {} \;
	find "$doc/examples" -type d -exec chmod 755 {} +
	find "$doc/examples" -type f -exec chmod go-w,u+rw,a+r {} +
}

# shlib_depends SO PKG: appends to $depends the shared-library dependencies
# (libc6, libgcc-s1) as dh_shlibdeps would compute them; dpkg-shlibdeps wants
# a debian/control in its working directory. The server symbols the module
# leaves undefined are resolved by the server itself, so their warnings are
# silenced.
shlib_depends() {
	local so=$1 pkg=$2 shlibs
	if command -v dpkg-shlibdeps >/dev/null 2>&1; then
		mkdir -p "$work/src/debian"
		printf 'Source: sufcgi\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$work/src/debian/control"
		shlibs=$(cd "$work/src" && dpkg-shlibdeps --warnings=0 -O "$so" 2>/dev/null |
			sed -n 's/^shlibs:Depends=//p')
		if [ -n "$shlibs" ]; then depends="$depends, $shlibs"; fi
	else
		echo "warning: dpkg-shlibdeps not found (apt-get install dpkg-dev): Depends gets a bare libc6" >&2
		depends="$depends, libc6"
	fi
}

# build_deb CONTROL_IN OUTDIR PKG: md5sums, the control file (from
# CONTROL_IN with $version, $arch, $maintainer, $depends), then dpkg-deb;
# prints the .deb's path.
build_deb() {
	local control_in=$1 outdir=$2 pkg=$3 installed_size deb
	(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
	chmod 644 "$stage/DEBIAN/md5sums"
	installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
	sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
		-e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
		"$control_in" >"$stage/DEBIAN/control"
	mkdir -p "$outdir"
	deb="$outdir/${pkg}_${version}_${arch}.deb"
	# Build under a temporary name and rename: never a half-written .deb at $deb.
	dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb.tmp" >/dev/null
	mv -f "$deb.tmp" "$deb"
	echo "$deb"
}
