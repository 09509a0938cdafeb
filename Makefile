GO      ?= go
PKGS    := ./...
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# honnef.co/go/tools: the static analysis `make lint` runs (its default checks)
STATICCHECK := v0.8.2
LDFLAGS := -X github.com/imstream/imstream/internal/plumbing/obs.Version=$(VERSION)

.PHONY: all help run test unit build bench bench-imr imservice gobench lint tools fuzz chaos chaos-ci clean

all: build

## help: this list
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

## unit: the package tests alone (race detector), without the end-to-end and fault suites
unit: tools
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list $(PKGS) | grep -v /e2e$$)

## run: the whole pipeline on an embedded Kafka and Redis, with simulated traffic
run: tools-soft
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/imstream dev

## test: lint, then unit and integration tests with the race detector, then
## the fault-injection suite at a size that fits CI
test: tools lint
	$(GO) test -race -count=1 -timeout 40m $(PKGS)
	$(MAKE) chaos-ci

## chaos: the fault-injection suite; CHAOS_EVENTS events per fault (default 200000)
CHAOS_EVENTS ?= 200000
chaos: tools
	@CHAOS_EVENTS=$(CHAOS_EVENTS) CHAOS_OUT=$(CURDIR)/chaos-results.md \
	  $(GO) test -tags chaos -run TestChaos -count=1 -v -timeout 120m ./e2e > chaos.log 2>&1; rc=$$?; \
	  grep -E '^(\||--- |ok|FAIL)|chaos_test' chaos.log; \
	  [ $$rc = 0 ] || echo "chaos suite failed; full log in chaos.log"; exit $$rc

## chaos-ci: the suite at CI size
chaos-ci:
	$(MAKE) chaos CHAOS_EVENTS=3000 CHAOS_REDIS_DOWN_SECONDS=3

## build: bin/imstream
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/imstream ./cmd/imstream

## bench: imstream bench (embedded Kafka and Redis; table + bench.json)
bench: tools
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/imstream bench --json bench.json

## bench-imr: the gateway and burst scenarios through imr and imstream side by side (IMSERVICE=path to an im_service checkout)
bench-imr: tools
	@if [ -z "$(IMSERVICE)" ]; then echo "set IMSERVICE=/path/to/im_service (a checkout of github.com/GoBelieveIO/im_service)"; exit 2; fi
	scripts/vs-imr.sh "$(IMSERVICE)" --json bench-imr.json

## imservice: im_service itself (im, ims, imr, MariaDB, its tests) routed by imr and by imstream, push lists compared (IMSERVICE=path to a checkout; GATEWAYS=2 for two routers; RUNS=n)
GATEWAYS ?= 1
RUNS ?= 1
imservice: tools
	@if [ -z "$(IMSERVICE)" ]; then echo "set IMSERVICE=/path/to/im_service (a checkout of github.com/GoBelieveIO/im_service)"; exit 2; fi
	scripts/imservice/run.sh "$(IMSERVICE)" --gateways $(GATEWAYS) --runs $(RUNS)

## gobench: Go benchmarks of the hot paths
gobench: tools
	$(GO) test -run '^$$' -bench . -benchmem ./schemas ./pusher ./fanout ./store ./internal/plumbing/kafkax

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags chaos ./e2e
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) -tags chaos $(PKGS)

## fuzz: run every fuzz target for FUZZTIME (default 30s each)
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./schemas -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./schemas -run '^$$' -fuzz '^FuzzFastDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pusher -run '^$$' -fuzz '^FuzzEncoder$$' -fuzztime $(FUZZTIME)
	$(GO) test ./gateway/imr -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

tools:
	@./scripts/ensure-tools.sh

tools-soft:
	@./scripts/ensure-tools.sh --soft

clean:
	rm -rf bin
