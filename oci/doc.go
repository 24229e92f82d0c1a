// Package oci is casfs's one vocabulary for OCI and Docker image documents:
// media types and what they are, the children of an index or manifest and a
// walk over them, and platform matching (github.com/containerd/platforms).
// Of casfs it imports only errdefs (the sentinel errors every part shares),
// so every other package can use it instead of keeping its own copy.
package oci
