package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/casfs/casfs/errdefs"
	"github.com/casfs/casfs/store"
)

// routeTable is the whole API; doc.go documents it route by route.
// routeTable is every route: each part of the API lists its own.
func (srv *Server) routeTable() []route {
	var all []route
	for _, part := range [][]route{srv.contentRoutes(), srv.archiveRoutes(), srv.gcRoutes(), srv.snapshotRoutes(), srv.checkRoutes()} {
		all = append(all, part...)
	}
	return all
}

func (srv *Server) contentRoutes() []route {
	return []route{
		{http.MethodGet, "/v1/ping", srv.ping},
		{http.MethodGet, "/v1/resolve", srv.resolve},
		{http.MethodGet, "/v1/content", srv.listContent},
		{http.MethodGet, "/v1/content/{digest}", srv.contentInfo},
		{http.MethodDelete, "/v1/content/{digest}", srv.removeContent},
		{http.MethodGet, "/v1/content/{digest}/data", srv.readContent},
		{http.MethodPatch, "/v1/content/{digest}/labels", srv.labelContent},
		{http.MethodPost, "/v1/content/verify", srv.verifyContent},
		{http.MethodPost, "/v1/content/fetch", srv.fetchContent},
		{http.MethodGet, "/v1/ingests", srv.activeIngests},
		{http.MethodPut, "/v1/ingests/{ref...}", srv.ingest},
		{http.MethodGet, "/v1/export", srv.exportContent},
		{http.MethodPost, "/v1/import", srv.importContent},
		{http.MethodGet, "/v1/images", srv.listImages},
		{http.MethodGet, "/v1/images/by-name", srv.getImage},
		{http.MethodDelete, "/v1/images/by-name", srv.removeImage},
		{http.MethodPost, "/v1/images/pull", srv.pull},
		{http.MethodPost, "/v1/images/push", srv.push},
		{http.MethodPost, "/v1/images/tag", srv.tagImage},
		{http.MethodPost, "/v1/images/convert", srv.convertImage},
	}
}

func (srv *Server) ping(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"api": "v1"})
	return nil
}

// pathDigest passes the path's digest to the store unchecked, so that a bad
// one fails with the store's own message, as in embedded mode.
func pathDigest(r *http.Request) digest.Digest { return digest.Digest(r.PathValue("digest")) }

func (srv *Server) resolve(w http.ResponseWriter, r *http.Request) error {
	s, err := requireQuery(r, "digest")
	if err != nil {
		return err
	}
	d, err := srv.store.ResolveDigest(r.Context(), s)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ResolveResponse{Digest: d})
	return nil
}

func (srv *Server) listContent(w http.ResponseWriter, r *http.Request) error {
	infos, err := srv.store.ListContent(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, infos)
	return nil
}

func (srv *Server) contentInfo(w http.ResponseWriter, r *http.Request) error {
	info, err := srv.store.ContentInfo(r.Context(), pathDigest(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (srv *Server) removeContent(w http.ResponseWriter, r *http.Request) error {
	if err := srv.store.RemoveContent(r.Context(), pathDigest(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (srv *Server) readContent(w http.ResponseWriter, r *http.Request) error {
	dw := &dataWriter{w: w, contentType: "application/octet-stream"}
	return dw.finish(srv.store.ReadContent(r.Context(), pathDigest(r), dw))
}

func (srv *Server) labelContent(w http.ResponseWriter, r *http.Request) error {
	var req LabelsRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	info, err := srv.store.LabelContent(r.Context(), pathDigest(r), req.Set, req.Delete)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (srv *Server) verifyContent(w http.ResponseWriter, r *http.Request) error {
	var req VerifyRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	problems, err := srv.store.VerifyContent(r.Context(), req.Digests)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, VerifyResponse{Problems: problems})
	return nil
}

func (srv *Server) activeIngests(w http.ResponseWriter, r *http.Request) error {
	sts, err := srv.store.ActiveIngests(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sts)
	return nil
}

// ingest streams the request body into the store; nothing is buffered here.
func (srv *Server) ingest(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := store.IngestOptions{Expected: digest.Digest(q.Get("expected"))}
	if s := q.Get("size"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("query parameter size=%q is not a byte count: %w", s, errdefs.ErrInvalidArgument)
		}
		opts.Size = n
	}
	var resp IngestResponse
	opts.Resumed = func(off int64) { resp.ResumedAt = &off }
	opts.Restarted = func(stored, kept int64) { resp.Restarted = &IngestRestart{Stored: stored, Kept: kept} }
	info, err := srv.store.Ingest(r.Context(), r.PathValue("ref"), r.Body, opts)
	if err != nil {
		return err
	}
	resp.Info = info
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

func (srv *Server) exportContent(w http.ResponseWriter, r *http.Request) error {
	var ds []digest.Digest
	for _, s := range r.URL.Query()["digest"] {
		ds = append(ds, digest.Digest(s))
	}
	dw := &dataWriter{w: w, contentType: "application/x-tar"}
	return dw.finish(srv.store.ExportContent(r.Context(), dw, ds))
}

func (srv *Server) importContent(w http.ResponseWriter, r *http.Request) error {
	infos, err := srv.store.ImportContent(r.Context(), r.Body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, infos)
	return nil
}
