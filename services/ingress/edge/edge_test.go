package edge_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/services/ingress/edge"
)

func TestUnknownPathsAreOpenAIShapedAndEveryResponseHasARequestID(t *testing.T) {
	srv, err := edge.Listen(edge.Config{Addr: "127.0.0.1:0", Log: zap.NewNop(), Routes: map[string]http.Handler{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, time.Second) }()
	resp, err := http.Get("http://" + srv.Addr() + "/v0/nothing")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error struct{ Message, Type string } `json:"error"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	id := resp.Header.Get("x-request-id")
	if err != nil || resp.StatusCode != 404 || body.Error.Type != "not_found_error" || body.Error.Message == "" {
		t.Fatalf("unknown path = %d %+v %v", resp.StatusCode, body, err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) || resp.Header.Get("apim-request-id") != id {
		t.Fatalf("request IDs %q %q", id, resp.Header.Get("apim-request-id"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestShutdownFinishesRequestsInFlight: a request being handled when the
// context ends is answered; new connections are refused.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	srv, err := edge.Listen(edge.Config{Addr: "127.0.0.1:0", Log: zap.NewNop(), Routes: map[string]http.Handler{"/slow": slow}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, 10*time.Second) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr() + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-entered
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := (&http.Client{Timeout: time.Second}).Get("http://" + srv.Addr() + "/probe")
		if err != nil {
			break // no longer accepting
		}
		c.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting new requests while draining")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	close(release)
	if b := <-got; b != "finished" {
		t.Fatalf("in-flight request got %q", b)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
