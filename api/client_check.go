package api

import (
	"context"
	"net/http"

	"github.com/casfs/casfs/store"
)

// Check asks the daemon to check (and with opts.Repair, repair) its store.
func (c *Client) Check(ctx context.Context, opts store.StoreCheckOptions) (store.StoreCheckReport, error) {
	var rep store.StoreCheckReport
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/check", json: opts}, &rep)
	return rep, err
}
