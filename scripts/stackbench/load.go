package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// target is one kind of request: where it goes and what it sends.
type target struct {
	url    string
	header http.Header
	body   []byte
}

// outcome is what a load run saw.
type outcome struct {
	lat      bench.Hist // of answered requests, sorted
	answered int        // 200s
	failed   int        // anything else, timeouts included
	codes    map[string]int
	elapsed  time.Duration
}

func (o outcome) rate() float64 { return float64(o.answered) / o.elapsed.Seconds() }

// failures says what the failures were, most frequent first.
func (o outcome) failures() string {
	if o.failed == 0 {
		return ""
	}
	var parts []string
	for k, n := range o.codes {
		parts = append(parts, fmt.Sprintf("%d× %s", n, k))
	}
	return strings.Join(parts, ", ")
}

// openLoop offers rate requests per second for d, whatever the answers
// take (vegeta's constant pacer), and collects every result.
func openLoop(t target, rate int, d time.Duration) outcome {
	atk := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true),
		vegeta.Connections(10_000), vegeta.MaxConnections(10_000), vegeta.Workers(64), vegeta.MaxWorkers(20_000))
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodPost, URL: t.url, Header: t.header, Body: t.body})
	o := outcome{codes: map[string]int{}}
	start := time.Now()
	for res := range atk.Attack(tr, vegeta.Rate{Freq: rate, Per: time.Second}, d, "load") {
		record(&o, int(res.Code), res.Error, res.Latency)
	}
	o.elapsed = max(time.Since(start), d)
	slices.Sort(o.lat)
	return o
}

func record(o *outcome, code int, errText string, lat time.Duration) {
	if code == http.StatusOK && errText == "" {
		o.answered++
		o.lat = append(o.lat, lat)
		return
	}
	o.failed++
	key := fmt.Sprintf("HTTP %d", code)
	if errText != "" && code == 0 {
		key = shortError(errText)
	}
	o.codes[key]++
}

// shortError keeps the kind of a transport error, not its addresses.
func shortError(s string) string {
	for _, k := range []string{"timeout", "deadline exceeded", "connection refused", "connection reset", "EOF", "too many open files"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// closedLoop runs conns clients, each sending its next request when the
// last is answered, for d.
func closedLoop(t target, conns int, d time.Duration) outcome {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	o := outcome{codes: map[string]int{}}
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Go(func() {
			var local outcome
			local.codes = map[string]int{}
			for ctx.Err() == nil {
				t0 := time.Now()
				code, err := post(ctx, cl, t)
				if ctx.Err() != nil {
					break // cut off by the end of the run, not an answer
				}
				errText := ""
				if err != nil {
					errText = err.Error()
				}
				record(&local, code, errText, time.Since(t0))
			}
			mu.Lock()
			o.answered += local.answered
			o.failed += local.failed
			o.lat = append(o.lat, local.lat...)
			for k, n := range local.codes {
				o.codes[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	o.elapsed = time.Since(start)
	slices.Sort(o.lat)
	return o
}

func post(ctx context.Context, cl *http.Client, t target) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return 0, err
	}
	req.Header = t.header.Clone()
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// streamOutcome is what a run of streams saw: time to the first content
// chunk and to the end of the stream.
type streamOutcome struct {
	first, end bench.Hist
	answered   int
	failed     int
	chunks     atomic.Int64
	elapsed    time.Duration
}

// streams opens rate streams per second for d (a new stream on schedule
// whatever the others are doing) and reads each to its end.
func streams(t target, rate int, d time.Duration) *streamOutcome {
	tr := &http.Transport{MaxIdleConnsPerHost: 4096, DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	so := &streamOutcome{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		// open-loop schedule: stream i starts at start + i×interval
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			first, end, n, err := stream(cl, t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				so.failed++
				return
			}
			so.answered++
			so.first = append(so.first, first)
			so.end = append(so.end, end)
			so.chunks.Add(int64(n))
		})
	}
	wg.Wait()
	so.elapsed = time.Since(start)
	slices.Sort(so.first)
	slices.Sort(so.end)
	return so
}

// stream reads one streamed answer: the time to its first content chunk,
// to its end, and how many chunks carried content.
func stream(cl *http.Client, t target) (first, end time.Duration, chunks int, err error) {
	t0 := time.Now()
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return 0, 0, 0, err
	}
	req.Header = t.header.Clone()
	resp, err := cl.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, 0, 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	done := false
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if bytes.Equal(line, []byte("data: [DONE]")) {
			done = true
			break
		}
		if bytes.Contains(line, []byte(`"content":"`)) && !bytes.Contains(line, []byte(`"content":""`)) {
			if chunks == 0 {
				first = time.Since(t0)
			}
			chunks++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if !done || chunks == 0 {
		return 0, 0, 0, fmt.Errorf("stream ended without [DONE] or content")
	}
	return first, time.Since(t0), chunks, nil
}
