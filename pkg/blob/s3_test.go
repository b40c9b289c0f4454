package blob_test

import (
	"testing"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/blob/blobtest"
)

// TestS3Contract runs the contract suite against a real S3-protocol
// server (versitygw over a temporary directory), a bucket per subtest.
func TestS3Contract(t *testing.T) {
	t.Parallel()
	srv := blobtest.StartS3(t)
	blobtest.Run(t, func(t *testing.T) blob.Store { return srv.Store(t) })
}
