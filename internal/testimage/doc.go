// Package testimage builds OCI and Docker test images in memory, pushes them
// to a registry over the distribution API with plain net/http, and writes
// OCI image layouts. It uses no casfs code, so that tests of casfs compare
// casfs against an independent producer.
//
// Everything it builds is deterministic: entries keep a fixed order, times
// default to defaultModTime, and compression runs with fixed settings, so
// the same spec always yields the same digests.
package testimage
