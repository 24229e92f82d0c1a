package api

// gcRoutes carry leases and garbage collection (store.Garbage).
func (srv *Server) gcRoutes() []route { return nil }
