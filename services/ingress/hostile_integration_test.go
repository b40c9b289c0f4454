package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
)

// inFlight reads ingress's count of HTTP requests being handled from its
// admin /metrics (-1 when it is not there).
func inFlight(t *testing.T, s *daemontest.Service) int {
	t.Helper()
	_, metrics := s.Get(t, "/metrics")
	m := regexp.MustCompile(`(?m)^terroir_http_requests_in_flight (\d+)`).FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// handlersReturn waits until no handler is running; within bounds how
// long after the cut-off a handler may still run.
func handlersReturn(t *testing.T, s *daemontest.Service, within time.Duration, what string) {
	t.Helper()
	waitFor(t, within, what+": every handler returned (terroir_http_requests_in_flight 0)", func() bool { return inFlight(t, s) == 0 })
}

// closedWithin reads from c until the server closes it or within
// passes, returning what was read and whether it was closed in time.
func closedWithin(c net.Conn, within time.Duration) (string, bool) {
	return readerClosedWithin(c, c, within)
}

// readerClosedWithin is closedWithin reading through r, a buffer over c.
func readerClosedWithin(c net.Conn, r io.Reader, within time.Duration) (string, bool) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(r)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

// drip writes s one byte per interval until it is written or the
// connection fails.
func drip(c net.Conn, s string, interval time.Duration) {
	for i := range len(s) {
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
		time.Sleep(interval) // the client under test is slow on purpose
	}
}

// TestSlowAndHostileClientsAreCutOff: a client that drips its headers or
// its body, sends oversized headers, idles on a kept-alive connection or
// stops reading a stream is cut off within the configured limits, and no
// handler outlives them; a model slower than the write timeout still gets
// its answer through.
func TestSlowAndHostileClientsAreCutOff(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, map[string]string{
		"TERROIR_HTTP_READ_HEADER_TIMEOUT": "500ms",
		"TERROIR_HTTP_READ_TIMEOUT":        "1s",
		"TERROIR_HTTP_WRITE_TIMEOUT":       "1s",
		"TERROIR_HTTP_IDLE_TIMEOUT":        "1s",
		"TERROIR_HTTP_MAX_HEADER_BYTES":    "4096",
		"TERROIR_REQUEST_TIMEOUT":          "60s",
	})
	addr := s.Env["TERROIR_HTTP_ADDR"]
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if n := inFlight(t, s); n != 0 {
		t.Fatalf("terroir_http_requests_in_flight = %d before any request", n)
	}

	t.Run("headers dripped", func(t *testing.T) {
		c := dial(t)
		go drip(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: terroir\r\nAuthorization: Bearer "+key+"\r\nContent-Length: 2\r\n\r\n{}", 100*time.Millisecond)
		if _, closed := closedWithin(c, 5*time.Second); !closed {
			t.Fatal("a client dripping its headers was not cut off within 5 s (read-header timeout 500ms)")
		}
		handlersReturn(t, s, 5*time.Second, "headers dripped")
	})

	t.Run("body dripped", func(t *testing.T) {
		c := dial(t)
		body := chatBody("chat", "hi", "")
		head := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: terroir\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", key, len(body))
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		go drip(c, body, 200*time.Millisecond) // 60 bytes: 12 s at this pace
		got, closed := closedWithin(c, 6*time.Second)
		if !closed {
			t.Fatalf("a client dripping its body was not cut off within 6 s (read timeout 1s); read %q", got)
		}
		if !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, `"code":"request_timeout"`) {
			t.Fatalf("dripped body answered after %v with %q, want an OpenAI-shaped 408", time.Since(start), got)
		}
		handlersReturn(t, s, 5*time.Second, "body dripped")
	})

	t.Run("oversized headers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", a.base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Padding", strings.Repeat("p", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("16 KiB of headers over a 4 KiB limit = %d, want 431", resp.StatusCode)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t)
		if _, err := io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: terroir\r\nAuthorization: Bearer "+key+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("models = %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if _, closed := closedWithin(c, 5*time.Second); !closed {
			t.Fatal("an idle kept-alive connection was not closed within 5 s (idle timeout 1s)")
		}
	})

	t.Run("model slower than the write timeout", func(t *testing.T) {
		r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "DELAY", ""))
		if r.status != http.StatusOK || r.body["object"] != "chat.completion" {
			t.Fatalf("an answer that took 2 s (write timeout 1s) = %d %s", r.status, r.raw)
		}
		req, _ := http.NewRequest("POST", a.base+"/v1/chat/completions", strings.NewReader(chatBody("chat", "DELAY", `"stream":true`)))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("a stream that began after 2 s (write timeout 1s) = %d %q", resp.StatusCode, b)
		}
	})

	t.Run("stream reader stalls", func(t *testing.T) {
		c := dial(t)
		body := chatBody("chat", "FLOOD", `"stream":true`)
		if _, err := fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: terroir\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReaderSize(c, 512)
		status, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("stream status = %q %v", status, err)
		}
		// The client reads nothing more. The stream holds ~10 MB; the
		// server must give up on a write that makes no progress for 1 s
		// and end its handler well before the model finishes.
		stalled := time.Now()
		handlersReturn(t, s, 20*time.Second, "stream reader stalled")
		t.Logf("handler of a stalled stream returned %v after the client stopped reading", time.Since(stalled).Round(time.Millisecond))
		// and the connection is gone: draining what the kernel buffered
		// ends with the server's close
		got, closed := readerClosedWithin(c, br, 10*time.Second)
		if !closed {
			t.Fatalf("the stalled stream's connection stayed open (%d bytes read)", len(got))
		}
		if strings.Contains(got, "data: [DONE]") {
			t.Fatal("the whole stream fit in the connection's buffers: the test did not stall the server")
		}
	})
}
