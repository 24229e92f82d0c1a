package api

import (
	"net/http"

	"github.com/casfs/casfs/store"
)

// MountRequest is the body of POST /v1/images/mount.
type MountRequest struct {
	Ref     string             `json:"ref"`
	Target  string             `json:"target"` // absolute, as the daemon sees it
	Options store.MountOptions `json:"options"`
}

// UnmountRequest is the body of POST /v1/images/unmount.
type UnmountRequest struct {
	Target string `json:"target"`
	Remove bool   `json:"remove,omitempty"`
}

// CheckRequest is the body of POST /v1/images/check.
type CheckRequest struct {
	Ref     string             `json:"ref"`
	Options store.CheckOptions `json:"options"`
}

// snapshotRoutes carry snapshots, image mounts and checks (store.Snapshots).
// Snapshot keys go in the query, like image names, since they hold colons.
func (srv *Server) snapshotRoutes() []route {
	return []route{
		{http.MethodGet, "/v1/snapshots", srv.listSnapshots},
		{http.MethodDelete, "/v1/snapshots/by-key", srv.removeSnapshot},
		{http.MethodGet, "/v1/snapshots/usage", srv.snapshotUsage},
		{http.MethodGet, "/v1/images/mounts", srv.listImageMounts},
		{http.MethodPost, "/v1/images/mount", srv.mountImage},
		{http.MethodPost, "/v1/images/unmount", srv.unmountImage},
		{http.MethodPost, "/v1/images/check", srv.checkImage},
	}
}

func (srv *Server) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	out, err := srv.store.ListSnapshots(r.Context())
	if err != nil {
		return err
	}
	if out == nil {
		out = []store.SnapshotInfo{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (srv *Server) removeSnapshot(w http.ResponseWriter, r *http.Request) error {
	key, err := requireQuery(r, "key")
	if err != nil {
		return err
	}
	if err := srv.store.RemoveSnapshot(r.Context(), key); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// snapshotUsage answers for one key, or for all when key is absent or empty.
func (srv *Server) snapshotUsage(w http.ResponseWriter, r *http.Request) error {
	out, err := srv.store.SnapshotUsage(r.Context(), r.URL.Query().Get("key"))
	if err != nil {
		return err
	}
	if out == nil {
		out = []store.SnapshotUsage{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (srv *Server) listImageMounts(w http.ResponseWriter, r *http.Request) error {
	out, err := srv.store.ListImageMounts(r.Context())
	if err != nil {
		return err
	}
	if out == nil {
		out = []store.ImageMount{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (srv *Server) mountImage(w http.ResponseWriter, r *http.Request) error {
	var req MountRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	m, err := srv.store.MountImage(r.Context(), req.Ref, req.Target, req.Options)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (srv *Server) unmountImage(w http.ResponseWriter, r *http.Request) error {
	var req UnmountRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	m, err := srv.store.UnmountImage(r.Context(), req.Target, req.Remove)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (srv *Server) checkImage(w http.ResponseWriter, r *http.Request) error {
	var req CheckRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	rep, err := srv.store.CheckImage(r.Context(), req.Ref, req.Options)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
