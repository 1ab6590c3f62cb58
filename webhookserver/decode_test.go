package webhookserver

import (
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

func TestDecodeCreateRequest(t *testing.T) {
	valid := `{"payToViewProductId":"movie-night","entityId":"vid_123","returnUrl":"https://shop.example.com/done"}`
	tests := []struct {
		name     string
		body     string
		wantCode string // "" means accepted
	}{
		{"valid", valid, ""},
		{"valid with surrounding whitespace", "\n  " + valid + "\n\t", ""},
		{"entity id with every allowed character", `{"payToViewProductId":"p","entityId":"Az09._~:=+/-","returnUrl":"https://a"}`, ""},
		{"empty body", ``, CodeMalformedJSON},
		{"only whitespace", "   \n", CodeMalformedJSON},
		{"not JSON", `payToViewProductId=p`, CodeMalformedJSON},
		{"truncated JSON", `{"payToViewProductId":"p","entityId":"e"`, CodeMalformedJSON},
		{"array instead of object", `[` + valid + `]`, CodeMalformedJSON},
		{"string instead of object", `"hello"`, CodeMalformedJSON},
		{"two objects", valid + valid, CodeMalformedJSON},
		{"trailing garbage", valid + `x`, CodeMalformedJSON},
		{"null", `null`, CodeMalformedJSON},
		{"empty object", `{}`, CodeMissingField},
		{"missing returnUrl", `{"payToViewProductId":"p","entityId":"e"}`, CodeMissingField},
		{"missing entityId", `{"payToViewProductId":"p","returnUrl":"https://a"}`, CodeMissingField},
		{"empty product id", `{"payToViewProductId":"","entityId":"e","returnUrl":"https://a"}`, CodeMissingField},
		{"null field", `{"payToViewProductId":null,"entityId":"e","returnUrl":"https://a"}`, CodeMissingField},
		{"unknown field", `{"payToViewProductId":"p","entityId":"e","returnUrl":"https://a","amount":1}`, CodeUnknownField},
		{"field in other case", `{"PayToViewProductID":"p","entityId":"e","returnUrl":"https://a"}`, CodeUnknownField},
		{"repeated field", `{"payToViewProductId":"p","entityId":"e","entityId":"f","returnUrl":"https://a"}`, CodeMalformedJSON},
		{"key that is not a string", `{1:"p"}`, CodeMalformedJSON},
		{"invalid UTF-8 escapes survive as replacement", `{"payToViewProductId":"p","entityId":"\ud800","returnUrl":"https://a"}`, CodeInvalidField},
		{"number instead of string", `{"payToViewProductId":1,"entityId":"e","returnUrl":"https://a"}`, CodeInvalidField},
		{"object instead of string", `{"payToViewProductId":"p","entityId":{},"returnUrl":"https://a"}`, CodeInvalidField},
		{"entity id with a space", `{"payToViewProductId":"p","entityId":"a b","returnUrl":"https://a"}`, CodeInvalidField},
		{"entity id with a control character", `{"payToViewProductId":"p","entityId":"a\u0000b","returnUrl":"https://a"}`, CodeInvalidField},
		{"entity id with unicode", `{"payToViewProductId":"p","entityId":"vidé","returnUrl":"https://a"}`, CodeInvalidField},
		{"entity id too long", `{"payToViewProductId":"p","entityId":"` + strings.Repeat("a", 129) + `","returnUrl":"https://a"}`, CodeInvalidField},
		{"return url too long", `{"payToViewProductId":"p","entityId":"e","returnUrl":"https://a/` + strings.Repeat("a", 2048) + `"}`, CodeInvalidField},
		{"body over 64 KiB", `{"payToViewProductId":"p","entityId":"e","returnUrl":"https://a","x":"` + strings.Repeat("a", 64<<10) + `"}`, CodeBodyTooLarge},
		{"whitespace padding over 64 KiB", valid + strings.Repeat(" ", 64<<10), CodeBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := decodeCreateRequest(strings.NewReader(tt.body))
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("rejected a valid body: %v", err)
				}
				if in.ProductID == "" || in.EntityID == "" || in.ReturnURL == "" {
					t.Fatalf("decoded %+v, want every field", in)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q as %+v", tt.body, in)
			}
			if err.status != http.StatusBadRequest || err.code != tt.wantCode {
				t.Fatalf("got %d %s (%s), want 400 %s", err.status, err.code, err.message, tt.wantCode)
			}
		})
	}
}

func TestDecodeCreateRequest_BodyOfExactlyTheLimitIsAccepted(t *testing.T) {
	body := `{"payToViewProductId":"p","entityId":"e","returnUrl":"https://a"}`
	body += strings.Repeat(" ", maxCreateBody-len(body))
	if _, err := decodeCreateRequest(strings.NewReader(body)); err != nil {
		t.Fatalf("a body of exactly %d bytes was rejected: %v", maxCreateBody, err)
	}
}

