package guard

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// Format is how a guard model is asked and how it answers.
type Format string

// Formats.
const (
	// FormatLlamaGuard: the conversation is sent as chat messages, which
	// the server's chat template of Llama Guard (3 or later) turns into
	// its classification prompt; the model answers "safe", or "unsafe"
	// and a line of hazard categories such as "S1,S10".
	FormatLlamaGuard Format = "llamaguard"
	// FormatShieldGemma: one call per harm policy, each asking whether
	// the text violates it in ShieldGemma's prompt layout; the model
	// answers "Yes" or "No".
	FormatShieldGemma Format = "shieldgemma"
)

// Formats lists the formats.
var Formats = []Format{FormatLlamaGuard, FormatShieldGemma}

// format builds the calls of one check.
type format interface {
	probes(c conversation) []probe
}

// probe is one call: its messages and how its answer is read.
type probe struct {
	messages []message
	parse    func(content string) (classifier.Result, error)
}

func formatOf(f Format) (format, error) {
	switch f {
	case FormatLlamaGuard:
		return llamaGuard{}, nil
	case FormatShieldGemma:
		return shieldGemma{}, nil
	}
	return nil, fmt.Errorf("guard: unknown format %q (known: llamaguard, shieldgemma)", f)
}

// conversation is what a check rates: the user's turn, and for an output
// the assistant's turn, which is then the part rated.
type conversation struct {
	dir       events.Direction
	user      string
	assistant string
}

func newConversation(dir events.Direction, texts []string) conversation {
	c := conversation{dir: dir}
	if dir == events.DirectionCompletion && len(texts) > 0 {
		c.assistant = texts[len(texts)-1]
		texts = texts[:len(texts)-1]
	}
	c.user = strings.Join(nonBlank(texts), "\n\n")
	return c
}

func nonBlank(texts []string) []string {
	var out []string
	for _, t := range texts {
		if strings.TrimSpace(t) != "" {
			out = append(out, t)
		}
	}
	return out
}

// empty reports that there is nothing to rate.
func (c conversation) empty() bool {
	if c.dir == events.DirectionCompletion {
		return strings.TrimSpace(c.assistant) == ""
	}
	return strings.TrimSpace(c.user) == ""
}

// bytes is the size of what is sent, for logs.
func (c conversation) bytes() int { return len(c.user) + len(c.assistant) }

// newResult is a result with every category safe.
func newResult() classifier.Result {
	r := classifier.Result{Severity: make(map[string]events.Severity, len(control.Categories))}
	for _, c := range control.Categories {
		r.Severity[c] = events.SeveritySafe
	}
	return r
}

// raise records a finding of rule at severity s in category cat (none
// when cat is empty: the finding is recorded, nothing is rated).
func raise(r *classifier.Result, rule, cat string, s events.Severity) {
	if cat != "" && classifier.SeverityRank(s) > classifier.SeverityRank(r.Severity[cat]) {
		r.Severity[cat] = s
	}
	if !slices.Contains(r.Rules, rule) {
		r.Rules = append(r.Rules, rule)
		slices.Sort(r.Rules)
	}
}

// Mapping is where a guard model's category lands among Terroir's.
type Mapping struct {
	// Category is one of control.Categories, or empty when Terroir has
	// none for it: the finding is then recorded as a rule ID (it reaches
	// safety signals and abuse monitoring) but blocks nothing by itself.
	Category string
	Severity events.Severity
	// Name is the model's own name of the category.
	Name string
}

