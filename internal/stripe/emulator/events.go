package emulator

import (
	"bytes"
	"encoding/json"
	"path"
	"strings"
)

// storedEvent is an event as kept for GET /v1/events.
type storedEvent struct {
	id       string
	typ      string
	created  int64
	objectID string
	body     []byte // compact JSON of the event
}

// emitLocked records an event about obj (snapshotted now, as Stripe does)
// and hands it to webhook delivery when the endpoint is subscribed to its
// type. hook overrides the delivery of this one event (nil: the default and
// any webhook fault rules).
func (e *Emulator) emitLocked(typ string, obj any, req eventRequest, prev map[string]any, hook *hookMode) {
	now := e.nowLocked()
	objJSON := mustJSON(obj)
	ev := event{
		ID:         newID("evt_", 24),
		Object:     "event",
		APIVersion: APIVersion,
		Created:    now.Unix(),
		Data:       eventData{Object: objJSON},
		Request:    req,
		Type:       typ,
	}
	if len(prev) > 0 {
		ev.Data.PreviousAttributes = prev
	}
	deliver := e.hooks.subscribed(typ)
	if deliver {
		ev.PendingWebhooks = 1
	}
	body := mustJSON(ev)
	se := &storedEvent{id: ev.ID, typ: typ, created: ev.Created, objectID: objectID(objJSON), body: body}
	e.events = append(e.events, se)
	e.eventByID[se.id] = se
	if over := len(e.events) - e.opts.MaxEvents; over > 0 {
		for _, old := range e.events[:over] {
			delete(e.eventByID, old.id)
		}
		e.events = append([]*storedEvent(nil), e.events[over:]...)
	}
	if deliver {
		// Stripe sends webhook bodies pretty-printed; receivers must verify
		// the exact bytes, not a re-encoding.
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, body, "", "  "); err != nil {
			panic("emulator: indenting event JSON: " + err.Error())
		}
		e.hooks.enqueue(se.id, typ, pretty.Bytes(), hook)
	}
}

func objectID(objJSON []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(objJSON, &v)
	return v.ID
}

func (e *Emulator) listEvents(c *call) ([]byte, *apiError) {
	f := c.form
	created, err := rangeFilter(f, "created")
	if err != nil {
		return nil, err
	}
	if f.has("delivery_success") {
		return nil, invalidRequest("delivery_success", "The emulator does not support filtering events by delivery_success.")
	}
	typ := f.str("type")
	types := f.list("types")
	if typ != "" && len(types) > 0 {
		return nil, invalidRequest("types", "You may pass either `type` or `types`, but not both.")
	}
	if len(types) > 20 {
		return nil, invalidRequest("types", "You may pass at most 20 event types.")
	}
	if typ != "" {
		types = []string{typ}
	}
	match := func(ev *storedEvent) bool {
		if !created(ev.created) {
			return false
		}
		if len(types) == 0 {
			return true
		}
		for _, t := range types {
			if ok, _ := path.Match(t, ev.typ); ok || t == ev.typ {
				return true
			}
		}
		return false
	}
	e.lock()
	defer e.mu.Unlock()
	page, more, err := paginate(f, e.events, func(ev *storedEvent) string { return ev.id }, match, "event")
	if err != nil {
		return nil, err
	}
	out := listPage{Object: "list", URL: "/v1/events", HasMore: more, Data: make([]json.RawMessage, 0, len(page))}
	for _, ev := range page {
		out.Data = append(out.Data, ev.body)
	}
	return mustJSON(out), nil
}

func (e *Emulator) getEvent(c *call) ([]byte, *apiError) {
	e.lock()
	defer e.mu.Unlock()
	id := c.r.PathValue("id")
	ev, ok := e.eventByID[id]
	if !ok {
		return nil, noSuch("event", id, "id")
	}
	return ev.body, nil
}

// paginate returns one page of items (stored oldest first) in Stripe's list
// order, newest first, honouring limit, starting_after and ending_before.
func paginate[T any](f form, items []T, id func(T) string, match func(T) bool, kind string) ([]T, bool, *apiError) {
	limit, set, err := f.int64("limit")
	if err != nil {
		return nil, false, err
	}
	if !set {
		limit = 10
	}
	if limit < 1 || limit > 100 {
		return nil, false, invalidRequest("limit", "This value must be greater than or equal to 1 and less than or equal to 100.")
	}
	after, before := f.str("starting_after"), f.str("ending_before")
	if after != "" && before != "" {
		return nil, false, invalidRequest("ending_before", "You may only specify one of these parameters: ending_before, starting_after.")
	}
	find := func(cursor, param string) (int, *apiError) {
		for i := range items {
			if id(items[i]) == cursor {
				return i, nil
			}
		}
		return 0, noSuch(kind, cursor, param)
	}
	var page []T
	switch {
	case before != "":
		// Items newer than the cursor, the limit closest to it.
		at, err := find(before, "ending_before")
		if err != nil {
			return nil, false, err
		}
		for i := at + 1; i < len(items) && int64(len(page)) <= limit; i++ {
			if match(items[i]) {
				page = append(page, items[i])
			}
		}
		more := int64(len(page)) > limit
		if more {
			page = page[:limit]
		}
		for i, j := 0, len(page)-1; i < j; i, j = i+1, j-1 {
			page[i], page[j] = page[j], page[i]
		}
		return page, more, nil
	default:
		start := len(items) - 1
		if after != "" {
			at, err := find(after, "starting_after")
			if err != nil {
				return nil, false, err
			}
			start = at - 1
		}
		for i := start; i >= 0 && int64(len(page)) <= limit; i-- {
			if match(items[i]) {
				page = append(page, items[i])
			}
		}
		more := int64(len(page)) > limit
		if more {
			page = page[:limit]
		}
		return page, more, nil
	}
}

// rangeFilter reads a timestamp filter given as key=N or key[gt|gte|lt|lte]=N.
func rangeFilter(f form, key string) (func(int64) bool, *apiError) {
	var checks []func(int64) bool
	if f.has(key) {
		v, _, err := f.int64(key)
		if err != nil {
			return nil, err
		}
		checks = append(checks, func(t int64) bool { return t == v })
	}
	for _, op := range []string{"gt", "gte", "lt", "lte"} {
		k := key + "[" + op + "]"
		v, set, err := f.int64(k)
		if err != nil {
			return nil, err
		}
		if !set {
			continue
		}
		switch op {
		case "gt":
			checks = append(checks, func(t int64) bool { return t > v })
		case "gte":
			checks = append(checks, func(t int64) bool { return t >= v })
		case "lt":
			checks = append(checks, func(t int64) bool { return t < v })
		case "lte":
			checks = append(checks, func(t int64) bool { return t <= v })
		}
	}
	return func(t int64) bool {
		for _, c := range checks {
			if !c(t) {
				return false
			}
		}
		return true
	}, nil
}

// stripListExpand turns a list call's expand[]=data.x into x.
func stripListExpand(expand []string) []string {
	out := make([]string, 0, len(expand))
	for _, x := range expand {
		out = append(out, strings.TrimPrefix(x, "data."))
	}
	return out
}
