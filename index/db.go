package index

import (
	"context"
)

// DB is the badger database under <root>/meta.
// STUB: signatures are the contract; bodies are being written.
type DB struct{}

// Open opens or creates the database in dir. When another process holds
// it, the error wraps errdefs.ErrInUse and says so in one line.
func Open(dir string) (*DB, error) { panic("TODO") }
func (db *DB) Close() error        { panic("TODO") }

func (db *DB) Blobs() Table[Blob]         { panic("TODO") }
func (db *DB) Images() Table[Image]       { panic("TODO") }
func (db *DB) Snapshots() Table[Snapshot] { panic("TODO") }
func (db *DB) Leases() Table[Lease]       { panic("TODO") }

// Table is one typed collection of JSON records under a key prefix.
type Table[T any] struct{}

// Get returns errdefs.ErrNotFound when key is absent.
func (t Table[T]) Get(ctx context.Context, key string) (T, error) { panic("TODO") }

// Put creates or replaces.
func (t Table[T]) Put(ctx context.Context, key string, v T) error { panic("TODO") }

// Create fails with errdefs.ErrExists when key is present.
func (t Table[T]) Create(ctx context.Context, key string, v T) error { panic("TODO") }

// Update reads, calls fn, writes back, in one transaction; ErrNotFound when absent.
func (t Table[T]) Update(ctx context.Context, key string, fn func(*T) error) (T, error) {
	panic("TODO")
}

// Delete returns errdefs.ErrNotFound when key is absent.
func (t Table[T]) Delete(ctx context.Context, key string) error { panic("TODO") }

// List calls fn for each record whose key starts with prefix, in key order.
func (t Table[T]) List(ctx context.Context, prefix string, fn func(key string, v T) error) error {
	panic("TODO")
}
