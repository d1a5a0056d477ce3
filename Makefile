# Sigil. `make dev` runs the whole server embedded; `make test` runs every
# test against real peers, installing and starting what they need.
SHELL := /bin/bash
export CGO_ENABLED := 1
GO ?= go
BIN := bin/sigil
DEV_DIR ?= $(CURDIR)/.sigil-dev
FUZZTIME ?= 10s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build dev dev-hsm test deps vet lint unit fuzz fuzz-short bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/sigil

## dev: start Sigil with every listener on an embedded default (SQLite, dev seal)
dev: build
	./$(BIN) dev --data-dir $(DEV_DIR)

## dev-hsm: the same with the root key and the seal key in a SoftHSM2 token
dev-hsm: build
	./$(BIN) dev --data-dir $(DEV_DIR)-hsm --hsm softhsm

## test: install peers, vet, lint, race tests, short fuzzing
test: deps vet lint unit fuzz-short

deps:
	bash scripts/deps.sh

vet:
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

## fuzz-short: every fuzz target for FUZZTIME (CI); `make fuzz FUZZTIME=10m` for long runs
fuzz-short:
	bash scripts/fuzz.sh $(FUZZTIME)

fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## bench: the figures in BENCHMARKS.md
bench:
	bash scripts/bench.sh

clean:
	rm -rf bin $(DEV_DIR) $(DEV_DIR)-hsm
