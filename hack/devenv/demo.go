package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"time"
)

//go:embed demo.html
var demoHTML string

var demoTemplate = template.Must(template.New("demo").Parse(demoHTML))

// demoPage is what the demo checkout page needs to call the API as the
// development user. The token is a development token for a local system.
type demoPage struct {
	APIURL         string
	EmulatorURL    string // empty with real Stripe
	PublishableKey string // pk_test_..., used with real Stripe
	Token          string
	ReturnURL      string
}

// startDemo serves GET /dev/checkout: the seed's steps 1-6 in a browser.
func startDemo(addr string, page demoPage) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dev/checkout", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := demoTemplate.Execute(w, page); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dev/checkout", http.StatusFound)
	})
	l, err := listen(context.Background(), addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the demo page on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("demo page:", err)
		}
	}()
	return srv, nil
}
