package webhookserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/md-platform/paytoview-operator/api/v1alpha1"
	"github.com/md-platform/paytoview-operator/internal/auth"
	"github.com/md-platform/paytoview-operator/internal/index"
	"github.com/md-platform/paytoview-operator/internal/naming"
	"github.com/md-platform/paytoview-operator/internal/testenv"
)

// memNamespace is the namespace of the in-memory servers.
const memNamespace = "mem"

// memServer is the API's read routes, the create route, and the admin list,
// with their middleware, served on a loopback socket over
// controller-runtime's in-memory client with the real field indexes holding
// objs. The routes' behaviour against a real apiserver and cache is what the
// harness tests check.
func memServer(t testing.TB, objs ...client.Object) (*httptest.Server, client.Client) {
	t.Helper()
	c := memClient(t, objs...)
	return serveClient(t, c), c
}

// memClient is controller-runtime's in-memory client with the real field
// indexes, holding objs.
func memClient(t testing.TB, objs ...client.Object) client.Client {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithStatusSubresource(&v1alpha1.Purchase{}).WithObjects(objs...)
	if err := index.Setup(context.Background(), fuzzIndexer{b}); err != nil {
		t.Fatal(err)
	}
	return b.Build()
}

// serveClient serves memServer's routes over c, with the test's HS256
// tokens.
func serveClient(t testing.TB, c client.Client) *httptest.Server {
	t.Helper()
	authn, err := auth.New(context.Background(), auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(memHandler(t, c, authn))
	t.Cleanup(srv.Close)
	return srv
}

// memHandler is memServer's routes over c with their middleware.
func memHandler(t testing.TB, c client.Client, authn Authenticator) http.Handler {
	t.Helper()
	var err error
	s := &Server{
		opts: Options{Namespace: memNamespace, Client: c, APIReader: c, Auth: authn, Clock: clock.RealClock{},
			EntityIDHeader: DefaultEntityIDHeader, Logger: discard, MaxPendingPerUser: DefaultMaxPendingPerUser,
			RecheckAfter: time.Hour, RecheckInterval: time.Hour},
		log:        discard,
		createRate: newKeyedLimiter(DefaultCreateRate, DefaultCreateBurst, time.Minute),
		rechecks:   newRecentKeys(time.Hour),
	}
	if s.returnOrigins, err = parseOrigins([]string{"https://shop.example.com", "http://localhost:3000"}, true); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /client/v1/pay-to-view/purchases", s.listPurchases)
	mux.HandleFunc("GET /client/v1/pay-to-view/purchases/{id}", s.getPurchase)
	mux.HandleFunc("POST /client/v1/pay-to-view/purchases", s.createPurchase)
	mux.HandleFunc("GET /client/v1/pay-to-view/access", s.getAccess)
	mux.HandleFunc("GET /client/v1/pay-to-view/access/check", s.checkAccess)
	mux.HandleFunc("GET /admin/v1/pay-to-view/purchases", s.adminListPurchases)
	mux.HandleFunc("POST /admin/v1/pay-to-view/purchases/{id}/refund", s.adminRefund)
	return s.withMiddleware(mux)
}

// indexedStore holds Purchases for tests with many thousands of them: List
// answers the real field indexes' queries from maps kept up to date on every
// add and delete, as the manager's cache does, and hands out shallow copies
// as the cache does under UnsafeDisableDeepCopy. controller-runtime's
// in-memory client deep-copies every object on every List, which makes a
// walk over 10,000 purchases take minutes under the race detector. It
// implements List only; any other call panics (a 500 the test reports).
type indexedStore struct {
	client.Client

	mu      sync.RWMutex
	funcs   map[string]client.IndexerFunc
	indexed map[string]map[string]map[string]*v1alpha1.Purchase // field -> value -> name
}

func newIndexedStore(t testing.TB, items ...*v1alpha1.Purchase) *indexedStore {
	t.Helper()
	st := &indexedStore{funcs: map[string]client.IndexerFunc{}, indexed: map[string]map[string]map[string]*v1alpha1.Purchase{}}
	if err := index.Setup(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	for _, p := range items {
		st.add(p)
	}
	return st
}

// IndexField records the index functions index.Setup registers.
func (st *indexedStore) IndexField(_ context.Context, _ client.Object, field string, fn client.IndexerFunc) error {
	st.funcs[field] = fn
	st.indexed[field] = map[string]map[string]*v1alpha1.Purchase{}
	return nil
}

func (st *indexedStore) add(p *v1alpha1.Purchase) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for field, fn := range st.funcs {
		for _, v := range fn(p) {
			if st.indexed[field][v] == nil {
				st.indexed[field][v] = map[string]*v1alpha1.Purchase{}
			}
			st.indexed[field][v][p.Name] = p
		}
	}
}

func (st *indexedStore) remove(p *v1alpha1.Purchase) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for field, fn := range st.funcs {
		for _, v := range fn(p) {
			delete(st.indexed[field][v], p.Name)
		}
	}
}

