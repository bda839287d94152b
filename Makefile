# artifactfs: a read-through cached FUSE tree of ML runs and registered models.
#   make          build build/artifactfs
#   make test     install what the tests need, build, run every test
#   make demo     install, build, mount a sample store at ./mnt
#   make SANITIZE=address,undefined test   the same under sanitizers

CC ?= cc
PKGS := fuse3 libcurl openssl libcjson expat
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
	  -pthread $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

B := build
BLOB_SRC := blob/blob.c blob/local.c blob/log.c blob/http.c blob/azure.c \
	    blob/azure_auth.c blob/azure_xml.c
CACHE_SRC := cache/cache.c cache/chunk.c cache/meta.c cache/crc32c.c
FS_SRC := fs/tree.c fs/ops.c fs/registry.c
LIB_SRC := $(BLOB_SRC) $(CACHE_SRC) $(FS_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
HDRS := $(wildcard blob/*.h cache/*.h fs/*.h tests/unit/*.h)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all test unit demo clean deps test-deps
all: $(B)/artifactfs

$(B)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/artifactfs: $(B)/fs/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c tests/unit/fake_store.c $(LIB_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/unit/fake_store.c $(LIB_OBJ) $(LDLIBS)

deps:
	scripts/install-deps

test-deps:
	scripts/install-deps --test

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "== $$t"; $$t || exit 1; done

test: test-deps
	$(MAKE) all unit
	scripts/run-tests

demo: deps
	$(MAKE) all
	scripts/demo

clean:
	rm -rf $(B)
