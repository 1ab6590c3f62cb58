package manifests

import (
	"flag"
	"io"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/md-platform/paytoview-operator/internal/operator"
)

func manager(t *testing.T, r rendering) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d := get[appsv1.Deployment](t, r, "Deployment", deploymentName)
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == managerContainer {
			return d, c
		}
	}
	t.Fatalf("%s: Deployment %s has no container %q", r.name, deploymentName, managerContainer)
	return nil, nil
}

// operatorFlags is the manager binary's flag set, composed as main.go
// composes it: the operator's flags and the logger's.
func operatorFlags() (*flag.FlagSet, *operator.Config) {
	cfg := operator.DefaultConfig()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.BindFlags(fs)
	(&zap.Options{}).BindFlags(fs)
	return fs, &cfg
}

// flagName returns the flag an argument sets ("--api-bind-address=:8080").
func flagName(arg string) (string, bool) {
	name, ok := strings.CutPrefix(arg, "--")
	if !ok {
		return "", false
	}
	name, _, _ = strings.Cut(name, "=")
	return name, name != ""
}

// containerPort resolves a Service targetPort or probe port (number or
// name) against a container's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// bindPort is the port of a --*-bind-address argument.
func bindPort(t *testing.T, args []string, flagName string) int32 {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+flagName+"="); ok {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("--%s=%q: %v", flagName, v, err)
			}
			n, err := strconv.ParseInt(port, 10, 32)
			if err != nil {
				t.Fatalf("--%s=%q: %v", flagName, v, err)
			}
			return int32(n)
		}
	}
	t.Fatalf("manager args %v do not set --%s", args, flagName)
	return 0
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("label selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

func TestDeployment_RunsTwoReplicasWithLeaderElection(t *testing.T) {
	for _, r := range renderAll(t).all() {
		d, c := manager(t, r)
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("%s: replicas = %v, want 2", r.name, d.Spec.Replicas)
		}
		if !slices.Contains(c.Args, "--leader-elect") && !slices.Contains(c.Args, "--leader-elect=true") {
			t.Errorf("%s: manager args %v lack --leader-elect: two replicas would both reconcile", r.name, c.Args)
		}
		ru := d.Spec.Strategy.RollingUpdate
		if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
			t.Errorf("%s: rolling update may take a replica down before its successor is ready: %+v", r.name, ru)
		}
		spreads := false
		for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
			if tsc.TopologyKey == "kubernetes.io/hostname" && selects(t, tsc.LabelSelector, d.Spec.Template.Labels) {
				spreads = true
			}
		}
		if !spreads {
			t.Errorf("%s: replicas are not spread across nodes", r.name)
		}
	}
}

func TestDeployment_ArgsAndEnvAreOperatorFlags(t *testing.T) {
	for _, r := range renderAll(t).all() {
		_, c := manager(t, r)
		fs, _ := operatorFlags()
		for _, a := range c.Args {
			name, ok := flagName(a)
			if !ok {
				t.Errorf("%s: manager arg %q is not a --flag", r.name, a)
				continue
			}
			if fs.Lookup(name) == nil {
				t.Errorf("%s: manager arg %q: the operator has no flag --%s", r.name, a, name)
			}
		}
		if err := fs.Parse(c.Args); err != nil || fs.NArg() != 0 {
			t.Errorf("%s: the operator rejects its args %v: %v (left over: %v)", r.name, c.Args, err, fs.Args())
		}

		envTwins := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { envTwins[operator.EnvName(f.Name)] = true })
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			data, _ := configSource(t, r, "ConfigMap", ef.ConfigMapRef.Name)
			for k := range data {
				if !envTwins[ef.Prefix+k] {
					t.Errorf("%s: ConfigMap %s sets %s, which is no flag's environment twin", r.name, ef.ConfigMapRef.Name, ef.Prefix+k)
				}
			}
		}
	}
}

