//go:build e2e

// Package e2e holds the end-to-end tests of paytoview-operator: the real
// manager binary (two leader-elected replicas, authenticated as a
// ServiceAccount holding only the RBAC of config/rbac) and the Stripe
// emulator binary run as processes against a control plane, and the tests
// talk HTTP only, as the frontend and Stripe would.
//
// Run them with `make test-e2e` (go test -tags e2e ./test/e2e/). Set
// E2E_KUBECONFIG to run against an existing cluster (kind) instead of a
// local control plane; docs/testing.md says what differs.
package e2e
