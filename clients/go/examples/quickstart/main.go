// Quickstart: index a few images with IndexStream, then ask CheckDuplicate about a grey copy of
// one of them (a duplicate), an unrelated photo (not one) and bytes that are no image
// (INVALID_ARGUMENT). Every call has a deadline; each answer is checked, and the exit status is 1
// when one is wrong.
//
//	go build -o bin/quickstart ./examples/quickstart && bin/quickstart [flags] [IMAGE_OR_DIR ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dedup/dedup/clients/go/dedup"
	dedupv1 "github.com/dedup/dedup/clients/go/dedupv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const evalDir = "../shared/eval/imagededup"

var imageExtensions = map[string]bool{
	".jpg": true, ".jpeg": true, ".png": true, ".webp": true, ".gif": true, ".bmp": true,
	".tif": true, ".tiff": true, ".ppm": true, ".pgm": true, ".pbm": true,
}

func main() {
	target := flag.String("target", envOr("DEDUP_TARGET", dedup.DefaultTarget), "server address (env DEDUP_TARGET)")
	collection := flag.String("collection", "quickstart_go", "collection to index into")
	duplicate := flag.String("duplicate", evalDir+"/ukbench00120_gray.jpg", "an image expected to duplicate an indexed one")
	expectID := flag.String("expect", "ukbench00120", "id of the best match expected for -duplicate")
	distinct := flag.String("distinct", evalDir+"/formats_images/baboon.pgm", "an image expected to duplicate none")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of each CheckDuplicate call")
	streamTimeout := flag.Duration("stream-timeout", 5*time.Minute, "deadline of the whole IndexStream")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] [IMAGE_OR_DIR ...] (default %s/base_images)\n", os.Args[0], evalDir)
		flag.PrintDefaults()
	}
	flag.Parse()
	inputs := flag.Args()
	if len(inputs) == 0 {
		inputs = []string{evalDir + "/base_images"}
	}

	paths, err := listImages(inputs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	client, err := dedup.Dial(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	defer client.Close()

	q := quickstart{client: client, collection: *collection, timeout: *timeout}
	q.index(paths, *streamTimeout)
	q.checkDuplicate(*duplicate, *expectID)
	q.checkDuplicate(*distinct, "")
	q.checkNotAnImage()
	if q.failures > 0 {
		fmt.Printf("FAILED: %d check(s)\n", q.failures)
		os.Exit(1)
	}
	fmt.Println("OK: every answer was the expected one")
}

type quickstart struct {
	client     *dedup.Client
	collection string
	timeout    time.Duration
	failures   int
}

func (q *quickstart) expect(ok bool, format string, args ...interface{}) {
	if ok {
		fmt.Printf("  ok    "+format+"\n", args...)
		return
	}
	fmt.Printf("  FAIL  "+format+"\n", args...)
	q.failures++
}

// reportRPCError prints a gRPC failure the way to read one: its code and message.
func (q *quickstart) reportRPCError(call string, err error) {
	s := status.Convert(err)
	q.expect(false, "%s failed: %s: %s", call, s.Code(), s.Message())
}

func (q *quickstart) index(paths []string, deadline time.Duration) {
	fmt.Printf("IndexStream: %d images into %q\n", len(paths), q.collection)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	remaining := paths
	next := func() (*dedupv1.IndexRequest, error) {
		if len(remaining) == 0 {
			return nil, io.EOF
		}
		path := remaining[0]
		remaining = remaining[1:]
		image, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return &dedupv1.IndexRequest{
			Id:         stem(path),
			Image:      image,
			Collection: q.collection,
			Metadata:   map[string]string{"path": path},
		}, nil
	}
	counts := map[dedupv1.IndexResponse_Status]int{}
	err := q.client.Index(ctx, next, func(r *dedupv1.IndexResponse) {
		counts[r.Status]++
		if r.Status != dedupv1.IndexResponse_INDEXED {
			fmt.Printf("  %s %s: %s\n", r.Id, r.Status, r.Error)
		}
	})
	if err != nil {
		q.reportRPCError("IndexStream", err)
		return
	}
	q.expect(counts[dedupv1.IndexResponse_INDEXED] == len(paths), "%d of %d images INDEXED", counts[dedupv1.IndexResponse_INDEXED], len(paths))
}

// checkDuplicate expects the best match expectID, or no duplicate when expectID is "".
func (q *quickstart) checkDuplicate(path, expectID string) {
	image, err := os.ReadFile(path)
	if err != nil {
		q.expect(false, "read %s: %v", path, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
	defer cancel()
	resp, err := q.client.Check(ctx, image, &dedupv1.CheckDuplicateRequest{Collection: q.collection, TopK: 3})
	if err != nil {
		q.reportRPCError("CheckDuplicate "+path, err)
		return
	}
	fmt.Printf("CheckDuplicate %s: is_duplicate=%t threshold=%.3f model=%s\n", filepath.Base(path), resp.IsDuplicate, resp.Threshold, resp.Model)
	for _, m := range resp.Matches {
		fmt.Printf("  match %s similarity=%.4f\n", m.Id, m.Similarity)
	}
	if expectID == "" {
		q.expect(!resp.IsDuplicate, "no duplicate of %s", filepath.Base(path))
		return
	}
	best := ""
	if len(resp.Matches) > 0 {
		best = resp.Matches[0].Id
	}
	q.expect(resp.IsDuplicate && best == expectID, "duplicate of %s (best match %q)", expectID, best)
}

// checkNotAnImage shows what a rejected request looks like: INVALID_ARGUMENT and a reason.
func (q *quickstart) checkNotAnImage() {
	ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
	defer cancel()
	_, err := q.client.Check(ctx, []byte("this is not an image"), &dedupv1.CheckDuplicateRequest{Collection: q.collection})
	s := status.Convert(err)
	fmt.Printf("CheckDuplicate <not an image>: %s: %s\n", s.Code(), s.Message())
	q.expect(s.Code() == codes.InvalidArgument, "a non-image is INVALID_ARGUMENT")
}

// listImages expands directories (not recursively) into their image files, sorted.
func listImages(inputs []string) ([]string, error) {
	var paths []string
	for _, input := range inputs {
		info, err := os.Stat(input)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			paths = append(paths, input)
			continue
		}
		entries, err := os.ReadDir(input)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() && imageExtensions[strings.ToLower(filepath.Ext(e.Name()))] {
				paths = append(paths, filepath.Join(input, e.Name()))
			}
		}
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return nil, fmt.Errorf("no images in %s", strings.Join(inputs, ", "))
	}
	return paths, nil
}

func stem(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
