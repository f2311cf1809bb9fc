# distcache-rs: build, install and test driver for C packagers.
#
#   make                      release build of the libraries and tools
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make check                every test: Rust, headers, exports, C API, tools
#   make demo                 dc_server + dc_client + dc_test load on a temp dir
#   make headers              regenerate include/ from the Rust declarations
#   make bench / bench-short  benchmark matrix vs redis (BENCHMARKS.md; ~8 min / 80 s)
#   make deb / check-deb      Debian packages into build/deb/; build, install, test, purge
#
# Library layout (see README.md): the Rust cdylib holds every symbol and is
# installed as libnal.so.1.0.1 (SONAME libnal.so.1). libdistcache.so.1 and
# libdistcacheserver.so.1 are ELF filter libraries: they export their own
# symbols (so -ldistcache links and `nm -D` lists them) and the dynamic linker
# resolves each of them in libnal.so.1, so one copy of the code and its state
# serves all three.

PREFIX     ?= /usr/local
DESTDIR    ?=
LIBDIR     ?= $(PREFIX)/lib
INCDIR     ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CARGO      ?= cargo
CC         ?= cc
CXX        ?= c++
VERSION    := 1.0.1
REL        := target/release
B          := build
TESTPREFIX := $(CURDIR)/$(B)/prefix
TOOLS      := dc_server dc_client dc_test dc_snoop
# Extra libraries a static link against libnal.a needs (Rust std).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

.PHONY: all build install uninstall headers check test check-rust check-exports \
        check-c check-c-quick check-e2e check-fuzz check-clone demo bench bench-short clean

all: build

build: $(B)/stamp-cargo $(B)/libdistcache.so.1.0.1 $(B)/libdistcacheserver.so.1.0.1 \
       $(B)/libdistcache.a $(B)/libdistcacheserver.a $(B)/pc/libnal.pc

$(B)/stamp-cargo: FORCE
	@mkdir -p $(B)
	$(CARGO) build --release --workspace --lib --bins
	@touch $@
FORCE:
.SECONDARY: $(B)/filter-distcache.c $(B)/filter-distcacheserver.c $(B)/marker-distcache.o $(B)/marker-distcacheserver.o

# Stub sources for the filter libraries, generated from the symbol list.
$(B)/filter-%.c: capi-tests/symbols.txt
	@mkdir -p $(B)
	@{ echo "/* Generated: filter stubs for lib$*.so.1; every symbol resolves in libnal.so.1. */"; \
	   awk '$$1 == "lib$*.so.1" { print "void " $$2 "(void);\nvoid " $$2 "(void) {}" }' $<; } > $@

$(B)/lib%.so.1.0.1: $(B)/filter-%.c $(B)/stamp-cargo
	$(CC) -shared -fPIC -O2 -o $@ $< -Wl,-soname,lib$*.so.1 \
	    -Wl,--filter,libnal.so.1 -Wl,-z,defs $(LDFLAGS) -Wl,--no-as-needed $(REL)/libdistcache_rs.so

$(B)/marker-%.o:
	@mkdir -p $(B)
	@# A function, not just a variable: an archive without code is an error for lintian.
	echo 'int distcache_rs_lib$*_marker(void); int distcache_rs_lib$*_marker(void) { return 1; }' | \
	    $(CC) -x c -c -O2 -fPIC -o $@ -

# The static archives: libnal.a holds everything; the other two exist so
# that the usual link lines (-ldistcache -lnal) work with -static too.
$(B)/lib%.a: $(B)/marker-%.o
	rm -f $@ && ar rcs $@ $<

$(B)/pc/libnal.pc: pkgconfig/libnal.pc.in pkgconfig/distcache.pc.in pkgconfig/distcacheserver.pc.in FORCE
	@mkdir -p $(B)/pc
	@for f in libnal distcache distcacheserver; do \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	      -e 's|@INCDIR@|$(INCDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	      -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|g' pkgconfig/$$f.pc.in > $(B)/pc/$$f.pc; done

