// Package dedup is a small client for the dedup.v1.Deduplication gRPC service.
//
// One long-lived connection per Client, closed with Close. Every call takes a context:
// give it a deadline (context.WithTimeout). Failures are gRPC status errors; read them
// with status.Code(err) and status.Convert(err).Message().
package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"

	dedupv1 "github.com/dedup/dedup/clients/go/dedupv1"
	"google.golang.org/grpc"
)

// DefaultTarget is where `make run` serves.
const DefaultTarget = "127.0.0.1:50051"

// MaxMessageBytes bounds one message: images travel whole, and the server accepts up to 64 MiB.
const MaxMessageBytes = 64 << 20

// Client talks to one dedup server.
type Client struct {
	conn *grpc.ClientConn
	rpc  dedupv1.DeduplicationClient
}

// Dial opens a plaintext connection to target (host:port); pass grpc.WithTransportCredentials
// in opts for TLS. The connection is made lazily: the first call reports an unreachable server.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	defaults := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
	}
	conn, err := grpc.Dial(target, append(defaults, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return &Client{conn: conn, rpc: dedupv1.NewDeduplicationClient(conn)}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RPC is the generated stub, for the calls this package does not wrap.
func (c *Client) RPC() dedupv1.DeduplicationClient { return c.rpc }

// Check asks whether image is a near-duplicate of an indexed one. The request's Image is set
// from image; the other fields (collection, threshold, top_k, insert_if_unique, ...) come from req,
// which may be nil.
func (c *Client) Check(ctx context.Context, image []byte, req *dedupv1.CheckDuplicateRequest) (*dedupv1.CheckDuplicateResponse, error) {
	if req == nil {
		req = &dedupv1.CheckDuplicateRequest{}
	}
	req.Image = image
	return c.rpc.CheckDuplicate(ctx, req)
}

// Index streams requests through IndexStream and calls onResult with each answer as it
// arrives (one per request, in any order: match them by Id). It returns the stream's error,
// if any, once every answer has arrived or the stream failed. next yields the requests one
// at a time, so files can be read lazily; it returns io.EOF after the last one.
func (c *Client) Index(ctx context.Context, next func() (*dedupv1.IndexRequest, error), onResult func(*dedupv1.IndexResponse)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the sender when the caller's side fails
	stream, err := c.rpc.IndexStream(ctx)
	if err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(stream, next) }()
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return <-sendErr
		}
		if err != nil {
			return err // the stream's status (deadline, unavailable, ...); the sender stops with ctx
		}
		onResult(resp)
	}
}

// sendAll sends every request, then half-closes the stream.
func sendAll(stream dedupv1.Deduplication_IndexStreamClient, next func() (*dedupv1.IndexRequest, error)) error {
	for {
		req, err := next()
		if errors.Is(err, io.EOF) {
			return stream.CloseSend()
		}
		if err != nil {
			// Half-close: the server answers what it got, then Index returns this error.
			_ = stream.CloseSend()
			return fmt.Errorf("reading the next image: %w", err)
		}
		if err := stream.Send(req); err != nil {
			// io.EOF here means the server ended the stream; Recv returns its real status.
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
