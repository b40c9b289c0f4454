package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/terroir-ai/terroir/pkg/blob"
)

// The S3-protocol server the tests run: versitygw with its POSIX backend,
// built from its Go module with `go install` into the user's cache
// directory the first time (a few minutes), then reused. It runs as a
// process of its own rather than inside the test binary: its POSIX
// backend changes the process's working directory, its embedding package
// allows one gateway per process, and a server inside the test process
// would blur the heap measurements of the streaming tests.
const (
	VersityGWPackage = "github.com/versity/versitygw/cmd/versitygw"
	VersityGWVersion = "v1.8.0"
)

// S3Server is a running versitygw on a loopback port.
type S3Server struct {
	Endpoint        string // http://127.0.0.1:<port>
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	// DataDir holds the buckets (a directory each, an object a file);
	// MetaDir the objects' metadata (versitygw's sidecar directory).
	DataDir, MetaDir string
	client           *s3.Client
}

// StartS3 starts versitygw on a free loopback port over a temporary
// directory and stops it when t ends. It fails the test, naming what is
// missing, when the server cannot be built or started; it never skips.
func StartS3(t *testing.T) *S3Server {
	t.Helper()
	bin := versityGWBinary(t)
	dir := t.TempDir()
	srv := &S3Server{
		Region: "us-east-1", AccessKeyID: "terroir" + randomHex(6), SecretAccessKey: randomHex(20),
		DataDir: filepath.Join(dir, "data"), MetaDir: filepath.Join(dir, "meta"),
	}
	for _, d := range []string{srv.DataDir, srv.MetaDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for range 3 { // another process may take the free port first
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatalf("finding a free loopback port for versitygw: %v", err)
		}
		if lastErr = srv.start(t, bin, dir, addr); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("starting versitygw (%s): %v", bin, lastErr)
	}
	srv.client = s3.New(s3.Options{
		Region:       srv.Region,
		BaseEndpoint: aws.String(srv.Endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: srv.AccessKeyID, SecretAccessKey: srv.SecretAccessKey}, nil
		}),
	})
	return srv
}

func (s *S3Server) start(t *testing.T, bin, dir, addr string) error {
	var logs lockedBuffer
	cmd := exec.Command(bin,
		"--access", s.AccessKeyID, "--secret", s.SecretAccessKey, "--region", s.Region,
		"--port", addr, "--quiet",
		"posix", "--sidecar", s.MetaDir, s.DataDir)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin"} // none of ours, nor VGW_* settings
	cmd.Stdout, cmd.Stderr = &logs, &logs
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	endpoint := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited at start: %s", strings.TrimSpace(logs.String()))
		default:
		}
		resp, err := http.Get(endpoint + "/") // any S3 answer (403 without a signature) means it serves
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw did not answer on %s within 30s: %v; its output: %s", addr, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started
	}
	s.Endpoint = endpoint
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", logs.String())
		}
	})
	return nil
}

// NewBucket creates an empty bucket and returns its name.
func (s *S3Server) NewBucket(t *testing.T) string {
	t.Helper()
	name := "t-" + randomHex(8)
	if _, err := s.client.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	return name
}

// Config returns the S3 store configuration of bucket on this server.
func (s *S3Server) Config(bucket string) blob.S3Config {
	return blob.S3Config{
		Endpoint: s.Endpoint, Bucket: bucket, Region: s.Region,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, PathStyle: true,
	}
}

// Store returns an S3 store over a new, empty bucket.
func (s *S3Server) Store(t *testing.T) *blob.S3 {
	t.Helper()
	st, err := blob.NewS3(s.Config(s.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// versityGWBinary returns the path of the versitygw binary:
// $TERROIR_TEST_VERSITYGW when set, else the one cached for
// VersityGWVersion, building it first if needed. Concurrent test
// processes build it once (a lock file) and never see a partial binary.
func versityGWBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TERROIR_TEST_VERSITYGW"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "terroir", "versitygw-"+VersityGWVersion)
	bin := filepath.Join(dir, "versitygw")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("the S3 tests need versitygw %s: creating its cache directory: %v", VersityGWVersion, err)
	}
	unlock, err := lockFile(filepath.Join(dir, "build.lock"))
	if err != nil {
		t.Fatalf("the S3 tests need versitygw %s: locking its cache directory: %v", VersityGWVersion, err)
	}
	defer unlock()
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin // another process built it meanwhile
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		if goCmd, err = exec.LookPath("go"); err != nil {
			t.Fatalf("the S3 tests need versitygw %s, built with the go command, which was not found", VersityGWVersion)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	t.Logf("building versitygw %s into %s (once; takes a few minutes)", VersityGWVersion, dir)
	cmd := exec.CommandContext(ctx, goCmd, "install", VersityGWPackage+"@"+VersityGWVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "CGO_ENABLED=0")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the S3 tests need the S3-protocol server versitygw %s; `go install %s@%s` failed: %v\n%s",
			VersityGWVersion, VersityGWPackage, VersityGWVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "versitygw"), bin); err != nil {
		t.Fatalf("the S3 tests need versitygw %s: %v", VersityGWVersion, err)
	}
	return bin
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to diagnose
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
