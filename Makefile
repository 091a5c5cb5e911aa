# The two commands of the README's Quick start are `make demo` and
# `make check`; everything else here serves them.
BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_FUZZ ?= build-fuzz
MESON_OPTS ?= --werror

.PHONY: all deps build build-san demo check check-unit check-san check-valgrind \
	check-fuzz check-guest check-e2e check-inprocess check-hotplug bench clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD_SAN)/build.ninja:
	meson setup $(BUILD_SAN) $(MESON_OPTS) -Db_sanitize=address,undefined -Db_lundef=false

build-san: deps $(BUILD_SAN)/build.ninja
	ninja -C $(BUILD_SAN)

# The main job: the simulated end-to-end demo, on its defaults.
demo: build
	$(BUILD)/cli/vfio-apple run

# Every test.  CI (.ci/run) calls exactly this.
check: build build-san
	./scripts/check.sh

check-unit: build
	meson test -C $(BUILD) --print-errorlogs --suite unit

check-san: build-san
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(BUILD_SAN) --print-errorlogs --suite unit

check-valgrind: build
	meson test -C $(BUILD) --print-errorlogs --suite unit --no-suite slow \
		--wrapper 'valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --quiet'

# libFuzzer targets (clang, ASan+UBSan) for FUZZ_SECONDS each; fails on any crash.
FUZZ_SECONDS ?= 60
check-fuzz: deps
	BUILD_FUZZ=$(BUILD_FUZZ) ./fuzz/run.sh $(FUZZ_SECONDS)

# The guest module: style (checkpatch --strict) and its own scenarios in a
# 6.1 x86 guest and a 6.12 arm64 guest (needs root; provisions on first use).
check-guest: build
	./guest/linux/checkpatch.sh
	./guest/linux/test-guest.sh -k 6_1 apple rebind pressure strict reset iommu hotplug
	./guest/linux/test-guest.sh -k 6_12 apple rebind reset
	./guest/linux/test-guest.sh -k 7_3 apple rebind reset
	./guest/linux/test-guest.sh -k 6_12_ARM64 apple rebind pressure strict reset noncoherent

# Real QEMU 11.1 guests against the broker (needs root; see tests/e2e/).
check-e2e: build build-san
	./tests/e2e/run-x86.sh identity apple module reconnect crash
	./tests/e2e/run-arm64.sh identity apple module reconnect crash

# The in-process devices (vfio-apple-pci in a QEMU 10.2+ built with qemu/,
# docs/qemu.md): the same guests with no broker (tests/inprocess/).  Without
# such a QEMU it prints one SKIPPED line and passes.
check-inprocess: build
	./tests/inprocess/run.sh

# Two devices in one guest, attach/detach while it runs, and a device pulled
# mid-I/O (tests/hotplug/): vfio-user, then in-process when such a QEMU exists.
check-hotplug: build
	./tests/hotplug/run.sh

bench: build
	./scripts/bench.sh

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ)