// List answers a query on exactly one field index.
func (st *indexedStore) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	var o client.ListOptions
	o.ApplyOptions(opts)
	pl, ok := list.(*v1alpha1.PurchaseList)
	if !ok || o.FieldSelector == nil || len(o.FieldSelector.Requirements()) != 1 {
		return fmt.Errorf("indexedStore lists Purchases by one field index only, not %T %v", list, o.FieldSelector)
	}
	req := o.FieldSelector.Requirements()[0]
	st.mu.RLock()
	defer st.mu.RUnlock()
	byValue, ok := st.indexed[req.Field]
	if !ok {
		return fmt.Errorf("no index %q", req.Field)
	}
	pl.Items = make([]v1alpha1.Purchase, 0, len(byValue[req.Value]))
	for _, p := range byValue[req.Value] {
		pl.Items = append(pl.Items, *p)
	}
	return nil
}

// memPurchase is a Pending purchase of user named name, created at created.
func memPurchase(user, name string, created time.Time) *v1alpha1.Purchase {
	entity := "vid-" + name[len(naming.PurchasePrefix):]
	return &v1alpha1.Purchase{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: memNamespace, CreationTimestamp: metav1.Time{Time: created},
			Labels: naming.PurchaseLabels(user, entity, "movie")},
		Spec: v1alpha1.PurchaseSpec{ProductRef: "movie", UserID: user, EntityID: entity, EntityType: v1alpha1.EntityTypeVideo,
			ReturnURL: "https://shop.example.com/done", Price: v1alpha1.Price{Amount: 499, Currency: "usd"}, StripePriceID: "price_mem"},
		Status: v1alpha1.PurchaseStatus{Phase: v1alpha1.PurchasePending},
	}
}

