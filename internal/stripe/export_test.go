package stripe

// CheckoutSessionParamsForTest exposes the session request the client
// builds, so the contract test can send it, and broken variants of it,
// through stripe-go directly.
var CheckoutSessionParamsForTest = checkoutSessionParams
