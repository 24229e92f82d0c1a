package store

// Snapshots is snapshots, image mounts and image checks (ctr snapshot, image mount/check).
type Snapshots interface{}
