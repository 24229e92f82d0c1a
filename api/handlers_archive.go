package api

import (
	"net/http"
	"strconv"

	"github.com/casfs/casfs/store"
)

// archiveRoutes carry image export and import (store.Archives).
func (srv *Server) archiveRoutes() []route {
	return []route{
		{http.MethodPost, "/v1/images/export", srv.exportImages},
		{http.MethodPost, "/v1/images/import", srv.importImages},
	}
}

// exportImages answers with the archive as a data stream: the options travel
// in a JSON body because they may carry registry credentials.
func (srv *Server) exportImages(w http.ResponseWriter, r *http.Request) error {
	var req ExportRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	dw := &dataWriter{w: w, contentType: "application/x-tar"}
	return dw.finish(srv.store.ExportImages(r.Context(), dw, req.Refs, req.Options))
}

// importImages reads the archive from the request body; options are query
// parameters (base-name, digests, no-unpack).
func (srv *Server) importImages(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := store.ImportOptions{BaseName: q.Get("base-name")}
	opts.Digests, _ = strconv.ParseBool(q.Get("digests"))
	opts.NoUnpack, _ = strconv.ParseBool(q.Get("no-unpack"))
	infos, err := srv.store.ImportImages(r.Context(), r.Body, opts)
	if err != nil {
		return err
	}
	if infos == nil {
		infos = []store.ImageInfo{}
	}
	writeJSON(w, http.StatusOK, infos)
	return nil
}