// configSource returns the data of the ConfigMap or Secret kind/name an
// environment refers to: rendered, or else created by the user from a
// template in config/secrets.
func configSource(t *testing.T, r rendering, kind, name string) (map[string]string, bool) {
	t.Helper()
	if u := r.find(kind, name); u != nil {
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		return data, true
	}
	return userObjectData(t, kind, name)
}

// managerEnv resolves the manager container's environment the way the
// kubelet would, with the user's Secrets and settings filled from the
// templates in config/secrets.
func managerEnv(t *testing.T, r rendering, d *appsv1.Deployment, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		kind, name, optional := "ConfigMap", "", false
		switch {
		case ef.ConfigMapRef != nil:
			name, optional = ef.ConfigMapRef.Name, isTrue(ef.ConfigMapRef.Optional)
		case ef.SecretRef != nil:
			kind, name, optional = "Secret", ef.SecretRef.Name, isTrue(ef.SecretRef.Optional)
		}
		data, ok := configSource(t, r, kind, name)
		if !ok && !optional {
			t.Errorf("%s: envFrom %s %s is neither rendered nor described in config/secrets", r.name, kind, name)
		}
		for k, v := range data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		vf := e.ValueFrom
		switch {
		case vf == nil:
			env[e.Name] = e.Value
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = d.Namespace
		case vf.SecretKeyRef != nil:
			data, _ := configSource(t, r, "Secret", vf.SecretKeyRef.Name)
			v, ok := data[vf.SecretKeyRef.Key]
			if !ok {
				t.Errorf("%s: env %s reads key %s of Secret %s, which the templates in config/secrets do not have",
					r.name, e.Name, vf.SecretKeyRef.Key, vf.SecretKeyRef.Name)
			}
			env[e.Name] = v
		case vf.ResourceFieldRef != nil:
			q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(vf.ResourceFieldRef.Resource, "limits."))]
			if !ok {
				t.Errorf("%s: env %s refers to %s, which the container does not set", r.name, e.Name, vf.ResourceFieldRef.Resource)
			}
			env[e.Name] = strconv.FormatInt(q.Value(), 10)
		default:
			t.Errorf("%s: env %s has a source this test does not resolve: %+v", r.name, e.Name, vf)
		}
	}
	return env
}

// The manager validates its whole configuration at start-up; a manifest
// that makes it exit at once is caught here rather than in a cluster.
func TestDeployment_ConfigurationPassesTheOperatorsStartupValidation(t *testing.T) {
	for _, r := range renderAll(t).all() {
		t.Run(r.name, func(t *testing.T) {
			d, c := manager(t, r)
			env := managerEnv(t, r, d, c)
			if env["POD_NAMESPACE"] != namespace {
				t.Errorf("POD_NAMESPACE = %q, want the pod's namespace %q from the downward API", env["POD_NAMESPACE"], namespace)
			}
			t.Setenv("POD_NAMESPACE", env["POD_NAMESPACE"])
			fs, cfg := operatorFlags()
			if err := fs.Parse(c.Args); err != nil {
				t.Fatalf("parsing args %v: %v", c.Args, err)
			}
			if err := cfg.ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
				t.Fatalf("reading the environment: %v", err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the manager would refuse to start:\n%v", err)
			}
			if cfg.PurchaseNamespace != namespace {
				t.Errorf("purchase namespace = %q, want %q (where the manager Role grants access)", cfg.PurchaseNamespace, namespace)
			}
			if cfg.AuthHS256SecretFile != "" {
				assertMountedSecretFile(t, d, c, cfg.AuthHS256SecretFile)
			}
		})
	}
}

// assertMountedSecretFile checks that file is a key of the auth Secret
// mounted into the container, and that the Secret's template has that key.
func assertMountedSecretFile(t *testing.T, d *appsv1.Deployment, c *corev1.Container, file string) {
	t.Helper()
	const templName = authSecretName
	data, ok := userObjectData(t, "Secret", templName)
	if !ok {
		t.Fatalf("config/secrets has no template of Secret %s", templName)
	}
	for _, m := range c.VolumeMounts {
		if path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if v.Secret.SecretName != templName {
				t.Errorf("%s is mounted from Secret %s, want %s (config/secrets/auth.example.yaml)", file, v.Secret.SecretName, templName)
			}
			if _, ok := data[path.Base(file)]; !ok {
				t.Errorf("%s: Secret %s's template has no key %q", file, templName, path.Base(file))
			}
			if !m.ReadOnly {
				t.Errorf("the auth Secret is mounted writable")
			}
			return
		}
	}
	t.Errorf("no Secret volume is mounted at %s (for %s)", path.Dir(file), file)
}

