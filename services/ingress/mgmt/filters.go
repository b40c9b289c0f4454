package mgmt

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// Blocklist limits.
const (
	maxBlocklistItems = 10_000
	maxPatternLen     = 1_000
)

// filterPolicyJSON mirrors an Azure RAI policy: one content filter per
// category (and jailbreak, profanity) and source, and the custom
// blocklists it applies. Terroir adds one filter per source, guard_model:
// whether the guard model (where contentsafety has one configured) rates
// that source's text, and with failureMode what happens when it cannot
// ("Open": the built-in rules decide alone; "Closed": the text is
// blocked).
type filterPolicyJSON struct {
	Name       string `json:"name"`
	Properties struct {
		BasePolicyName   string              `json:"basePolicyName"`
		Mode             string              `json:"mode"`
		ContentFilters   []contentFilterJSON `json:"contentFilters"`
		CustomBlocklists []blocklistRefJSON  `json:"customBlocklists"`
	} `json:"properties"`
}

type contentFilterJSON struct {
	Name              string `json:"name"`
	Source            string `json:"source"`
	SeverityThreshold string `json:"severityThreshold,omitempty"`
	Blocking          bool   `json:"blocking"`
	Enabled           bool   `json:"enabled"`
	// FailureMode is set on the guard_model filter only.
	FailureMode string `json:"failureMode,omitempty"`
}

type blocklistRefJSON struct {
	BlocklistName string `json:"blocklistName"`
	Source        string `json:"source"`
	Blocking      bool   `json:"blocking"`
}

type filterPolicyInput struct {
	Name       *string `json:"name"`
	Properties *struct {
		BasePolicyName *string `json:"basePolicyName"`
		Mode           *string `json:"mode"`
		ContentFilters []struct {
			Name              *string `json:"name"`
			Source            *string `json:"source"`
			SeverityThreshold *string `json:"severityThreshold"`
			Blocking          *bool   `json:"blocking"`
			Enabled           *bool   `json:"enabled"`
			FailureMode       *string `json:"failureMode"`
		} `json:"contentFilters"`
		CustomBlocklists []struct {
			BlocklistName *string `json:"blocklistName"`
			Source        *string `json:"source"`
			Blocking      *bool   `json:"blocking"`
		} `json:"customBlocklists"`
	} `json:"properties"`
}

var sources = []string{"Prompt", "Completion"}

// guardFilter is the name of the guard-model filter.
const guardFilter = "guard_model"

// filterNames lists the filters a policy sets, for error messages.
const filterNames = "hate, sexual, violence, self_harm, jailbreak, profanity or guard_model"

// title capitalises a threshold or failure mode the way Azure spells
// enumerations ("Medium", "Open").
func title[S ~string](s S) string {
	if s == "" {
		return ""
	}
	return strings.ToUpper(string(s[:1])) + string(s[1:])
}

func renderFilterPolicy(p control.FilterPolicy) filterPolicyJSON {
	var out filterPolicyJSON
	out.Name = p.Name
	out.Properties.BasePolicyName = control.DefaultFilterPolicyName
	out.Properties.Mode = "Blocking"
	out.Properties.ContentFilters = []contentFilterJSON{}
	out.Properties.CustomBlocklists = []blocklistRefJSON{}
	for _, src := range sources {
		rules := p.Prompt
		if src == "Completion" {
			rules = p.Completion
		}
		for _, cat := range control.Categories {
			t := rules.Thresholds[cat]
			f := contentFilterJSON{Name: cat, Source: src, Enabled: true, Blocking: t != control.ThresholdOff && t != ""}
			if f.Blocking {
				f.SeverityThreshold = title(t)
			}
			out.Properties.ContentFilters = append(out.Properties.ContentFilters, f)
		}
		if src == "Prompt" {
			out.Properties.ContentFilters = append(out.Properties.ContentFilters, contentFilterJSON{Name: "jailbreak", Source: src, Enabled: rules.Jailbreak, Blocking: rules.Jailbreak})
		}
		out.Properties.ContentFilters = append(out.Properties.ContentFilters, contentFilterJSON{Name: "profanity", Source: src, Enabled: rules.Profanity, Blocking: rules.Profanity})
		g := rules.Guard
		out.Properties.ContentFilters = append(out.Properties.ContentFilters, contentFilterJSON{Name: guardFilter, Source: src,
			Enabled: g.Applies(), Blocking: g.Applies(), FailureMode: title(g.Failure())})
		for _, b := range rules.Blocklists {
			out.Properties.CustomBlocklists = append(out.Properties.CustomBlocklists, blocklistRefJSON{BlocklistName: b, Source: src, Blocking: true})
		}
	}
	return out
}

