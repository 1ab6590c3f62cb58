package webhookserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/md-platform/paytoview-operator/internal/auth"
)

// FuzzListQuery sends arbitrary query strings to the client and admin list
// endpoints. Properties: never a panic or a 5xx; a rejection is a 400
// invalid_field whose message echoes nothing it was sent; an accepted query
// answers at most pageSize items newest first with a consistent total, and
// a nextCursor it hands out is accepted and continues strictly after the
// page's last item. parseListQuery agrees with the handler: what it accepts
// is in range, and an accepted cursor is the canonical encoding of its key.
// Seeds: testdata/fuzz/FuzzListQuery.
func FuzzListQuery(f *testing.F) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var objs []client.Object
	for i := range 25 {
		user := "alice"
		if i%5 == 4 {
			user = "bob"
		}
		p := memPurchase(user, fmt.Sprintf("ptv-f%09d", i), base.Add(time.Duration(i/3)*time.Second))
		if i%4 == 0 {
			p.Status = *completedStatus(base, 0)
		}
		objs = append(objs, p)
	}
	authn, err := auth.New(f.Context(), auth.Config{HS256Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	handler := memHandler(f, memClient(f, objs...), authn)
	userTok, adminTok := token(f, "alice", false), token(f, "root", true)

	f.Add("")
	f.Add("page=2&pageSize=5")
	f.Add("pageSize=3&cursor=" + url.QueryEscape(encodeCursor(listKey{created: base.Add(3 * time.Second), name: "ptv-f000000010"})))
	f.Add("page=1&cursor=x")
	f.Add("userId=alice&entityId=vid-f000000003&status=Completed")
	f.Add("status=Pending&status=Failed")
	f.Add("page=%00&pageSize=%EF%BC%91")
	f.Fuzz(func(t *testing.T, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery) // as r.URL.Query() does: bad pairs are dropped
		lq, apiErr := parseListQuery(q)
		if apiErr == nil {
			if lq.pageSize < 1 || lq.pageSize > maxPageSize || (lq.after == nil) == (lq.page == 0) || lq.page < 0 {
				t.Fatalf("parseListQuery(%q) accepted %+v", rawQuery, lq)
			}
			if lq.after != nil {
				if c := q.Get("cursor"); encodeCursor(*lq.after) != c {
					t.Fatalf("cursor %q decodes to %+v, which encodes to %q", c, *lq.after, encodeCursor(*lq.after))
				}
			}
		} else {
			checkRejection(t, rawQuery, apiErr.status, apiErr.code, apiErr.message)
		}
		for _, rt := range []struct{ path, tok string }{{purchasesPath, userTok}, {"/admin/v1/pay-to-view/purchases", adminTok}} {
			page := listOnce(t, handler, rt.path, rt.tok, rawQuery)
			if page == nil || page.NextCursor == "" || len(page.Items) == 0 {
				continue
			}
			// The cursor handed out continues after the page's last item.
			next := url.Values{"cursor": {page.NextCursor}, "pageSize": {fmt.Sprint(page.PageSize)}}
			for _, f := range []string{"userId", "entityId", "status"} {
				if vs, ok := q[f]; ok && rt.tok == adminTok {
					next[f] = vs
				}
			}
			after := listOnce(t, handler, rt.path, rt.tok, next.Encode())
			if after == nil {
				t.Fatalf("%s: the next cursor of %q was refused", rt.path, rawQuery)
			}
			last := page.Items[len(page.Items)-1]
			for _, it := range after.Items {
				if compareNewestFirst(listKey{created: it.CreatedAt, name: it.PurchaseID}, listKey{created: last.CreatedAt, name: last.PurchaseID}) <= 0 {
					t.Fatalf("%s: after cursor of %s came %s", rt.path, last.PurchaseID, it.PurchaseID)
				}
			}
		}
	})
}

// listOnce requests a list and checks the answer's shape; nil when the
// query was rejected (with a clean 400).
func listOnce(t *testing.T, h http.Handler, path, tok, rawQuery string) *listedPage {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.URL = &url.URL{Path: path, RawQuery: rawQuery}
	req.RequestURI = req.URL.RequestURI()
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		var e errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s?%s: %d without a JSON error: %s", path, rawQuery, rec.Code, rec.Body)
		}
		checkRejection(t, rawQuery, rec.Code, e.Code, e.Message)
		return nil
	}
	var p listedPage
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s?%s: %v", path, rawQuery, err)
	}
	if len(p.Items) > p.PageSize || len(p.Items) > p.TotalCount || p.PageSize < 1 || p.PageSize > maxPageSize {
		t.Fatalf("%s?%s: %d items, pageSize %d, total %d", path, rawQuery, len(p.Items), p.PageSize, p.TotalCount)
	}
	for i := 1; i < len(p.Items); i++ {
		a, b := p.Items[i-1], p.Items[i]
		if compareNewestFirst(listKey{created: a.CreatedAt, name: a.PurchaseID}, listKey{created: b.CreatedAt, name: b.PurchaseID}) >= 0 {
			t.Fatalf("%s?%s: %s listed before %s", path, rawQuery, a.PurchaseID, b.PurchaseID)
		}
	}
	return &p
}

// checkRejection asserts a rejected query is a clean 400.
func checkRejection(t *testing.T, rawQuery string, status int, code, message string) {
	t.Helper()
	if status != http.StatusBadRequest || code != CodeInvalidField || message == "" {
		t.Fatalf("query %q: %d %q %q, want 400 %s", rawQuery, status, code, message, CodeInvalidField)
	}
	if !utf8.ValidString(message) || strings.IndexFunc(message, unicode.IsControl) >= 0 {
		t.Fatalf("query %q: the message echoes what was sent: %q", rawQuery, message)
	}
}

// FuzzCursor: every cursor the API hands out decodes to the key it was made
// from, and anything decodeCursor accepts is exactly what encodeCursor makes
// of the key it decodes to. Seeds: testdata/fuzz/FuzzCursor.
func FuzzCursor(f *testing.F) {
	f.Add(int64(0), "ptv-0000000001", "")
	f.Add(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), "ptv-abc", encodeCursor(listKey{created: time.Unix(5, 0), name: "ptv-x"}))
	f.Add(int64(-1), "PTV-0", "MTow")
	f.Add(int64(1<<62), "ptv-"+strings.Repeat("a", 60), "LTE6cHR2LWE")
	f.Fuzz(func(t *testing.T, nanos int64, name, cursor string) {
		if validPurchaseID(name) {
			k := listKey{created: time.Unix(0, nanos), name: name}
			got, apiErr := decodeCursor(encodeCursor(k))
			if apiErr != nil || !got.created.Equal(k.created) || got.name != k.name {
				t.Fatalf("cursor of %+v decodes to %+v, %v", k, got, apiErr)
			}
			if len(encodeCursor(k)) > maxCursorLen {
				t.Fatalf("cursor of %+v is longer than the %d accepted", k, maxCursorLen)
			}
		}
		k, apiErr := decodeCursor(cursor)
		if apiErr != nil {
			if apiErr.status != http.StatusBadRequest || apiErr.code != CodeInvalidField || len(cursor) >= 8 && strings.Contains(apiErr.message, cursor) {
				t.Fatalf("cursor %q: %d %s %q", cursor, apiErr.status, apiErr.code, apiErr.message)
			}
			return
		}
		if encodeCursor(k) != cursor || !validPurchaseID(k.name) {
			t.Fatalf("accepted cursor %q decodes to %+v, which encodes to %q", cursor, k, encodeCursor(k))
		}
	})
}
