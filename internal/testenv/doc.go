// Package testenv holds what casfs tests need from the machine: checks for
// prerequisites (commands, root, FUSE) that skip locally but fail under CI,
// free loopback ports, and a real OCI registry (Debian's docker-registry,
// distribution v2.8) started per test with optional TLS, basic auth, client
// certificates and pull-through proxying.
package testenv