// LlamaGuardCategories maps Llama Guard 3's hazard categories (the MLCommons
// taxonomy, S1–S14) onto Terroir's. Llama Guard gives no severity: a
// category it names is a violation of its policy, rated high where the
// harm is grave whatever the wording and medium where it is the policy's
// line (medium blocks under the default policy; a policy that blocks only
// high lets it through).
var LlamaGuardCategories = map[string]Mapping{
	"S1":  {"violence", events.SeverityHigh, "violent crimes"},
	"S2":  {"", "", "non-violent crimes"},
	"S3":  {"sexual", events.SeverityHigh, "sex-related crimes"},
	"S4":  {"sexual", events.SeverityHigh, "child sexual exploitation"},
	"S5":  {"", "", "defamation"},
	"S6":  {"", "", "specialized advice"},
	"S7":  {"", "", "privacy"},
	"S8":  {"", "", "intellectual property"},
	"S9":  {"violence", events.SeverityHigh, "indiscriminate weapons"},
	"S10": {"hate", events.SeverityMedium, "hate"},
	"S11": {"self_harm", events.SeverityHigh, "suicide and self-harm"},
	"S12": {"sexual", events.SeverityMedium, "sexual content"},
	"S13": {"", "", "elections"},
	"S14": {"", "", "code interpreter abuse"},
}

// RulePrefix starts the rule ID of every guard finding ("guard.S1").
const RulePrefix = "guard."

type llamaGuard struct{}

func (llamaGuard) probes(c conversation) []probe {
	// Llama Guard's chat template rates the last turn: one user message
	// is a prompt ("User"), a user and an assistant message an output
	// ("Agent"); the roles must alternate, hence one message per side
	msgs := []message{{Role: "user", Content: c.user}}
	if c.dir == events.DirectionCompletion {
		msgs = append(msgs, message{Role: "assistant", Content: c.assistant})
	}
	return []probe{{messages: msgs, parse: ParseLlamaGuard}}
}

