package api

import (
	"context"
	"net/http"

	"github.com/casfs/casfs/store"
)

// The whole-store check (store.Checker).

var opCheck = jsonOp(route{method: http.MethodPost, pattern: "/v1/check", doc: "Check; body StoreCheckOptions -> StoreCheckReport"},
	func(ctx context.Context, s store.API, opts store.StoreCheckOptions) (store.StoreCheckReport, error) {
		return s.Check(ctx, opts)
	})

// Check asks the daemon to check (and with opts.Repair, repair) its store.
func (c *Client) Check(ctx context.Context, opts store.StoreCheckOptions) (store.StoreCheckReport, error) {
	return opCheck.call(ctx, c, opts)
}
