package manifests

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// hack/kind-deploy.sh needs Docker and kind, so it cannot run here; the
// part that decides what gets deployed can: the overlay it writes must
// render config/emulator with the requested image for both binaries.
func TestKindDeploy_OverlayDeploysTheRequestedImage(t *testing.T) {
	for img, want := range map[string]string{
		"paytoview-operator:dev":                  "paytoview-operator:dev",
		"registry.example.com:5000/team/op:v1.2":  "registry.example.com:5000/team/op:v1.2",
		"ghcr.io/team/op@sha256:0123456789abcdef": "ghcr.io/team/op@sha256:0123456789abcdef",
	} {
		t.Run(img, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.CommandContext(t.Context(), "bash", "-c", `source hack/kind-deploy.sh && OVERLAY="$1" && write_overlay`, "bash", dir)
			cmd.Dir = testenv.RepoRoot()
			cmd.Env = append(os.Environ(), "IMG="+img)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("write_overlay: %v\n%s", err, out)
			}
			overlay, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			// The script writes it to .dev/kind, two levels below the root.
			fs := repoFS(t)
			if err := fs.WriteFile(path.Join(root, ".dev/kind/kustomization.yaml"), overlay); err != nil {
				t.Fatal(err)
			}
			r := render(t, fs, ".dev/kind")
			_, c := manager(t, r)
			if c.Image != want {
				t.Errorf("manager image = %q, want %q", c.Image, want)
			}
			em := get[appsv1.Deployment](t, r, "Deployment", emulatorName)
			if got := em.Spec.Template.Spec.Containers[0].Image; got != want {
				t.Errorf("emulator image = %q, want %q", got, want)
			}
		})
	}
}
