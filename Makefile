GO      ?= go
PKGS    := ./...
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/imstream/imstream/internal/obs.Version=$(VERSION)

.PHONY: all run test unit build bench lint tools fuzz clean

all: build

## run: the whole pipeline on an embedded Kafka and Redis, with simulated traffic
run: tools-soft
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/imstream dev

## test: lint, then unit and integration tests with the race detector
test: tools lint
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

## build: bin/imstream
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/imstream ./cmd/imstream

## bench: Go benchmarks of the hot paths
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## fuzz: run every fuzz target for FUZZTIME (default 30s each)
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./schemas -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pusher -run '^$$' -fuzz '^FuzzEncoder$$' -fuzztime $(FUZZTIME)

tools:
	@./scripts/ensure-tools.sh

tools-soft:
	@./scripts/ensure-tools.sh --soft

clean:
	rm -rf bin
