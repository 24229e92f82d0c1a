// Package serve answers the pull side of the OCI distribution API (v1.1)
// from a casfs store, so that other nodes can list this one as a registry
// mirror. It is read only: push routes answer UNSUPPORTED.
//
// Names: a request for <name> with ?ns=<host> (what containerd and casfs
// send to a mirror) looks <name> up among the images pulled from <host>.
// Without ns, <name> is an image name with its registry host removed
// (localhost:5000/team/app:1 is served as team/app:1); when several
// registries hold the same path, the one pulled from most recently wins and
// the others stay reachable with ns.
//
// A blob or manifest is served only when an image of the requested
// repository reaches it: knowing a digest is not enough.
package serve
