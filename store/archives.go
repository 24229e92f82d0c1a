package store

// Archives is image export and import (ctr image export/import).
type Archives interface{}