func TestValidReturnURL(t *testing.T) {
	origins, err := parseOrigins([]string{"https://shop.example.com", "https://Pay.Example.com:8443/", "http://localhost:3000"}, true)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{returnOrigins: origins}
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://shop.example.com/purchase/complete", true},
		{"https://shop.example.com", true},
		{"https://SHOP.example.com/x?session={CHECKOUT_SESSION_ID}", true},
		{"https://shop.example.com:443/x", true},
		{"https://pay.example.com:8443/x", true},
		{"http://localhost:3000/done", true},
		{"http://shop.example.com/x", false},                 // not https
		{"ftp://shop.example.com/x", false},                  // not http(s)
		{"javascript:alert(1)", false},                       // no host
		{"//shop.example.com/x", false},                      // not absolute
		{"/purchase/complete", false},                        // relative
		{"https://evil.example.com/x", false},                // other host
		{"https://shop.example.com.evil.com/x", false},       // suffix trick
		{"https://shop.example.com@evil.com/x", false},       // userinfo trick
		{"https://user:pw@shop.example.com/x", false},        // userinfo
		{"https://evil.com\\@shop.example.com/x", false},     // backslash trick
		{"https://shop.example.com:8443/x", false},           // other port
		{"https://pay.example.com/x", false},                 // default port, allowed only on 8443
		{"http://localhost:4000/done", false},                // other port
		{"https://shop.example.com/a b", false},              // space
		{"https://shop.example.com/\r\nSet-Cookie:x", false}, // header injection
		{"", false},
	}
	for _, tt := range tests {
		err := s.validReturnURL(tt.url)
		if tt.ok && err != nil {
			t.Errorf("%q rejected: %v", tt.url, err)
		}
		if !tt.ok {
			if err == nil {
				t.Errorf("%q accepted", tt.url)
			} else if err.status != http.StatusUnprocessableEntity || err.code != CodeInvalidReturnURL {
				t.Errorf("%q: got %d %s, want 422 %s", tt.url, err.status, err.code, CodeInvalidReturnURL)
			}
		}
	}
}

func TestParseOrigins_RejectsWhatIsNotAnOrigin(t *testing.T) {
	for _, o := range []string{"shop.example.com", "https://shop.example.com/path", "https://u@shop.example.com",
		"http://shop.example.com", "https://shop.example.com?x=1", "ftp://shop.example.com"} {
		if _, err := parseOrigins([]string{o}, true); err == nil {
			t.Errorf("return origin %q accepted", o)
		}
	}
	if _, err := parseOrigins([]string{"http://app.example.com"}, false); err != nil {
		t.Errorf("http CORS origin rejected: %v", err)
	}
}

func TestParsePaging(t *testing.T) {
	tests := []struct {
		query        string
		page, size   int
		wantRejected bool
	}{
		{"", 1, 10, false},
		{"page=3&pageSize=25", 3, 25, false},
		{"pageSize=100", 1, 100, false},
		{"pageSize=1", 1, 1, false},
		{"page=0", 0, 0, true},
		{"page=-1", 0, 0, true},
		{"page=%2B1", 0, 0, true},
		{"page=1.5", 0, 0, true},
		{"page=abc", 0, 0, true},
		{"page=", 0, 0, true},
		{"page=99999999999999999999", 0, 0, true},
		{"pageSize=0", 0, 0, true},
		{"pageSize=101", 0, 0, true},
		{"page=1&page=2", 0, 0, true},
		{"page=%EF%BC%91", 0, 0, true}, // full-width digit one
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		page, size, apiErr := parsePaging(q)
		if tt.wantRejected {
			if apiErr == nil || apiErr.status != http.StatusBadRequest || apiErr.code != CodeInvalidField {
				t.Errorf("%q: got page=%d size=%d err=%v, want 400 %s", tt.query, page, size, apiErr, CodeInvalidField)
			}
			continue
		}
		if apiErr != nil || page != tt.page || size != tt.size {
			t.Errorf("%q: got page=%d size=%d err=%v, want %d %d", tt.query, page, size, apiErr, tt.page, tt.size)
		}
	}
}

func TestKeyedLimiter_LimitsEachKeyAndSaysWhenToRetry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newKeyedLimiter(rate.Limit(1), 2, time.Minute)
	for i := range 2 {
		if ok, _ := l.allow("alice", now); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.allow("alice", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("third request: ok=%v wait=%s, want refused with a wait of at most 1s", ok, wait)
	}
	if ok, _ := l.allow("bob", now); !ok {
		t.Fatalf("another user is limited by alice's requests")
	}
	if ok, _ := l.allow("alice", now.Add(wait)); !ok {
		t.Fatalf("refused after waiting the advertised %s", wait)
	}
	// Idle buckets are dropped.
	l.allow("carol", now.Add(10*time.Minute))
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets after every other user idled past the TTL, want 1", n)
	}
}

