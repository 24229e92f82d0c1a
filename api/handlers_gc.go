package api

import (
	"net/http"

	"github.com/casfs/casfs/store"
)

// gcRoutes carry leases and garbage collection (store.Garbage):
//
//	GET    /v1/leases                  -> []store.LeaseInfo
//	POST   /v1/leases                  store.LeaseOptions -> store.LeaseInfo (201)
//	DELETE /v1/leases/{id}             -> 204
//	POST   /v1/gc/collect              store.CollectOptions -> store.GCReport
//	POST   /v1/gc/images               store.ImagePruneOptions -> store.GCReport
//	DELETE /v1/gc/content/{digest}     forced blob removal -> 204
func (srv *Server) gcRoutes() []route {
	return []route{
		{http.MethodGet, "/v1/leases", srv.listLeases},
		{http.MethodPost, "/v1/leases", srv.createLease},
		{http.MethodDelete, "/v1/leases/{id}", srv.removeLease},
		{http.MethodPost, "/v1/gc/collect", srv.collect},
		{http.MethodPost, "/v1/gc/images", srv.pruneImages},
		{http.MethodDelete, "/v1/gc/content/{digest}", srv.forceRemoveContent},
	}
}

func (srv *Server) listLeases(w http.ResponseWriter, r *http.Request) error {
	ls, err := srv.store.ListLeases(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ls)
	return nil
}

func (srv *Server) createLease(w http.ResponseWriter, r *http.Request) error {
	var opts store.LeaseOptions
	if err := srv.decodeJSON(w, r, &opts); err != nil {
		return err
	}
	l, err := srv.store.CreateLease(r.Context(), opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, l)
	return nil
}

func (srv *Server) removeLease(w http.ResponseWriter, r *http.Request) error {
	if err := srv.store.RemoveLease(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (srv *Server) collect(w http.ResponseWriter, r *http.Request) error {
	var opts store.CollectOptions
	if err := srv.decodeJSON(w, r, &opts); err != nil {
		return err
	}
	rep, err := srv.store.Collect(r.Context(), opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (srv *Server) pruneImages(w http.ResponseWriter, r *http.Request) error {
	var opts store.ImagePruneOptions
	if err := srv.decodeJSON(w, r, &opts); err != nil {
		return err
	}
	rep, err := srv.store.PruneImages(r.Context(), opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (srv *Server) forceRemoveContent(w http.ResponseWriter, r *http.Request) error {
	if err := srv.store.ForceRemoveContent(r.Context(), pathDigest(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