func TestDeployment_ProbesAndPortsMatchTheBindAddresses(t *testing.T) {
	_, c := manager(t, renderAll(t).dflt)
	for flagName, want := range map[string]int32{
		"api-bind-address": 8080, "metrics-bind-address": 8443, "health-probe-bind-address": 8081,
	} {
		port := bindPort(t, c.Args, flagName)
		if port != want {
			t.Errorf("--%s port = %d, want %d", flagName, port, want)
		}
		if _, ok := containerPort(c, intstr.FromInt32(port)); !ok {
			t.Errorf("--%s port %d is not a container port", flagName, port)
		}
	}
	health := bindPort(t, c.Args, "health-probe-bind-address")
	for name, tc := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s probe is not an HTTP GET", name)
			continue
		}
		if tc.probe.HTTPGet.Path != tc.path {
			t.Errorf("%s probe path = %q, want %q", name, tc.probe.HTTPGet.Path, tc.path)
		}
		if port, ok := containerPort(c, tc.probe.HTTPGet.Port); !ok || port != health {
			t.Errorf("%s probe port %v = %d, want the health probe port %d", name, tc.probe.HTTPGet.Port.String(), port, health)
		}
	}
}

func TestDeployment_HasRequestsAndLimits(t *testing.T) {
	for _, r := range renderAll(t).all() {
		for _, u := range r.ofKind("Deployment") {
			d := decode[appsv1.Deployment](t, u)
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, okReq := c.Resources.Requests[res]
					lim, okLim := c.Resources.Limits[res]
					if !okReq || !okLim {
						t.Errorf("%s: %s/%s: %s request or limit missing", r.name, d.Name, c.Name, res)
						continue
					}
					if req.Cmp(lim) > 0 {
						t.Errorf("%s: %s/%s: %s request %s exceeds its limit %s", r.name, d.Name, c.Name, res, req.String(), lim.String())
					}
				}
			}
		}
	}
}

// Every Deployment must pass the "restricted" Pod Security Standard; the
// apiserver test admits their pods under it, this one names the fields.
func TestDeployment_RestrictedSecurityContext(t *testing.T) {
	for _, r := range renderAll(t).all() {
		for _, u := range r.ofKind("Deployment") {
			d := decode[appsv1.Deployment](t, u)
			pod := d.Spec.Template.Spec
			psc := pod.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			for _, c := range pod.Containers {
				where := r.name + ": " + d.Name + "/" + c.Name
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s: no securityContext", where)
					continue
				}
				if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
					t.Errorf("%s: runAsNonRoot not set", where)
				}
				if !isTrue(sc.ReadOnlyRootFilesystem) {
					t.Errorf("%s: root filesystem is writable", where)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation is not false", where)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
					t.Errorf("%s: capabilities = %+v, want drop [ALL] and nothing added", where, sc.Capabilities)
				}
				seccomp := sc.SeccompProfile
				if seccomp == nil {
					seccomp = psc.SeccompProfile
				}
				if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: seccomp profile = %+v, want RuntimeDefault", where, seccomp)
				}
				if isTrue(sc.Privileged) {
					t.Errorf("%s: privileged", where)
				}
			}
			if pod.HostNetwork || pod.HostPID || pod.HostIPC {
				t.Errorf("%s: %s shares a host namespace", r.name, d.Name)
			}
		}
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func TestDeployment_GracePeriodCoversGracefulShutdown(t *testing.T) {
	d, c := manager(t, renderAll(t).dflt)
	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	// controller-runtime's default graceful shutdown timeout is 30s; the
	// preStop pause comes before it.
	const shutdown = 30
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || *grace < preStop+shutdown {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least %d (preStop %ds + shutdown %ds)", grace, preStop+shutdown, preStop, shutdown)
	}
	if preStop == 0 {
		t.Errorf("no preStop pause: requests routed before the endpoint update would hit a closed port")
	}
}

