package api

import (
	"net/http"

	"github.com/casfs/casfs/store"
)

// checkRoutes carry the whole-store check (store.Checker).
func (srv *Server) checkRoutes() []route {
	return []route{
		{http.MethodPost, "/v1/check", srv.check},
	}
}

// check runs a whole-store check (and repair); the body is
// store.StoreCheckOptions, the answer a store.StoreCheckReport.
func (srv *Server) check(w http.ResponseWriter, r *http.Request) error {
	var opts store.StoreCheckOptions
	if err := srv.decodeJSON(w, r, &opts); err != nil {
		return err
	}
	rep, err := srv.store.Check(r.Context(), opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
