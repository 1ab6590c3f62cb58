# paytoview-operator. `make run` starts the whole system locally; `make test`
# runs every test. Tools are installed into bin/ at pinned versions.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= paytoview-operator:dev
LOCALBIN ?= $(CURDIR)/bin
GO ?= go

CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.3
GOLANGCI_LINT_VERSION ?= v2.15.0
STRIPE_MOCK_VERSION ?= v0.180.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
STRIPE_MOCK ?= $(LOCALBIN)/stripe-mock-$(STRIPE_MOCK_VERSION)

# go test flags; -race where it fits CI's time budget.
TEST_FLAGS ?= -race -count=1
# Packages that need no control plane and no stripe-mock.
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
test: verify-generated vet test-unit test-contract ## Run every test (generated-files check, vet, unit + envtest, contract).

.PHONY: envtest
envtest: ## Build (or reuse) kube-apiserver and etcd for envtest and print their directory.
	@hack/envtest.sh

.PHONY: test-unit
test-unit: ## Unit and envtest tests.
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" $(GO) test $(TEST_FLAGS) ./...

.PHONY: test-contract
test-contract: $(STRIPE_MOCK) ## Stripe client against stripe-mock and the emulator.
	STRIPE_MOCK_BIN=$(STRIPE_MOCK) $(GO) test -count=1 -tags contract ./internal/stripe/...

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
mv $$tmp/$$(basename $(2)) $(1); rm -rf $$tmp
endef
