package api

// snapshotRoutes carry snapshots, image mounts and checks (store.Snapshots).
func (srv *Server) snapshotRoutes() []route { return nil }