// get sends a GET with a bearer token over srv's socket.
func get(t testing.TB, srv *httptest.Server, path, tok string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer of GET %s: %v", path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// listedPage is a page of the client list as the frontend decodes it.
type listedPage struct {
	Items []struct {
		PurchaseID string    `json:"purchaseId"`
		CreatedAt  time.Time `json:"createdAt"`
	} `json:"items"`
	Page       int    `json:"page"`
	PageSize   int    `json:"pageSize"`
	TotalCount int    `json:"totalCount"`
	NextCursor string `json:"nextCursor"`
}

// walkPages lists every page of the caller's purchases, the first by page
// number and the rest by the cursor each page hands out, calling between
// after each page.
func walkPages(t testing.TB, srv *httptest.Server, tok string, pageSize int, between func()) (ids []string, pages int) {
	t.Helper()
	path := purchasesPath + "?page=1&pageSize=" + strconv.Itoa(pageSize)
	for {
		r := get(t, srv, path, tok)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		var p listedPage
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		pages++
		if len(p.Items) > pageSize {
			t.Fatalf("page %d holds %d items, more than pageSize %d", pages, len(p.Items), pageSize)
		}
		for _, it := range p.Items {
			ids = append(ids, it.PurchaseID)
		}
		if p.NextCursor == "" {
			return ids, pages
		}
		if len(p.Items) != pageSize {
			t.Fatalf("page %d holds %d items and a next cursor; only the last page may be short", pages, len(p.Items))
		}
		if between != nil {
			between()
		}
		path = purchasesPath + "?pageSize=" + strconv.Itoa(pageSize) + "&cursor=" + url.QueryEscape(p.NextCursor)
	}
}

// TestListPurchases_TenThousandPagedByCursorEachOnceWhileMoreAreCreated
// walks a user's 10,000 purchases over HTTP while the user keeps creating
// purchases (newer ones, at the head of the newest-first list) and another
// user's purchases come and go: every purchase that existed when the walk
// began is listed exactly once, in order, and none created meanwhile shows
// up. By page numbers the same walk lists items twice, as each purchase
// created at the head pushes the rest one place down.
func TestListPurchases_TenThousandPagedByCursorEachOnceWhileMoreAreCreated(t *testing.T) {
	const n = 10000
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	items := make([]*v1alpha1.Purchase, 0, n+1)
	var want []string // newest first
	for i := n - 1; i >= 0; i-- {
		name := fmt.Sprintf("ptv-a%09d", i)
		// Ten purchases share each second, so names break ties.
		items = append(items, memPurchase("alice", name, base.Add(time.Duration(i/10)*time.Second)))
		want = append(want, name)
	}
	items = append(items, memPurchase("bob", "ptv-bob0000000", base))
	st := newIndexedStore(t, items...)
	srv := serveClient(t, st)
	tok := token(t, "alice", false)

	created := 0
	between := func() {
		created++
		// A purchase of alice at the head, in the same second as the newest
		// (so only the name orders it), another a second later, and bob's
		// churn, which alice's list must never show.
		for _, p := range []*v1alpha1.Purchase{
			memPurchase("alice", fmt.Sprintf("ptv-b%09d", created), base.Add(time.Duration((n-1)/10)*time.Second)),
			memPurchase("alice", fmt.Sprintf("ptv-c%09d", created), base.Add(time.Duration(n+created)*time.Second)),
			memPurchase("bob", fmt.Sprintf("ptv-bob%07d", created), base.Add(time.Duration(n+created)*time.Second)),
		} {
			st.add(p)
		}
		st.remove(memPurchase("bob", fmt.Sprintf("ptv-bob%07d", created-1), base))
	}
	got, pages := walkPages(t, srv, tok, maxPageSize, between)
	if pages != n/maxPageSize {
		t.Errorf("walked %d pages, want %d", pages, n/maxPageSize)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d purchases, want the %d there were when the walk began", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("item %d is %s, want %s (the walk must list each purchase once, newest first)", i, got[i], want[i])
		}
	}

	// A new listing counts everything created meanwhile too.
	first := decodePage(t, get(t, srv, purchasesPath+"?pageSize=1", tok))
	if wantTotal := n + 2*created; first.TotalCount != wantTotal || first.Items[0].PurchaseID != fmt.Sprintf("ptv-c%09d", created) {
		t.Fatalf("new listing: total %d, newest %s; want %d and the last purchase created", first.TotalCount, first.Items[0].PurchaseID, wantTotal)
	}
}

