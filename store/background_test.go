package store

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseWaitsForBackgroundWork: Close cancels the store's background
// work and returns only once it has returned, with the database still
// open while it runs; work asked for after Close does not start.
func TestCloseWaitsForBackgroundWork(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var sawDB, finished atomic.Bool
	if !s.goBackground(func() {
		close(started)
		<-s.closing.Done()
		time.Sleep(50 * time.Millisecond) // work that takes a moment to stop
		_, err := s.Index()
		sawDB.Store(err == nil)
		finished.Store(true)
	}) {
		t.Fatal("background work refused before Close")
	}
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the background work did")
	}
	if !sawDB.Load() {
		t.Fatal("the background work found the database closed before Close waited for it")
	}
	if s.goBackground(func() { t.Error("background work started after Close") }) {
		t.Fatal("goBackground accepted work after Close")
	}
}
