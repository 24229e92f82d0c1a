package index

import (
	"context"
	"fmt"

	"github.com/casfs/casfs/errdefs"
	badger "github.com/dgraph-io/badger/v4"
)

// Tx is one badger transaction across tables, handed to the fn of
// DB.Update or DB.View. Reach a table through TxTable. A Tx is valid only
// while that fn runs and only on its goroutine.
type Tx struct {
	ctx      context.Context
	db       *DB
	txn      *badger.Txn
	writable bool
	done     bool
}

// Update runs fn in one atomic read-write transaction: either everything
// fn wrote is committed (and synced) or, when fn returns an error, nothing
// is, and that error is returned as it is. When a concurrent commit
// touched something fn read, fn runs again from scratch, so it must have
// no effects outside the transaction until Update returns nil.
//
// badger bounds one transaction's size: with these options about 3,000
// puts of blob-sized records or 13,000 deletes. A larger one fails ("Txn
// is too big") and writes nothing; split big sweeps into several.
func (db *DB) Update(ctx context.Context, fn func(tx *Tx) error) error {
	return db.update(ctx, func(txn *badger.Txn) error {
		tx := &Tx{ctx: ctx, db: db, txn: txn, writable: true}
		defer func() { tx.done = true }()
		return fn(tx)
	})
}

// View runs fn in a read-only transaction: every read sees one consistent
// snapshot of all tables (what garbage collection marks from).
func (db *DB) View(ctx context.Context, fn func(tx *Tx) error) error {
	return db.view(ctx, func(txn *badger.Txn) error {
		tx := &Tx{ctx: ctx, db: db, txn: txn}
		defer func() { tx.done = true }()
		return fn(tx)
	})
}

// TxView is a Table seen through a transaction.
type TxView[T any] struct {
	tx *Tx
	t  Table[T]
}

// TxTable gives typed access to table t inside tx.
func TxTable[T any](tx *Tx, t Table[T]) TxView[T] { return TxView[T]{tx: tx, t: t} }

// usable refuses a view whose transaction has ended, or whose table belongs
// to another database, instead of letting badger panic.
func (v TxView[T]) usable(write bool) error {
	switch {
	case v.tx == nil || v.tx.txn == nil:
		return fmt.Errorf("%s: no transaction: %w", v.t.kind, errdefs.ErrFailedPrecondition)
	case v.tx.done:
		return fmt.Errorf("%s: transaction already ended: %w", v.t.kind, errdefs.ErrFailedPrecondition)
	case v.t.db != v.tx.db:
		return fmt.Errorf("%s table belongs to another database than the transaction: %w",
			v.t.kind, errdefs.ErrInvalidArgument)
	case write && !v.tx.writable:
		return fmt.Errorf("%s: write in a read-only transaction: %w", v.t.kind, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Get returns errdefs.ErrNotFound when key is absent. It sees the
// transaction's own earlier writes.
func (v TxView[T]) Get(key string) (T, error) {
	if err := v.usable(false); err != nil {
		var zero T
		return zero, err
	}
	return v.t.get(v.tx.txn, key)
}

// Put creates or replaces.
func (v TxView[T]) Put(key string, val T) error {
	if err := v.usable(true); err != nil {
		return err
	}
	return v.t.put(v.tx.txn, key, val)
}

// Create fails with errdefs.ErrExists when key is present.
func (v TxView[T]) Create(key string, val T) error {
	if err := v.usable(true); err != nil {
		return err
	}
	return v.t.create(v.tx.txn, key, val)
}

// Delete returns errdefs.ErrNotFound when key is absent.
func (v TxView[T]) Delete(key string) error {
	if err := v.usable(true); err != nil {
		return err
	}
	return v.t.delete(v.tx.txn, key)
}

// List walks records under prefix in key order, as Table.List does. It
// sees the transaction's writes made before List began; fn may write
// (for example delete the record it is given).
func (v TxView[T]) List(prefix string, fn func(key string, val T) error) error {
	if err := v.usable(false); err != nil {
		return err
	}
	return v.t.list(v.tx.ctx, v.tx.txn, prefix, fn)
}

// Count returns how many records the table holds in this transaction.
func (v TxView[T]) Count() (int, error) {
	if err := v.usable(false); err != nil {
		return 0, err
	}
	return v.t.count(v.tx.ctx, v.tx.txn)
}