func TestPodDisruptionBudget_KeepsOneManagerPod(t *testing.T) {
	for _, r := range renderAll(t).all() {
		d, _ := manager(t, r)
		pdbs := r.ofKind("PodDisruptionBudget")
		if len(pdbs) != 1 {
			t.Fatalf("%s: %d PodDisruptionBudgets, want 1", r.name, len(pdbs))
		}
		pdb := decode[policyv1.PodDisruptionBudget](t, pdbs[0])
		if pdb.Namespace != d.Namespace || !selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("%s: PDB %s does not select the manager's pods %v", r.name, pdb.Name, d.Spec.Template.Labels)
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("%s: PDB minAvailable = %v, want 1", r.name, pdb.Spec.MinAvailable)
		}
		if d.Spec.Replicas == nil || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
			t.Errorf("%s: PDB minAvailable %v would block every drain with %v replicas", r.name, pdb.Spec.MinAvailable, d.Spec.Replicas)
		}
		if e := r.find("Deployment", emulatorName); e != nil {
			em := decode[appsv1.Deployment](t, e)
			if selects(t, pdb.Spec.Selector, em.Spec.Template.Labels) {
				t.Errorf("%s: the manager's PDB also selects the emulator's pods", r.name)
			}
		}
	}
}

func TestServices_TargetTheManagerPorts(t *testing.T) {
	for _, r := range renderAll(t).all() {
		d, c := manager(t, r)
		for _, tc := range []struct {
			service      string
			port, target int32
		}{
			{apiServiceName, 8080, bindPort(t, c.Args, "api-bind-address")},
			{metricsService, 8443, bindPort(t, c.Args, "metrics-bind-address")},
		} {
			svc := get[corev1.Service](t, r, "Service", tc.service)
			if !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels) {
				t.Errorf("%s: Service %s selector %v does not select the manager's pods", r.name, svc.Name, svc.Spec.Selector)
			}
			if e := r.find("Deployment", emulatorName); e != nil {
				em := decode[appsv1.Deployment](t, e)
				if selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, em.Spec.Template.Labels) {
					t.Errorf("%s: Service %s also selects the emulator's pods", r.name, svc.Name)
				}
			}
			if len(svc.Spec.Ports) != 1 {
				t.Fatalf("%s: Service %s has %d ports, want 1", r.name, svc.Name, len(svc.Spec.Ports))
			}
			p := svc.Spec.Ports[0]
			target, ok := containerPort(c, p.TargetPort)
			if p.Port != tc.port || !ok || target != tc.target {
				t.Errorf("%s: Service %s port %d -> %s (container port %d), want %d -> %d", r.name, svc.Name, p.Port, p.TargetPort.String(), target, tc.port, tc.target)
			}
		}
	}
}

