package emulator

import (
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Stripe's documented metadata limits.
const (
	maxMetadataKeys     = 50
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
)

// form is the decoded body (or query) of one request in Stripe's bracket
// notation: metadata[k]=v, line_items[0][price]=p, expand[]=x or expand[0]=x.
type form url.Values

func (f form) has(key string) bool {
	_, ok := f[key]
	return ok
}

// hasPrefix reports whether the request has the parameter key or any
// parameter nested under it (key[...]).
func (f form) hasPrefix(key string) bool {
	if f.has(key) {
		return true
	}
	for k := range f {
		if strings.HasPrefix(k, key+"[") {
			return true
		}
	}
	return false
}

func (f form) str(key string) string {
	return url.Values(f).Get(key)
}

// int64 parses an optional integer parameter.
func (f form) int64(key string) (v int64, ok bool, err *apiError) {
	s, present := f[key]
	if !present || len(s) == 0 {
		return 0, false, nil
	}
	v, perr := strconv.ParseInt(s[0], 10, 64)
	if perr != nil {
		return 0, false, invalidRequestCode("parameter_invalid_integer", key, "Invalid integer: %s", s[0])
	}
	return v, true, nil
}

// bool parses an optional boolean parameter.
func (f form) bool(key string) (v bool, ok bool, err *apiError) {
	s, present := f[key]
	if !present || len(s) == 0 {
		return false, false, nil
	}
	switch s[0] {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, false, invalidRequest(key, "Invalid boolean: %s", s[0])
}

// list returns the values of an array parameter sent either as key[]=v or as
// key[0]=v, key[1]=w (stripe-go's encoding), in index order.
func (f form) list(key string) []string {
	out := append([]string(nil), f[key+"[]"]...)
	type indexed struct {
		i int
		v []string
	}
	var idx []indexed
	prefix := key + "["
	for k, v := range f {
		if !strings.HasPrefix(k, prefix) || !strings.HasSuffix(k, "]") {
			continue
		}
		n, err := strconv.Atoi(k[len(prefix) : len(k)-1])
		if err != nil {
			continue
		}
		idx = append(idx, indexed{n, v})
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a].i < idx[b].i })
	for _, e := range idx {
		out = append(out, e.v...)
	}
	return out
}

