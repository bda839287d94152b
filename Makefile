# artifactfs: a read-through cached FUSE tree of ML runs and registered models.
#   make            build build/artifactfs
#   make test       install what the tests need, then run every test: the unit and
#                   mount suites, the same under ASan+UBSan, and each fuzz target
#   make test SANITIZE=address,undefined   only the suites, under those sanitizers
#   make demo       install, build, mount a sample store at ./mnt
#   make install    PREFIX=/usr/local DESTDIR=: binary, mount helper, man page, examples
#   make deb        a Debian package (apt install ./build/deb/artifactfs_*.deb)
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (default 60)

CC ?= cc
PKGS := fuse3 libcurl openssl libcjson expat libsystemd libmicrohttpd
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
	  -pthread $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
B := build
ifneq ($(SANITIZE),)
B := build/san
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif
BLOB_SRC := blob/blob.c blob/local.c blob/log.c blob/http.c blob/azure.c blob/s3_proto.c blob/s3.c blob/s3_creds.c blob/s3_cond.c \
	    blob/azure_auth.c blob/azure_xml.c blob/mlflow.c blob/mlflow_map.c blob/mlflow_art.c \
	    blob/mlflow_reg.c blob/mlflow_json.c blob/proxy.c
CACHE_SRC := cache/cache.c cache/chunk.c cache/file.c cache/meta.c cache/meta_disk.c \
	     cache/crc32c.c cache/mem.c cache/fetch.c cache/known.c \
	     cache/lease.c cache/hash.c cache/stage.c
FS_SRC := fs/tree.c fs/front.c fs/ops.c fs/registry.c fs/reply.c fs/write.c fs/overlay.c \
	  fs/prefetch.c fs/stats.c
LIB_SRC := $(BLOB_SRC) $(CACHE_SRC) $(FS_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
HDRS := $(wildcard blob/*.h cache/*.h fs/*.h tests/unit/*.h)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all test check unit demo clean deps test-deps install deb
all: $(B)/artifactfs

$(B)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/artifactfs: $(B)/fs/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# the build's version for --version: the release, and the commit it was built from
# (rewritten only when it changes, so that an unchanged tree does not rebuild)
$(B)/version.h: FORCE
	@mkdir -p $(B)
	@rev=$$(git rev-parse --short=12 HEAD 2>/dev/null || true); \
	dirty=$$(git diff --quiet HEAD -- 2>/dev/null || echo "-dirty"); \
	line="#define ARTIFACTFS_BUILD \"$${rev:+$$rev$$dirty}\""; \
	[ -f $@ ] && [ "$$(cat $@)" = "$$line" ] || echo "$$line" > $@
$(B)/fs/main.o: $(B)/version.h
$(B)/fs/main.o: CFLAGS += -I$(B)
FORCE:

$(B)/tests/%: tests/unit/%.c tests/unit/fake_store.c $(LIB_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/unit/fake_store.c $(LIB_OBJ) $(LDLIBS)

deps:
	scripts/install-deps

test-deps:
	scripts/install-deps --test

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "== $$t"; $$t || exit 1; done

# one whole suite with this build (plain, or sanitized with SANITIZE=...)
check: all unit
	ARTIFACTFS_BIN=$(abspath $(B)/artifactfs) scripts/run-tests tests/mount \
		$(if $(SANITIZE),-m "not build_only")

CI_FUZZ_SECONDS ?= 30
test: test-deps
ifeq ($(SANITIZE),)
	$(MAKE) check
	$(MAKE) check SANITIZE=address,undefined
	$(MAKE) fuzz-regress
	$(MAKE) fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
else
	$(MAKE) SANITIZE= all
	$(MAKE) check SANITIZE=$(SANITIZE)
endif

demo: deps
	$(MAKE) all
	scripts/demo

# make deb: a Debian package built with Debian's tools (dpkg-buildpackage, debhelper)
# from a copy of this tree, into build/deb/artifactfs_VERSION_ARCH.deb
VERSION := $(shell sed -n 's/^\#define ARTIFACTFS_VERSION "\(.*\)"/\1/p' fs/main.c)
deb:
	rm -rf build/deb
	mkdir -p build/deb/artifactfs-$(VERSION)
	rsync -a --exclude=/build --exclude=/.git --exclude=/.tools --exclude=/demo-store \
		--exclude=/mnt ./ build/deb/artifactfs-$(VERSION)/
	cp -r deploy/debian build/deb/artifactfs-$(VERSION)/debian
	sed 's/@VERSION@/$(VERSION)/' deploy/debian/changelog.in \
		> build/deb/artifactfs-$(VERSION)/debian/changelog
	rm build/deb/artifactfs-$(VERSION)/debian/changelog.in
	cd build/deb/artifactfs-$(VERSION) && dpkg-buildpackage -us -uc -b
	@ls build/deb/*.deb

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the mount(8) helper, the man
# page, and the example units and proxy configuration
PREFIX ?= /usr/local
SBINDIR ?= /sbin
DOCDIR = $(PREFIX)/share/doc/artifactfs
install: all
	install -D -m 0755 $(B)/artifactfs $(DESTDIR)$(PREFIX)/bin/artifactfs
	install -d $(DESTDIR)$(SBINDIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|' deploy/mount.artifactfs > $(DESTDIR)$(SBINDIR)/mount.artifactfs
	chmod 0755 $(DESTDIR)$(SBINDIR)/mount.artifactfs
	install -D -m 0644 docs/artifactfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/artifactfs.1
	install -d $(DESTDIR)$(DOCDIR)/examples/systemd $(DESTDIR)$(DOCDIR)/examples/kubernetes
	sed 's|/usr/bin/artifactfs|$(PREFIX)/bin/artifactfs|' deploy/systemd/artifactfs@.service \
		> $(DESTDIR)$(DOCDIR)/examples/systemd/artifactfs@.service
	install -m 0644 deploy/systemd/mnt-artifacts.mount $(DESTDIR)$(DOCDIR)/examples/systemd/
	install -m 0644 deploy/nginx-proxy.conf docs/fleet.md README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 deploy/kubernetes/*.yaml $(DESTDIR)$(DOCDIR)/examples/kubernetes/

clean:
	rm -rf $(B)

include tests/fuzz/fuzz.mk