install: build
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/libnal \
	           $(DESTDIR)$(INCDIR)/distcache $(DESTDIR)$(BINDIR)
	install -m 0755 $(REL)/libdistcache_rs.so $(DESTDIR)$(LIBDIR)/libnal.so.$(VERSION)
	install -m 0755 $(B)/libdistcache.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libdistcache.so.$(VERSION)
	install -m 0755 $(B)/libdistcacheserver.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libdistcacheserver.so.$(VERSION)
	for l in libnal libdistcache libdistcacheserver; do \
	  ln -sf $$l.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$$l.so.1; \
	  ln -sf $$l.so.1 $(DESTDIR)$(LIBDIR)/$$l.so; done
	install -m 0644 $(REL)/libdistcache_rs.a $(DESTDIR)$(LIBDIR)/libnal.a
	install -m 0644 $(B)/libdistcache.a $(B)/libdistcacheserver.a $(DESTDIR)$(LIBDIR)/
	install -m 0644 include/libnal/nal.h $(DESTDIR)$(INCDIR)/libnal/
	install -m 0644 include/distcache/dc_plug.h include/distcache/dc_client.h \
	                include/distcache/dc_server.h $(DESTDIR)$(INCDIR)/distcache/
	install -m 0644 $(B)/pc/libnal.pc $(B)/pc/distcache.pc $(B)/pc/distcacheserver.pc \
	                $(DESTDIR)$(LIBDIR)/pkgconfig/
	for t in $(TOOLS); do install -m 0755 $(REL)/$$t $(DESTDIR)$(BINDIR)/$$t; done
	for s in 1 3 8; do install -d $(DESTDIR)$(MANDIR)/man$$s && \
	  install -m 0644 man/man$$s/*.$$s $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	for u in dc_server dc_client; do \
	  sed 's|@BINDIR@|$(BINDIR)|g' systemd/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; done
	install -m 0644 systemd/distcache.sysusers $(DESTDIR)$(SYSUSERSDIR)/distcache.conf

uninstall:
	for l in libnal libdistcache libdistcacheserver; do \
	  rm -f $(DESTDIR)$(LIBDIR)/$$l.so $(DESTDIR)$(LIBDIR)/$$l.so.1 \
	        $(DESTDIR)$(LIBDIR)/$$l.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$$l.a; done
	rm -f $(DESTDIR)$(LIBDIR)/pkgconfig/libnal.pc $(DESTDIR)$(LIBDIR)/pkgconfig/distcache.pc \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/distcacheserver.pc
	rm -rf $(DESTDIR)$(INCDIR)/libnal $(DESTDIR)$(INCDIR)/distcache
	for t in $(TOOLS); do rm -f $(DESTDIR)$(BINDIR)/$$t; done
	for s in 1 3 8; do for f in man/man$$s/*.$$s; do rm -f $(DESTDIR)$(MANDIR)/man$$s/$${f##*/}; done; done
	rm -f $(DESTDIR)$(UNITDIR)/dc_server.service $(DESTDIR)$(UNITDIR)/dc_client.service \
	      $(DESTDIR)$(SYSUSERSDIR)/distcache.conf

headers:
	DCRS_UPDATE_HEADERS=1 $(CARGO) build --release --lib

# ---------------------------------------------------------------- tests

check: check-rust check-exports check-c check-e2e check-fuzz check-clone
	@echo "make check: all test suites passed"

# The edit-compile-test loop: fmt, clippy, every Rust unit and integration
# test (header drift included), the exports and the C API tests without
# their valgrind re-runs. No fuzzing, no Apache or stunnel.
test: check-rust check-exports check-c-quick
	@echo "make test: fast tier passed (make check is the full gate)"

check-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) test --release --workspace

$(B)/stamp-testinstall: build
	rm -rf $(TESTPREFIX)
	$(MAKE) --no-print-directory install PREFIX=$(TESTPREFIX) DESTDIR=
	@touch $@

check-exports: $(B)/stamp-testinstall
	sh capi-tests/check-exports.sh $(TESTPREFIX)/lib capi-tests/symbols.txt
	@# The installed headers compile as strict C89, C11 and C++, alone and together.
	@for h in libnal/nal.h distcache/dc_plug.h distcache/dc_client.h distcache/dc_server.h; do \
	  printf '#include <%s>\n' $$h | $(CC) -std=c89 -pedantic -Wall -Wextra -Werror -I$(TESTPREFIX)/include -fsyntax-only -x c - || exit 1; \
	  printf '#include <%s>\n' $$h | $(CXX) -Wall -Wextra -Werror -I$(TESTPREFIX)/include -fsyntax-only -x c++ - || exit 1; \
	done; printf '#include <libnal/nal.h>\n#include <distcache/dc_plug.h>\n#include <distcache/dc_client.h>\n#include <distcache/dc_server.h>\n' | \
	  $(CC) -std=c11 -Wall -Wextra -Werror -I$(TESTPREFIX)/include -fsyntax-only -x c - && echo "check-headers: installed headers compile as C89, C11 and C++"

