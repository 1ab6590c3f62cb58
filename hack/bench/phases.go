package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
	"github.com/md-platform/paytoview-operator/internal/stripe/emulator"
)

// Writes is the apiserver writes of one purchase from create to Completed.
type Writes struct {
	Samples     int     `json:"samples"`
	PerPurchase float64 `json:"per_purchase"`
	// ReadsPerPurchase are the GETs sent to the apiserver (not served by
	// the cache).
	ReadsPerPurchase float64            `json:"reads_per_purchase"`
	ByRequest        map[string]float64 `json:"by_request"`
}

// measureWrites buys and pays n purchases one after the other, each for a
// new user and then again for the same (returning) user, and counts what
// the operator wrote to the apiserver for each, from the create request
// until nothing more is written.
func measureWrites(ctx context.Context, s *system, n int) (newUser, returning Writes, err error) {
	newTotals, retTotals := map[string]int{}, map[string]int{}
	for i := range n {
		user := fmt.Sprintf("writes-user-%d", i)
		for j, totals := range []map[string]int{newTotals, retTotals} {
			before := s.writes.snapshot()
			if _, err := s.buyAndPay(ctx, user, fmt.Sprintf("writes-%d-%d", i, j)); err != nil {
				return newUser, returning, err
			}
			after, err := s.quiesce(ctx)
			if err != nil {
				return newUser, returning, err
			}
			for k, v := range after {
				if d := v - before[k]; d > 0 {
					totals[k] += d
				}
			}
		}
	}
	return perPurchase(newTotals, n), perPurchase(retTotals, n), nil
}

func perPurchase(totals map[string]int, n int) Writes {
	w := Writes{Samples: n, ByRequest: map[string]float64{}}
	writes, reads := 0, 0
	for k, v := range totals {
		w.ByRequest[k] = float64(v) / float64(n)
		if strings.HasPrefix(k, http.MethodGet+" ") {
			reads += v
		} else {
			writes += v
		}
	}
	w.PerPurchase = float64(writes) / float64(n)
	w.ReadsPerPurchase = float64(reads) / float64(n)
	return w
}

// buyAndPay creates a purchase through the API, pays its session in the
// emulator (the webhook is delivered) and waits until it is Completed.
func (s *system) buyAndPay(ctx context.Context, user, entity string) (string, error) {
	res, err := s.create(ctx, s.apiURL, s.token(user), entity)
	if err != nil {
		return "", err
	}
	if _, err := s.em.Pay(res.ClientSecret, emulator.PayOptions{}); err != nil {
		return "", fmt.Errorf("paying %s: %w", res.PurchaseID, err)
	}
	return res.PurchaseID, poll(ctx, 30*time.Second, "purchase "+res.PurchaseID+" Completed", func() (bool, error) {
		var p v1alpha1.Purchase
		if err := s.env.Client.Get(ctx, client.ObjectKey{Namespace: benchNamespace, Name: res.PurchaseID}, &p); err != nil {
			return false, err
		}
		return p.Status.Phase == v1alpha1.PurchaseCompleted, nil
	})
}

// quiesce waits until the operator has written nothing for a second and
// returns the counts then.
func (s *system) quiesce(ctx context.Context) (map[string]int, error) {
	last, since := s.writes.snapshot(), time.Now()
	err := poll(ctx, 30*time.Second, "the operator to stop writing", func() (bool, error) {
		now := s.writes.snapshot()
		if !sameCounts(now, last) {
			last, since = now, time.Now()
		}
		return time.Since(since) >= time.Second, nil
	})
	return last, err
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// limitClient is an apiserver client without client-side rate limiting: the
// physical limit is what the apiserver does, not what a client allows.
func (s *system) limitClient() (client.Client, error) {
	cfg := rest.CopyConfig(s.env.Config)
	cfg.QPS, cfg.Burst = -1, 0
	return client.New(cfg, client.Options{Scheme: s.env.Scheme})
}

// physicalLimit times the least work a create needs, done back to back:
// one Checkout Session create in the emulator (through the same Stripe
// client) and one Purchase create in the apiserver (in a namespace no
// operator watches).
func physicalLimit(ctx context.Context, s *system, c client.Client, ns string, concurrency, n int) (Latency, error) {
	var product v1alpha1.Product
	if err := s.env.Client.Get(ctx, client.ObjectKey{Namespace: benchNamespace, Name: productName}, &product); err != nil {
		return Latency{}, err
	}
	cust, err := s.stripe.CreateCustomer(ctx, stripe.CreateCustomerParams{OwnerUID: string(uuid.NewUUID()), UserID: "limit-user"})
	if err != nil {
		return Latency{}, err
	}
	days := int32(7)
	return load(ctx, concurrency, n, func(ctx context.Context, i int) error {
		name := naming.NewPurchaseName()
		entity := fmt.Sprintf("limit-%d-%d", concurrency, i)
		if _, err := s.stripe.CreateCheckoutSession(ctx, stripe.CreateSessionParams{
			OwnerUID:   string(uuid.NewUUID()),
			CustomerID: cust.ID,
			PriceID:    product.Status.StripePriceID,
			ReturnURL:  returnOrigin + "/return",
			ExpiresAt:  time.Now().Add(time.Hour),
			Metadata:   stripe.PurchaseMetadata{PurchaseID: name, ProductID: productName, UserID: "limit-user", EntityType: 1, EntityID: entity},
		}); err != nil {
			return err
		}
		return c.Create(ctx, &v1alpha1.Purchase{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: naming.PurchaseLabels("limit-user", entity, productName)},
			Spec: v1alpha1.PurchaseSpec{
				ProductRef: productName, UserID: "limit-user", EntityID: entity, EntityType: v1alpha1.EntityTypeVideo,
				ReturnURL: returnOrigin + "/return", Price: *product.Status.Price, StripePriceID: product.Status.StripePriceID,
				AccessDurationDays: &days,
			},
		})
	})
}

