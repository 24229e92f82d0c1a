package index

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/casfs/casfs/errdefs"
	badger "github.com/dgraph-io/badger/v4"
)

// schemaVersion is the layout of keys and records this package writes.
// Bump it, and teach checkSchema to migrate, when that layout changes.
const schemaVersion = 1

// schemaKey holds the version as decimal text. Table keys all contain a
// '/', so it cannot collide with a record.
var schemaKey = []byte("schema")

// checkSchema writes the version into a new database and refuses one that
// a newer casfs wrote, rather than misreading its records.
func (db *DB) checkSchema() error {
	run := db.bdb.Update
	if db.readOnly {
		run = db.bdb.View // a new database gets its version once writable
	}
	return run(func(txn *badger.Txn) error {
		item, err := txn.Get(schemaKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			if db.readOnly {
				return nil
			}
			return txn.Set(schemaKey, []byte(strconv.Itoa(schemaVersion)))
		}
		if err != nil {
			return fmt.Errorf("open index %s: read schema version: %w", db.dir, err)
		}
		raw, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("open index %s: read schema version: %w", db.dir, err)
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("open index %s: unreadable schema version %q: %w",
				db.dir, raw, errdefs.ErrFailedPrecondition)
		}
		if v > schemaVersion {
			return fmt.Errorf("open index %s: schema version %d is newer than this casfs knows (%d): upgrade casfs: %w",
				db.dir, v, schemaVersion, errdefs.ErrFailedPrecondition)
		}
		if v != schemaVersion {
			return fmt.Errorf("open index %s: unknown schema version %d (this casfs knows %d): %w",
				db.dir, v, schemaVersion, errdefs.ErrFailedPrecondition)
		}
		return nil
	})
}
