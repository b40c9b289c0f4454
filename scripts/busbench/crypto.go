package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// targetSealPerKB bounds sealing or opening 1 KB, in microseconds.
const targetSealPerKB = 5.0

// benchCrypto measures sealing and opening payloads with a data key, with
// the standard library's benchmark driver, and the whole envelope (JSON
// and seal, open and JSON) of an inference request.
func benchCrypto(ctx context.Context, e *env) ([]bench.Row, error) {
	mgr, err := keys.NewManager(e.Keys, keys.NewMemoryStore())
	if err != nil {
		return nil, err
	}
	k, err := mgr.ForResource(ctx, geo, resource)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, 1024)
	for i := range pt {
		pt[i] = byte(i)
	}
	aad := keys.AAD("rec-1", resource, events.TypeInferenceRequest.String())
	ct := k.Seal(pt, aad)
	if _, err := k.Open(ct, aad); err != nil {
		return nil, err
	}
	_, req := e.request("rec-1")
	plain, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	sealedReq := k.Seal(plain, aad)

	var openErr error
	benches := []struct {
		name   string
		bytes  int
		target bool
		f      func(b *testing.B)
	}{
		{"seal 1 KB (AES-256-GCM)", len(pt), true, func(b *testing.B) {
			for b.Loop() {
				_ = k.Seal(pt, aad)
			}
		}},
		{"open 1 KB (AES-256-GCM)", len(pt), true, func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Open(ct, aad); err != nil {
					openErr = err
				}
			}
		}},
		{"envelope out: JSON+seal request", len(plain), false, func(b *testing.B) {
			for b.Loop() {
				p, _ := json.Marshal(req)
				_ = k.Seal(p, keys.AAD("rec-1", resource, events.TypeInferenceRequest.String()))
			}
		}},
		{"envelope in: open+JSON request", len(plain), false, func(b *testing.B) {
			for b.Loop() {
				p, err := k.Open(sealedReq, keys.AAD("rec-1", resource, events.TypeInferenceRequest.String()))
				if err != nil {
					openErr = err
					continue
				}
				var v events.InferenceRequest
				if err := json.Unmarshal(p, &v); err != nil {
					openErr = err
				}
			}
		}},
	}
	var rows []bench.Row
	for _, bc := range benches {
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(bc.bytes))
			bc.f(b)
		})
		nsOp := float64(res.T.Nanoseconds()) / float64(res.N)
		usPerKB := nsOp / 1000 * 1024 / float64(bc.bytes)
		r := bench.Row{Name: bc.name, N: res.N,
			Value: fmt.Sprintf("%.2f µs/KB (%.0f MB/s, %d allocs/op)", usPerKB, float64(bc.bytes)*1e3/nsOp, res.AllocsPerOp())}
		if bc.target {
			r.Target = fmt.Sprintf("≤%.0f µs/KB", targetSealPerKB)
			r.Met = bench.YesNo(usPerKB <= targetSealPerKB)
		} else {
			r.Comment = fmt.Sprintf("%d B of JSON (%d B body), %.2f µs per request; what Publish and Decode spend on the payload", len(plain), e.cfg.bodyBytes, nsOp/1000)
		}
		rows = append(rows, r)
	}
	if openErr != nil {
		return rows, fmt.Errorf("opening during the benchmark: %w", openErr)
	}
	return rows, nil
}