// TestListPurchases_PageNumbersShiftWhenPurchasesAreCreated documents why
// the cursor exists: paging by number over a list that grows at its head
// lists the last item of a page again on the next one.
func TestListPurchases_PageNumbersShiftWhenPurchasesAreCreated(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var objs []client.Object
	for i := range 20 {
		objs = append(objs, memPurchase("alice", fmt.Sprintf("ptv-a%09d", i), base.Add(time.Duration(i)*time.Second)))
	}
	srv, c := memServer(t, objs...)
	tok := token(t, "alice", false)
	first := decodePage(t, get(t, srv, purchasesPath+"?page=1&pageSize=10", tok))
	if err := c.Create(context.Background(), memPurchase("alice", "ptv-b000000001", base.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	byNumber := decodePage(t, get(t, srv, purchasesPath+"?page=2&pageSize=10", tok))
	byCursor := decodePage(t, get(t, srv, purchasesPath+"?pageSize=10&cursor="+url.QueryEscape(first.NextCursor), tok))
	last := first.Items[len(first.Items)-1].PurchaseID
	if byNumber.Items[0].PurchaseID != last {
		t.Fatalf("page 2 starts with %s; paging by number was expected to repeat %s", byNumber.Items[0].PurchaseID, last)
	}
	if byCursor.Items[0].PurchaseID != "ptv-a000000009" || len(byCursor.Items) != 10 || byCursor.NextCursor != "" || byCursor.Page != 0 {
		t.Fatalf("cursor page = %+v, want the 10 purchases after %s and no next cursor", byCursor, last)
	}
}

func decodePage(t testing.TB, r response) listedPage {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	var p listedPage
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// BenchmarkListPurchases_TenThousandOverHTTP is one page of a user holding
// 10,000 purchases, through the whole handler over a socket: token, index
// lookup, ordering, cursor, JSON.
func BenchmarkListPurchases_TenThousandOverHTTP(b *testing.B) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	items := make([]*v1alpha1.Purchase, 0, 10000)
	for i := range 10000 {
		items = append(items, memPurchase("alice", fmt.Sprintf("ptv-a%09d", i), base.Add(time.Duration(i)*time.Second)))
	}
	srv := serveClient(b, newIndexedStore(b, items...))
	tok := token(b, "alice", false)
	cursor := decodePage(b, get(b, srv, purchasesPath+"?page=50&pageSize=100", tok)).NextCursor
	for name, q := range map[string]string{"first": "page=1&pageSize=100", "cursor": "pageSize=100&cursor=" + url.QueryEscape(cursor)} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if r := get(b, srv, purchasesPath+"?"+q, tok); r.status != http.StatusOK {
					b.Fatalf("%d %s", r.status, r.body)
				}
			}
		})
	}
}

