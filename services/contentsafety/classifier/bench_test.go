package classifier_test

import (
	"compress/gzip"
	"io"
	"os"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// BenchmarkClassify classifies 1 KB chunks of the public-domain corpus with
// rules and linear model and reports the cost per KB of text ("µs/KB").
func BenchmarkClassify(b *testing.B) {
	benchmarkClassify(b, newClassifier(b))
}

// BenchmarkClassifyRulesOnly is BenchmarkClassify without the linear
// model; package linear's BenchmarkScore measures the model alone.
func BenchmarkClassifyRulesOnly(b *testing.B) {
	c, err := classifier.NewRulesOnly()
	if err != nil {
		b.Fatal(err)
	}
	benchmarkClassify(b, c)
}

// BenchmarkNormalize measures the normaliser alone (folding, tokenising,
// resolving words against the lexicon's vocabulary) on the same chunks.
func BenchmarkNormalize(b *testing.B) {
	c, err := classifier.NewRulesOnly()
	if err != nil {
		b.Fatal(err)
	}
	chunks := corpusChunks(b)
	b.SetBytes(1024)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Normalize(chunks[n%len(chunks)])
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(n), "µs/KB")
}

func benchmarkClassify(b *testing.B, c *classifier.Classifier) {
	chunks := corpusChunks(b)
	b.SetBytes(1024)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Classify(chunks[n%len(chunks)], events.DirectionPrompt)
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(n), "µs/KB")
}

// corpusChunks returns the benchmarks' text: the first 128 KiB of each
// corpus file in 1 KiB chunks.
func corpusChunks(b *testing.B) []string {
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
	return chunks
}
