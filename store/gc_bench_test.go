package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/casfs/casfs/index"
)

// BenchmarkCollect100k collects a store of 100,000 blobs of which half are
// garbage: 25 images of 2,000 layers each keep the other half. Run it with
// -benchtime 1x; it reports the collection's seconds and the process's peak
// RSS (which includes building the store).
func BenchmarkCollect100k(b *testing.B) {
	const images, perImage, garbage = 25, 2000, 50000
	for range b.N {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		db, _ := s.Index()
		dir := filepath.Join(s.root, "blobs", "sha256")
		os.MkdirAll(dir, 0o755)
		var recs []index.Entry[index.Blob]
		put := func(data []byte, mt string) ocispec.Descriptor {
			d := digest.FromBytes(data)
			if err := os.WriteFile(filepath.Join(dir, d.Encoded()), data, 0o444); err != nil {
				b.Fatal(err)
			}
			recs = append(recs, index.Entry[index.Blob]{Key: d.String(), Value: index.Blob{Digest: d, Size: int64(len(data)), MediaType: mt, CreatedAt: time.Now(), UpdatedAt: time.Now()}})
			return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
		}
		n := 0
		for i := range images {
			cfg := put([]byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"},"n":%d}`, i)), ocispec.MediaTypeImageConfig)
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg}
			m.SchemaVersion = 2
			for range perImage - 2 {
				m.Layers = append(m.Layers, put([]byte(fmt.Sprintf("layer %d", n)), ocispec.MediaTypeImageLayerGzip))
				n++
			}
			raw, _ := json.Marshal(m)
			md := put(raw, ocispec.MediaTypeImageManifest)
			name := fmt.Sprintf("docker.io/lab/big:%d", i)
			if err := db.Images().Put(ctx, name, index.Image{Name: name, Target: md, CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
		}
		for i := range garbage {
			put([]byte(fmt.Sprintf("garbage %d", i)), ocispec.MediaTypeImageLayerGzip)
		}
		if err := db.Blobs().PutMany(ctx, recs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		rep, err := s.Collect(ctx, CollectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		secs := time.Since(start).Seconds()
		b.StopTimer()
		if len(rep.Blobs) != garbage {
			b.Fatalf("collected %d blobs, want %d", len(rep.Blobs), garbage)
		}
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		b.ReportMetric(secs, "s/collect")
		b.ReportMetric(float64(ru.Maxrss)/1024, "peakRSS-MiB")
		s.Close()
	}
}