// jwksIDP publishes one RSA key as a JWK Set on a loopback server.
func jwksIDP(t testing.TB, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	jwk := map[string]string{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}
	body, err := json.Marshal(map[string]any{"keys": []any{jwk}})
	if err != nil {
		t.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(idp.Close)
	return idp.URL + "/jwks"
}

// TestAuth_HostileTokensAreRejectedOverHTTP sends the classic JWT attacks to
// an API configured for an identity provider's RS256 keys, issuer and
// audience: each is a 401 invalid_token that echoes nothing of the token,
// on a user and an admin route alike, while the provider's own token works.
func TestAuth_HostileTokensAreRejectedOverHTTP(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const (
		kid      = "idp-key-1"
		issuer   = "https://idp.example.com"
		audience = "paytoview"
	)
	authn, err := auth.New(context.Background(), auth.Config{JWKSURL: jwksIDP(t, key, kid), Issuer: issuer, Audience: audience})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(memHandler(t, memClient(t), authn))
	t.Cleanup(srv.Close)

	now := time.Now()
	claims := func(kv ...any) jwt.MapClaims {
		m := jwt.MapClaims{"sub": "alice", "iss": issuer, "aud": audience, "iat": now.Unix(),
			"exp": now.Add(time.Hour).Unix(), "roles": []string{"admin"}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
				continue
			}
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	signWith := func(method jwt.SigningMethod, k any, kid string, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	valid := signWith(jwt.SigningMethodRS256, key, kid, claims())
	parts := strings.Split(valid, ".")

	hostile := map[string]string{
		"alg none":                                signWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims()),
		"alg none with the valid signature":       strings.Replace(valid, parts[0], base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`"}`)), 1),
		"HS256 keyed with the public key PEM":     signWith(jwt.SigningMethodHS256, pubPEM, kid, claims()),
		"HS256 keyed with the public key DER":     signWith(jwt.SigningMethodHS256, pubDER, kid, claims()),
		"RS256 by another key under the kid":      signWith(jwt.SigningMethodRS256, otherKey, kid, claims()),
		"RS256 naming an unknown kid":             signWith(jwt.SigningMethodRS256, otherKey, "attacker-key", claims()),
		"expired":                                 signWith(jwt.SigningMethodRS256, key, kid, claims("exp", now.Add(-time.Hour).Unix())),
		"not valid yet":                           signWith(jwt.SigningMethodRS256, key, kid, claims("nbf", now.Add(time.Hour).Unix())),
		"issued in the future":                    signWith(jwt.SigningMethodRS256, key, kid, claims("iat", now.Add(time.Hour).Unix())),
		"without exp":                             signWith(jwt.SigningMethodRS256, key, kid, claims("exp", nil)),
		"wrong issuer":                            signWith(jwt.SigningMethodRS256, key, kid, claims("iss", "https://evil.example.com")),
		"issuer with a trailing slash":            signWith(jwt.SigningMethodRS256, key, kid, claims("iss", issuer+"/")),
		"without issuer":                          signWith(jwt.SigningMethodRS256, key, kid, claims("iss", nil)),
		"wrong audience":                          signWith(jwt.SigningMethodRS256, key, kid, claims("aud", "another-app")),
		"audience list without ours":              signWith(jwt.SigningMethodRS256, key, kid, claims("aud", []string{"a", "b"})),
		"without audience":                        signWith(jwt.SigningMethodRS256, key, kid, claims("aud", nil)),
		"payload swapped under a valid signature": parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","iss":"`+issuer+`","aud":"`+audience+`","exp":9999999999}`)) + "." + parts[2],
	}
	routes := []string{purchasesPath, "/admin/v1/pay-to-view/purchases"}
	for _, route := range routes {
		if r := get(t, srv, route, valid); r.status != http.StatusOK {
			t.Fatalf("GET %s with the provider's token: %d %s", route, r.status, r.body)
		}
	}
	for name, tok := range hostile {
		t.Run(name, func(t *testing.T) {
			for _, route := range routes {
				r := get(t, srv, route, tok)
				m := r.expectError(t, http.StatusUnauthorized, CodeUnauthorized)
				if got := r.header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
					t.Errorf("GET %s: WWW-Authenticate = %q, want error=\"invalid_token\"", route, got)
				}
				msg, _ := m["message"].(string)
				for _, part := range strings.Split(tok, ".") {
					if len(part) > 8 && strings.Contains(string(r.body), part) {
						t.Fatalf("GET %s: the answer echoes the token: %s", route, r.body)
					}
				}
				if !strings.HasPrefix(msg, "invalid bearer token: ") {
					t.Errorf("GET %s: message %q does not say why", route, msg)
				}
			}
		})
	}
}

