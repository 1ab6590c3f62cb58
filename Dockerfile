# paytoview-operator image: the manager (/manager) and the Stripe emulator
# (/stripe-emulator, used only by config/emulator for kind and demos), both
# static binaries on distroless nonroot: no shell, no package manager, no
# root user.
#
#   make docker-build IMG=registry.example.com/paytoview-operator:v0.1.0

FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
WORKDIR /workspace

# Dependencies first, in their own layer, so that a source change does not
# download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# CGO off: a static binary that runs on distroless/static. -trimpath and
# -s -w: reproducible paths, no symbol tables. GOOS/GOARCH follow
# `docker buildx --platform`, defaulting to the builder's own.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags='-s -w' -o /out/manager . && \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags='-s -w' -o /out/stripe-emulator ./hack/stripe-emulator

FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /out/manager /manager
COPY --from=builder /out/stripe-emulator /stripe-emulator
# The numeric id of distroless's "nonroot" user, so that Kubernetes can
# verify runAsNonRoot without a passwd lookup.
USER 65532:65532
ENTRYPOINT ["/manager"]
