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

// batchRows runs a batch of lines on the built-in model (answering
// maxTokens tokens each) through the Batch API and reports its lines per
// minute from creation to completion, with the real-time p99 at rtRate
// through the upstream deployment before the batch and while it runs.
func batchRows(ctx context.Context, api, key string, lines, maxTokens, rtRate int, d time.Duration, through target) ([]bench.Row, error) {
	alone := openLoop(through, rtRate, d)
	var in bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"line-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"ngram","max_tokens":%d,"messages":[{"role":"user","content":%q}]}}`+"\n",
			i, maxTokens, fmt.Sprintf("%s (%d)", prompt, i))
	}
	fileID, err := uploadBatch(ctx, api, key, in.Bytes())
	if err != nil {
		return nil, err
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := apiCall(ctx, api, key, "POST", "/v1/batches", map[string]any{"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h"}, &created); err != nil {
		return nil, err
	}
	start := time.Now()
	// The real-time load runs while the batch does (it is measured only
	// if the batch outlasts it).
	during := make(chan outcome, 1)
	go func() { during <- openLoop(through, rtRate, d) }()
	var b struct {
		Status        string `json:"status"`
		RequestCounts struct {
			Total, Completed, Failed int
		} `json:"request_counts"`
		InProgressAt, CompletedAt int64
	}
	for {
		if err := apiCall(ctx, api, key, "GET", "/v1/batches/"+created.ID, nil, &b); err != nil {
			return nil, err
		}
		if b.Status == "completed" || b.Status == "failed" || b.Status == "expired" || b.Status == "cancelled" {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return nil, fmt.Errorf("batch %s still %s after 30 minutes", created.ID, b.Status)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	elapsed := time.Since(start)
	rt := <-during
	if b.Status != "completed" {
		return nil, fmt.Errorf("batch %s ended %s", created.ID, b.Status)
	}
	perMin := float64(lines) / elapsed.Minutes()
	p99a, p99b := alone.lat.Quantile(0.99), rt.lat.Quantile(0.99)
	rise := 0.0
	if p99a > 0 {
		rise = float64(p99b-p99a) / float64(p99a)
	}
	overlap := "the batch outlasted the real-time measurement"
	if elapsed < d {
		overlap = fmt.Sprintf("the batch ran only the first %s of the %s real-time measurement", elapsed.Round(100*time.Millisecond), d)
	}
	return []bench.Row{
		{Name: fmt.Sprintf("batch of %d lines, built-in model, %d tokens each", lines, maxTokens),
			Value:  fmt.Sprintf("%.0f lines/min (%s from creation to completed; %d answered, %d failed)", perMin, elapsed.Round(100*time.Millisecond), b.RequestCounts.Completed, b.RequestCounts.Failed),
			Target: ">= 20000 lines/min", Met: bench.YesNo(perMin >= 20000)},
		{Name: fmt.Sprintf("real time at %d req/s, no batch running", rtRate), N: alone.answered, Lat: alone.lat, Errors: alone.failed, Comment: alone.failures()},
		{Name: fmt.Sprintf("real time at %d req/s, the batch running", rtRate), N: rt.answered, Lat: rt.lat, Errors: rt.failed,
			Value: fmt.Sprintf("p99 %+.0f%%", 100*rise), Target: "p99 rises <= 20%", Met: bench.YesNo(rise <= 0.20 && elapsed >= d),
			Comment: joinNotes(overlap, rt.failures())},
	}, nil
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