// TestCreatePurchase_OpenRedirectReturnURLsAre422 sends the returnUrl tricks
// of open redirects over HTTP: each is a 422 invalid_return_url before
// anything is looked up, while the allowed origins get as far as the
// product lookup (404 product_not_found: there is no product).
func TestCreatePurchase_OpenRedirectReturnURLsAre422(t *testing.T) {
	srv, _ := memServer(t)
	tok := token(t, "alice", false)
	post := func(returnURL string) response {
		t.Helper()
		body, err := json.Marshal(map[string]string{"payToViewProductId": "movie", "entityId": "vid-1", "returnUrl": returnURL})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+purchasesPath, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	for _, ok := range []string{"https://shop.example.com/done", "https://SHOP.example.com:443/x?y=1#z", "http://localhost:3000/done"} {
		post(ok).expectError(t, http.StatusNotFound, CodeProductNotFound)
	}
	for _, bad := range []string{
		"https://evil.example.com/done",
		"//evil.example.com/done",                      // scheme-relative
		"///evil.example.com/done",                     // scheme-relative, extra slash
		"/\\evil.example.com/done",                     // browsers read \ as /
		"https:evil.example.com/done",                  // no slashes
		"https:/evil.example.com/done",                 // one slash
		"https:\\\\evil.example.com/done",              // backslashes
		"https:/\\evil.example.com/done",               // mixed
		"https://shop.example.com\\@evil.example.com/", // backslash before userinfo
		"https://shop.example.com@evil.example.com/",   // userinfo
		"https://shop.example.com:443@evil.example.com/",
		"https://shop.example.com%40evil.example.com/",
		"https://shop.example.com%2f@evil.example.com/",
		"http://localhost:3000@evil.example.com/",
		"https://shop.example.com.evil.example.com/",
		"https://evil.example.com#https://shop.example.com",
		"https://evil.example.com/?next=https://shop.example.com",
		"https://evil.example.com/\\shop.example.com",
		"javascript:alert(document.domain)",
		"JavaScript://shop.example.com/%0aalert(1)",
		"data:text/html,<script>alert(1)</script>",
		"vbscript:msgbox(1)",
		"http://shop.example.com/done",                   // downgrade
		"https://shop.example.com:8443/x",                // other port
		"http://127.0.0.1:3000/done",                     // loopback, but not the allowed one
		"https://shоp.example.com/done",                  // Cyrillic о
		"https://ｓｈｏｐ.example.com/done",                  // full-width letters
		"https://shop。example。com/done",                  // ideographic full stops
		"https://shop.example.com\u2215evil.example.com", // division slash
		"https://shop.example.com\u0000.evil.example.com",
		" https://shop.example.com/done",
		"https://shop.example.com/\tdone",
		"https://shop.example.com/\r\nLocation: https://evil.example.com",
		"https://shop.example.com/" + strings.Repeat("a", maxReturnURLLen), // over the CRD's limit
	} {
		r := post(bad)
		want, code := http.StatusUnprocessableEntity, CodeInvalidReturnURL
		if len(bad) > maxReturnURLLen {
			want, code = http.StatusBadRequest, CodeInvalidField
		}
		if r.status != want {
			t.Errorf("returnUrl %q: %d %s, want %d %s", bad, r.status, r.body, want, code)
			continue
		}
		r.expectError(t, want, code)
	}
}

// TestIDs_UnicodeAndControlCharactersAreClear4xx puts Unicode, control and
// invalid UTF-8 characters in every id a client or admin sends (path,
// query, header, cursor): the answer is a JSON 400, 403 or 404 that echoes
// none of them, never a 5xx.
func TestIDs_UnicodeAndControlCharactersAreClear4xx(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	srv, _ := memServer(t, memPurchase("alice", "ptv-0000000001", base))
	user, admin := token(t, "alice", false), token(t, "root", true)
	tests := []struct {
		method, path, tok string
		header            string
		status            int
	}{
		{"GET", purchasesPath + "/ptv-%E2%80%AE0000000001", user, "", 404}, // right-to-left override
		{"GET", purchasesPath + "/ptv-%000000000001", user, "", 404},
		{"GET", purchasesPath + "/ptv-%FF%FE", user, "", 404},
		{"GET", purchasesPath + "/%F0%9F%92%A9", user, "", 404},
		{"GET", purchasesPath + "/ptv-0000000001%0A", user, "", 404},
		{"GET", purchasesPath + "/ptv-0000000001%2F..", user, "", 404},
		{"GET", purchasesPath + "/PTV-0000000001", user, "", 404},
		{"GET", purchasesPath + "/ptv-%EF%BC%90000000001", user, "", 404}, // full-width zero
		{"GET", "/client/v1/pay-to-view/access?entityId=vid%00", user, "", 400},
		{"GET", "/client/v1/pay-to-view/access?entityId=%E2%80%AEvid", user, "", 400},
		{"GET", "/client/v1/pay-to-view/access?entityId=%FF", user, "", 400},
		{"GET", "/client/v1/pay-to-view/access?entityId=vid%0D%0AX-Injected:%201", user, "", 400},
		{"GET", "/client/v1/pay-to-view/access?entityId=" + strings.Repeat("%C3%A4", 200), user, "", 400},
		{"GET", "/client/v1/pay-to-view/access?entityId=a&entityId=b", user, "", 400},
		{"GET", "/client/v1/pay-to-view/access/check?entityId=vid%00", user, "", 403},
		{"GET", "/client/v1/pay-to-view/access/check", user, "vid-é", 403},
		{"GET", "/client/v1/pay-to-view/access/check", user, "vid-\u202e1", 403},
		{"GET", purchasesPath + "?cursor=%00", user, "", 400},
		{"GET", purchasesPath + "?cursor=%F0%9F%92%A9", user, "", 400},
		{"GET", purchasesPath + "?cursor=" + strings.Repeat("A", 4096), user, "", 400},
		{"GET", purchasesPath + "?page=%D9%A1", user, "", 400}, // Arabic-Indic one
		{"GET", "/admin/v1/pay-to-view/purchases?userId=al%00ice", admin, "", 400},
		{"GET", "/admin/v1/pay-to-view/purchases?userId=" + strings.Repeat("u", maxUserIDLen+1), admin, "", 400},
		{"GET", "/admin/v1/pay-to-view/purchases?entityId=%E2%80%AE", admin, "", 400},
		{"GET", "/admin/v1/pay-to-view/purchases?status=Pending%00", admin, "", 400},
		{"GET", "/admin/v1/pay-to-view/purchases?status=p%C3%A9nding", admin, "", 400},
		{"POST", "/admin/v1/pay-to-view/purchases/ptv-%C3%A40000000/refund", admin, "", 404},
		{"POST", "/admin/v1/pay-to-view/purchases/ptv-%00/refund", admin, "", 404},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		req.Header.Set("Authorization", "Bearer "+tt.tok)
		if tt.header != "" {
			req.Header.Set(DefaultEntityIDHeader, tt.header)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s (header %q): %d %s, want %d", tt.method, tt.path, tt.header, resp.StatusCode, body, tt.status)
			continue
		}
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Errorf("%s %s: not a JSON error: %s", tt.method, tt.path, body)
		}
		if !utf8.ValidString(e.Message) || strings.IndexFunc(e.Message, func(r rune) bool { return unicode.IsControl(r) || r == '\u202e' }) >= 0 {
			t.Errorf("%s %s: the message echoes what was sent: %q", tt.method, tt.path, e.Message)
		}
	}
}