// creator hands out users for creates so that no user goes past the API's
// per-user limits (burst 5, 10 pending): every user made one purchase in
// the warm-up and makes at most perUser more.
type creator struct {
	s       *system
	perUser int
	mu      sync.Mutex
	next    int
	made    []created
}

type created struct {
	user         string
	purchaseID   string
	clientSecret string
}

func (c *creator) users(total int) []string {
	n := (total + c.perUser - 1) / c.perUser
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user-%d", i)
	}
	return out
}

// op is one create: the next slot's user buys a fresh entity.
func (c *creator) op(ctx context.Context, _ int) error {
	c.mu.Lock()
	slot := c.next
	c.next++
	c.mu.Unlock()
	user := fmt.Sprintf("user-%d", slot/c.perUser)
	res, err := c.s.create(ctx, c.s.apiURL, c.s.token(user), fmt.Sprintf("video-%d", slot))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.made = append(c.made, created{user: user, purchaseID: res.PurchaseID, clientSecret: res.ClientSecret})
	c.mu.Unlock()
	return nil
}

// warmUp makes every user's first purchase (Stripe customer included) and
// times it.
func warmUp(ctx context.Context, s *system, users []string, concurrency int) (Latency, error) {
	return load(ctx, concurrency, len(users), func(ctx context.Context, i int) error {
		_, err := s.create(ctx, s.apiURL, s.token(users[i]), "warm-up")
		return err
	})
}

// WebhookResult is the webhook receiver under load.
type WebhookResult struct {
	Latency
	Outcomes map[string]int `json:"outcomes"`
}

// webhooks pays the sessions of made with their events dropped, then
// delivers each checkout.session.completed event the way Stripe does
// (signed, one POST each) from concurrency senders.
func webhooks(ctx context.Context, s *system, made []created, concurrency int, profile string) (res WebhookResult, cpu map[string]float64, err error) {
	sessions := map[string]bool{}
	for _, m := range made {
		sess, err := s.em.Pay(m.clientSecret, emulator.PayOptions{Webhook: emulator.WebhookDrop})
		if err != nil {
			return res, nil, fmt.Errorf("paying %s: %w", m.purchaseID, err)
		}
		sessions[sess.ID] = true
	}
	var ids []string
	for _, e := range s.em.State().Events {
		if e.Type == "checkout.session.completed" && sessions[e.ObjectID] {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != len(made) {
		return res, nil, fmt.Errorf("found %d checkout.session.completed events for %d payments", len(ids), len(made))
	}
	payloads := make([][]byte, len(ids))
	for i, id := range ids {
		b, err := s.stripeGet(ctx, "/v1/events/"+id)
		if err != nil {
			return res, nil, err
		}
		payloads[i] = b
	}

	var mu sync.Mutex
	res.Outcomes = map[string]int{}
	cpu0 := cpuByProcess()
	stopProfile, err := startProfile(profile, "webhooks")
	if err != nil {
		return res, nil, err
	}
	defer stopProfile()
	lat, err := load(ctx, concurrency, len(payloads), func(ctx context.Context, i int) error {
		now := time.Now()
		sig := stripewebhook.ComputeSignature(now, payloads[i], s.em.WebhookSecret())
		h := http.Header{"Stripe-Signature": {fmt.Sprintf("t=%d,v1=%x", now.Unix(), sig)}}
		status, body, err := s.do(ctx, http.MethodPost, s.apiURL+webhookPath, "", payloads[i], h)
		if err != nil {
			return err
		}
		var ack struct{ Outcome string }
		_ = json.Unmarshal(body, &ack)
		mu.Lock()
		res.Outcomes[strconv.Itoa(status)+" "+ack.Outcome]++
		mu.Unlock()
		if status != http.StatusOK {
			return fmt.Errorf("webhook %d: %s", status, body)
		}
		return nil
	})
	res.Latency = lat
	return res, perOp(cpuSince(cpu0), lat.Count), err
}

// stripeGet reads one object from the emulator's Stripe API, raw.
func (s *system) stripeGet(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.emURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(stripeKey, "")
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b, nil
}

// countPhases counts the Purchases of ns by phase.
func countPhases(ctx context.Context, c client.Client, ns string) (map[string]int, error) {
	var list v1alpha1.PurchaseList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, p := range list.Items {
		phase := string(p.Status.Phase)
		if phase == "" {
			phase = "(none)"
		}
		out[phase]++
	}
	return out, nil
}
