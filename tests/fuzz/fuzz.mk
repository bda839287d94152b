# tests/fuzz/fuzz.mk: libFuzzer targets, included at the end of the main Makefile
# (which defines PKGS, BLOB_SRC, CACHE_SRC and FS_SRC).
#
#   make fuzz-build     build every target into build/fuzz/<target>
#   make fuzz           run each target for FUZZ_SECONDS (default 60) on a fresh copy of
#                       its seeds (build/fuzz/corpus/<target>), plus its regress folder;
#                       crash files go to build/fuzz/crashes/<target>/; fails if any
#                       target crashes
#   make fuzz-regress   run each target once over tests/fuzz/corpus/<target> and
#                       tests/fuzz/regress/<target> (inputs that once crashed)
#
# The library is compiled again with clang and the fuzzer's instrumentation into
# build/fuzz/obj/. Needs Debian's clang and libclang-rt-14-dev (or the matching
# libclang-rt-N-dev for FUZZ_CC=clang-N).

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZ_TARGETS := fuzz_listing fuzz_registry fuzz_url fuzz_names fuzz_s3 fuzz_mlflow
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_LIB_SRC := $(BLOB_SRC) $(CACHE_SRC) $(FS_SRC)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_HDRS := $(wildcard blob/*.h cache/*.h fs/*.h tests/fuzz/*.h)
FUZZ_SAN := address,undefined
FUZZ_CFLAGS := -fsanitize=fuzzer-no-link,$(FUZZ_SAN) -fno-sanitize-recover=all \
	       -fno-omit-frame-pointer -g -O1 -std=c11 -D_GNU_SOURCE -pthread -I. \
	       -Wall -Wextra -Wno-unused-parameter \
	       $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_LDFLAGS := -fsanitize=fuzzer,$(FUZZ_SAN)
FUZZ_LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
# -timeout: an input that runs this long is reported as a hang
FUZZ_RUN_FLAGS ?= -timeout=25 -rss_limit_mb=2048 -print_final_stats=1

.PHONY: fuzz fuzz-build fuzz-regress
fuzz-build: $(FUZZ_BIN)

$(FUZZ_LIB_OBJ): $(FUZZ_DIR)/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BIN): $(FUZZ_DIR)/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LDFLAGS) -o $@ $< $(FUZZ_LIB_OBJ) $(FUZZ_LDLIBS)

# Every target runs even when one fails, so one run reports every crash.
fuzz: $(FUZZ_BIN)
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_DIR)/corpus/$$t; \
		mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/crashes/$$t; \
		cp -R tests/fuzz/corpus/$$t/. $(FUZZ_DIR)/corpus/$$t/; \
		echo "== $$t: $(FUZZ_SECONDS) s"; \
		$(FUZZ_DIR)/$$t $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=$(FUZZ_DIR)/crashes/$$t/ \
			$(FUZZ_DIR)/corpus/$$t tests/fuzz/regress/$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz: crashes in:$$failed (inputs in $(FUZZ_DIR)/crashes/)" >&2; exit 1; \
	fi

fuzz-regress: $(FUZZ_BIN)
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/crashes/$$t; \
		echo "== $$t: seeds and regressions"; \
		$(FUZZ_DIR)/$$t -runs=0 -timeout=25 -artifact_prefix=$(FUZZ_DIR)/crashes/$$t/ \
			tests/fuzz/corpus/$$t tests/fuzz/regress/$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz-regress: failures in:$$failed" >&2; exit 1; \
	fi
