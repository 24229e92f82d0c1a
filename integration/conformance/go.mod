module github.com/casfs/casfs/integration/conformance

go 1.26.8

require (
	github.com/casfs/casfs v0.0.0
	github.com/opencontainers/image-spec v1.1.1
)

require (
	github.com/containerd/log v0.1.0 // indirect
	github.com/containerd/platforms v1.0.0-rc.5 // indirect
	github.com/containerd/stargz-snapshotter/estargz v0.19.1 // indirect
	github.com/goccy/go-yaml v1.18.0 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/opencontainers/distribution-spec/conformance v0.0.0-20260831232431-97274622c111 // indirect
	github.com/opencontainers/distribution-spec/specs-go v0.0.0-20240926185104-8376368dd8aa // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/sirupsen/logrus v1.9.3 // indirect
	github.com/vbatts/tar-split v0.12.3 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/casfs/casfs => ../..

tool github.com/opencontainers/distribution-spec/conformance
