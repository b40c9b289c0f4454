package builtin

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// heapInUse returns the bytes of heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkLoad measures training the default model from the embedded
// corpus, and reports the heap the loaded model keeps (MB-model) and the
// heap of the whole process with it loaded: model, tokenizer tables and
// runtime (MB-heap).
func BenchmarkLoad(b *testing.B) {
	if _, err := vocab(); err != nil { // the tokenizer is shared; not part of the model
		b.Fatal(err)
	}
	var model, process uint64
	for b.Loop() {
		base := heapInUse()
		m, err := Load()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		process = heapInUse()
		model = process - base
		runtime.KeepAlive(m)
		b.StartTimer()
	}
	b.ReportMetric(float64(model)/(1<<20), "MB-model")
	b.ReportMetric(float64(process)/(1<<20), "MB-heap")
}

func benchmarkGenerate(b *testing.B, p Params) {
	m := loadModel(b)
	tokens := 0
	for b.Loop() {
		cs, err := m.Generate(b.Context(), "The state of our Union is", p, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cs {
			tokens += c.CompletionTokens
		}
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkGenerateGreedy(b *testing.B) {
	benchmarkGenerate(b, Params{MaxTokens: 64})
}

func BenchmarkGenerateSampled(b *testing.B) {
	benchmarkGenerate(b, Params{MaxTokens: 64, Temperature: 1, Seed: ptr(int64(1))})
}

func BenchmarkGenerateTopP(b *testing.B) {
	benchmarkGenerate(b, Params{MaxTokens: 64, Temperature: 0.8, TopP: 0.9, Seed: ptr(int64(1))})
}

func BenchmarkChat(b *testing.B) {
	m := loadModel(b)
	msgs := []Message{
		{Role: RoleSystem, Content: "You are a helpful assistant."},
		{Role: RoleUser, Content: "What should Congress do about taxes, jobs and the economy?"},
	}
	tokens := 0
	for b.Loop() {
		cs, err := m.Chat(b.Context(), msgs, Params{Temperature: 0.8, Seed: ptr(int64(2))}, nil)
		if err != nil {
			b.Fatal(err)
		}
		tokens += cs[0].CompletionTokens
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

func corpusSample(b *testing.B, n int) string {
	data, err := corpusFS.ReadFile(corpusFiles[0])
	if err != nil {
		b.Fatal(err)
	}
	return strings.ToValidUTF8(string(data[:n]), "")
}

// BenchmarkCountTokens reports ns per token counted (ns/token).
func BenchmarkCountTokens(b *testing.B) {
	text := corpusSample(b, 64<<10)
	n := CountTokens(text)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		CountTokens(text)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
}

// BenchmarkEmbed reports microseconds per KB of input (µs/KB).
func BenchmarkEmbed(b *testing.B) {
	for _, size := range []int{1 << 10, 8 << 10} {
		text := corpusSample(b, size)
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if _, _, err := Embed(text, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/(float64(len(text))/1024), "µs/KB")
		})
	}
}

// BenchmarkPerplexity reports the scoring speed (tokens/s).
func BenchmarkPerplexity(b *testing.B) {
	m := loadModel(b)
	text := corpusSample(b, 8<<10)
	n := CountTokens(text)
	for b.Loop() {
		m.Perplexity(text)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkAdapt measures building an overlay from about 4,000 tokens of
// customer text.
func BenchmarkAdapt(b *testing.B) {
	m := loadModel(b)
	texts := tickets(100, 0)
	for b.Loop() {
		if _, err := m.Adapt(texts, 1); err != nil {
			b.Fatal(err)
		}
	}
}
