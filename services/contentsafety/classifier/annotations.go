package classifier

import (
	"slices"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
)

// Annotations is Azure's content_filter_results object (see
// openai.ContentFilterResults): the four harm categories always, jailbreak
// only for prompts, profanity only when the policy filters profanity in
// that direction, custom_blocklists only when the policy applies
// blocklists in that direction.
type Annotations = openai.ContentFilterResults

// CategoryAnnotation is the result of one harm category.
type CategoryAnnotation = openai.CategoryFilterResult

// DetectionAnnotation is the result of a detector (jailbreak, profanity).
type DetectionAnnotation = openai.DetectionFilterResult

// BlocklistAnnotation is the result of the custom blocklists.
type BlocklistAnnotation = openai.BlocklistFilterResult

// BlocklistDetail names one matched blocklist.
type BlocklistDetail = openai.BlocklistDetail

// Apply applies policy p's rules for direction dir to r, returning the
// annotations and whether the content is blocked. A category whose
// threshold the policy does not set is held to the default threshold,
// medium. Jailbreak is annotated for prompts only and blocks when the
// policy filters jailbreaks; profanity blocks when the policy filters
// profanity; a blocklist hit blocks when the policy applies that list in
// dir (hits of other lists are ignored).
func Apply(p control.FilterPolicy, dir events.Direction, r Result) (a Annotations, blocked bool) {
	rules := p.Completion
	if dir == events.DirectionPrompt {
		rules = p.Prompt
	}
	cat := func(name string) *CategoryAnnotation {
		sev, ok := r.Severity[name]
		if !ok || sev == "" {
			sev = events.SeveritySafe
		}
		th, ok := rules.Thresholds[name]
		if !ok {
			th = control.ThresholdMedium
		}
		f := th.Blocks(sev)
		blocked = blocked || f
		return &CategoryAnnotation{Filtered: f, Severity: sev}
	}
	a.Hate = cat("hate")
	a.Sexual = cat("sexual")
	a.Violence = cat("violence")
	a.SelfHarm = cat("self_harm")
	if dir == events.DirectionPrompt {
		f := r.Jailbreak && rules.Jailbreak
		blocked = blocked || f
		a.Jailbreak = &DetectionAnnotation{Filtered: f, Detected: r.Jailbreak}
	}
	if rules.Profanity {
		blocked = blocked || r.Profanity
		a.Profanity = &DetectionAnnotation{Filtered: r.Profanity, Detected: r.Profanity}
	}
	if len(rules.Blocklists) > 0 {
		ba := &BlocklistAnnotation{Details: []BlocklistDetail{}}
		for _, h := range r.Blocklists {
			if !slices.Contains(rules.Blocklists, h.List) {
				continue
			}
			if !slices.ContainsFunc(ba.Details, func(d BlocklistDetail) bool { return d.ID == h.List }) {
				ba.Details = append(ba.Details, BlocklistDetail{Filtered: true, ID: h.List})
			}
			ba.Filtered = true
		}
		blocked = blocked || ba.Filtered
		a.CustomBlocklists = ba
	}
	return a, blocked
}
