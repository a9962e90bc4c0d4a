# Ward — build, test, run. See README.md.
#
#   make            build the six daemons, ward-status, wardctl and ward-policy into bin/
#   make SAN=1 ...  the same with ASan + UBSan (objects go to build/san/)
#   make deps       install missing Debian packages (idempotent)
#   make run        deps + build + ops/devstack up + demo tenant
#   make stop       ops/devstack down
#   make test       deps + build + every unit and end-to-end test
#   make bench      deps + build + benchmarks (SPEC §5 output)
#   make fuzz       build libFuzzer targets (clang) into bin/fuzz/

CC      ?= cc
SAN     ?= 0
PKGS    := libevent libevent_openssl hiredis libprotobuf-c yaml-0.1 jansson openssl libpq libargon2 gmime-3.0
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS_BASE := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wformat=2 \
	-Wno-unused-parameter -fstack-protector-strong -fPIE -g -MMD -MP
ifeq ($(SAN),1)
BUILD   := build/san
CFLAGS_OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
else
BUILD   := build/rel
CFLAGS_OPT := -O2 -D_FORTIFY_SOURCE=2
LDFLAGS_SAN :=
endif
CFLAGS  += $(CFLAGS_BASE) $(CFLAGS_OPT) -I$(BUILD)/gen -Icommon $(PKG_CFLAGS)
LDFLAGS += -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack $(LDFLAGS_SAN)
LDLIBS  += $(PKG_LIBS) -lm

SERVICES := gateway auth ticket mail-ingest audit backup mail-out
PROTOS   := $(wildcard proto/*.proto)
GEN_C    := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H    := $(GEN_C:.c=.h)
COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC)) $(GEN_C:.c=.o)
LIBWARD  := $(BUILD)/libward.a

DAEMONS  := $(addprefix bin/ward-,$(SERVICES)) bin/ward-status
TOOLS    := bin/wardctl bin/ward-policy
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS    := $(patsubst tests/unit/%.c,bin/tests/%,$(UNIT_SRC))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS  := $(patsubst tests/fuzz/%.c,bin/fuzz/%,$(FUZZ_SRC))

.PHONY: all deps run stop test bench fuzz clean unit e2e
.SECONDARY: $(GEN_C) $(GEN_H)

all: $(DAEMONS) $(TOOLS) $(UNITS)

# Switching between SAN=0 and SAN=1 relinks everything in bin/.
FLAVOR := bin/.flavor-$(SAN)
$(FLAVOR):
	@mkdir -p bin && rm -f bin/.flavor-* && touch $@

deps:
	@ops/deps

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(CFLAGS) -Wno-shadow -c -o $@ $<

$(BUILD)/%.o: %.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBWARD): $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

# One folder per daemon: every .c in services/<name>/ links into bin/ward-<name>.
define daemon_rule
bin/ward-$(1): $(patsubst %.c,$(BUILD)/%.o,$(wildcard services/$(1)/*.c)) $(LIBWARD) $(FLAVOR)
	@mkdir -p bin
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter-out $$(FLAVOR),$$^) $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call daemon_rule,$(s))))
# ward-status: the status page as its own process (services/status/ has its main);
# the page, TLS and request guard are the gateway's objects, linked in, not copied.
STATUS_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard services/status/*.c)) \
	$(filter-out %/gateway_main.o,$(patsubst %.c,$(BUILD)/%.o,$(wildcard services/gateway/*.c)))
$(BUILD)/services/status/%.o: CFLAGS += -Iservices/gateway
bin/ward-status: $(STATUS_OBJ) $(LIBWARD) $(FLAVOR)
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)
# libcurl (S3 backup target, AWS SigV4) for ward-backup only.
bin/ward-backup: LDLIBS += $(shell pkg-config --libs libcurl 2>/dev/null)
$(BUILD)/services/backup/%.o: CFLAGS += $(shell pkg-config --cflags libcurl 2>/dev/null)
bin/tests/test_backup_format: LDLIBS += $(shell pkg-config --libs libcurl 2>/dev/null)
bin/tests/test_backup_wal: LDLIBS += $(shell pkg-config --libs libcurl 2>/dev/null)

bin/wardctl: $(patsubst %.c,$(BUILD)/%.o,$(wildcard ops/wardctl/*.c)) $(LIBWARD) $(FLAVOR)
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)

bin/ward-policy: $(patsubst %.c,$(BUILD)/%.o,$(wildcard ops/policy/*.c)) $(LIBWARD) $(FLAVOR)
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)

bin/tests/%: $(BUILD)/tests/unit/%.o $(LIBWARD) $(FLAVOR)
	@mkdir -p bin/tests
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS) -lcmocka

# libFuzzer targets: clang, ASan + UBSan, the common library rebuilt with them.
FUZZ_CFLAGS := -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Ibuild/fuzz/gen $(PKG_CFLAGS)
build/fuzz/gen/%.pb-c.c build/fuzz/gen/%.pb-c.h: proto/%.proto
	@mkdir -p build/fuzz/gen
	protoc-c --proto_path=proto --c_out=build/fuzz/gen $<
bin/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(patsubst proto/%.proto,build/fuzz/gen/%.pb-c.c,$(PROTOS))
	@mkdir -p bin/fuzz
	clang $(FUZZ_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm
fuzz: $(FUZZERS)

# deps first, then a sub-make: pkg-config flags are read when make starts, so a
# fresh machine needs the packages installed before the build reads them.
run: deps
	$(MAKE) all
	ops/devstack up
	ops/devstack demo

stop:
	ops/devstack down

unit: all
	tests/run unit

test: deps
	$(MAKE) all
	tests/run all

bench: deps
	$(MAKE) all
	tests/bench/run

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
