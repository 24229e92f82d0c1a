package index

import "context"

type unsyncedKey struct{}

// Unsynced marks the index writes made with ctx as records of derived or
// short-lived state (snapshot records, lease entries): their commits are
// not synced to disk. A process kill loses none of them (the log sits in
// the page cache); a power loss can lose the last ones, and since the log
// is written in order, any later synced commit makes them durable too.
// Records that others act on (blobs, images) stay synced.
func Unsynced(ctx context.Context) context.Context {
	return context.WithValue(ctx, unsyncedKey{}, true)
}

func unsynced(ctx context.Context) bool {
	v, _ := ctx.Value(unsyncedKey{}).(bool)
	return v
}

// Synced undoes Unsynced for the writes made with ctx: a record that
// others act on, written at the end of an operation whose earlier records
// were unsynced, makes them all durable at once.
func Synced(ctx context.Context) context.Context {
	return context.WithValue(ctx, unsyncedKey{}, false)
}