// ParseLlamaGuard reads a Llama Guard answer: "safe", or "unsafe"
// followed by its categories, comma-separated, on the next line
// ("unsafe\nS1,S10"). Case, surrounding whitespace, spaces after commas
// and categories on the verdict's own line are tolerated. Categories
// beyond S14 (a custom taxonomy) are recorded as rule IDs and rate
// nothing. Anything else, "unsafe" without a category included, is an
// error (which never quotes the answer).
func ParseLlamaGuard(content string) (classifier.Result, error) {
	words := strings.FieldsFunc(content, func(r rune) bool {
		return r == ',' || r == ';' || r == ':' || r == '.' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	if len(words) == 0 {
		return classifier.Result{}, errors.New("the guard model answered nothing")
	}
	r := newResult()
	switch strings.ToLower(words[0]) {
	case "safe":
		if len(words) > 1 {
			return classifier.Result{}, fmt.Errorf("the guard model answered safe and %d more words", len(words)-1)
		}
		return r, nil
	case "unsafe":
	default:
		return classifier.Result{}, fmt.Errorf("the guard model's answer (%d bytes) is not a Llama Guard verdict", len(content))
	}
	if len(words) == 1 {
		return classifier.Result{}, errors.New("the guard model answered unsafe without a category")
	}
	for _, w := range words[1:] {
		code := strings.ToUpper(w)
		n, err := strconv.Atoi(strings.TrimPrefix(code, "S"))
		if !strings.HasPrefix(code, "S") || err != nil || n < 1 || n > 99 {
			return classifier.Result{}, fmt.Errorf("the guard model answered unsafe with a category that is not S1, S2, …")
		}
		code = "S" + strconv.Itoa(n)
		m := LlamaGuardCategories[code]
		raise(&r, RulePrefix+code, m.Category, m.Severity)
	}
	return r, nil
}

// ShieldGemmaPolicies are the harm policies a shieldgemma check asks
// about, one call each, and where a "Yes" lands among Terroir's
// categories. ShieldGemma gives a probability, not a severity; a
// violation is rated medium, which blocks under the default policy.
var ShieldGemmaPolicies = []ShieldGemmaPolicy{
	{ID: "dangerous_content", Mapping: Mapping{"violence", events.SeverityMedium, "Dangerous Content"},
		Text: `"No Dangerous Content": The prompt shall not seek or contain content that helps anyone harm themselves or others, such as making or obtaining weapons or explosives, promoting terrorism, or instructions for suicide or self-injury.`},
	{ID: "harassment", Mapping: Mapping{"hate", events.SeverityMedium, "Harassment"},
		Text: `"No Harassment": The prompt shall not seek or contain content that threatens, intimidates, bullies or abuses a particular person, such as threats of physical harm or mockery of victims of violence.`},
	{ID: "hate_speech", Mapping: Mapping{"hate", events.SeverityMedium, "Hate Speech"},
		Text: `"No Hate Speech": The prompt shall not seek or contain content that attacks, dehumanises or demeans people for a protected attribute such as race, ethnicity, nationality, religion, caste, disability, age, sex, gender identity or sexual orientation, slurs and calls for discrimination or violence against such groups included.`},
	{ID: "sexually_explicit", Mapping: Mapping{"sexual", events.SeverityMedium, "Sexually Explicit Information"},
		Text: `"No Sexually Explicit Information": The prompt shall not seek or contain descriptions of sexual acts or other content meant to arouse. Medical and educational discussion of anatomy and sexual health is allowed.`},
}

// ShieldGemmaPolicy is one harm policy ShieldGemma is asked about.
type ShieldGemmaPolicy struct {
	// ID names the policy in rule IDs ("guard.hate_speech").
	ID      string
	Mapping Mapping
	// Text is the policy as the model reads it, written about a prompt;
	// for an output "The prompt" becomes "The chatbot response".
	Text string
}

type shieldGemma struct{}

func (shieldGemma) probes(c conversation) []probe {
	out := make([]probe, 0, len(ShieldGemmaPolicies))
	for _, p := range ShieldGemmaPolicies {
		out = append(out, probe{
			messages: []message{{Role: "user", Content: shieldGemmaPrompt(c, p)}},
			parse: func(content string) (classifier.Result, error) {
				yes, err := ParseShieldGemma(content)
				if err != nil {
					return classifier.Result{}, err
				}
				r := newResult()
				if yes {
					raise(&r, RulePrefix+p.ID, p.Mapping.Category, p.Mapping.Severity)
				}
				return r, nil
			},
		})
	}
	return out
}

// shieldGemmaPrompt lays out a question as ShieldGemma's model card
// describes its input: the text between turn markers, the policy, and a
// question answered with Yes or No. The policies' wording is Terroir's.
func shieldGemmaPrompt(c conversation, p ShieldGemmaPolicy) string {
	var b strings.Builder
	if c.dir == events.DirectionCompletion {
		b.WriteString("You are a policy expert trying to help determine whether an AI response to a prompt is in violation of the defined safety policies.\n\n")
		b.WriteString("<start_of_turn>\nHuman Question: " + c.user + "\n<end_of_turn>\n\n")
		b.WriteString("<start_of_turn>\nChatbot Response: " + c.assistant + "\n<end_of_turn>\n\n")
		b.WriteString("Our safety principle is defined in the below:\n\n* " + strings.Replace(p.Text, "The prompt", "The chatbot response", 1) + "\n\n")
		b.WriteString("===\n\nDoes the Chatbot Response violate the above principle? Your answer must start with 'Yes' or 'No'. And then walk through step by step to be sure we answer correctly.\n")
		return b.String()
	}
	b.WriteString("You are a policy expert trying to help determine whether a user prompt is in violation of the defined safety policies.\n\n")
	b.WriteString("<start_of_turn>\nHuman Question: " + c.user + "\n<end_of_turn>\n\n")
	b.WriteString("Our safety principle is defined in the below:\n\n* " + p.Text + "\n\n")
	b.WriteString("===\n\nDoes the human question violate the above principle? Your answer must start with 'Yes' or 'No'. And then walk through step by step to be sure we answer correctly.\n")
	return b.String()
}

// ParseShieldGemma reads a ShieldGemma answer: its first word, "Yes" (a
// violation) or "No", in any case and punctuation.
func ParseShieldGemma(content string) (bool, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(content), " ")
	first, _, _ = strings.Cut(first, "\n")
	switch strings.ToLower(strings.TrimRight(first, ".,:;!")) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, fmt.Errorf("the guard model's answer (%d bytes) does not start with Yes or No", len(content))
}
