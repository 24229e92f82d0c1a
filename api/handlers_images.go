package api

import (
	"context"
	"net/http"
)

func (srv *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := srv.store.ListImages(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imgs)
	return nil
}

// Image names carry slashes, colons and '@', so single-image routes take
// the name as a query parameter rather than as path segments.

func (srv *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	name, err := requireQuery(r, "name")
	if err != nil {
		return err
	}
	d, err := srv.store.GetImage(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (srv *Server) removeImage(w http.ResponseWriter, r *http.Request) error {
	name, err := requireQuery(r, "name")
	if err != nil {
		return err
	}
	if err := srv.store.RemoveImage(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (srv *Server) tagImage(w http.ResponseWriter, r *http.Request) error {
	var req TagRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := srv.store.TagImage(r.Context(), req.Source, req.Targets); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (srv *Server) convertImage(w http.ResponseWriter, r *http.Request) error {
	var req ConvertRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	info, err := srv.store.ConvertImage(r.Context(), req.Source, req.Target, req.Options)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (srv *Server) pull(w http.ResponseWriter, r *http.Request) error {
	return srv.streamPull(w, r, func(ctx context.Context, req PullRequest) (any, error) {
		return srv.store.Pull(ctx, req.Ref, req.Options)
	})
}

func (srv *Server) fetchContent(w http.ResponseWriter, r *http.Request) error {
	return srv.streamPull(w, r, func(ctx context.Context, req PullRequest) (any, error) {
		return srv.store.FetchContent(ctx, req.Ref, req.Options)
	})
}

// streamPull decodes a PullRequest and runs call with its progress going
// out as an NDJSON stream, then the result.
func (srv *Server) streamPull(w http.ResponseWriter, r *http.Request, call func(context.Context, PullRequest) (any, error)) error {
	var req PullRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ps := newProgressStream(w, cancel)
	req.Options.Progress = ps.Event
	result, err := call(ctx, req)
	return ps.finish(result, err)
}

func (srv *Server) push(w http.ResponseWriter, r *http.Request) error {
	var req PushRequest
	if err := srv.decodeJSON(w, r, &req); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ps := newProgressStream(w, cancel)
	req.Options.Progress = ps.Event
	err := srv.store.Push(ctx, req.Ref, req.Remote, req.Options)
	return ps.finish(struct{}{}, err)
}