// endlessBody is a body of size bytes made up as it is read, counting what
// the server reads.
type endlessBody struct {
	size, read int64
}

func (b *endlessBody) Read(p []byte) (int, error) {
	if b.read >= b.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), b.size-b.read)
	for i := range p[:n] {
		p[i] = ' '
	}
	b.read += n
	return int(n), nil
}

// TestBodies_TenMiBIsRefusedAfterReadingTheLimit: a 10 MiB body to each
// route that takes one is refused as too large after reading at most one
// byte past the route's limit, so an attacker's bodies never sit in memory.
func TestBodies_TenMiBIsRefusedAfterReadingTheLimit(t *testing.T) {
	authn, err := auth.New(context.Background(), auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	api := memHandler(t, memClient(t), authn)
	webhook, _, _ := fuzzWebhookServer(t)
	tests := []struct {
		name, path, tok string
		handler         http.Handler
		limit           int64
		status          int
	}{
		{"create", purchasesPath, token(t, "alice", false), api, maxCreateBody, http.StatusBadRequest},
		{"refund", "/admin/v1/pay-to-view/purchases/ptv-0000000001/refund", token(t, "root", true), api, maxRefundBody, http.StatusBadRequest},
		{"Stripe webhook", webhookPath, "", webhook, maxWebhookBody, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &endlessBody{size: 10 << 20}
			req := httptest.NewRequest(http.MethodPost, tt.path, body)
			req.ContentLength = body.size
			if tt.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tt.tok)
			}
			req.Header.Set("Stripe-Signature", "t=1,v1=00")
			rec := httptest.NewRecorder()
			tt.handler.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != CodeBodyTooLarge {
				t.Fatalf("answer %s, want code %s", rec.Body, CodeBodyTooLarge)
			}
			if body.read > tt.limit+1 {
				t.Fatalf("the handler read %d bytes of a 10 MiB body; the limit is %d", body.read, tt.limit)
			}
		})
	}
}
