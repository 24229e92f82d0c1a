// Package api carries store.API over a unix socket, so that every casfs
// command works the same whether it opens the store itself (embedded mode)
// or another process owns it.
//
// The process that holds the store (a mount daemon, or a command that
// opened it; see daemon.Open) runs a Server on <root>/casfs.sock (mode
// 0600; a lock file casfs.sock.lock beside it keeps two servers from racing
// for the path). A command calls Dial: when that fails with an error
// wrapping errdefs.ErrNotFound nobody serves the root and the command opens
// the store itself; otherwise the returned Client implements store.API and
// every error it returns reads exactly like the embedded store's, with the
// same errdefs classes for errors.Is.
//
// # Protocol
//
// HTTP/1.1 with JSON bodies. Only root and the daemon's own user may connect
// (SO_PEERCRED is checked on every connection, in addition to the mode).
// Try it with curl:
//
//	curl --unix-socket /var/lib/casfs/casfs.sock http://casfs/v1/content
//	curl --unix-socket /var/lib/casfs/casfs.sock -T blob.bin http://casfs/v1/ingests/my-ref
//	curl --unix-socket /var/lib/casfs/casfs.sock 'http://casfs/v1/images/by-name?name=docker.io/library/nginx:alpine'
//	curl --unix-socket /var/lib/casfs/casfs.sock -d '{"ref":"docker.io/library/nginx:alpine"}' http://casfs/v1/images/pull
//
// # Routes
//
// Each route is one entry of the operation table (op.go) that both Server
// and Client use; this list is generated from it by go generate.
//
//	POST   /v1/images/export                ExportImages; body {"refs":[R],"options":ExportOptions} -> application/x-tar
//	POST   /v1/images/import?base-name=N&digests=true&no-unpack=true
//	                                        ImportImages; body is the archive -> [ImageInfo]
//	POST   /v1/check                        Check; body StoreCheckOptions -> StoreCheckReport
//	GET    /v1/ping                         {"api":"v1"}
//	GET    /v1/resolve?digest=S             ResolveDigest(S) -> {"digest":D}
//	GET    /v1/content                      ListContent -> [ContentInfo]
//	GET    /v1/content/{digest}             ContentInfo -> ContentInfo
//	DELETE /v1/content/{digest}             RemoveContent -> 204
//	GET    /v1/content/{digest}/data        ReadContent -> the blob's bytes
//	PATCH  /v1/content/{digest}/labels      LabelContent; body {"set":{k:v},"delete":[k]} -> ContentInfo
//	POST   /v1/content/verify               VerifyContent; body {"digests":[D]} (empty: all) -> {"problems":[Problem]}
//	POST   /v1/content/fetch                FetchContent; body {"ref":R,"options":PullOptions} -> progress stream, result Descriptor
//	GET    /v1/ingests                      ActiveIngests -> [IngestStatus]
//	PUT    /v1/ingests/{ref}?expected=D&size=N
//	                                        Ingest; body is the data -> 201 {"info":ContentInfo,"resumedAt":N}
//	GET    /v1/export?digest=D&digest=...   ExportContent (no digest: all) -> application/x-tar
//	POST   /v1/import                       ImportContent; body is the tar -> [ContentInfo]
//	GET    /v1/leases                       ListLeases -> [LeaseInfo]
//	POST   /v1/leases                       CreateLease; body LeaseOptions -> 201 LeaseInfo
//	DELETE /v1/leases/{id}                  RemoveLease -> 204
//	POST   /v1/gc/collect                   Collect; body CollectOptions -> GCReport
//	POST   /v1/gc/images                    PruneImages; body ImagePruneOptions -> GCReport
//	DELETE /v1/gc/content/{digest}          ForceRemoveContent -> 204
//	GET    /v1/images                       ListImages -> [ImageInfo]
//	GET    /v1/images/by-name?name=R[&platform=P]
//	                                        GetImage -> ImageDetail
//	DELETE /v1/images/by-name?name=R        RemoveImage -> 204
//	POST   /v1/images/pull                  Pull; body {"ref":R,"options":PullOptions} -> progress stream, result ImageInfo
//	POST   /v1/images/push                  Push; body {"ref":R,"remote":R2,"options":PushOptions} -> progress stream, result {}
//	POST   /v1/images/tag                   TagImage; body {"source":R,"targets":[R]} -> 204
//	POST   /v1/images/labels                LabelImage; body {"name":R,"set":{k:v},"delete":[k]} -> ImageInfo
//	POST   /v1/images/convert               ConvertImage; body {"source":R,"target":R,"options":ConvertOptions} -> ImageInfo
//	GET    /v1/snapshots                    ListSnapshots -> [SnapshotInfo]
//	DELETE /v1/snapshots/by-key?key=K       RemoveSnapshot -> 204
//	GET    /v1/snapshots/usage?key=K        SnapshotUsage (no key: all) -> [SnapshotUsage]
//	GET    /v1/images/mounts                ListImageMounts -> [ImageMount]
//	POST   /v1/images/mount                 MountImage; body {"ref":R,"target":T,"options":MountOptions} -> ImageMount
//	POST   /v1/images/unmount               UnmountImage; body {"target":T,"remove":B} -> ImageMount
//	POST   /v1/images/check                 CheckImage; body {"ref":R,"options":CheckOptions} -> CheckReport
//
// Image names carry slashes, colons and '@', so they travel as the query
// parameter name (URL-encoded), never as path segments. Ingest refs are one
// path segment: the Client escapes '/', '.' and '..' as %2F and %2E.
// Digests in paths are passed to the store as they are, so a malformed one
// fails with the store's own message.
//
// # Streams
//
// Ingest and import bodies are streamed into the store as they arrive
// (chunked; the Client sends "Expect: 100-continue" so that an ingest the
// store refuses at once, such as a locked ref, uploads nothing). An ingest
// that resumes a partial one reports the offset in resumedAt; the sender
// still sends the whole stream and the store skips what it has (or, with no
// expected digest, compares it; when it differs the response carries
// restarted {"stored":N,"kept":K} instead).
//
// Blob data and exports stream out with status 200 sent on the first byte.
// A failure before that is an ordinary error response; a failure after it
// ends the body and puts the error JSON in the HTTP trailer Casfs-Error.
//
// Pull, push and fetch answer application/x-ndjson: any number of
// {"event":ProgressEvent} lines, then one {"result":...} line or one
// {"error":...,"kind":...} line. A failure before the first event is an
// ordinary error response. Each change of a blob's status is a line; its
// counts in between come at most every 100 ms.
//
// # Errors
//
// Every failure is a JSON body {"error":"<message>","kind":"<kind>"} (plus
// "kinds" when the error belongs to several classes), with a status that
// matches the kind:
//
//	not_found 404, exists 409, locked 423, in_use 409, invalid_argument 400,
//	failed_precondition 412, digest_mismatch 422, unauthorized 401,
//	not_implemented 501, unavailable 503, internal 500
//
// The message is the store's error text, verbatim. Request-level failures
// use the same body: a JSON body over the cap (1 MiB by default) is 413
// invalid_argument, malformed JSON or an unknown field is 400
// invalid_argument, an unknown route is 404 not_implemented (a command newer
// than its daemon), a known route with the wrong method is 405 with an Allow
// header, and a refused peer is 403 unauthorized.
package api