check-c: $(B)/stamp-testinstall
	sh capi-tests/run.sh $(TESTPREFIX)

check-c-quick: $(B)/stamp-testinstall
	DCRS_NO_VALGRIND=1 sh capi-tests/run.sh $(TESTPREFIX)

# End-to-end tests with real third-party programs. They need Debian's
# apache2, apache2-dev, openssl, dpkg-dev and a deb-src entry, and stunnel4
# (.ci/run sets that up); outside CI a missing apxs / stunnel4 skips that
# test with a message.
check-e2e: $(B)/stamp-testinstall
	@if command -v apxs >/dev/null 2>&1 || [ "$${CI:-}" = true ]; then \
	  bash tests/e2e/apache.sh $(TESTPREFIX); \
	else echo "check-e2e: SKIPPED apache test: apxs not found (apt-get install apache2 apache2-dev dpkg-dev)"; fi
	@if command -v stunnel4 >/dev/null 2>&1 || [ "$${CI:-}" = true ]; then \
	  bash tests/e2e/stunnel.sh $(TESTPREFIX); \
	else echo "check-e2e: SKIPPED stunnel test: stunnel4 not found (apt-get install stunnel4 openssl)"; fi

# A bounded fuzzing run (60 s over all targets; installs cargo-fuzz itself).
# Longer: `sh fuzz/run.sh SECONDS [TARGET...]`, see fuzz/README.md.
check-fuzz:
	sh fuzz/run.sh 60

# A clone of HEAD in an empty temporary directory passes `make test`: the
# repository reads nothing outside itself. Last, since the clone's build
# shares target/.
check-clone:
	sh scripts/check-clone.sh

demo: $(B)/stamp-testinstall
	sh scripts/demo.sh $(TESTPREFIX)

# Not part of check: dcbench (bench/dcbench.c) against our
# servers, and redis-server/redis-benchmark when installed.
bench: $(B)/stamp-testinstall
	bash scripts/bench.sh full $(TESTPREFIX)

bench-short: $(B)/stamp-testinstall
	bash scripts/bench.sh short $(TESTPREFIX)

# ---------------------------------------------------------------- Debian packages

# libdistcache1, libdistcache-dev and distcache-tools (debian/), built with
# the release build in target/ and the builder's own Rust toolchain. Every
# output (.deb, .buildinfo, .changes) goes to build/deb/, not to `..` where
# dpkg-buildpackage writes by default. lintian runs when it is installed.
DEBDIR  := $(CURDIR)/$(B)/deb
DEBARCH  = $(shell dpkg --print-architecture)
DEBVER   = $(shell dpkg-parsechangelog -SVersion)
.PHONY: deb check-deb
deb:
	rm -rf $(DEBDIR) && mkdir -p $(DEBDIR)
	DCRS_DEB_DESTDIR=$(DEBDIR) dpkg-buildpackage -us -uc -b \
	    --buildinfo-option=-u$(DEBDIR) --changes-option=-u$(DEBDIR) \
	    --buildinfo-file=$(DEBDIR)/distcache-rs_$(DEBVER)_$(DEBARCH).buildinfo \
	    --changes-file=$(DEBDIR)/distcache-rs_$(DEBVER)_$(DEBARCH).changes
	@ls -l $(DEBDIR)
	@if command -v lintian >/dev/null 2>&1; then lintian --fail-on error $(DEBDIR)/*.changes; \
	else echo "deb: lintian not installed, packages not checked (apt-get install lintian)"; fi

# Builds the packages, installs them with apt-get, runs the Apache
# end-to-end test against the installed system libraries, purges them.
check-deb:
	bash scripts/check-deb.sh

clean:
	$(CARGO) clean
	rm -rf $(B)