func TestInstall_EverythingInOneRestrictedNamespaceWithoutSecrets(t *testing.T) {
	clusterScoped := []string{"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
	for _, r := range renderAll(t).all() {
		for _, o := range r.objs {
			if slices.Contains(clusterScoped, o.GetKind()) {
				if o.GetNamespace() != "" {
					t.Errorf("%s: cluster-scoped %s %s has namespace %q", r.name, o.GetKind(), o.GetName(), o.GetNamespace())
				}
				continue
			}
			if o.GetNamespace() != namespace {
				t.Errorf("%s: %s %s is in namespace %q, want %q", r.name, o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
			}
		}
		ns := r.find("Namespace", namespace)
		if ns == nil {
			t.Fatalf("%s: no Namespace %s", r.name, namespace)
		}
		if got := ns.GetLabels()["pod-security.kubernetes.io/enforce"]; got != "restricted" {
			t.Errorf("%s: Namespace %s enforces pod security %q, want restricted", r.name, namespace, got)
		}
		// Credentials are created by the user (config/secrets holds only
		// templates); an installer that ships a Secret ships a credential.
		for _, s := range r.ofKind("Secret") {
			t.Errorf("%s: renders Secret %s; Secrets must come from the user", r.name, s.GetName())
		}
		if n := len(r.ofKind("CustomResourceDefinition")); n != 3 {
			t.Errorf("%s: %d CRDs, want Product, Purchase and Customer", r.name, n)
		}
	}
}

func TestImage_DefaultAndOverride(t *testing.T) {
	rs := renderAll(t)
	for _, tc := range []struct {
		r    rendering
		want string
	}{
		{rs.dflt, "paytoview-operator:dev"},
		{rs.emulator, "paytoview-operator:dev"},
		{rs.production, "registry.example.com/paytoview-operator:v0.1.0"},
	} {
		_, c := manager(t, tc.r)
		if c.Image != tc.want {
			t.Errorf("%s: manager image = %q, want %q", tc.r.name, c.Image, tc.want)
		}
		if c.ImagePullPolicy == corev1.PullAlways {
			t.Errorf("%s: imagePullPolicy Always breaks images loaded into kind", tc.r.name)
		}
	}
}

func TestEmulatorOverlay_WiresManagerAndEmulatorTogether(t *testing.T) {
	r := renderAll(t).emulator
	d, c := manager(t, r)
	em := get[appsv1.Deployment](t, r, "Deployment", emulatorName)
	if em.Spec.Replicas == nil || *em.Spec.Replicas != 1 {
		t.Errorf("emulator replicas = %v, want 1: its state is in memory", em.Spec.Replicas)
	}
	if len(em.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("emulator has %d containers, want 1", len(em.Spec.Template.Spec.Containers))
	}
	ec := &em.Spec.Template.Spec.Containers[0]
	if ec.Image != c.Image {
		t.Errorf("emulator image %q differs from the manager's %q (one image holds both binaries)", ec.Image, c.Image)
	}

	// The manager calls the emulator's Service...
	base := managerEnv(t, r, d, c)["STRIPE_API_BASE"]
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		t.Fatalf("manager STRIPE_API_BASE = %q, want the emulator's URL", base)
	}
	assertServiceURL(t, r, u, emulatorName, ec)

	// ...and the emulator delivers webhooks to the manager's API Service.
	var hook *url.URL
	for _, a := range ec.Args {
		if _, v, ok := strings.Cut(a, "="); ok && strings.Contains(v, "/webhooks/") {
			if hook, err = url.Parse(v); err != nil {
				t.Fatalf("emulator arg %q: %v", a, err)
			}
		}
	}
	if hook == nil {
		t.Fatalf("emulator args %v name no webhook URL", ec.Args)
	}
	if hook.Path != "/client/v1/webhooks/stripe" {
		t.Errorf("emulator delivers webhooks to %s, want /client/v1/webhooks/stripe", hook.Path)
	}
	assertServiceURL(t, r, hook, apiServiceName, c)
}

// assertServiceURL checks that u names Service svc of the namespace by its
// cluster DNS name, on a Service port that reaches a port of container c.
func assertServiceURL(t *testing.T, r rendering, u *url.URL, svc string, c *corev1.Container) {
	t.Helper()
	if want := svc + "." + namespace + ".svc"; u.Hostname() != want {
		t.Errorf("%s: host %q, want %q", u, u.Hostname(), want)
	}
	s := get[corev1.Service](t, r, "Service", svc)
	for _, p := range s.Spec.Ports {
		if strconv.Itoa(int(p.Port)) == u.Port() {
			if _, ok := containerPort(c, p.TargetPort); !ok {
				t.Errorf("%s: Service %s port %d targets %s, not a port of container %s", u, svc, p.Port, p.TargetPort.String(), c.Name)
			}
			return
		}
	}
	t.Errorf("%s: Service %s has no port %s", u, svc, u.Port())
}
