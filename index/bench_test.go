package index

import (
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchBlobs makes n blob records shaped like real ones.
func benchBlobs(n int) []Entry[Blob] {
	now := time.Now()
	out := make([]Entry[Blob], n)
	for i := range out {
		d := digest.FromString(strconv.Itoa(i))
		out[i] = Entry[Blob]{Key: d.String(), Value: Blob{Digest: d, Size: int64(i) * 1000,
			MediaType: ocispec.MediaTypeImageLayerGzip, CreatedAt: now, UpdatedAt: now,
			Labels: map[string]string{"casfs.io/source": "registry.example/lab/x"}}}
	}
	return out
}

// BenchmarkPut is one synced Put per op; run with -benchtime=10000x for
// the 10k-record figure.
func BenchmarkPut(b *testing.B) {
	db := newDB(b)
	recs := benchBlobs(b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := db.Blobs().Put(ctx, recs[i].Key, recs[i].Value); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutMany10k writes 10k records per op through a write batch.
func BenchmarkPutMany10k(b *testing.B) {
	db := newDB(b)
	recs := benchBlobs(10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := db.Blobs().PutMany(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDB100k(b *testing.B) *DB {
	db := newDB(b)
	if err := db.Blobs().PutMany(ctx, benchBlobs(100000)); err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkList100k decodes every one of 100k blob records per op.
func BenchmarkList100k(b *testing.B) {
	db := benchDB100k(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		err := db.Blobs().List(ctx, "", func(string, Blob) error { n++; return nil })
		if err != nil || n != 100000 {
			b.Fatalf("listed %d, %v", n, err)
		}
	}
}

// BenchmarkCount100k counts 100k blob records (keys only) per op.
func BenchmarkCount100k(b *testing.B) {
	db := benchDB100k(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := db.Blobs().Count(ctx); err != nil || n != 100000 {
			b.Fatalf("counted %d, %v", n, err)
		}
	}
}

// BenchmarkOpen is the cost of opening (and closing) an existing store.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	db, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	db.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		db, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}
