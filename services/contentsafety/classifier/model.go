package classifier

import (
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// maxChunkWords is how many normalised words the linear model reads at
// once. It was trained on single sentences and short passages, so a long
// text is scored in chunks of whole sentences up to this length, and a
// longer sentence in windows that overlap by half; the highest rating of
// any chunk counts.
const maxChunkWords = 64

// modelRules are the rule IDs reported for findings of the linear model,
// per category.
var modelRules = [numCats]string{"model.hate", "model.sexual", "model.violence", "model.self_harm", "model.jailbreak", "model.profanity"}

// scoreModel rates the tokenised text of s with the linear model and
// raises sev where the model rates higher than the rules. cleared holds,
// per category, the strongest context rule that fired anywhere in the
// text: it clears the model's low and medium findings (and high ones
// too when it is safe_all), as it does the rules' in its sentence. A
// category where a rule matched right after a negation (negated), and
// no rule matched otherwise, keeps the rules' verdict (safe): a bag of words
// cannot tell "I do not want to kill myself" from "I want to kill
// myself".
func (c *Classifier) scoreModel(s *scratch, dir events.Direction, sev, cleared *[numCats]int8, negated *[numCats]bool) {
	toks, sents := s.z.toks, s.z.sents
	if c.model == nil || len(toks) == 0 {
		return
	}
	var levels [linear.NumCategories]int8
	jailbreak := false
	var lg [linear.NumHeads]float32
	score := func(a, b int) {
		norm := s.z.norm[toks[a].start:toks[b-1].end]
		s.feats = linear.AppendFeatures(s.feats[:0], norm, c.model.Bits())
		c.model.Logits(s.feats, &lg)
		lv, jb := c.model.Levels(&lg)
		for i, l := range lv {
			levels[i] = max(levels[i], l)
		}
		jailbreak = jailbreak || jb
	}
	a := 0
	for si := range sents {
		sa, sb := int(sents[si]), len(toks)
		if si+1 < len(sents) {
			sb = int(sents[si+1])
		}
		if sb-a > maxChunkWords && sa > a {
			score(a, sa)
			a = sa
		}
		for sb-a > maxChunkWords {
			score(a, a+maxChunkWords)
			a += maxChunkWords / 2
		}
	}
	score(a, len(toks))

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
	if jailbreak && dir == events.DirectionPrompt {
		s.rules = append(s.rules, modelRules[catJailbreak])
		sev[catJailbreak] = max(sev[catJailbreak], sevHigh)
	}
}
