package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
)

// errPurchaseDeleted is returned by wait when the Purchase goes away.
var errPurchaseDeleted = errors.New("purchase was deleted")

// waiter lets handlers wait for a Purchase to reach a state, driven by the
// cache's informer: one event handler fans events out to a channel per
// waiting request, so a wait costs no apiserver request at all.
type waiter struct {
	namespace string
	reader    client.Reader

	mu   sync.Mutex
	subs map[string]map[*subscription]struct{} // by Purchase name
}

// subscription holds the latest observation of one Purchase. The informer
// must never block on a slow waiter, so a full channel is drained and
// refilled: a waiter only ever needs the newest state.
type subscription struct {
	ch chan observation
}

type observation struct {
	purchase *v1alpha1.Purchase // the cache's object: read only
	deleted  bool
}

func newWaiter(namespace string, reader client.Reader, inf cache.Informer) (*waiter, error) {
	w := &waiter{namespace: namespace, reader: reader, subs: map[string]map[*subscription]struct{}{}}
	_, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.notify(obj, false) },
		UpdateFunc: func(_, obj any) { w.notify(obj, false) },
		DeleteFunc: func(obj any) { w.notify(obj, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding the Purchase event handler: %w", err)
	}
	return w, nil
}

func (w *waiter) notify(obj any, deleted bool) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	p, ok := obj.(*v1alpha1.Purchase)
	if !ok || p.Namespace != w.namespace {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs[p.Name] {
		o := observation{purchase: p, deleted: deleted}
		select {
		case sub.ch <- o:
		default:
			select {
			case <-sub.ch:
			default:
			}
			sub.ch <- o
		}
	}
}

func (w *waiter) subscribe(name string) *subscription {
	sub := &subscription{ch: make(chan observation, 1)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs[name] == nil {
		w.subs[name] = map[*subscription]struct{}{}
	}
	w.subs[name][sub] = struct{}{}
	return sub
}

func (w *waiter) unsubscribe(name string, sub *subscription) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.subs[name], sub)
	if len(w.subs[name]) == 0 {
		delete(w.subs, name)
	}
}

// waiting is how many requests wait, for tests.
func (w *waiter) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.subs {
		n += len(s)
	}
	return n
}

// wait returns a copy of the Purchase as soon as the cache holds a version
// for which done is true. When ctx ends first it returns the last version
// seen (nil if none) and ctx's error. A Purchase not yet in the cache (just
// created) is waited for like any other change.
func (w *waiter) wait(ctx context.Context, name string, done func(*v1alpha1.Purchase) bool) (*v1alpha1.Purchase, error) {
	// Subscribe before reading, so a change between the read and the
	// subscription is not missed.
	sub := w.subscribe(name)
	defer w.unsubscribe(name, sub)

	var last *v1alpha1.Purchase
	current := &v1alpha1.Purchase{}
	err := w.reader.Get(ctx, client.ObjectKey{Namespace: w.namespace, Name: name}, current)
	switch {
	case err == nil:
		if done(current) {
			return current, nil
		}
		last = current
	case apierrors.IsNotFound(err):
	default:
		return nil, fmt.Errorf("reading Purchase %s/%s from the cache: %w", w.namespace, name, err)
	}
	for {
		select {
		case <-ctx.Done():
			if last != nil {
				last = last.DeepCopy()
			}
			return last, ctx.Err()
		case o := <-sub.ch:
			if o.deleted {
				return nil, errPurchaseDeleted
			}
			if done(o.purchase) {
				return o.purchase.DeepCopy(), nil
			}
			// Cached objects are replaced, never mutated, so holding on
			// to one is safe; copy only what is returned.
			last = o.purchase
		}
	}
}
