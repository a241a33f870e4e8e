# sufcgi — build, test and demo. Every target installs what it needs on a
# fresh Debian machine (run as root), so `make test` works on a clean clone.

SHELL    := /bin/bash
PYTHON   ?= /usr/bin/python3
CARGO    ?= cargo
BUILD    := build
MODULE   := $(BUILD)/mod_sufcgi.so

# Debian packages the build and the integration suite use.
DEB_PACKAGES := apache2 apache2-dev lighttpd libclang-dev clang pkg-config php-cgi \
                libfcgi-dev libfcgi-bin libfcgi-perl python3-pip python3-flask curl
PY_PACKAGES  := flup pytest prometheus_client

.PHONY: all build deps test unit clippy integration demo clean fuzz fuzz-smoke fuzz-deps

all: build

build: deps-build lighttpd-src
	$(CARGO) build --release
	mkdir -p $(BUILD) $(BUILD)/lighttpd
	@# A new inode, never a rewrite in place: a running httpd has the old file
	@# mapped, and overwriting mapped code crashes it.
	cp target/release/libsufcgi.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)
	@echo "built $(MODULE)"
	@# The lighttpd plugin: the same crate with the lighttpd glue instead of
	@# Apache's, in its own target dir so the two builds do not invalidate each other.
	LIGHTTPD_SRC=$(CURDIR)/$(LIGHTTPD_SRC) $(CARGO) build --release --no-default-features \
	  --features lighttpd --target-dir target/lighttpd
	cp target/lighttpd/release/libsufcgi.so $(LIGHTTPD_MODULE).tmp
	mv -f $(LIGHTTPD_MODULE).tmp $(LIGHTTPD_MODULE)
	@echo "built $(LIGHTTPD_MODULE)"
	@# The supervisor program both modules exec, looked for beside each of them:
	@# the core alone, so without either server's glue (own target dir again).
	$(CARGO) build --release --no-default-features --features supervisor-bin \
	  --bin sufcgi-supervisor --target-dir target/supervisor
	for d in $(BUILD) $(BUILD)/lighttpd; do \
	  cp target/supervisor/release/sufcgi-supervisor $$d/sufcgi-supervisor.tmp && \
	  mv -f $$d/sufcgi-supervisor.tmp $$d/sufcgi-supervisor; done
	@echo "built $(BUILD)/sufcgi-supervisor"

# lighttpd ships no headers: take them from Debian's source package for exactly
# the installed version, through an apt sources list private to this build
# (the system's apt configuration is not touched) whose deb-src entries are the
# machine's own deb sources (packaging/apt-deb-src.py), so a host's mirror or
# proxy serves them.
LIGHTTPD_SRC    := $(BUILD)/lighttpd-src
LIGHTTPD_MODULE := $(BUILD)/lighttpd/mod_sufcgi.so
LIGHTTPD_APT    := $(BUILD)/lighttpd-apt
APT_PRIVATE      = -o Dir::Etc::SourceList=$(CURDIR)/$(LIGHTTPD_APT)/sources.list \
                   -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$(CURDIR)/$(LIGHTTPD_APT)/lists \
                   -o Dir::Cache=$(CURDIR)/$(LIGHTTPD_APT)/cache -o APT::Sandbox::User=root

.PHONY: lighttpd-src
lighttpd-src:
	@dpkg -s lighttpd >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lighttpd >/dev/null; }
	@dpkg -s dpkg-dev >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null; }
	@ver=$$(dpkg-query -W -f='$${Version}' lighttpd); \
	if [ "$$(cat $(LIGHTTPD_SRC)/.debian-version 2>/dev/null)" = "$$ver" ]; then exit 0; fi; \
	echo "fetching lighttpd $$ver sources (Debian source package)"; \
	rm -rf $(LIGHTTPD_APT) $(LIGHTTPD_SRC); \
	mkdir -p $(LIGHTTPD_APT)/lists/partial $(LIGHTTPD_APT)/cache/archives/partial; \
	$(PYTHON) packaging/apt-deb-src.py > $(LIGHTTPD_APT)/sources.list && \
	apt-get -qq $(APT_PRIVATE) update && \
	(cd $(LIGHTTPD_APT) && apt-get -qq $(APT_PRIVATE) source --download-only lighttpd=$$ver) && \
	dpkg-source -x --no-check $(LIGHTTPD_APT)/lighttpd_*.dsc $(LIGHTTPD_SRC) >/dev/null && \
	echo "$$ver" > $(LIGHTTPD_SRC)/.debian-version

