package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Stripe error types, as in the "type" field of an error body.
const (
	errTypeInvalidRequest = "invalid_request_error"
	errTypeAPI            = "api_error"
	errTypeIdempotency    = "idempotency_error"
)

// apiError is an error answered in Stripe's shape:
// {"error":{"type":..,"code":..,"message":..,"param":..}}. It is also what the
// Go helper methods return, so a test sees the same message as an HTTP caller.
type apiError struct {
	status     int
	typ        string
	code       string
	message    string
	param      string
	retryAfter int // seconds; sent as Retry-After when > 0
}

func (e *apiError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("%s (%s, %d): %s", e.typ, e.code, e.status, e.message)
	}
	return fmt.Sprintf("%s (%d): %s", e.typ, e.status, e.message)
}

// errorBody is the JSON body of an error response. Field names follow
// stripe-go's Error type so that it decodes into *stripe.Error.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code          string `json:"code,omitempty"`
	DocURL        string `json:"doc_url,omitempty"`
	Message       string `json:"message"`
	Param         string `json:"param,omitempty"`
	RequestLogURL string `json:"request_log_url,omitempty"`
	Type          string `json:"type"`
}

func (e *apiError) body(requestID string) []byte {
	d := errorDetail{Code: e.code, Message: e.message, Param: e.param, Type: e.typ}
	if e.code != "" {
		d.DocURL = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(e.code, "_", "-")
	}
	if requestID != "" {
		d.RequestLogURL = "https://dashboard.stripe.com/test/logs/" + requestID
	}
	b, err := json.Marshal(errorBody{Error: d})
	if err != nil {
		// Marshalling a struct of strings cannot fail.
		panic(err)
	}
	return b
}

func invalidRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: errTypeInvalidRequest, param: param, message: fmt.Sprintf(format, args...)}
}

func invalidRequestCode(code, param, format string, args ...any) *apiError {
	e := invalidRequest(param, format, args...)
	e.code = code
	return e
}

func missingParam(param string) *apiError {
	return invalidRequestCode("parameter_missing", param, "Missing required param: %s.", param)
}

func unknownParam(param string) *apiError {
	return invalidRequestCode("parameter_unknown", param, "Received unknown parameter: %s", param)
}

// noSuch is Stripe's resource_missing error. It is a 404 when the missing
// object is the one named in the URL and a 400 when it is a parameter of the
// request (for example the price of a line item).
func noSuch(kind, id, param string) *apiError {
	status := http.StatusBadRequest
	if param == "id" {
		status = http.StatusNotFound
	}
	return &apiError{
		status:  status,
		typ:     errTypeInvalidRequest,
		code:    "resource_missing",
		param:   param,
		message: fmt.Sprintf("No such %s: '%s'", kind, id),
	}
}

func unrecognizedURL(r *http.Request) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		typ:     errTypeInvalidRequest,
		message: fmt.Sprintf("Unrecognized request URL (%s: %s).", r.Method, r.URL.Path),
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, requestID string, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.retryAfter))
	}
	writeJSON(w, e.status, e.body(requestID))
}