// indices returns the sorted distinct indices N of keys that start with
// prefix[N], for arrays of objects such as line_items.
func (f form) indices(prefix string) []int {
	seen := map[int]bool{}
	for k := range f {
		if !strings.HasPrefix(k, prefix+"[") {
			continue
		}
		rest := k[len(prefix)+1:]
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			continue
		}
		n, err := strconv.Atoi(rest[:end])
		if err != nil {
			continue
		}
		seen[n] = true
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// metadata collects prefix[k]=v pairs. present reports whether the request
// said anything about this metadata; clear reports prefix= (empty), which
// Stripe reads as "remove all keys". An empty value for one key removes that
// key on update, so those are returned with their empty value.
func (f form) metadata(prefix string) (md map[string]string, present, clear bool, err *apiError) {
	if v, ok := f[prefix]; ok {
		if len(v) > 0 && v[0] != "" {
			return nil, false, false, invalidRequest(prefix, "Invalid object: %s must be a hash of key-value pairs.", prefix)
		}
		present, clear = true, true
	}
	md = map[string]string{}
	for k, v := range f {
		if !strings.HasPrefix(k, prefix+"[") || !strings.HasSuffix(k, "]") {
			continue
		}
		key := k[len(prefix)+1 : len(k)-1]
		if strings.ContainsAny(key, "[]") {
			continue
		}
		present = true
		val := ""
		if len(v) > 0 {
			val = v[0]
		}
		if utf8.RuneCountInString(key) > maxMetadataKeyLen {
			return nil, false, false, invalidRequest(k, "Metadata keys can have at most %d characters, got %q.", maxMetadataKeyLen, key)
		}
		if key == "" {
			return nil, false, false, invalidRequest(k, "Metadata keys must not be empty.")
		}
		if utf8.RuneCountInString(val) > maxMetadataValueLen {
			return nil, false, false, invalidRequest(k, "Metadata values can have at most %d characters (key %q).", maxMetadataValueLen, key)
		}
		md[key] = val
	}
	if len(md) > maxMetadataKeys {
		return nil, false, false, invalidRequest(prefix, "Metadata can have at most %d keys, got %d.", maxMetadataKeys, len(md))
	}
	return md, present, clear, nil
}

// createMetadata is metadata on a create call: empty values are dropped.
func (f form) createMetadata(prefix string) (map[string]string, *apiError) {
	md, _, _, err := f.metadata(prefix)
	if err != nil {
		return nil, err
	}
	for k, v := range md {
		if v == "" {
			delete(md, k)
		}
	}
	return md, nil
}

// updateMetadata applies metadata[...] from an update call to current, the
// way Stripe does: keys merge, an empty value unsets a key, metadata= clears
// all.
func (f form) updateMetadata(current map[string]string) (map[string]string, *apiError) {
	const prefix = "metadata"
	md, present, clear, err := f.metadata(prefix)
	if err != nil || !present {
		return current, err
	}
	out := map[string]string{}
	if !clear {
		for k, v := range current {
			out[k] = v
		}
	}
	for k, v := range md {
		if v == "" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	if len(out) > maxMetadataKeys {
		return nil, invalidRequest(prefix, "Metadata can have at most %d keys, got %d.", maxMetadataKeys, len(out))
	}
	return out, nil
}

// splitKey splits "a[b][0][c]" into ["a", "b", "0", "c"] and "expand[]" into
// ["expand", ""]. ok is false for keys that are not well-formed.
func splitKey(key string) (parts []string, ok bool) {
	i := strings.IndexByte(key, '[')
	if i < 0 {
		return []string{key}, key != ""
	}
	if i == 0 {
		return nil, false
	}
	parts = append(parts, key[:i])
	rest := key[i:]
	for rest != "" {
		if rest[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return nil, false
		}
		parts = append(parts, rest[1:end])
		rest = rest[end+1:]
	}
	return parts, true
}

// knownParamCache memoises schema lookups; keys are "<type>|<param key>".
var knownParamCache sync.Map

// checkKnownParams rejects any parameter that stripe-go's params type t
// could not have produced, the way Stripe answers "Received unknown
// parameter". Using stripe-go's own types as the schema keeps the emulator
// exactly as strict as the library we call it with: every parameter the
// library can send is accepted, everything else is a client bug.
func checkKnownParams(f form, t reflect.Type) *apiError {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cacheKey := t.String() + "|" + k
		if known, ok := knownParamCache.Load(cacheKey); ok {
			if !known.(bool) {
				return unknownParam(k)
			}
			continue
		}
		parts, ok := splitKey(k)
		known := ok && acceptsPath(t, parts)
		knownParamCache.Store(cacheKey, known)
		if !known {
			return unknownParam(k)
		}
	}
	return nil
}

// acceptsPath reports whether the form-tagged type t has a parameter at
// path. Fields tagged form:"*" are embedded at the same level (stripe.Params,
// stripe.ListParams); fields tagged form:"-" are never sent.
func acceptsPath(t reflect.Type, path []string) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if len(path) == 0 {
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			fld := t.Field(i)
			name, _, _ := strings.Cut(fld.Tag.Get("form"), ",")
			switch name {
			case "", "-":
				continue
			case "*":
				if acceptsPath(fld.Type, path) {
					return true
				}
			case path[0]:
				if acceptsPath(fld.Type, path[1:]) {
					return true
				}
			}
		}
		return false
	case reflect.Slice, reflect.Array:
		if path[0] != "" {
			if _, err := strconv.Atoi(path[0]); err != nil {
				return false
			}
		}
		return acceptsPath(t.Elem(), path[1:])
	case reflect.Map:
		return acceptsPath(t.Elem(), path[1:])
	default:
		return false
	}
}
