# paytoview-operator. `make run` starts the whole system locally; `make test`
# runs every test. Tools are installed into bin/ at pinned versions.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= paytoview-operator:dev
LOCALBIN ?= $(CURDIR)/bin
GO ?= go

CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
STRIPE_MOCK_VERSION ?= v0.180.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
STRIPE_MOCK ?= $(LOCALBIN)/stripe-mock-$(STRIPE_MOCK_VERSION)

# go test flags; -race where it fits CI's time budget.
TEST_FLAGS ?= -race -count=1
# How long `make test-fuzz` runs each fuzz target.
FUZZTIME ?= 10s
.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: verify-generated
verify-generated: manifests generate ## Fail if generated files are not up to date.
	@if [ -n "$$(git status --porcelain -- config api)" ]; then \
		echo "generated files are out of date; run 'make manifests generate' and commit:"; \
		git status --porcelain -- config api; git --no-pager diff --stat -- config api; exit 1; fi

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

##@ Test

.PHONY: test
test: verify-generated vet test-unit test-contract test-e2e test-fuzz ## Run every test (generated-files check, vet, unit + envtest, contract, end to end, bounded fuzzing).

.PHONY: envtest
envtest: ## Build (or reuse) kube-apiserver and etcd for envtest and print their directory.
	@hack/envtest.sh

.PHONY: test-unit
test-unit: ## Unit and envtest tests.
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" $(GO) test $(TEST_FLAGS) ./...

.PHONY: test-contract
test-contract: $(STRIPE_MOCK) ## Stripe client against stripe-mock and the emulator.
	STRIPE_MOCK_BIN=$(STRIPE_MOCK) $(GO) test -count=1 -tags contract ./internal/stripe/

.PHONY: test-e2e
test-e2e: ## End-to-end: the built operator and emulator as processes, HTTP only (E2E_KUBECONFIG for a real cluster).
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" $(GO) test -tags e2e -count=1 -timeout 30m ./test/e2e/

.PHONY: test-fuzz
test-fuzz: ## Run every fuzz target for FUZZTIME (default 10s) each, from the checked-in corpora.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: bench
bench: ## Benchmarks against the physical limit on the local control plane + emulator; prints a table, writes bench/results.json.
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" $(GO) run ./hack/bench $(BENCH_FLAGS)
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" $(GO) test -run '^$$' -bench . -benchmem ./internal/lifecycle/ ./internal/stripe/ ./internal/auth/ ./webhookserver/

##@ Build

.PHONY: build
build: ## Build the manager binary.
	$(GO) build -o bin/manager .

.PHONY: run
run: ## Run the whole system locally: control plane, Stripe emulator, operator.
	$(GO) run ./hack/devenv

.PHONY: docker-build
docker-build: ## Build the container image (needs a container engine).
	docker build -t $(IMG) .

##@ Deployment

ignore-not-found ?= false

# deploy-overlay writes dist/overlay: config/$(1) with the image set to $(IMG), so deploying never edits config/.
define deploy-overlay
@rm -rf dist/overlay && mkdir -p dist/overlay
@printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../config/%s\n' $(1) > dist/overlay/kustomization.yaml
@cd dist/overlay && $(KUSTOMIZE) edit set image paytoview-operator=$(IMG)
endef

.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Render config/default with image IMG into dist/install.yaml.
	$(call deploy-overlay,default)
	$(KUSTOMIZE) build dist/overlay > dist/install.yaml
	@echo "wrote dist/install.yaml (image $(IMG)): kubectl apply --server-side -f dist/install.yaml"

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Install into the current kubectl context with image IMG (create the Secrets first: docs/deploy.md).
	$(call deploy-overlay,default)
	$(KUSTOMIZE) build dist/overlay | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove the operator, its CRDs and namespace (every Product/Purchase/Customer too). ignore-not-found=true to ignore missing objects.
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: kind-deploy
kind-deploy: $(KUSTOMIZE) ## Run the operator and the Stripe emulator on a kind cluster (needs Docker, kind, kubectl, openssl).
	KUSTOMIZE=$(KUSTOMIZE) IMG=$(IMG) hack/kind-deploy.sh

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

$(STRIPE_MOCK): | $(LOCALBIN)
	$(call go-install-tool,$(STRIPE_MOCK),github.com/stripe/stripe-mock,$(STRIPE_MOCK_VERSION))

# go-install-tool installs package $2 at version $3 as the versioned binary $1.
define go-install-tool
@set -e; tmp=$$(mktemp -d); \
echo "installing $(2)@$(3)"; \
GOBIN=$$tmp $(GO) install $(2)@$(3); \
mv $$tmp/* $(1); rm -rf $$tmp
endef
