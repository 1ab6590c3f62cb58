package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/stripe"
)

const usage = `usage:
  kubectl paytoview purchases --user USER [--entity ENTITY] [-n NAMESPACE]
  kubectl paytoview describe PURCHASE [-n NAMESPACE]
  kubectl paytoview refund PURCHASE --reason TEXT [--by NAME] [-n NAMESPACE]
  kubectl paytoview send-webhook --url URL --secret whsec_... --file EVENT.json
  kubectl paytoview send-webhook --url URL --secret whsec_... --purchase PURCHASE --type EVENT_TYPE [-n NAMESPACE]
    EVENT_TYPE: checkout.session.completed, checkout.session.expired or charge.refunded
  kubectl paytoview backup [-n NAMESPACE] > backup.yaml
  kubectl paytoview restore -f backup.yaml [-n NAMESPACE]    (with the operator scaled to 0)`

func run(ctx context.Context, args []string, out io.Writer, connect connectFunc) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	namespace := fs.String("n", "", "namespace (default: the kubeconfig context's)")
	fs.StringVar(namespace, "namespace", "", "namespace (default: the kubeconfig context's)")
	switch cmd {
	case "purchases":
		user := fs.String("user", "", "user id (the JWT sub)")
		entity := fs.String("entity", "", "entity id")
		if err := parse(fs, args, 0); err != nil {
			return err
		}
		if *user == "" {
			return errors.New("purchases: --user is required")
		}
		c, ns, err := connect(*namespace)
		if err != nil {
			return err
		}
		return listPurchases(ctx, c, ns, *user, *entity, out)
	case "describe":
		if err := parse(fs, args, 1); err != nil {
			return err
		}
		c, ns, err := connect(*namespace)
		if err != nil {
			return err
		}
		return describe(ctx, c, ns, fs.Arg(0), out)
	case "refund":
		reason := fs.String("reason", "", "why the purchase is refunded (kept on the Stripe refund)")
		by := fs.String("by", os.Getenv("USER"), "who asks for the refund")
		if err := parse(fs, args, 1); err != nil {
			return err
		}
		if *reason == "" {
			return errors.New("refund: --reason is required")
		}
		c, ns, err := connect(*namespace)
		if err != nil {
			return err
		}
		return requestRefund(ctx, c, ns, fs.Arg(0), *reason, *by, out)
	case "backup":
		if err := parse(fs, args, 0); err != nil {
			return err
		}
		c, ns, err := connect(*namespace)
		if err != nil {
			return err
		}
		return backup(ctx, c, ns, out)
	case "restore":
		file := fs.String("f", "", "backup file written by 'kubectl paytoview backup'")
		if err := parse(fs, args, 0); err != nil {
			return err
		}
		if *file == "" {
			return errors.New("restore: -f FILE is required")
		}
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer f.Close()
		c, ns, err := connect(*namespace)
		if err != nil {
			return err
		}
		return restore(ctx, c, ns, f, out)
	case "send-webhook":
		url := fs.String("url", "", "webhook endpoint, e.g. https://api.example.com/client/v1/webhooks/stripe")
		secret := fs.String("secret", os.Getenv("STRIPE_WEBHOOK_SECRET"), "endpoint signing secret (whsec_...); default $STRIPE_WEBHOOK_SECRET")
		file := fs.String("file", "", "Stripe event JSON to send as is")
		purchase := fs.String("purchase", "", "build the event from this Purchase")
		eventType := fs.String("type", "", "event type to build with --purchase")
		if err := parse(fs, args, 0); err != nil {
			return err
		}
		if *url == "" || !strings.HasPrefix(*secret, "whsec_") {
			return errors.New("send-webhook: --url and a whsec_ --secret are required")
		}
		var payload []byte
		switch {
		case *file != "" && *purchase == "":
			b, err := os.ReadFile(*file)
			if err != nil {
				return fmt.Errorf("send-webhook: %w", err)
			}
			payload = b
		case *file == "" && *purchase != "" && *eventType != "":
			c, ns, err := connect(*namespace)
			if err != nil {
				return err
			}
			var p v1alpha1.Purchase
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: *purchase}, &p); err != nil {
				return fmt.Errorf("send-webhook: reading purchase: %w", err)
			}
			if payload, err = buildEvent(&p, *eventType, time.Now()); err != nil {
				return fmt.Errorf("send-webhook: %w", err)
			}
		default:
			return errors.New("send-webhook: give either --file, or --purchase with --type")
		}
		return sendWebhook(ctx, *url, *secret, payload, out)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// parse parses flags that may come before or after the positional arguments
