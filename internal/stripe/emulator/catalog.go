package emulator

import (
	"regexp"
	"strings"
)

// This file serves customers, products and prices.

var currencyRE = regexp.MustCompile(`^[a-z]{3}$`)

func (e *Emulator) createCustomer(c *call) ([]byte, *apiError) {
	md, err := c.form.createMetadata("metadata")
	if err != nil {
		return nil, err
	}
	now := e.lock()
	defer e.mu.Unlock()
	cu := &customer{
		ID:               newID("cus_", 14),
		Object:           "customer",
		Created:          now.Unix(),
		Description:      nullable(c.form.str("description")),
		Email:            nullable(c.form.str("email")),
		InvoicePrefix:    strings.ToUpper(newID("", 8)),
		Metadata:         md,
		Name:             nullable(c.form.str("name")),
		Phone:            nullable(c.form.str("phone")),
		PreferredLocales: []string{},
		TaxExempt:        "none",
	}
	e.customers[cu.ID] = cu
	e.emitLocked("customer.created", cu, c.eventRequest(), nil, nil)
	return e.render(cu, c.expand())
}

func (e *Emulator) getCustomer(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "customer", func() map[string]*customer { return e.customers })
}

func (e *Emulator) createProduct(c *call) ([]byte, *apiError) {
	name := c.form.str("name")
	if name == "" {
		return nil, missingParam("name")
	}
	md, err := c.form.createMetadata("metadata")
	if err != nil {
		return nil, err
	}
	active, set, err := c.form.bool("active")
	if err != nil {
		return nil, err
	}
	if !set {
		active = true
	}
	for _, unsupported := range []string{"default_price_data", "tax_code"} {
		if c.form.hasPrefix(unsupported) {
			return nil, invalidRequest(unsupported, "The emulator does not support %s.", unsupported)
		}
	}
	now := e.lock()
	defer e.mu.Unlock()
	id := c.form.str("id")
	if id == "" {
		id = newID("prod_", 14)
	} else if _, exists := e.products[id]; exists {
		return nil, invalidRequestCode("resource_already_exists", "id", "Product already exists.")
	}
	p := &product{
		ID:          id,
		Object:      "product",
		Active:      active,
		Created:     now.Unix(),
		Description: nullable(c.form.str("description")),
		Images:      []string{},
		Metadata:    md,
		Name:        name,
		Type:        "service",
		Updated:     now.Unix(),
		URL:         nullable(c.form.str("url")),
	}
	e.products[p.ID] = p
	e.emitLocked("product.created", p, c.eventRequest(), nil, nil)
	return e.render(p, c.expand())
}

func (e *Emulator) getProduct(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "product", func() map[string]*product { return e.products })
}

func (e *Emulator) updateProduct(c *call) ([]byte, *apiError) {
	active, activeSet, err := c.form.bool("active")
	if err != nil {
		return nil, err
	}
	if c.form.has("name") && c.form.str("name") == "" {
		return nil, invalidRequestCode("parameter_invalid_empty", "name", "You passed an empty string for 'name'. We assume empty values are an attempt to unset a parameter; however 'name' cannot be unset.")
	}
	now := e.lock()
	defer e.mu.Unlock()
	id := c.r.PathValue("id")
	p, ok := e.products[id]
	if !ok {
		return nil, noSuch("product", id, "id")
	}
	md, err := c.form.updateMetadata(p.Metadata)
	if err != nil {
		return nil, err
	}
	if dp := c.form.str("default_price"); dp != "" {
		pr, ok := e.prices[dp]
		if !ok {
			return nil, noSuch("price", dp, "default_price")
		}
		if pr.Product != p.ID {
			return nil, invalidRequest("default_price", "The price %s does not belong to product %s.", dp, p.ID)
		}
		p.DefaultPrice = &pr.ID
	}
	prev := map[string]any{}
	if c.form.has("name") && c.form.str("name") != p.Name {
		prev["name"] = p.Name
		p.Name = c.form.str("name")
	}
	if c.form.has("description") {
		prev["description"] = p.Description
		p.Description = nullable(c.form.str("description"))
	}
	if activeSet && active != p.Active {
		prev["active"] = p.Active
		p.Active = active
	}
	if c.form.has("url") {
		p.URL = nullable(c.form.str("url"))
	}
	p.Metadata = md
	p.Updated = now.Unix()
	e.emitLocked("product.updated", p, c.eventRequest(), prev, nil)
	return e.render(p, c.expand())
}

