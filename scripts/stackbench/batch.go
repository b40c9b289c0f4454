package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// batchRows measures a batch of lines on the built-in model (answering
// maxTokens tokens each) through the Batch API: the batch's lines per
// minute from creation to completion, alone. Then, pairs times, the
// real-time p99 at rtRate through the upstream deployment with no batch
// running, and again while a fresh batch of the same size runs (cancelled
// once measured, its lines per minute beside real time reported); the
// rise is that of the medians, because one pair's p99s move by tens of
// percent between runs of the same code.
func batchRows(ctx context.Context, api, key string, lines, maxTokens, rtRate, pairs int, d time.Duration, through target, root int) ([]bench.Row, error) {
	var in bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"line-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"ngram","max_tokens":%d,"messages":[{"role":"user","content":%q}]}}`+"\n",
			i, maxTokens, fmt.Sprintf("%s (%d)", prompt, i))
	}
	fileID, err := uploadBatch(ctx, api, key, in.Bytes())
	if err != nil {
		return nil, err
	}
	id, err := createBatch(ctx, api, key, fileID)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	b, err := waitBatch(ctx, api, key, id, func(b batchState) bool { return b.terminal() })
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	if b.Status != "completed" {
		return nil, fmt.Errorf("batch %s ended %s", id, b.Status)
	}
	perMin := float64(lines) / elapsed.Minutes()
	rows := []bench.Row{{Name: fmt.Sprintf("batch of %d lines, built-in model, %d tokens each", lines, maxTokens),
		Value:  fmt.Sprintf("%.0f lines/min (%s from creation to completed; %d answered, %d failed)", perMin, elapsed.Round(100*time.Millisecond), b.RequestCounts.Completed, b.RequestCounts.Failed),
		Target: ">= 20000 lines/min", Met: bench.YesNo(perMin >= 20000)}}

	var without, beside []time.Duration
	outlasted := true
	for k := range pairs {
		// let the last batch's writes (its output, or a cancelled one's
		// error file) settle
		sleepCtx(ctx, 5*time.Second)
		cpu0 := sampleCPU(root)
		alone := openLoop(through, rtRate, d)
		aloneCPU, _ := perRequest(cpu0, sampleCPU(root), alone.answered)
		id, err := createBatch(ctx, api, key, fileID)
		if err != nil {
			return nil, err
		}
		before, err := waitBatch(ctx, api, key, id, func(b batchState) bool { return b.Status != "validating" })
		if err != nil {
			return nil, err
		}
		cpu0 = sampleCPU(root)
		rt := openLoop(through, rtRate, d)
		besideCPU, _ := perRequest(cpu0, sampleCPU(root), rt.answered)
		var after batchState
		if err := apiCall(ctx, api, key, "GET", "/v1/batches/"+id, nil, &after); err != nil {
			return nil, err
		}
		running := !after.terminal()
		if running {
			if err := apiCall(ctx, api, key, "POST", "/v1/batches/"+id+"/cancel", nil, &after); err != nil {
				return nil, err
			}
		}
		outlasted = outlasted && running
		overlap := fmt.Sprintf("the batch answered %.0f lines/min beside real time and was cancelled after it", float64(after.done()-before.done())/d.Minutes())
		if !running {
			overlap = "the batch ended before the real-time measurement did"
		}
		without = append(without, alone.lat.Quantile(0.99))
		beside = append(beside, rt.lat.Quantile(0.99))
		rows = append(rows,
			bench.Row{Name: fmt.Sprintf("real time at %d req/s, no batch running (%d of %d)", rtRate, k+1, pairs), N: alone.answered, Lat: alone.lat, Errors: alone.failed,
				Comment: joinNotes("CPU "+aloneCPU, alone.failures())},
			bench.Row{Name: fmt.Sprintf("real time at %d req/s, a %d-line batch running (%d of %d)", rtRate, lines, k+1, pairs), N: rt.answered, Lat: rt.lat, Errors: rt.failed,
				Value:   fmt.Sprintf("p99 %+.0f%%", 100*rise(without[k], beside[k])),
				Comment: joinNotes(overlap, "CPU of the stack, real time and batch together, per real-time request: "+besideCPU, rt.failures())})
	}
	mw, mb := bench.Hist(without).Sorted().Quantile(0.5), bench.Hist(beside).Sorted().Quantile(0.5)
	r := rise(mw, mb)
	rows = append(rows, bench.Row{Name: fmt.Sprintf("real-time p99 at %d req/s, median of %d: without -> beside a batch", rtRate, pairs),
		Value:  fmt.Sprintf("%.2f -> %.2f ms, p99 %+.0f%%", float64(mw)/1e6, float64(mb)/1e6, 100*r),
		Target: "p99 rises <= 20%", Met: bench.YesNo(r <= 0.20 && outlasted)})
	return rows, nil
}

func rise(a, b time.Duration) float64 {
	if a <= 0 {
		return 0
	}
	return float64(b-a) / float64(a)
}

// batchState is what the bench reads of a batch object.
type batchState struct {
	Status        string `json:"status"`
	RequestCounts struct {
		Total, Completed, Failed int
	} `json:"request_counts"`
}

func (b batchState) terminal() bool {
	switch b.Status {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

func (b batchState) done() int { return b.RequestCounts.Completed + b.RequestCounts.Failed }

func createBatch(ctx context.Context, api, key, fileID string) (string, error) {
	var created struct {
		ID string `json:"id"`
	}
	err := apiCall(ctx, api, key, "POST", "/v1/batches", map[string]any{"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h"}, &created)
	return created.ID, err
}

// waitBatch polls the batch until until says so, for up to 30 minutes.
func waitBatch(ctx context.Context, api, key, id string, until func(batchState) bool) (batchState, error) {
	start := time.Now()
	for {
		var b batchState
		if err := apiCall(ctx, api, key, "GET", "/v1/batches/"+id, nil, &b); err != nil {
			return b, err
		}
		if until(b) {
			return b, nil
		}
		if time.Since(start) > 30*time.Minute {
			return b, fmt.Errorf("batch %s still %s after 30 minutes", id, b.Status)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// uploadBatch uploads content as a batch input file.
func uploadBatch(ctx context.Context, api, key string, content []byte) (string, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "bench.jsonl")
	_, _ = fw.Write(content)
	_ = mw.Close()
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/v1/files", &body)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var f struct {
		ID string `json:"id"`
	}
	return f.ID, do(req, &f)
}

func apiCall(ctx context.Context, api, key, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return do(req, out)
}

func do(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}