// (kubectl's habit), and checks their count.
func parse(fs *flag.FlagSet, args []string, positional int) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%s: %w\n%s", fs.Name(), err, usage)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		return fmt.Errorf("%s takes %d argument(s), got %d\n%s", fs.Name(), positional, len(pos), usage)
	}
	return fs.Parse(pos)
}

func listPurchases(ctx context.Context, c client.Client, ns, user, entity string, out io.Writer) error {
	sel := client.MatchingLabels{v1alpha1.LabelUser: naming.Hash(user)}
	if entity != "" {
		sel[v1alpha1.LabelEntity] = naming.Hash(entity)
	}
	var list v1alpha1.PurchaseList
	if err := c.List(ctx, &list, client.InNamespace(ns), sel); err != nil {
		return fmt.Errorf("listing purchases: %w", err)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return list.Items[j].CreationTimestamp.Before(&list.Items[i].CreationTimestamp)
	})
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PURCHASE\tPHASE\tACCESS\tENTITY\tPRODUCT\tAMOUNT\tEXPIRES\tCREATED")
	for _, p := range list.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d %s\t%s\t%s\n", p.Name, phase(&p), conditionStatus(&p, v1alpha1.ConditionAccess),
			p.Spec.EntityID, p.Spec.ProductRef, p.Spec.Price.Amount, p.Spec.Price.Currency,
			timeOrDash(p.Status.ExpiresAt), p.CreationTimestamp.UTC().Format(time.RFC3339))
	}
	if len(list.Items) == 0 {
		fmt.Fprintf(tw, "(no purchases for user %q in namespace %s)\n", user, ns)
	}
	return tw.Flush()
}

func describe(ctx context.Context, c client.Client, ns, name string, out io.Writer) error {
	var p v1alpha1.Purchase
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		return fmt.Errorf("reading purchase: %w", err)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", k, v)
		}
	}
	row("Purchase", p.Namespace+"/"+p.Name)
	row("Phase", phase(&p))
	row("User", p.Spec.UserID)
	row("Entity", fmt.Sprintf("%s %s", p.Spec.EntityType, p.Spec.EntityID))
	row("Product", p.Spec.ProductRef)
	row("Price", fmt.Sprintf("%d %s (%s)", p.Spec.Price.Amount, p.Spec.Price.Currency, p.Spec.StripePriceID))
	if d := p.Spec.AccessDurationDays; d != nil {
		row("Access", fmt.Sprintf("%d days", *d))
	} else {
		row("Access", "lifetime")
	}
	row("Created", p.CreationTimestamp.UTC().Format(time.RFC3339))
	row("Stripe customer", p.Status.StripeCustomerID)
	row("Checkout session", p.Status.CheckoutSessionID)
	row("Session expires", timeOrEmpty(p.Status.CheckoutSessionExpiresAt))
	row("Payment intent", p.Status.ExternalTransactionID)
	row("Completed", timeOrEmpty(p.Status.CompletedAt))
	row("Access expires", timeOrEmpty(p.Status.ExpiresAt))
	if r := p.Spec.Refund; r != nil {
		row("Refund requested", fmt.Sprintf("by %q: %s", r.RequestedBy, r.Reason))
	}
	row("Stripe refund", p.Status.StripeRefundID)
	if p.Status.AmountRefunded > 0 {
		row("Amount refunded", fmt.Sprintf("%d %s", p.Status.AmountRefunded, p.Spec.Price.Currency))
	}
	row("Refunded", timeOrEmpty(p.Status.RefundedAt))
	if d := p.Status.Dispute; d != nil {
		row("Dispute", d.ID+" "+d.Status)
	}
	if err := w.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nConditions:")
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, cond := range p.Status.Conditions {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason,
			cond.LastTransitionTime.UTC().Format(time.RFC3339), cond.Message)
	}
	if err := w.Flush(); err != nil {
		return err
	}

	var events corev1.EventList
	if err := c.List(ctx, &events, client.InNamespace(ns),
		client.MatchingFields{"involvedObject.kind": "Purchase", "involvedObject.name": name}); err != nil {
		return fmt.Errorf("listing events: %w", err)
	}
	sort.Slice(events.Items, func(i, j int) bool { return eventTime(&events.Items[i]).Before(eventTime(&events.Items[j])) })
	fmt.Fprintln(out, "\nEvents:")
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  TIME\tTYPE\tREASON\tMESSAGE")
	for _, e := range events.Items {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", eventTime(&e).UTC().Format(time.RFC3339), e.Type, e.Reason, e.Message)
	}
	if len(events.Items) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	return w.Flush()
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func requestRefund(ctx context.Context, c client.Client, ns, name, reason, by string, out io.Writer) error {
	var p v1alpha1.Purchase
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		return fmt.Errorf("reading purchase: %w", err)
	}
	if p.Spec.Refund != nil {
		fmt.Fprintf(out, "purchase %s: a refund was already requested by %q (phase %s)\n", name, p.Spec.Refund.RequestedBy, phase(&p))
		return nil
	}
	if p.Status.Phase != v1alpha1.PurchaseCompleted {
		return fmt.Errorf("purchase %s is %s: only Completed purchases can be refunded", name, phase(&p))
	}
	base := p.DeepCopy()
	p.Spec.Refund = &v1alpha1.RefundRequest{Requested: true, Reason: reason, RequestedBy: by}
	if err := c.Patch(ctx, &p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("requesting the refund: %w", err)
	}
	fmt.Fprintf(out, "purchase %s: refund requested; follow it with: kubectl paytoview describe %s -n %s\n", name, name, ns)
	return nil
}

