package classifier

import (
	"math"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// maxChunkWords is how many normalised words the linear model reads at
// once. It was trained on single sentences and short passages, so a text
// up to this length is read whole, and a longer one as every sentence
// alone and every run of adjacent sentences up to this many words, a
// longer sentence in windows of this many words that overlap by half;
// per head, the highest logit of any of them counts. A harmful sentence
// inside a long benign text is thus read alone, not diluted by its
// neighbours, and a request spread over a few sentences is read whole.
// (Reading short texts sentence by sentence as well blocked more benign
// items of the dev hold-out for the same recall.)
const maxChunkWords = 64

// segment is a sentence, or a window of a long sentence, with the sums of
// its features.
type segment struct {
	sums  linear.Sums
	words int
	join  bool // a whole sentence, which runs of sentences may include
}

// modelRules are the rule IDs reported for findings of the linear model,
// per category.
var modelRules = [numCats]string{"model.hate", "model.sexual", "model.violence", "model.self_harm", "model.jailbreak", "model.profanity"}

// modelLogits sets lg to the highest logit per head over the segments of
// the tokenised text of s and their runs; it reports false when the text
// has no words or there is no model.
func (c *Classifier) modelLogits(s *scratch, lg *[linear.NumHeads]float32) bool {
	toks, sents := s.z.toks, s.z.sents
	if c.model == nil || len(toks) == 0 {
		return false
	}
	// each word is looked up once, a word of the lexicon not at all
	s.words = s.words[:0]
	for _, t := range toks {
		if t.id != 0 {
			// the word is the vocabulary's: emit writes the vocabulary's
			// spelling of a word it resolved
			s.words = append(s.words, c.known[t.id])
		} else {
			s.words = append(s.words, c.model.Word(s.z.norm[t.start:t.end]))
		}
	}
	s.segs = s.segs[:0]
	add := func(a, b int, join bool) {
		s.segs = append(s.segs, segment{words: b - a, join: join})
		s.feats = c.model.AddWords(s.feats, s.words[a:b], &s.segs[len(s.segs)-1].sums)
	}
	if len(toks) <= maxChunkWords {
		add(0, len(toks), false)
	} else {
		for si := range sents {
			a, b := int(sents[si]), len(toks)
			if si+1 < len(sents) {
				b = int(sents[si+1])
			}
			if b-a <= maxChunkWords {
				add(a, b, true)
				continue
			}
			for ; ; a += maxChunkWords / 2 {
				add(a, min(a+maxChunkWords, b), false)
				if a+maxChunkWords >= b {
					break
				}
			}
		}
	}
	for h := range lg {
		lg[h] = float32(math.Inf(-1))
	}
	var one [linear.NumHeads]float32
	for i := range s.segs {
		run := s.segs[i].sums
		words := s.segs[i].words
		for j := i; ; {
			c.model.LogitsOf(&run, &one)
			for h := range lg {
				lg[h] = max(lg[h], one[h])
			}
			j++
			if !s.segs[i].join || j == len(s.segs) || !s.segs[j].join || words+s.segs[j].words > maxChunkWords {
				break
			}
			run.Add(&s.segs[j].sums)
			words += s.segs[j].words
		}
	}
	return true
}

// ModelLogits returns the linear model's logit per head for text, read
// as Classify reads it (see maxChunkWords), and false when the text has
// no words or the classifier has no model. The trainer chooses the
// thresholds with it.
func (c *Classifier) ModelLogits(text string) ([linear.NumHeads]float32, bool) {
	s := c.pool.Get().(*scratch)
	defer c.pool.Put(s)
	s.z.run(text)
	var lg [linear.NumHeads]float32
	ok := c.modelLogits(s, &lg)
	return lg, ok
}

// scoreModel rates the tokenised text of s with the linear model and
// raises sev where the model rates higher than the rules. cleared holds,
// per category, the strongest context rule that fired anywhere in the
// text: it clears the model's low and medium findings (and high ones
// too when it is safe_all), as it does the rules' in its sentence. A
// category where a rule matched right after a negation (negated), and
// no rule matched otherwise, keeps the rules' verdict (safe): a bag of
// words cannot tell "I do not want to kill myself" from "I want to kill
// myself".
func (c *Classifier) scoreModel(s *scratch, dir events.Direction, sev, cleared *[numCats]int8, negated *[numCats]bool) {
	var lg [linear.NumHeads]float32
	if !c.modelLogits(s, &lg) {
		return
	}
	levels, jailbreak := c.model.Levels(&lg)
	for cat, l := range levels {
		switch {
		case l == sevNone, cleared[cat] == sevSafeAll, cleared[cat] == sevSafe && l < sevHigh:
			continue
		case negated[cat] && sev[cat] == sevNone:
			continue
		}
		s.rules = append(s.rules, modelRules[cat])
		sev[cat] = max(sev[cat], l)
	}
	switch {
	case dir != events.DirectionPrompt:
	case jailbreak:
		s.rules = append(s.rules, modelRules[catJailbreak])
		sev[catJailbreak] = max(sev[catJailbreak], sevHigh)
	case sev[catJailbreak] > sevNone && c.model.VetoesJailbreak(&lg):
		// the jailbreak rules match words ("jailbreak", "sudo", "content
		// filter") that questions about them share with attempts; a
		// model far from finding one clears them
		sev[catJailbreak] = sevNone
		s.rules = slices.DeleteFunc(s.rules, func(id string) bool { return strings.HasPrefix(id, "jailbreak.") })
	}
}
