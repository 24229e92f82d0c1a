# casfs: the two commands are `make demo` and `make test` (see README.md).
GO        ?= go
BIN       := bin/casfs
PREFIX    ?= /usr/local
TEST_TIMEOUT ?= 18m
GOFLAGS_TEST ?= -race -count=1
# Integration tests mostly wait on processes, registries and the disk: run
# more of them at once than there are cores.
TEST_PARALLEL ?= 8
# Tools the prereqs step installs with go install (staticcheck).
GOTOOLS   := $(CURDIR)/bin/tools
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(GOTOOLS)/staticcheck)

# Tests always run as CI would: a missing prerequisite fails, never skips.
export CI := true

.PHONY: all build test test-integration test-unit prereqs-packages conformance containerd-content unit integration demo bench lint install prereqs soak fuzz clean

all: build

# A static binary (no cgo: nothing in casfs needs it) starts about 5 ms
# sooner than one that loads libc first, and one without urfave/cli's
# markdown and man page writers (casfs uses neither; their markdown
# package initialises at every start) 3-4 ms sooner again: every command
# run against the daemon pays that start.
BUILD_TAGS := urfave_cli_no_docs
build:
	CGO_ENABLED=0 $(GO) build -tags $(BUILD_TAGS) -o $(BIN) ./cmd/casfs

# Installs the apt packages the tests use when they are missing (as root on Debian).
prereqs:
	@scripts/prereqs.sh

prereqs-packages:
	@scripts/prereqs.sh packages

# make test runs lint, then every package's tests (the integration package
# among them, its tests side by side), then the two nested modules. The parts
# run one after another: on a 2-core machine with an empty build cache, running
# them at once made each compile the same packages and the whole run twice as
# long.
test: prereqs-packages lint
	$(GO) test $(GOFLAGS_TEST) -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory conformance containerd-content

# NICE_PART runs a part at a lower priority when set (for running parts
# beside other work by hand).
NICE_PART ?=

test-integration:
	$(GO) test $(GOFLAGS_TEST) -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./integration/

test-unit:
	$(NICE_PART) $(GO) test $(GOFLAGS_TEST) -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /integration)

# The distribution-spec conformance suite is a nested module (its own go.mod)
# so that its dependencies stay out of casfs's.
conformance:
	cd integration/conformance && $(NICE_PART) $(GO) test $(GOFLAGS_TEST) -timeout 5m ./...

# containerd's content-store test suite against casfs's store: a nested
# module, so containerd's dependencies stay out of casfs's go.mod.
containerd-content:
	cd integration/containerd-content && $(NICE_PART) $(GO) test $(GOFLAGS_TEST) ./...

unit: test-unit

integration: prereqs test-integration conformance

demo: prereqs build
	@scripts/demo.sh

bench: prereqs build
	@scripts/bench.sh

# vet and staticcheck see the build's configuration (no cgo, its tags), so
# on an empty build cache the dependencies they compile are the ones make
# build and the integration tests' plain binary use too.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	CGO_ENABLED=0 $(NICE_PART) $(GO) vet -tags $(BUILD_TAGS) ./...
	@test -x "$(STATICCHECK)" || GOTOOLS="$(GOTOOLS)" $(NICE_PART) scripts/prereqs.sh tools
	CGO_ENABLED=0 $(NICE_PART) $(STATICCHECK) -tags $(BUILD_TAGS) ./...
	$(GO) mod tidy -diff
	cd integration/conformance && $(NICE_PART) $(GO) vet ./... && $(NICE_PART) $(STATICCHECK) ./... && $(GO) mod tidy -diff
	cd integration/containerd-content && $(NICE_PART) $(GO) vet ./... && $(NICE_PART) $(STATICCHECK) ./... && $(GO) mod tidy -diff

# Long runs, not part of make test: 200 crash trials, 20 pulls into a full
# disk, and each fuzz target for FUZZTIME.
SOAK_TRIALS ?= 200
SOAK_DISKFULL_TRIALS ?= 20
FUZZTIME ?= 60s
# The whole log goes to bin/soak.log, so a failed trial's details are kept;
# the terminal shows the summary lines and each failure.
soak: prereqs
	@mkdir -p bin
	bash -o pipefail -c "CASFS_CRASH_TRIALS=$(SOAK_TRIALS) CASFS_DISKFULL_TRIALS=$(SOAK_DISKFULL_TRIALS) $(GO) test -count=1 -timeout 120m -run 'TestCrashTrials|TestDiskFullTrials' -v ./integration/ 2>&1 | tee bin/soak.log | grep -E '^( *--- FAIL|crash trials|disk-full trials|ok|FAIL|PASS)'"

fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/casfs

clean:
	rm -rf bin
