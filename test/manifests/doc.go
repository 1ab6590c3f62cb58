// Package manifests holds the tests of the deployment manifests in config/:
// they render the kustomizations with kustomize's Go API, assert the
// properties a platform team relies on (least-privilege RBAC, a highly
// available and restricted Deployment, Services, policies and overlays that
// agree with each other and with the operator's flags), and apply the
// result to a real apiserver with a server-side dry run.
package manifests
