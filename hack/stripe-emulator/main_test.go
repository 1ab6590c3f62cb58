package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRun_ServesPrintsEnvAndStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	env := map[string]string{"STRIPE_EMULATOR_API_KEY": "sk_test_process_key"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0"}, func(k string) string { return env[k] }, outW, io.Discard)
		outW.Close()
	}()

	lines := bufio.NewScanner(outR)
	vars := map[string]string{}
	for len(vars) < 2 && lines.Scan() {
		k, v, _ := strings.Cut(lines.Text(), "=")
		vars[k] = v
	}
	base := vars["STRIPE_API_BASE"]
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasPrefix(vars["STRIPE_WEBHOOK_SECRET"], "whsec_") {
		t.Fatalf("printed %v", vars)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, base+"/v1/customers/cus_missing", nil)
	req.Header.Set("Authorization", "Bearer sk_test_process_key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("calling the emulator: %v", err)
	}
	var body struct{ Error struct{ Code string } }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || body.Error.Code != "resource_missing" {
		t.Errorf("GET a missing customer: %d %+v", resp.StatusCode, body)
	}
	req.Header.Set("Authorization", "Bearer sk_test_other_key_123")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the key from the environment is not enforced: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRun_RejectsBadFlags(t *testing.T) {
	getenv := func(string) string { return "" }
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-listen", "not-an-address"}} {
		if err := run(context.Background(), args, getenv, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

func TestRun_AcceptsAddrAliasAndOperatorSecretVariable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	env := map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_from_operator_env"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr=127.0.0.1:0"}, func(k string) string { return env[k] }, outW, io.Discard)
		outW.Close()
	}()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "STRIPE_API_BASE=http://127.0.0.1:") {
		t.Fatalf("first line %q", lines.Text())
	}
	cancel()
	// A secret taken from the environment is not printed.
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "STRIPE_WEBHOOK_SECRET=") {
			t.Errorf("printed a secret it was given: %q", lines.Text())
		}
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