// normalCategory maps the spellings Azure and OpenAI use to a category,
// "jailbreak", "profanity" or guardFilter.
func normalCategory(name string) (string, bool) {
	n := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(name))
	switch n {
	case "hate", "sexual", "violence", "jailbreak", "profanity":
		return n, true
	case "selfharm":
		return "self_harm", true
	case "guardmodel", "guard":
		return guardFilter, true
	}
	return "", false
}

func (a *API) putFilterPolicy(w http.ResponseWriter, r *http.Request, c caller) error {
	var in filterPolicyInput
	name, err := a.readNamed(w, r, "item", "content-filter policy", itemPattern, &in, &in.Name)
	if err != nil {
		return err
	}
	if name == control.DefaultFilterPolicyName || slices.Contains(defaultPolicyAliases, name) {
		return apierr.Invalid("name", "the %q policy is built in and read-only; create a policy with another name", name)
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	p, err := a.filterPolicyFrom(res, name, in)
	if err != nil {
		return err
	}
	old, exists := a.cfg.State.FilterPolicy(res.Name, name)
	return a.save(w, r, c, []string{res.Location}, events.ControlFilterPolicy, res.Name, name, p, renderFilterPolicy(p), old, exists)
}

// filterPolicyFrom builds a policy from the default one and the filters
// the body sets.
func (a *API) filterPolicyFrom(res control.Resource, name string, in filterPolicyInput) (control.FilterPolicy, error) {
	p := control.DefaultFilterPolicy(res.Name)
	p.Name = name
	if in.Properties == nil {
		return p, nil
	}
	if b := in.Properties.BasePolicyName; b != nil && *b != "" && *b != control.DefaultFilterPolicyName && !slices.Contains(defaultPolicyAliases, *b) {
		return p, apierr.Invalid("properties.basePolicyName", "basePolicyName must be %q (or empty)", control.DefaultFilterPolicyName)
	}
	seen := map[string]bool{}
	for i, f := range in.Properties.ContentFilters {
		param := fmt.Sprintf("properties.contentFilters[%d]", i)
		if f.Name == nil {
			return p, apierr.Invalid(param+".name", "%s.name is required: %s", param, filterNames)
		}
		cat, ok := normalCategory(*f.Name)
		if !ok {
			return p, apierr.Invalid(param+".name", "unknown content filter %q: %s", *f.Name, filterNames)
		}
		rules, src, err := direction(&p, f.Source, param+".source")
		if err != nil {
			return p, err
		}
		if seen[cat+"/"+src] {
			return p, apierr.Invalid(param, "the %s filter for %s appears twice", cat, src)
		}
		seen[cat+"/"+src] = true
		on := (f.Enabled == nil || *f.Enabled) && (f.Blocking == nil || *f.Blocking)
		if f.FailureMode != nil && cat != guardFilter {
			return p, apierr.Invalid(param+".failureMode", "failureMode applies to the %s filter only", guardFilter)
		}
		switch cat {
		case "jailbreak":
			if src != "Prompt" {
				return p, apierr.Invalid(param+".source", "jailbreak detection applies to prompts only")
			}
			rules.Jailbreak = on
		case "profanity":
			rules.Profanity = on
		case guardFilter:
			rules.Guard.Off = !on
			if f.FailureMode != nil {
				mode := control.GuardFailure(strings.ToLower(*f.FailureMode))
				if !slices.Contains(control.GuardFailures, mode) {
					return p, apierr.Invalid(param+".failureMode", "unknown failure mode %q: Open (the built-in rules decide alone) or Closed (the text is blocked)", *f.FailureMode)
				}
				rules.Guard.OnFailure = mode
			}
		default:
			t := control.ThresholdOff
			if on {
				if f.SeverityThreshold == nil {
					return p, apierr.Invalid(param+".severityThreshold", "%s.severityThreshold is required for a blocking %s filter: Low, Medium, High or Off", param, cat)
				}
				t = control.Threshold(strings.ToLower(*f.SeverityThreshold))
				if !slices.Contains([]control.Threshold{control.ThresholdLow, control.ThresholdMedium, control.ThresholdHigh, control.ThresholdOff}, t) {
					return p, apierr.Invalid(param+".severityThreshold", "unknown severity threshold %q: Low, Medium, High or Off", *f.SeverityThreshold)
				}
			}
			rules.Thresholds[cat] = t
		}
	}
	for i, b := range in.Properties.CustomBlocklists {
		param := fmt.Sprintf("properties.customBlocklists[%d]", i)
		if b.BlocklistName == nil {
			return p, apierr.Invalid(param+".blocklistName", "%s.blocklistName is required", param)
		}
		if _, ok := a.cfg.State.Blocklist(res.Name, *b.BlocklistName); !ok {
			return p, apierr.Invalid(param+".blocklistName", "blocklist %q does not exist in resource %q", *b.BlocklistName, res.Name)
		}
		rules, _, err := direction(&p, b.Source, param+".source")
		if err != nil {
			return p, err
		}
		if (b.Blocking == nil || *b.Blocking) && !slices.Contains(rules.Blocklists, *b.BlocklistName) {
			rules.Blocklists = append(rules.Blocklists, *b.BlocklistName)
		}
	}
	return p, nil
}

// direction returns the rules of p that a source names.
func direction(p *control.FilterPolicy, source *string, param string) (*control.FilterRules, string, error) {
	if source == nil {
		return nil, "", apierr.Invalid(param, "%s is required: Prompt or Completion", param)
	}
	switch strings.ToLower(*source) {
	case "prompt":
		return &p.Prompt, "Prompt", nil
	case "completion":
		return &p.Completion, "Completion", nil
	}
	return nil, "", apierr.Invalid(param, "unknown source %q: Prompt or Completion", *source)
}

// blocklistJSON is a blocklist as the API shows it.
type blocklistJSON struct {
	Name       string `json:"name"`
	Properties struct {
		Description string              `json:"description"`
		Items       []blocklistItemJSON `json:"blocklistItems"`
	} `json:"properties"`
}

type blocklistItemJSON struct {
	ID      string `json:"blocklistItemId"`
	Pattern string `json:"pattern"`
	IsRegex bool   `json:"isRegex"`
}

type blocklistInput struct {
	Name       *string `json:"name"`
	Properties *struct {
		Description *string `json:"description"`
		Items       []struct {
			ID      *string `json:"blocklistItemId"`
			Pattern *string `json:"pattern"`
			IsRegex *bool   `json:"isRegex"`
		} `json:"blocklistItems"`
	} `json:"properties"`
}

func renderBlocklist(b control.Blocklist) blocklistJSON {
	var out blocklistJSON
	out.Name = b.Name
	out.Properties.Description = b.Description
	out.Properties.Items = []blocklistItemJSON{}
	for _, it := range b.Items {
		out.Properties.Items = append(out.Properties.Items, blocklistItemJSON(it))
	}
	return out
}

func (a *API) putBlocklist(w http.ResponseWriter, r *http.Request, c caller) error {
	var in blocklistInput
	name, err := a.readNamed(w, r, "item", "blocklist", itemPattern, &in, &in.Name)
	if err != nil {
		return err
	}
	b := control.Blocklist{Name: name, Items: []control.BlocklistItem{}}
	if p := in.Properties; p != nil {
		if p.Description != nil {
			b.Description = *p.Description
		}
		if len(p.Items) > maxBlocklistItems {
			return apierr.Invalid("properties.blocklistItems", "a blocklist holds at most %d items, not %d", maxBlocklistItems, len(p.Items))
		}
		ids := map[string]bool{}
		for i, it := range p.Items {
			param := fmt.Sprintf("properties.blocklistItems[%d]", i)
			item := control.BlocklistItem{ID: fmt.Sprintf("item-%d", i+1)}
			if it.ID != nil {
				if err := checkName(param+".blocklistItemId", "blocklist item", *it.ID, itemPattern); err != nil {
					return err
				}
				item.ID = *it.ID
			}
			if ids[item.ID] {
				return apierr.Invalid(param+".blocklistItemId", "blocklist item ID %q appears twice", item.ID)
			}
			ids[item.ID] = true
			if it.Pattern == nil || strings.TrimSpace(*it.Pattern) == "" || len(*it.Pattern) > maxPatternLen {
				return apierr.Invalid(param+".pattern", "%s.pattern must be a non-blank string of at most %d bytes", param, maxPatternLen)
			}
			item.Pattern = *it.Pattern
			item.IsRegex = it.IsRegex != nil && *it.IsRegex
			if item.IsRegex {
				if _, err := regexp.Compile(item.Pattern); err != nil {
					return apierr.Invalid(param+".pattern", "%s.pattern is not a valid RE2 regular expression", param)
				}
			}
			b.Items = append(b.Items, item)
		}
	}
	a.writes.Lock()
	defer a.writes.Unlock()
	res, err := a.resourceOf(r)
	if err != nil {
		return err
	}
	b.Resource = res.Name
	old, exists := a.cfg.State.Blocklist(res.Name, name)
	return a.save(w, r, c, []string{res.Location}, events.ControlBlocklist, res.Name, name, b, renderBlocklist(b), old, exists)
}
