// Package guardtest is a stand-in for a guard model served by an
// OpenAI-compatible server (Llama Guard 3 behind vLLM or llama.cpp
// server): an http.Handler that speaks the chat-completions wire shape
// and answers in Llama Guard's format, deciding by markers in the text
// rather than by a model. Tests and benchmarks of the guard stage run
// against it.
package guardtest

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Message is one chat message of a request.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is what the stand-in received in one call.
type Request struct {
	Model         string    `json:"model"`
	Messages      []Message `json:"messages"`
	Temperature   *float64  `json:"temperature"`
	MaxTokens     int       `json:"max_tokens"`
	Stream        bool      `json:"stream"`
	Authorization string    `json:"-"`
}

// Server is the stand-in. Its zero value answers at once as LlamaGuard
// does; set the fields before serving.
type Server struct {
	// Delay is the model's time to answer. A caller that gives up ends
	// the wait.
	Delay time.Duration
	// Status, unless 0 or 200, is answered with an OpenAI error body
	// instead of a completion.
	Status int
	// Verdict returns the assistant's text of a completion; nil means
	// LlamaGuard.
	Verdict func(messages []Message) string
	// Record keeps every request for Requests.
	Record bool

	mu       sync.Mutex
	requests []Request
}

// Requests returns the recorded requests.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/v1/chat/completions") {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages are required")
		return
	}
	req.Authorization = r.Header.Get("Authorization")
	if s.Record {
		s.mu.Lock()
		s.requests = append(s.requests, req)
		s.mu.Unlock()
	}
	if s.Delay > 0 {
		t := time.NewTimer(s.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if s.Status != 0 && s.Status != http.StatusOK {
		writeError(w, s.Status, "the model server failed")
		return
	}
	verdict := s.Verdict
	if verdict == nil {
		verdict = LlamaGuard
	}
	content := verdict(req.Messages)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": "chatcmpl-standin", "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": content}}},
		"usage": map[string]any{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "server_error", "param": nil, "code": nil}})
}

// marker is how a test text asks for a category: "[S1]".
var marker = regexp.MustCompile(`\[(S\d+)\]`)

// LlamaGuard answers as Llama Guard 3 would if the texts were what their
// markers say: it rates the last message (the user's of a prompt, the
// assistant's of a conversation ending with one) and answers
// "unsafe\nS1,S10" listing, in order and once each, the categories of the
// markers "[S1]", "[S10]" in it, or "safe" when there are none.
func LlamaGuard(messages []Message) string {
	var codes []string
	seen := map[string]bool{}
	for _, m := range marker.FindAllStringSubmatch(messages[len(messages)-1].Content, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			codes = append(codes, m[1])
		}
	}
	if len(codes) == 0 {
		return "safe"
	}
	return "unsafe\n" + strings.Join(codes, ",")
}
