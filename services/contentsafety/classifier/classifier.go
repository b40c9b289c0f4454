// Package classifier is Terroir's content-safety classifier: it rates a
// prompt or a completion in the harm categories hate, sexual, violence and
// self_harm (severity safe, low, medium or high), detects jailbreak
// attempts in prompts and profanity, matches a resource's custom
// blocklists, and applies a content-filter policy to produce the
// content_filter_results annotations of the Azure OpenAI wire format.
//
// The classifier has two stages over normalised text (case, compatibility
// forms, confusable letters, invisible characters, leetspeak and
// spaced-out spelling are folded away first, see Normalize): a lexicon of
// words and phrase rules (lexicon.txt, embedded), and a trained linear
// model over hashed word and character n-gram features (package linear,
// weights embedded) that catches wording the rules never saw. Each
// category gets the higher of the two severities; model findings are
// reported as the rules "model.<category>". The classifier is
// deterministic, English only, and never keeps, logs or returns the text
// it classifies: a Result holds severities, flags and the IDs of the rules
// and blocklist items that fired.
//
// A Classifier is safe for concurrent use.
package classifier

import (
	_ "embed"
	"fmt"
	"slices"
	"sync"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

//go:embed lexicon.txt
var lexiconSource string

// Result is the classification of one text. It never contains the text
// itself.
type Result struct {
	// Severity has an entry for every category of control.Categories;
	// it is events.SeveritySafe when nothing was found.
	Severity map[string]events.Severity
	// Jailbreak is set when a prompt-injection or jailbreak attempt was
	// detected; it is only ever set for prompts.
	Jailbreak bool
	// Profanity is set when profane language was found.
	Profanity bool
	// Blocklists lists the custom blocklist items that matched, sorted by
	// list and item ID; empty when none did.
	Blocklists []BlocklistHit
	// Rules lists the IDs of the lexicon rules that fired, sorted, such as
	// "violence.threat.kill_person"; never text.
	Rules []string
}

// BlocklistHit is one matched blocklist item.
type BlocklistHit struct {
	// List is the blocklist's name.
	List string `json:"list"`
	// ItemID is the matched item's ID.
	ItemID string `json:"item_id"`
}

// Classifier classifies text. Build one with New and share it.
type Classifier struct {
	lx    *lexicon
	model *linear.Model // nil for the rules alone
	// known holds, per vocabulary ID of the lexicon, the word looked up
	// in the model's table once, so that the lexicon's words (most
	// words of a text are among them) are not looked up per text
	known []linear.Word
	pool  sync.Pool // *scratch
}

// scratch is the per-call working memory, pooled so that Classify
// allocates little.
type scratch struct {
	z     tokenizer
	stamp []uint32 // per rule: the sentence it was last queued for
	seen  []uint32 // per vocabulary ID: the last sentence it was in
	gen   uint32
	cands []int32
	rules []string
	feats []uint32 // hashed features for the linear model
	words []linear.Word
	segs  []segment
}

// New compiles the embedded lexicon and loads the embedded weights of the
// linear model (package linear).
func New() (*Classifier, error) {
	c, err := newFromSource(lexiconSource)
	if err != nil {
		return nil, err
	}
	m, err := linear.Shipped()
	if err != nil {
		return nil, fmt.Errorf("loading content-safety model: %w", err)
	}
	c.setModel(m)
	return c, nil
}

// NewRulesOnly compiles the embedded lexicon without the linear model, to
// measure what the model adds.
func NewRulesOnly() (*Classifier, error) {
	return newFromSource(lexiconSource)
}

// NewWithModel compiles the embedded lexicon and uses m as the linear
// stage instead of the embedded weights (none when m is nil). The trainer
// uses it to score held-out text exactly as the classifier will.
func NewWithModel(m *linear.Model) (*Classifier, error) {
	c, err := newFromSource(lexiconSource)
	if err != nil {
		return nil, err
	}
	c.setModel(m)
	return c, nil
}

// setModel makes m, which may be nil, the linear stage.
func (c *Classifier) setModel(m *linear.Model) {
	c.model, c.known = m, nil
	if m == nil {
		return
	}
	c.known = make([]linear.Word, len(c.lx.voc.words))
	for id, w := range c.lx.voc.words[1:] {
		c.known[id+1] = m.Word([]byte(w))
	}
}

func newFromSource(src string) (*Classifier, error) {
	lx, err := parseLexicon(src)
	if err != nil {
		return nil, fmt.Errorf("compiling content-safety lexicon: %w", err)
	}
	c := &Classifier{lx: lx}
	c.pool.New = func() any {
		return &scratch{z: tokenizer{voc: &lx.voc}, stamp: make([]uint32, len(lx.rules)), seen: make([]uint32, len(lx.voc.words))}
	}
	return c, nil
}

// Normalize returns the normalised form of text that the lexicon and the
// blocklists match on: lower-case words separated by single spaces, with
// compatibility forms, confusable letters, invisible characters,
// leetspeak, masking asterisks, repeated letters of known words and
// spaced-out spelling folded away, and contractions expanded.
func (c *Classifier) Normalize(text string) string {
	s := c.pool.Get().(*scratch)
	defer c.pool.Put(s)
	s.z.run(text)
	return string(s.z.norm)
}

// Classify rates text, a prompt or a completion as dir says. Jailbreak
// detection runs on prompts only.
func (c *Classifier) Classify(text string, dir events.Direction) Result {
	return c.ClassifyWith(text, dir, nil, nil)
}

// ClassifyWith is Classify that also matches the blocklists of bl named in
// names (a nil bl or empty names matches none; unknown names are ignored).
func (c *Classifier) ClassifyWith(text string, dir events.Direction, bl *Blocklists, names []string) Result {
	s := c.pool.Get().(*scratch)
	defer c.pool.Put(s)
	s.z.run(text)
	var sev, cleared [numCats]int8
	var negated [numCats]bool
	s.rules = s.rules[:0]
	c.scan(s, dir, &sev, &cleared, &negated)
	c.scoreModel(s, dir, &sev, &cleared, &negated)

	r := Result{
		Severity: make(map[string]events.Severity, catJailbreak),
		// detections are reported with the highest rank when they fire
		Jailbreak: sev[catJailbreak] > 0,
		Profanity: sev[catProfanity] > 0,
	}
	for i := range catJailbreak {
		r.Severity[catNames[i]] = sevNames[sev[i]]
	}
	if len(s.rules) > 0 {
		slices.Sort(s.rules)
		r.Rules = slices.Clone(slices.Compact(s.rules))
	}
	if bl != nil && len(names) > 0 {
		r.Blocklists = bl.match(text, s.z.norm, names)
	}
	return r
}

// scan runs the lexicon over every sentence of the tokenised text. It
// raises sev to the findings, lowers textCleared to the strongest context
// rule of each category that fired, and sets negatedCats for the
// categories where a rule matched right after a negation.
func (c *Classifier) scan(s *scratch, dir events.Direction, sev, textCleared *[numCats]int8, negatedCats *[numCats]bool) {
	lx := c.lx
	toks := s.z.toks
	sents := s.z.sents
	for si := range sents {
		a := int(sents[si])
		b := len(toks)
		if si+1 < len(sents) {
			b = int(sents[si+1])
		}
		sent := toks[a:b]
		s.gen++
		if s.gen == 0 {
			clear(s.stamp)
			clear(s.seen)
			s.gen = 1
		}
		s.cands = s.cands[:0]
		for _, t := range sent {
			if t.id == 0 {
				continue
			}
			s.seen[t.id] = s.gen
			for _, ri := range lx.anchors[t.id] {
				if s.stamp[ri] != s.gen {
					s.stamp[ri] = s.gen
					s.cands = append(s.cands, ri)
				}
			}
		}
		if len(s.cands) == 0 {
			continue
		}
		var local [numCats]int8
		var cleared [numCats]int8
		firstRule := len(s.rules)
		for _, ri := range s.cands {
			r := &lx.rules[ri]
			if r.outs[0].cat == catJailbreak && dir != events.DirectionPrompt {
				continue
			}
			ok, negated := lx.matches(r, sent, s.seen, s.gen)
			if negated && r.outs[0].sev > 0 {
				// a negated harmful phrase clears the linear model's
				// finding of its category, which cannot see negation
				// (see scoreModel)
				negatedCats[r.outs[0].cat] = true
			}
			if !ok {
				continue
			}
			for _, o := range r.outs {
				if o.sev < 0 {
					cleared[o.cat] = min(cleared[o.cat], o.sev)
				} else if o.sev > local[o.cat] {
					local[o.cat] = o.sev
				}
				s.rules = append(s.rules, o.id)
			}
		}
		for cat := range numCats {
			textCleared[cat] = min(textCleared[cat], cleared[cat])
			// a context rule clears low and medium findings of its
			// category in this sentence, and high ones too when it is
			// safe_all
			if cleared[cat] == sevSafeAll || cleared[cat] == sevSafe && local[cat] < sevHigh {
				local[cat] = sevNone
				s.rules = dropCategory(s.rules, firstRule, cat)
			}
			if local[cat] > sev[cat] {
				sev[cat] = local[cat]
			}
		}
	}
}

// dropCategory removes the non-context rule IDs of category cat fired from
// index from on.
func dropCategory(ids []string, from, cat int) []string {
	prefix := catNames[cat] + "."
	out := ids[:from]
	for _, id := range ids[from:] {
		if len(id) > len(prefix) && id[:len(prefix)] == prefix && !isContextRule(id) {
			continue
		}
		out = append(out, id)
	}
	return out
}

// isContextRule reports rule IDs of context rules, which are named
// <category>.context.<name>.
func isContextRule(id string) bool {
	for _, n := range catNames {
		if len(id) > len(n)+9 && id[:len(n)+9] == n+".context" {
			return true
		}
	}
	return false
}

// Merge combines the results of two parts of one text (windows of a
// stream, messages of a conversation): the highest severity per category,
// either detection, and the union of blocklist hits and rules.
func Merge(a, b Result) Result {
	out := Result{
		Severity:  make(map[string]events.Severity, catJailbreak),
		Jailbreak: a.Jailbreak || b.Jailbreak,
		Profanity: a.Profanity || b.Profanity,
	}
	for i := range catJailbreak {
		n := catNames[i]
		out.Severity[n] = maxSeverity(a.Severity[n], b.Severity[n])
	}
	if len(a.Blocklists)+len(b.Blocklists) > 0 {
		out.Blocklists = append(slices.Clone(a.Blocklists), b.Blocklists...)
		slices.SortFunc(out.Blocklists, compareHits)
		out.Blocklists = slices.Compact(out.Blocklists)
	}
	if len(a.Rules)+len(b.Rules) > 0 {
		out.Rules = append(slices.Clone(a.Rules), b.Rules...)
		slices.Sort(out.Rules)
		out.Rules = slices.Compact(out.Rules)
	}
	return out
}

// SeverityRank orders severities: safe 0, low 1, medium 2, high 3.
func SeverityRank(s events.Severity) int {
	switch s {
	case events.SeverityLow:
		return 1
	case events.SeverityMedium:
		return 2
	case events.SeverityHigh:
		return 3
	}
	return 0
}

func maxSeverity(a, b events.Severity) events.Severity {
	if SeverityRank(b) > SeverityRank(a) {
		return b
	}
	if a == "" {
		return events.SeveritySafe
	}
	return a
}
