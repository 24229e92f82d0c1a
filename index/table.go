package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/casfs/casfs/errdefs"
	badger "github.com/dgraph-io/badger/v4"
)

// Table is one typed collection of JSON records under a key prefix. The
// zero Table belongs to no database and fails every call.
type Table[T any] struct {
	db     *DB
	prefix string // "blob/", ...: every record key is prefix+key
	kind   string // "blob", ...: names records in errors
}

// Entry is one key and record, for PutMany.
type Entry[T any] struct {
	Key   string
	Value T
}

// maxKeyLen keeps prefix+key under badger's key size limit (65000 bytes).
const maxKeyLen = 60000

// dbKey validates key and returns the badger key for it.
func (t Table[T]) dbKey(key string) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("%s: empty key: %w", t.kind, errdefs.ErrInvalidArgument)
	}
	if len(key) > maxKeyLen {
		return nil, fmt.Errorf("%s key of %d bytes is too long (max %d): %w",
			t.kind, len(key), maxKeyLen, errdefs.ErrInvalidArgument)
	}
	return append([]byte(t.prefix), key...), nil
}

// name is how errors show a record: "blob sha256:...". Keys with control
// characters are quoted so messages stay on one line.
func (t Table[T]) name(key string) string {
	q := strconv.Quote(key)
	if q[1:len(q)-1] != key {
		return t.kind + " " + q
	}
	return t.kind + " " + key
}

func (t Table[T]) notFound(key string) error {
	return fmt.Errorf("%s: %w", t.name(key), errdefs.ErrNotFound)
}

// Get returns errdefs.ErrNotFound when key is absent.
func (t Table[T]) Get(ctx context.Context, key string) (T, error) {
	var v T
	err := t.view(ctx, func(txn *badger.Txn) error {
		var err error
		v, err = t.get(txn, key)
		return err
	})
	return v, err
}

// Put creates or replaces.
func (t Table[T]) Put(ctx context.Context, key string, v T) error {
	return t.update(ctx, func(txn *badger.Txn) error { return t.put(txn, key, v) })
}

// Create fails with errdefs.ErrExists when key is present.
func (t Table[T]) Create(ctx context.Context, key string, v T) error {
	return t.update(ctx, func(txn *badger.Txn) error { return t.create(txn, key, v) })
}

// Update reads the record, calls fn on it and writes it back, in one
// transaction; ErrNotFound when absent. If fn returns an error nothing is
// written and that error is returned as it is. fn runs again on a fresh
// copy when a concurrent writer changed the record first, so it must do
// nothing but change *T.
func (t Table[T]) Update(ctx context.Context, key string, fn func(*T) error) (T, error) {
	var out T
	err := t.update(ctx, func(txn *badger.Txn) error {
		v, err := t.get(txn, key)
		if err != nil {
			return err
		}
		if err := fn(&v); err != nil {
			return err
		}
		out = v
		return t.put(txn, key, v)
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// Delete returns errdefs.ErrNotFound when key is absent.
func (t Table[T]) Delete(ctx context.Context, key string) error {
	return t.update(ctx, func(txn *badger.Txn) error { return t.delete(txn, key) })
}

// List calls fn for each record whose key starts with prefix, in key
// (byte) order, from one consistent snapshot. When fn returns an error the
// walk stops and List returns that error as it is. fn may call other
// methods of the database.
func (t Table[T]) List(ctx context.Context, prefix string, fn func(key string, v T) error) error {
	return t.view(ctx, func(txn *badger.Txn) error { return t.list(ctx, txn, prefix, fn) })
}

// Count returns how many records the table holds, reading keys only.
func (t Table[T]) Count(ctx context.Context) (int, error) {
	n := 0
	err := t.view(ctx, func(txn *badger.Txn) error {
		var err error
		n, err = t.count(ctx, txn)
		return err
	})
	return n, err
}

// PutMany creates or replaces many records at once, for bulk imports. It
// checks and encodes every entry before writing any, then writes in large
// batches; it is not atomic: if writing fails part-way, some entries may
// be stored. A key given twice keeps its last value.
func (t Table[T]) PutMany(ctx context.Context, entries []Entry[T]) error {
	keys := make([][]byte, len(entries))
	vals := make([][]byte, len(entries))
	for i, e := range entries {
		k, err := t.dbKey(e.Key)
		if err != nil {
			return err
		}
		v, err := json.Marshal(e.Value)
		if err != nil {
			return fmt.Errorf("encode %s: %w", t.name(e.Key), err)
		}
		keys[i], vals[i] = k, v
	}
	if t.db == nil {
		return t.noDB()
	}
	done, err := t.db.enterWrite()
	if err != nil {
		return err
	}
	defer done()
	wb := t.db.bdb.NewWriteBatch()
	defer wb.Cancel()
	for i := range keys {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := wb.Set(keys[i], vals[i]); err != nil {
			return fmt.Errorf("put %d %s records: %w", len(entries), t.kind, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("put %d %s records: %w", len(entries), t.kind, err)
	}
	return nil
}

func (t Table[T]) noDB() error {
	return fmt.Errorf("%s table of no database: %w", t.kind, errdefs.ErrFailedPrecondition)
}

func (t Table[T]) view(ctx context.Context, fn func(*badger.Txn) error) error {
	if t.db == nil {
		return t.noDB()
	}
	return t.db.view(ctx, fn)
}

func (t Table[T]) update(ctx context.Context, fn func(*badger.Txn) error) error {
	if t.db == nil {
		return t.noDB()
	}
	return t.db.update(ctx, fn)
}

// The transaction-level operations below are shared by Table and TxView.

func (t Table[T]) get(txn *badger.Txn, key string) (T, error) {
	var v T
	k, err := t.dbKey(key)
	if err != nil {
		return v, err
	}
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return v, t.notFound(key)
	}
	if err != nil {
		return v, fmt.Errorf("read %s: %w", t.name(key), err)
	}
	if err := t.decode(item, key, &v); err != nil {
		return v, err
	}
	return v, nil
}

func (t Table[T]) decode(item *badger.Item, key string, v *T) error {
	err := item.Value(func(raw []byte) error { return json.Unmarshal(raw, v) })
	if err != nil {
		return fmt.Errorf("decode %s: %w", t.name(key), err)
	}
	return nil
}

func (t Table[T]) put(txn *badger.Txn, key string, v T) error {
	k, err := t.dbKey(key)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", t.name(key), err)
	}
	if err := txn.Set(k, raw); err != nil {
		return fmt.Errorf("write %s: %w", t.name(key), err)
	}
	return nil
}

func (t Table[T]) create(txn *badger.Txn, key string, v T) error {
	k, err := t.dbKey(key)
	if err != nil {
		return err
	}
	_, err = txn.Get(k)
	if err == nil {
		return fmt.Errorf("%s: %w", t.name(key), errdefs.ErrExists)
	}
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("read %s: %w", t.name(key), err)
	}
	return t.put(txn, key, v)
}

func (t Table[T]) delete(txn *badger.Txn, key string) error {
	k, err := t.dbKey(key)
	if err != nil {
		return err
	}
	if _, err := txn.Get(k); errors.Is(err, badger.ErrKeyNotFound) {
		return t.notFound(key)
	} else if err != nil {
		return fmt.Errorf("read %s: %w", t.name(key), err)
	}
	if err := txn.Delete(k); err != nil {
		return fmt.Errorf("delete %s: %w", t.name(key), err)
	}
	return nil
}

func (t Table[T]) count(ctx context.Context, txn *badger.Txn) (int, error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(t.prefix)
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}
