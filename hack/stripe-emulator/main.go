// Command stripe-emulator serves the stateful Stripe emulator
// (internal/stripe/emulator) as a process, for make run, end-to-end tests
// and demos without a Stripe account.
//
// It prints the lines a shell can source to point the operator at it:
//
//	STRIPE_API_BASE=http://127.0.0.1:12112
//	STRIPE_WEBHOOK_SECRET=whsec_...   (only when the secret was generated)
//
// Flags default to environment variables of the same meaning:
//
//	-listen, -addr   STRIPE_EMULATOR_LISTEN          address to listen on (default 127.0.0.1:12112; port 0 picks one)
//	-api-key         STRIPE_EMULATOR_API_KEY         the only secret key accepted (default: any sk_test_ key)
//	-webhook-url     STRIPE_EMULATOR_WEBHOOK_URL     where events are POSTed (settable later via /_emulator/v1/webhooks/endpoint)
//	-webhook-secret  STRIPE_EMULATOR_WEBHOOK_SECRET  the endpoint's whsec_ signing secret (or STRIPE_WEBHOOK_SECRET; default: generated)
//	-v               STRIPE_EMULATOR_VERBOSITY       log verbosity (1 logs every request)
//
// It stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

func main() {
	if err := runUntilSignal(); err != nil {
		fmt.Fprintln(os.Stderr, "stripe-emulator:", err)
		os.Exit(1)
	}
}

func runUntilSignal() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
}

// run serves until ctx ends. It is main without the process: tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	envOr := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("stripe-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", envOr("STRIPE_EMULATOR_LISTEN", "127.0.0.1:12112"), "address to listen on; port 0 picks a free one")
	fs.StringVar(listen, "addr", *listen, "alias of -listen")
	apiKey := fs.String("api-key", getenv("STRIPE_EMULATOR_API_KEY"), "the only secret key accepted; empty accepts any sk_test_ key")
	webhookURL := fs.String("webhook-url", getenv("STRIPE_EMULATOR_WEBHOOK_URL"), "URL events are POSTed to; empty records events without delivering them")
	// STRIPE_WEBHOOK_SECRET is the operator's name for the same secret, so
	// one environment serves both processes.
	webhookSecret := fs.String("webhook-secret", envOr("STRIPE_EMULATOR_WEBHOOK_SECRET", getenv("STRIPE_WEBHOOK_SECRET")), "whsec_ secret deliveries are signed with; empty generates one")
	verbosity := fs.Int("v", 0, "log verbosity; 1 logs every request")
	if v := getenv("STRIPE_EMULATOR_VERBOSITY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("STRIPE_EMULATOR_VERBOSITY=%q is not an integer", v)
		}
		*verbosity = n
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	log := logr.FromSlogHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(-*verbosity)}))
	em := emulator.New(emulator.Options{
		APIKey:        *apiKey,
		WebhookURL:    *webhookURL,
		WebhookSecret: *webhookSecret,
		// Retries a person can watch: 1s, 2s, 4s ... up to a minute.
		WebhookBackoff:     time.Second,
		WebhookMaxBackoff:  time.Minute,
		WebhookMaxAttempts: 8,
		Logger:             log,
	})
	defer em.Close()

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	srv := &http.Server{
		Handler:           em,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for injected delays that time clients out.
		WriteTimeout: 5 * time.Minute,
		IdleTimeout:  2 * time.Minute,
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "STRIPE_API_BASE=%s\n", url)
	if *webhookSecret == "" {
		// A throwaway secret of this process, printed so that the operator
		// started next to it can verify its deliveries.
		fmt.Fprintf(stdout, "STRIPE_WEBHOOK_SECRET=%s\n", em.WebhookSecret())
	}
	log.Info("serve stripe emulator", "url", url, "webhookURL", *webhookURL, "apiVersion", emulator.APIVersion)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shut down stripe emulator")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