// buildEvent renders a Stripe event of the given type for a purchase, shaped
// as Stripe sends it for API version 2023-10-16 (expandable fields as ids).
func buildEvent(p *v1alpha1.Purchase, eventType string, now time.Time) ([]byte, error) {
	md := map[string]string{
		stripe.MetaPurchaseID: p.Name,
		stripe.MetaProductID:  p.Spec.ProductRef,
		stripe.MetaUserID:     p.Spec.UserID,
		stripe.MetaEntityType: fmt.Sprint(naming.EntityTypeCode(p.Spec.EntityType)),
		stripe.MetaEntityID:   p.Spec.EntityID,
	}
	var obj map[string]any
	switch eventType {
	case "checkout.session.completed", "checkout.session.expired":
		if p.Status.CheckoutSessionID == "" {
			return nil, fmt.Errorf("purchase %s has no checkout session yet", p.Name)
		}
		status, payment := "complete", "paid"
		var pi any = p.Status.ExternalTransactionID
		if eventType == "checkout.session.expired" {
			status, payment, pi = "expired", "unpaid", nil
		} else if p.Status.ExternalTransactionID == "" {
			pi = "pi_test_" + rand.String(14)
		}
		obj = map[string]any{
			"id": p.Status.CheckoutSessionID, "object": "checkout.session", "mode": "payment", "ui_mode": "embedded",
			"status": status, "payment_status": payment, "payment_intent": pi,
			"customer": p.Status.StripeCustomerID, "client_reference_id": p.Name,
			"amount_total": p.Spec.Price.Amount, "currency": p.Spec.Price.Currency, "metadata": md,
		}
	case "charge.refunded":
		if p.Status.ExternalTransactionID == "" {
			return nil, fmt.Errorf("purchase %s has no payment yet", p.Name)
		}
		obj = map[string]any{
			"id": "ch_test_" + rand.String(14), "object": "charge", "payment_intent": p.Status.ExternalTransactionID,
			"amount": p.Spec.Price.Amount, "amount_refunded": p.Spec.Price.Amount, "refunded": true,
			"currency": p.Spec.Price.Currency, "status": "succeeded", "paid": true, "metadata": md,
		}
	default:
		return nil, fmt.Errorf("cannot build a %q event; use --file", eventType)
	}
	return json.Marshal(map[string]any{
		"id": "evt_test_" + rand.String(14), "object": "event", "api_version": "2023-10-16",
		"created": now.Unix(), "type": eventType, "livemode": false, "pending_webhooks": 1,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
		"data":    map[string]any{"object": obj},
	})
}

func sendWebhook(ctx context.Context, url, secret string, payload []byte, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("send-webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", stripe.SignPayload(payload, secret, time.Now()))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("send-webhook: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(out, "%s\n%s\n", resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("send-webhook: the endpoint answered %s", resp.Status)
	}
	return nil
}

func phase(p *v1alpha1.Purchase) string {
	if p.Status.Phase == "" {
		return string(v1alpha1.PurchasePending)
	}
	return string(p.Status.Phase)
}

func conditionStatus(p *v1alpha1.Purchase, t string) string {
	if c := meta.FindStatusCondition(p.Status.Conditions, t); c != nil {
		if c.Reason != "" {
			return string(c.Status) + " (" + c.Reason + ")"
		}
		return string(c.Status)
	}
	return "-"
}

func timeOrEmpty(t *metav1.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func timeOrDash(t *metav1.Time) string {
	if s := timeOrEmpty(t); s != "" {
		return s
	}
	return "-"
}
