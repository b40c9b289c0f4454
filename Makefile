# Terroir: `make run` starts the whole system on one machine, `make test`
# runs every module's tests (installing redis-server first when missing).
# go.work ties the modules together; `go build ./...` does not work from the
# root, so targets loop over modules.

GO      ?= go
MODULES := pkg services/ingress services/contentsafety services/inference \
           services/batch services/finetuning services/assistants services/review \
           integration scripts
# Browser tests keep a screenshot of each page they visit under
# .terroir/test-artifacts.
TESTFLAGS ?= -race -count=1 -timeout 15m -artifacts -outputdir $(CURDIR)/.terroir/test-artifacts

.PHONY: run smoke devstack test vet fmt-check build bench bench-stack deps fuzz

## run: start the dev stack (embedded Kafka, Redis, every service); Ctrl-C stops it
# The launcher is built, not `go run`, so a clean Ctrl-C exits 0.
run: devstack
	.terroir/bin/devstack

## smoke: start the stack, wait until every service is ready, stop it
smoke: devstack
	.terroir/bin/devstack -smoke

devstack:
	cd scripts && $(GO) build -o ../.terroir/bin/devstack ./devstack

## deps: install the system packages the tests need (redis-server, nodejs, npm, chromium, libnss3-tools, openssl)
deps:
	./scripts/install-deps.sh

## test: vet and test every module against in-process kfake and a real redis-server
test: deps fmt-check vet
	@mkdir -p .terroir/test-artifacts
	@set -e; for m in $(MODULES); do \
		echo "== test $$m"; \
		(cd $$m && $(GO) test $(TESTFLAGS) ./...); \
	done

vet:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## build: build every service binary into .terroir/bin
build:
	@set -e; for s in ingress contentsafety inference batch finetuning assistants review; do \
		$(GO) build -o .terroir/bin/$$s ./services/$$s; \
	done

## bench: the stack as `make run` starts it under load from outside, bus latency/throughput, encryption cost, content-classifier quality and speed, review-store ingest and lookup, printed as tables
bench: bench-stack
	cd scripts && $(GO) run ./busbench
	cd scripts && $(GO) run ./safetyeval
	cd scripts && $(GO) run ./reviewbench

## bench-stack: start the stack as `make run` does plus a zero-delay upstream model, load it over HTTP, print latency added, CPU per request of every process, throughput and streams
bench-stack:
	cd scripts && $(GO) run ./stackbench

# Fuzz targets as module:package:FuzzName. `make test` runs their seed
# corpora (inline seeds and testdata/fuzz/); `make fuzz` searches for new
# inputs, one target at a time.
FUZZTIME    ?= 30s
FUZZTARGETS := pkg:./openai:FuzzChatRequest \
               pkg:./bus:FuzzDecodeRecord \
               pkg:./control:FuzzControlRecords \
               services/ingress:./mgmt:FuzzManagementBodies \
               pkg:./openai:FuzzCompletionRequest \
               pkg:./openai:FuzzEmbeddingRequest \
               pkg:./openai:FuzzArgumentsDecoder \
               pkg:./openai:FuzzChoice \
               services/ingress:./apierr:FuzzDecodeBytes \
               services/ingress:./apierr:FuzzDecode \
               services/ingress:./api:FuzzParse \
               services/inference:./worker:FuzzSSEReader \
               services/inference:./worker:FuzzSSERoundTrip \
               services/inference:./worker:FuzzReadStream \
               services/inference:./worker:FuzzReadBody \
               services/contentsafety:./classifier:FuzzNormalize \
               services/contentsafety:./classifier:FuzzClassify \
               services/contentsafety:./classifier:FuzzStream \
               services/contentsafety:./classifier:FuzzBlocklists

## fuzz: fuzz the request bodies (app and management), event decoding, the upstream stream reader and the content classifier, FUZZTIME (default 30s) per target
fuzz:
	@set -e; for t in $(FUZZTARGETS); do \
		m=$${t%%:*}; rest=$${t#*:}; p=$${rest%%:*}; f=$${rest#*:}; \
		echo "== fuzz $$m $$p $$f"; \
		(cd $$m && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$p); \
	done
