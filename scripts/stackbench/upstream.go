package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// upstream is a zero-delay OpenAI-compatible model server: it answers a
// chat completion at once with a fixed message, or, streamed, with
// streamChunks chunks of one word each. It stands for the model a
// deployment sends to, so the measurements show Terroir's own cost.
type upstream struct {
	srv *http.Server
	ln  net.Listener
}

// streamChunks is how many content chunks a streamed answer has.
const streamChunks = 32

func startUpstream(addr string) (*upstream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the zero-delay upstream listens on %s, where the catalog's llama-3.1-8b-instruct backend points (is a model server or another benchmark running?): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", chatCompletion)
	u := &upstream{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

// answer is the fixed non-streamed answer: eight tokens of content.
var answer = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1767225600,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":32,"completion_tokens":8,"total_tokens":40}}`)

func chatCompletion(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Stream bool `json:"stream"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad JSON","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	var b strings.Builder
	const head = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,"model":"bench","choices":[{"index":0,"delta":{`
	b.WriteString(head + `"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n")
	for i := range streamChunks {
		b.WriteString(head + `"content":" word` + strconv.Itoa(i) + `"},"finish_reason":null}]}` + "\n\n")
	}
	b.WriteString(head + `},"finish_reason":"stop"}]}` + "\n\n")
	b.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,"model":"bench","choices":[],"usage":{"prompt_tokens":32,"completion_tokens":32,"total_tokens":64}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	_, _ = w.Write([]byte(b.String()))
}
