// Package containerdcontent runs containerd's content-store test suite
// (core/content/testsuite) against casfs's blob store through a thin
// adapter. It is a module of its own so that containerd's dependencies
// stay out of casfs's go.mod.
package containerdcontent
