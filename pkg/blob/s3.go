package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// S3 defaults: parts of an upload are DefaultS3PartSize bytes, at most
// DefaultS3Concurrency in flight, so a put holds about
// (DefaultS3Concurrency+1) × DefaultS3PartSize bytes whatever the object's
// size.
const (
	DefaultS3PartSize    = 5 << 20 // S3's smallest part
	DefaultS3Concurrency = 3
	DefaultS3Region      = "us-east-1"
)

// S3Config configures the S3 store of one geography: its own bucket, and
// usually its own endpoint, in that geography.
type S3Config struct {
	Endpoint        string // e.g. https://s3.eu-central-1.amazonaws.com; "" is AWS by Region
	Bucket          string
	Region          string // default DefaultS3Region
	AccessKeyID     string
	SecretAccessKey string
	PathStyle       bool  // path-style addressing (most non-AWS servers want it)
	PartSize        int64 // default DefaultS3PartSize
	Concurrency     int   // default DefaultS3Concurrency
}

// S3 is a Store in one S3 bucket. Metadata is the objects' S3 user
// metadata (x-amz-meta-*), stored and deleted with the object itself.
// Streams of unknown length are uploaded in parts by the SDK's upload
// manager; a failed upload is aborted, so it leaves no object.
type S3 struct {
	client *s3.Client
	up     *manager.Uploader
	bucket string
}

// NewS3 returns the S3 store of cfg. It does not create the bucket.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("blob.NewS3: a bucket is required")
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("blob.NewS3: an access key ID and secret access key are required")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultS3Region
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultS3PartSize
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultS3Concurrency
	}
	creds := aws.Credentials{AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, Source: "terroir configuration"}
	opts := s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.PathStyle,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return creds, nil
		}),
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	client := s3.New(opts)
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = cfg.PartSize
		u.Concurrency = cfg.Concurrency
	})
	return &S3{client: client, up: up, bucket: cfg.Bucket}, nil
}

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, md map[string]string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := validateMetadata(md); err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	// Hide any Seek or ReaderAt of r: the manager would read it by
	// position; a stream is read once, in order.
	body := struct{ io.Reader }{r}
	if _, err := s.up.Upload(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: body, Metadata: md,
	}); err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, mapS3Err(err))
	}
	info, err := s.Stat(ctx, key)
	if err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	return info, nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string, rng Range) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	if rng.Offset < 0 || rng.Length < 0 {
		_, _, err := rng.Resolve(0)
		return nil, Info{}, fmt.Errorf("reading %s: %w", key, err)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	if rng != (Range{}) {
		h := "bytes=" + strconv.FormatInt(rng.Offset, 10) + "-"
		if rng.Length > 0 {
			h += strconv.FormatInt(rng.Offset+rng.Length-1, 10)
		}
		in.Range = aws.String(h)
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, Info{}, fmt.Errorf("reading %s: %w", key, mapS3Err(err))
	}
	info := Info{Key: key, Size: aws.ToInt64(out.ContentLength), Created: aws.ToTime(out.LastModified), Metadata: out.Metadata}
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	if in.Range != nil {
		// "bytes 3-6/20": the whole object's size follows the slash
		cr := aws.ToString(out.ContentRange)
		i := strings.LastIndexByte(cr, '/')
		total, perr := strconv.ParseInt(cr[i+1:], 10, 64)
		if i < 0 || perr != nil {
			out.Body.Close()
			return nil, Info{}, fmt.Errorf("reading %s: unexpected Content-Range %q", key, cr)
		}
		info.Size = total
	}
	return out.Body, info, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, mapS3Err(err))
	}
	info := Info{Key: key, Size: aws.ToInt64(out.ContentLength), Created: aws.ToTime(out.LastModified), Metadata: out.Metadata}
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	return info, nil
}

// Delete implements Store. The object's metadata goes with it, in one
// request. (In a bucket with versioning, S3 keeps the old version: the
// buckets of Terroir are meant to run without it.)
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		if err = mapS3Err(err); errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// List implements Store, a page of up to 1000 keys per request.
func (s *S3) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(Info{}, err)
			return
		}
		in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
		if prefix != "" {
			in.Prefix = aws.String(prefix)
		}
		pages := s3.NewListObjectsV2Paginator(s.client, in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				yield(Info{}, fmt.Errorf("listing %q: %w", prefix, mapS3Err(err)))
				return
			}
			for _, o := range page.Contents {
				if !yield(Info{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), Created: aws.ToTime(o.LastModified)}, nil) {
					return
				}
			}
		}
	}
}

// mapS3Err maps S3's answers to the Store's errors.
func mapS3Err(err error) error {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%w (%s)", ErrNotFound, api.ErrorCode())
		case "InvalidRange":
			return fmt.Errorf("%w (%s)", ErrInvalidRange, api.ErrorCode())
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case 404:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case 416:
			return fmt.Errorf("%w: %w", ErrInvalidRange, err)
		}
	}
	return err
}