# Install only what is missing, so repeated runs cost nothing.
.PHONY: deps-build
deps-build:
	@missing=""; for p in apache2-dev libclang-dev clang; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

deps: deps-build
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@for m in $(PY_PACKAGES); do \
	  $(PYTHON) -c "import $$m" 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $$m; done

unit:
	$(CARGO) test --no-default-features --lib

# Lints (Cargo.toml [lints]): the whole crate, both servers' glue, tests and the
# supervisor program; any warning fails.
clippy: lighttpd-src
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	LIGHTTPD_SRC=$(CURDIR)/$(LIGHTTPD_SRC) $(CARGO) clippy --all-features --all-targets \
	  --target-dir target/clippy -- -D warnings

integration: deps build
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/

test: deps build clippy unit fuzz-smoke integration

# Fuzz targets live in fuzz/ (cargo-fuzz). cargo-fuzz passes nightly-only
# flags (-Zsanitizer=address, sancov); the only toolchain here is stable, so
# RUSTC_BOOTSTRAP=1 lets it accept them.
FUZZ_TARGETS := fastcgi_response htaccess supervisor_protocol mux_router
FUZZ_SECONDS ?= 300
FUZZ_ENV     := RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(CURDIR)/fuzz/target

fuzz-deps:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz

fuzz: fuzz-deps
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

# A short run of each target, part of `make test`.
fuzz-smoke: fuzz-deps
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for 10 s"; \
	  $(FUZZ_ENV) $(CARGO) fuzz run -O $$t -- -max_total_time=10 2>&1 | grep -E 'Done [0-9]+ runs|ERROR|SUMMARY|panicked'; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; done

demo: deps build
	$(PYTHON) tests/demo.py

clean:
	rm -rf $(BUILD) target

# `make bench`: sufcgi against a static file, mod_proxy_fcgi (with and without
# enablereuse) and mod_fcgid with wrk; writes bench/results/latest.json and
# prints a Markdown table (see BENCHMARKS.md). BENCH_ARGS passes options to
# bench/bench.py, e.g. BENCH_ARGS="--duration 5 --max-wait 0".
BENCH_PACKAGES := apache2 gcc wrk libfcgi-dev libfcgi-bin libapache2-mod-fcgid
BENCH_ARGS ?=

.PHONY: bench
bench: build
	@missing=""; for p in $(BENCH_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

# `make deb`: build/sufcgi_<version>_<arch>.deb — the module in Apache's module
# directory, mods-available/sufcgi.{load,conf} (conffiles), docs and examples;
# Depends on the apache2-api-<MMN> the module was built against. Install with
# `apt install ./build/sufcgi_*.deb && a2enmod sufcgi && apache2ctl graceful`.
# Packaging files: packaging/debian/ (see build-deb.sh); test: tests/test_deb.py.
# And build/lighttpd-mod-sufcgi_<version>_<arch>.deb — the lighttpd plugin in
# /usr/lib/lighttpd, conf-available/20-sufcgi.conf (conffile), docs and
# examples; Depends on the lighttpd release it was built against (lighttpd
# loads only plugins of its own version). Install with `apt install
# ./build/lighttpd-mod-sufcgi_*.deb && lighty-enable-mod sufcgi && service
# lighttpd restart`. Packaging files: packaging/lighttpd/.
.PHONY: deb
deb: build
	@dpkg -s dpkg-dev >/dev/null 2>&1 || { echo "installing: dpkg-dev"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null; }
	@bash packaging/debian/build-deb.sh $(MODULE) $(BUILD)
	@LIGHTTPD_SRC=$(CURDIR)/$(LIGHTTPD_SRC) bash packaging/lighttpd/build-deb.sh $(LIGHTTPD_MODULE) $(BUILD)
