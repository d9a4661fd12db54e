# ketch — one make entry point.
#   make            build build/ketch (plain, -O2)
#   make asan       build build-asan/ketch (AddressSanitizer + UBSan)
#   make run        install deps, build, start one member on 127.0.0.1:2379
#   make test       install deps, build both, run every test (plain + sanitized)
#   make fuzz       build the libFuzzer targets (clang, into build-fuzz/) and run
#                   each for FUZZ_SECONDS (default 60), two at a time

BUILD   ?= build
SAN     ?=
PKGS    := libuv libnghttp2 libprotobuf-c raft lmdb openssl jansson
CC      ?= cc
OPT     ?= -O2 -g
CFLAGS  += $(OPT) -std=c17 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -MMD -MP \
           -I$(BUILD)/gen -Isrc $(shell pkg-config --cflags $(PKGS)) $(SAN)
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm
# auth (src/auth/password.c): bcrypt through libxcrypt
LDLIBS  += -lcrypt
LDFLAGS += $(SAN)

PROTOS  := $(wildcard proto/*.proto)
GEN_C   := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H   := $(GEN_C:.c=.h)
LIB_DIRS ?= $(filter-out src/server,$(wildcard src/*))
LIB_SRC := $(wildcard $(addsuffix /*.c,$(LIB_DIRS)) src/server/*.c)
LIB_SRC := $(filter-out src/server/main.c,$(LIB_SRC))
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(GEN_C:.c=.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

.PHONY: all asan run test unit deps clean fuzz fuzz-build
.SECONDARY:
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(if $(BENCH_SRC),$(BUILD)/ketch-bench)
CTL_SRC := $(wildcard ctl/*.c)
CTL_BIN := $(if $(CTL_SRC),$(BUILD)/ketchctl)

# Fuzz targets (fuzz/): target name → source and FUZZ_MODE. In build/ and
# build-asan/ they are linked with fuzz/replay.c (replays inputs, for `make
# test`); in build-fuzz/ with libFuzzer (FUZZ_MAIN empty, FUZZ_LINK set).
.DEFAULT_GOAL := all
FUZZ_TARGETS := fuzz_h2:fuzz_conn:1 fuzz_http1:fuzz_conn:2 fuzz_tls:fuzz_conn:3 \
                fuzz_proto:fuzz_msg:1 fuzz_json:fuzz_msg:2 \
                fuzz_peer:fuzz_peer:1 fuzz_peer_tls:fuzz_peer:2
FUZZ_MAIN ?= fuzz/replay.c
FUZZ_LINK ?=
FUZZ_BIN := $(foreach t,$(FUZZ_TARGETS),$(BUILD)/fuzz/$(word 1,$(subst :, ,$(t))))
define fuzz_rule
$(BUILD)/fuzz/$(1): fuzz/$(2).c $(FUZZ_MAIN) $(BUILD)/libketch.a $(GEN_H)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -DFUZZ_MODE=$(3) $$(LDFLAGS) $$(FUZZ_LINK) -o $$@ fuzz/$(2).c $$(FUZZ_MAIN) $(BUILD)/libketch.a $$(LDLIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rule,$(word 1,$(subst :, ,$(t))),$(word 2,$(subst :, ,$(t))),$(word 3,$(subst :, ,$(t))))))

all: $(BUILD)/ketch $(BENCH_BIN) $(CTL_BIN) $(UNIT_BIN) $(TOOL_BIN) $(FUZZ_BIN)

deps:
	@bash scripts/deps.sh

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c -Iproto --c_out=$(BUILD)/gen $<

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c $(GEN_H)
	$(CC) $(CFLAGS) -w -c -o $@ $<

$(BUILD)/obj/%.o: %.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libketch.a: $(LIB_OBJ)
	rm -f $@; ar rcs $@ $^

$(BUILD)/ketch: $(BUILD)/obj/src/server/main.o $(BUILD)/libketch.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ketch-bench: $(patsubst %.c,$(BUILD)/obj/%.o,$(BENCH_SRC)) $(BUILD)/libketch.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ketchctl: $(patsubst %.c,$(BUILD)/obj/%.o,$(CTL_SRC)) $(BUILD)/libketch.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libketch.a $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libketch.a $(LDLIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libketch.a $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libketch.a $(LDLIBS)

asan:
	$(MAKE) BUILD=build-asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" OPT="-O1 -g"

fuzz-build:
	@$(MAKE) --no-print-directory -j$$(nproc) BUILD=build-fuzz CC=clang SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" OPT="-O1 -g" FUZZ_MAIN= FUZZ_LINK=-fsanitize=fuzzer $(foreach t,$(FUZZ_TARGETS),build-fuzz/fuzz/$(word 1,$(subst :, ,$(t))))

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) bash scripts/fuzz.sh $(foreach t,$(FUZZ_TARGETS),$(word 1,$(subst :, ,$(t))))

unit: all
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

run: deps all
	./$(BUILD)/ketch

test: deps
	@bash scripts/test.sh

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
