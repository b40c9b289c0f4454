package classifier_test

import (
	"compress/gzip"
	"io"
	"os"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
)

// BenchmarkClassify classifies 1 KB chunks of the public-domain corpus and
// reports the cost per KB of text ("µs/KB"); the target is 50 µs/KB.
func BenchmarkClassify(b *testing.B) {
	c := newClassifier(b)
	var chunks []string
	for _, name := range []string{"moby-dick", "state-of-the-union-1946-2021"} {
		f, err := os.Open("testdata/corpus/" + name + ".txt.gz")
		if err != nil {
			b.Fatal(err)
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			b.Fatal(err)
		}
		data, err := io.ReadAll(io.LimitReader(gz, 128<<10))
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i+1024 <= len(data); i += 1024 {
			chunks = append(chunks, string(data[i:i+1024]))
		}
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Classify(chunks[n%len(chunks)], events.DirectionPrompt)
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(n), "µs/KB")
}
