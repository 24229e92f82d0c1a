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

.PHONY: all build test unit integration demo bench lint install prereqs soak fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/casfs

# Installs the apt packages the tests use when they are missing (as root on Debian).
prereqs:
	@scripts/prereqs.sh

# The distribution-spec conformance suite is a nested module (its own go.mod)
# so that its dependencies stay out of casfs's.
test: prereqs lint
	$(GO) test $(GOFLAGS_TEST) -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./...
	cd integration/conformance && $(GO) test $(GOFLAGS_TEST) -timeout 5m ./...

unit:
	$(GO) test $(GOFLAGS_TEST) $$($(GO) list ./... | grep -v /integration)

integration: prereqs
	$(GO) test $(GOFLAGS_TEST) -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) ./integration/...
	cd integration/conformance && $(GO) test $(GOFLAGS_TEST) -timeout 5m ./...

demo: prereqs build
	@scripts/demo.sh

bench: prereqs build
	@scripts/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x "$(STATICCHECK)" || GOTOOLS="$(GOTOOLS)" scripts/prereqs.sh tools
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff
	cd integration/conformance && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) mod tidy -diff

# Long runs, not part of make test: 200 crash trials, and each fuzz target for FUZZTIME.
SOAK_TRIALS ?= 200
FUZZTIME ?= 60s
soak: prereqs
	bash -o pipefail -c "CASFS_CRASH_TRIALS=$(SOAK_TRIALS) $(GO) test -count=1 -timeout 120m -run 'TestCrashTrials' -v ./integration/ | grep -E '^(=== RUN|--- |crash|ok|FAIL|PASS)'"

fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/casfs

clean:
	rm -rf bin