func TestKeyedLimiter_InfDisablesLimiting(t *testing.T) {
	l := newKeyedLimiter(rate.Inf, 0, time.Minute)
	for range 1000 {
		if ok, _ := l.allow("alice", time.Now()); !ok {
			t.Fatal("refused with an infinite rate")
		}
	}
}

func TestRecentKeys_OncePerInterval(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRecentKeys(10 * time.Second)
	if !r.take("ptv-a", now) {
		t.Fatal("first take refused")
	}
	if r.take("ptv-a", now.Add(9*time.Second)) {
		t.Fatal("second take within the interval allowed")
	}
	if !r.take("ptv-b", now.Add(time.Second)) {
		t.Fatal("another key refused")
	}
	if !r.take("ptv-a", now.Add(10*time.Second)) {
		t.Fatal("take after the interval refused")
	}
}

func TestRetryAfterSeconds_RoundsUpToWholeSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "1", time.Millisecond: "1", time.Second: "1", 1500 * time.Millisecond: "2", time.Minute: "60",
	} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%s) = %s, want %s", d, got, want)
		}
	}
}

// TestClientPage_TenThousandPurchasesPageCorrectly walks every page of a
// user with 10,000 purchases: each appears exactly once, newest first.
func TestClientPage_TenThousandPurchasesPageCorrectly(t *testing.T) {
	s := &Server{opts: Options{Clock: clock.RealClock{}}}
	all := benchPurchases(10000)
	// The cache hands them out in no particular order.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	seen := map[string]bool{}
	var last time.Time
	for page := 1; ; page++ {
		p := s.clientPage(all, listQuery{page: page, pageSize: maxPageSize})
		if p.TotalCount != 10000 || p.Page != page || p.PageSize != maxPageSize {
			t.Fatalf("page %d: total %d page %d size %d", page, p.TotalCount, p.Page, p.PageSize)
		}
		if len(p.Items) == 0 {
			if page != 10000/maxPageSize+1 {
				t.Fatalf("ran out of items on page %d", page)
			}
			break
		}
		for _, it := range p.Items {
			if seen[it.PurchaseID] {
				t.Fatalf("%s listed twice", it.PurchaseID)
			}
			seen[it.PurchaseID] = true
			if !last.IsZero() && it.CreatedAt.After(last) {
				t.Fatalf("%s (%s) listed after a purchase created earlier (%s)", it.PurchaseID, it.CreatedAt, last)
			}
			last = *it.CreatedAt
		}
	}
	if len(seen) != 10000 {
		t.Fatalf("%d purchases listed, want 10000", len(seen))
	}
}

func TestParseListQuery_CursorOrPage(t *testing.T) {
	key := listKey{created: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), name: "ptv-0000000001"}
	cursor := encodeCursor(key)
	tests := []struct {
		query        string
		want         listQuery
		wantRejected bool
	}{
		{"", listQuery{page: 1, pageSize: 10}, false},
		{"page=4&pageSize=7", listQuery{page: 4, pageSize: 7}, false},
		{"cursor=" + cursor, listQuery{pageSize: 10, after: &key}, false},
		{"pageSize=100&cursor=" + cursor, listQuery{pageSize: 100, after: &key}, false},
		{"page=1&cursor=" + cursor, listQuery{}, true},
		{"cursor=" + cursor + "&cursor=" + cursor, listQuery{}, true},
		{"cursor=", listQuery{}, true},
		{"cursor=" + cursor + "%3D", listQuery{}, true},                                                    // padded
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("01:ptv-0000000001")), listQuery{}, true}, // another spelling of a key
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("1:secrets")), listQuery{}, true},         // not a purchase name
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("ptv-0000000001")), listQuery{}, true},
		{"pageSize=0&cursor=" + cursor, listQuery{}, true},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, apiErr := parseListQuery(q)
		if tt.wantRejected {
			if apiErr == nil || apiErr.status != http.StatusBadRequest || apiErr.code != CodeInvalidField {
				t.Errorf("%q: got %+v, %v; want 400 %s", tt.query, got, apiErr, CodeInvalidField)
			}
			continue
		}
		if apiErr != nil || got.page != tt.want.page || got.pageSize != tt.want.pageSize || (got.after == nil) != (tt.want.after == nil) ||
			got.after != nil && (!got.after.created.Equal(tt.want.after.created) || got.after.name != tt.want.after.name) {
			t.Errorf("%q: got %+v (after %+v), %v; want %+v (after %+v)", tt.query, got, got.after, apiErr, tt.want, tt.want.after)
		}
	}
}
