// Package builtin is the built-in model backend of the inference service:
// a small language model and an embedding model that need nothing
// installed, so the whole of Terroir runs and can be tested on one machine.
//
// The language model is an interpolated Kneser-Ney 5-gram model over
// o200k_base token ids (the tokenizer of OpenAI's current models), trained
// at start-up on the public-domain corpus embedded in the binary
// (Moby-Dick and the U.S. State of the Union addresses 1946-2021). It
// continues prompts (Generate) and answers chat conversations (Chat) with
// locally fluent but meaningless text, honouring the sampling parameters
// of the OpenAI API: max_tokens, temperature, top_p, seed, stop and n.
// Adapt returns a copy-free overlay of a customer's text, which is what
// fine-tuning does with it; Perplexity measures how well a model predicts
// a text.
//
// Embed is a deterministic hashing text embedding: similar texts get
// similar vectors, with no learned weights at all.
//
// CountTokens and CountChatTokens count tokens as OpenAI bills them.
//
// The package is stateless: it writes nothing to disk, logs nothing, and
// keeps nothing of a prompt or an output once a call returns. A Model is
// immutable and safe for concurrent use.
package builtin
