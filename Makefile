# cloq - Makefile. `make help` lists the targets.
#
# Sources are found by wildcard: every io/*.c quant/*.c solver/*.c src/*/*.c (except
# src/cli/main.c) goes into build/libcloq.a; every tests/test_*.c is one cmocka program linked against it;
# every tests/tools/*.c is a helper program (model generator, ...); tests/bench/*.c are benchmarks.

CC       ?= cc
BUILD    ?= build
OPT      ?= -O2 -fvect-cost-model=dynamic
CFLAGS   ?= $(OPT) -g
WARN     := -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wno-unused-parameter
SRC_ROOMS := src/model src/tokenizer src/job src/export src/cli
CPPFLAGS += -Iio -Iquant -Isolver $(SRC_ROOMS:%=-I%) -D_GNU_SOURCE -MMD -MP
LDLIBS   := -luring -lzstd -llapacke -lopenblas -lxxhash -lcjson -lpcre2-8 -lpthread -lm
# OpenBLAS built on OpenMP, when installed (`make deps` installs it): its threads are the same
# libgomp pool as cloq's own parallel loops. With the pthreads build the two pools busy-wait
# against each other on every switch between a BLAS call and an OpenMP loop (GPTQ's column loop
# measured 25% slower on 2 cores). The run path makes the loader pick this variant of
# libopenblas.so.0 whatever Debian's alternatives point at; without the package the default
# libopenblas.so.0 is used and everything still works.
MULTIARCH   := $(shell $(CC) -print-multiarch 2>/dev/null)
OPENBLAS_OMP ?= /usr/lib/$(MULTIARCH)/openblas-openmp
comma := ,
BLAS_LDFLAGS := $(if $(wildcard $(OPENBLAS_OMP)/libopenblas.so.0),-Wl$(comma)-rpath$(comma)$(OPENBLAS_OMP))
ALLCFLAGS = -std=c11 $(WARN) $(CFLAGS) -fopenmp $(EXTRA_CFLAGS)
ALLLDFLAGS = -fopenmp $(BLAS_LDFLAGS) $(LDFLAGS) $(EXTRA_LDFLAGS)

LIB_SRC  := $(filter-out src/cli/main.c,$(sort $(wildcard io/*.c quant/*.c solver/*.c src/*/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOLS    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%) $(BUILD)/tools/cloq-other-version
BENCH_SRC:= $(sort $(wildcard tests/bench/*.c))
BENCHES  := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/*.c))

DEB_PKGS := build-essential liburing-dev libzstd-dev libopenblas-dev libopenblas0-openmp liblapacke-dev libxxhash-dev \
            libcmocka-dev libcjson-dev libpcre2-dev zstd python3 python3-numpy

.PHONY: all cloq test check asan bench fuzz deps demo clean help tools
.DEFAULT_GOAL := all

all: cloq tools

cloq: $(BUILD)/cloq
	@ln -sf $(BUILD)/cloq cloq

tools: $(TOOLS)

help:
	@echo "cloq targets:"
	@echo "  make             build ./cloq (-> build/cloq) and the test tools"
	@echo "  make deps        apt-get install the Debian packages that are missing (needs root)"
	@echo "  make demo        deps + build + convert the bundled stories260K, print the perplexity table"
	@echo "  make test        deps + build + every unit test and end-to-end script (the README's test command)"
	@echo "  make check       build + unit tests only (fast)"
	@echo "  make asan        unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)"
	@echo "  make bench       benchmarks, printed as tables"
	@echo "  make fuzz        build the libFuzzer targets with clang and run each for FUZZ_SECONDS (default 20)"
	@echo "  make clean       remove build outputs"
	@echo "variables: CC, OPT, CFLAGS, BUILD, EXTRA_CFLAGS (e.g. -Werror)"

# ---- build ---------------------------------------------------------------------------------------
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/libcloq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/cloq: $(BUILD)/src/cli/main.o $(BUILD)/libcloq.a
	$(CC) $(ALLLDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libcloq.a
	$(CC) $(ALLLDFLAGS) -o $@ $^ -lcmocka $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/libcloq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLLDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/libcloq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLLDFLAGS) -o $@ $^ $(LDLIBS)

# The version and numeric build a job records (src/cli/cloq_version.c): only that file gets the flags,
# and a second binary that differs from cloq in nothing but its version lets the tests check that
# a job started by one build is not resumed by another.
$(BUILD)/src/cli/cloq_version.o: CPPFLAGS += -DCLOQ_BUILD_FLAGS='"$(strip $(OPT))"'
$(BUILD)/tests/cloq_version_other.o: src/cli/cloq_version.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DCLOQ_BUILD_FLAGS='"$(strip $(OPT))"' -DCLOQ_VERSION_STRING='"0.0.0-other-build"' $(ALLCFLAGS) -c $< -o $@

$(BUILD)/tools/cloq-other-version: $(BUILD)/src/cli/main.o $(BUILD)/tests/cloq_version_other.o $(BUILD)/libcloq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLLDFLAGS) -o $@ $^ $(LDLIBS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- set-up --------------------------------------------------------------------------------------
# Installs only what is missing, so it is quick (and needs no root) on a machine that has it all.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing $$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; \
	else echo "make deps: all Debian packages present"; fi

# ---- tests ---------------------------------------------------------------------------------------
check: $(BUILD)/cloq $(TESTS) $(TOOLS)
	@BUILD=$(BUILD) sh tests/run.sh unit

test: deps
	@$(MAKE) --no-print-directory cloq $(TESTS) $(TOOLS)
	@BUILD=$(BUILD) sh tests/run.sh all

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" check

bench: cloq $(BENCHES) $(TOOLS)
	@BUILD=$(BUILD) sh tests/bench/run.sh

FUZZ_SECONDS ?= 20
fuzz:
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do \
		n=$$(basename $$f .c); \
		clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined $$f $(LIB_SRC) -o $(BUILD)/fuzz/$$n $(LDLIBS) -fopenmp || exit 1; \
		mkdir -p $(BUILD)/fuzz/$$n.corpus; \
		$(BUILD)/fuzz/$$n $(BUILD)/fuzz/$$n.corpus tests/fuzz/corpus/$$n -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

demo: deps
	@$(MAKE) --no-print-directory cloq $(TOOLS)
	@sh tests/demo.sh

clean:
	rm -rf $(BUILD) build-asan cloq
