module github.com/dedup/dedup/clients/go

go 1.19

// The versions Debian bookworm packages: `make clients-setup` builds vendor/ from them
// (no module proxy needed). Elsewhere: `go mod tidy` with a proxy works too.
require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.3.0 // indirect
	golang.org/x/text v0.7.0 // indirect
	google.golang.org/genproto v0.0.0-20200413115906-b5235f65be36 // indirect
)
