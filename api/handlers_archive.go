package api

// archiveRoutes carry image export and import (store.Archives).
func (srv *Server) archiveRoutes() []route { return nil }
