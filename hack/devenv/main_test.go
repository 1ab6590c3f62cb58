package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// TestMakeRun_BuyPayListRefund builds and starts `make run`'s entry point as
// its own process, reads .dev/env as a script would, walks the seed's flow
// over HTTP only, then interrupts it and checks that nothing is left serving.
func TestMakeRun_BuyPayListRefund(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devenv")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building hack/devenv: %v", err)
	}
	devDir := filepath.Join(dir, "dev")
	var out syncBuffer
	cmd := exec.Command(bin, "--dev-dir", devDir, "--api-port", "0", "--demo-port", "0")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			t.Logf("make run stopped: %v", <-exited)
		}
	})

	env := waitForEnv(t, filepath.Join(devDir, "env"), exited, &out)
	for _, k := range []string{"KUBECONFIG", "PAYTOVIEW_API_URL", "PAYTOVIEW_NAMESPACE", "PAYTOVIEW_USER_TOKEN",
		"PAYTOVIEW_ADMIN_TOKEN", "PAYTOVIEW_AUTH_HS256_SECRET", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET", "PAYTOVIEW_EMULATOR_URL"} {
		if env[k] == "" {
			t.Errorf(".dev/env has no %s", k)
		}
	}
	if !strings.Contains(out.String(), "/client/v1/pay-to-view/purchases") {
		t.Errorf("the walkthrough does not show the create call:\n%s", out.String())
	}
	api, user, admin := env["PAYTOVIEW_API_URL"], env["PAYTOVIEW_USER_TOKEN"], env["PAYTOVIEW_ADMIN_TOKEN"]

	// Step 1: create.
	var created struct {
		Success      bool   `json:"success"`
		PurchaseID   string `json:"purchaseId"`
		ClientSecret string `json:"clientSecret"`
	}
	status := call(t, http.MethodPost, api+"/client/v1/pay-to-view/purchases", user,
		`{"payToViewProductId":"video-7-days","entityId":"vid_make_run","returnUrl":"`+env["PAYTOVIEW_DEMO_URL"]+`"}`, &created)
	if status != http.StatusOK || !created.Success || !strings.Contains(created.ClientSecret, "_secret_") {
		t.Fatalf("create: %d %+v", status, created)
	}
	// Steps 2-4: the user pays; the emulator sends the signed webhook.
	if status := call(t, http.MethodPost, env["PAYTOVIEW_EMULATOR_URL"]+"/_emulator/v1/checkout/sessions/"+
		url.PathEscape(created.ClientSecret)+"/pay", "", "", nil); status != http.StatusOK {
		t.Fatalf("emulator pay: %d", status)
	}
	// Step 5: the list shows it Completed with access.
	waitFor(t, "purchase Completed in the list", func() bool {
		var page struct {
			Items []struct {
				PurchaseID string `json:"purchaseId"`
				Status     string `json:"status"`
				HasAccess  bool   `json:"hasAccess"`
			} `json:"items"`
		}
		call(t, http.MethodGet, api+"/client/v1/pay-to-view/purchases?page=1&pageSize=10", user, "", &page)
		return len(page.Items) == 1 && page.Items[0].PurchaseID == created.PurchaseID &&
			page.Items[0].Status == "Completed" && page.Items[0].HasAccess
	})
	// Admin refund.
	var refund struct {
		Success bool   `json:"success"`
		Status  string `json:"status"`
	}
	if status := call(t, http.MethodPost, api+"/admin/v1/pay-to-view/purchases/"+created.PurchaseID+"/refund", admin,
		`{"reason":"make run test"}`, &refund); status != http.StatusOK || refund.Status != "Refunded" {
		t.Fatalf("refund: %d %+v", status, refund)
	}
	// The demo page is served.
	resp, err := http.Get(env["PAYTOVIEW_DEMO_URL"])
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Pay (emulator)") {
		t.Errorf("demo page: %d, emulator Pay button missing", resp.StatusCode)
	}

	// Ctrl-C stops everything.
	apiserver := apiserverHost(t, env["KUBECONFIG"])
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("make run exited with %v after Ctrl-C:\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("make run did not stop within a minute of Ctrl-C:\n%s", out.String())
	}
	for name, hostport := range map[string]string{"API": strings.TrimPrefix(api, "http://"),
		"emulator": strings.TrimPrefix(env["PAYTOVIEW_EMULATOR_URL"], "http://"), "kube-apiserver": apiserver} {
		if c, err := net.DialTimeout("tcp", hostport, time.Second); err == nil {
			c.Close()
			t.Errorf("the %s still accepts connections on %s after make run stopped", name, hostport)
		}
	}
}

func waitForEnv(t *testing.T, path string, exited chan error, out *syncBuffer) map[string]string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("make run exited early (%v):\n%s", err, out.String())
		default:
		}
		if f, err := os.Open(path); err == nil {
			defer f.Close()
			env := map[string]string{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok {
					env[k] = v
				}
			}
			return env
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no %s within 5 minutes:\n%s", path, out.String())
	return nil
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func call(t *testing.T, method, u, token, body string, into any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("%s %s: decoding answer: %v", method, u, err)
		}
	}
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func apiserverHost(t *testing.T, kubeconfig string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