func (e *Emulator) createPrice(c *call) ([]byte, *apiError) {
	cur := c.form.str("currency")
	if cur == "" {
		return nil, missingParam("currency")
	}
	if !currencyRE.MatchString(cur) {
		return nil, invalidRequest("currency", "Invalid currency: %s. Stripe currencies are three-letter ISO codes in lowercase.", cur)
	}
	for _, unsupported := range []string{"recurring", "product_data", "tiers", "transform_quantity", "custom_unit_amount", "currency_options", "unit_amount_decimal"} {
		if c.form.hasPrefix(unsupported) {
			return nil, invalidRequest(unsupported, "The emulator supports one-time prices with unit_amount only; %s is not supported.", unsupported)
		}
	}
	amount, set, err := c.form.int64("unit_amount")
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, missingParam("unit_amount")
	}
	if amount < 0 {
		return nil, invalidRequest("unit_amount", "This value must be greater than or equal to 0.")
	}
	prodID := c.form.str("product")
	if prodID == "" {
		return nil, missingParam("product")
	}
	md, err := c.form.createMetadata("metadata")
	if err != nil {
		return nil, err
	}
	active, activeSet, err := c.form.bool("active")
	if err != nil {
		return nil, err
	}
	if !activeSet {
		active = true
	}
	now := e.lock()
	defer e.mu.Unlock()
	if _, ok := e.products[prodID]; !ok {
		return nil, noSuch("product", prodID, "product")
	}
	pr := &price{
		ID:                newID("price_", 24),
		Object:            "price",
		Active:            active,
		BillingScheme:     "per_unit",
		Created:           now.Unix(),
		Currency:          cur,
		LookupKey:         nullable(c.form.str("lookup_key")),
		Metadata:          md,
		Nickname:          nullable(c.form.str("nickname")),
		Product:           prodID,
		TaxBehavior:       "unspecified",
		Type:              "one_time",
		UnitAmount:        amount,
		UnitAmountDecimal: itoa(amount),
	}
	if tb := c.form.str("tax_behavior"); tb != "" {
		pr.TaxBehavior = tb
	}
	e.prices[pr.ID] = pr
	e.emitLocked("price.created", pr, c.eventRequest(), nil, nil)
	return e.render(pr, c.expand())
}

func (e *Emulator) getPrice(c *call) ([]byte, *apiError) {
	return retrieve(e, c, "price", func() map[string]*price { return e.prices })
}

func (e *Emulator) updatePrice(c *call) ([]byte, *apiError) {
	for _, immutable := range []string{"unit_amount", "currency", "product", "recurring", "billing_scheme"} {
		if c.form.hasPrefix(immutable) {
			return nil, unknownParam(immutable)
		}
	}
	active, activeSet, err := c.form.bool("active")
	if err != nil {
		return nil, err
	}
	e.lock()
	defer e.mu.Unlock()
	id := c.r.PathValue("id")
	pr, ok := e.prices[id]
	if !ok {
		return nil, noSuch("price", id, "id")
	}
	md, err := c.form.updateMetadata(pr.Metadata)
	if err != nil {
		return nil, err
	}
	prev := map[string]any{}
	if activeSet && active != pr.Active {
		prev["active"] = pr.Active
		pr.Active = active
	}
	if c.form.has("nickname") {
		pr.Nickname = nullable(c.form.str("nickname"))
	}
	if c.form.has("lookup_key") {
		pr.LookupKey = nullable(c.form.str("lookup_key"))
	}
	pr.Metadata = md
	e.emitLocked("price.updated", pr, c.eventRequest(), prev, nil)
	return e.render(pr, c.expand())
}

// retrieve answers GET /v1/<objects>/{id}: the object with that id in the
// map objects returns (read under the lock), or Stripe's resource_missing.
func retrieve[T any](e *Emulator, c *call, kind string, objects func() map[string]*T) ([]byte, *apiError) {
	e.lock()
	defer e.mu.Unlock()
	id := c.r.PathValue("id")
	obj, ok := objects()[id]
	if !ok {
		return nil, noSuch(kind, id, "id")
	}
	return e.render(obj, c.expand())
}
