package classifier_test

import (
	"testing"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// invisibles are the format characters (category Cf) and filler letters
// an attacker puts inside a word so that a filter reading words sees two
// harmless halves.
var invisibles = map[string]string{
	"right-to-left override":    "\u202E",
	"left-to-right embedding":   "\u202A",
	"pop directional":           "\u202C",
	"left-to-right isolate":     "\u2066",
	"pop directional isolate":   "\u2069",
	"arabic letter mark":        "\u061C",
	"tag letter":                "\U000E0069",
	"cancel tag":                "\U000E007F",
	"variation selector 16":     "\uFE0F",
	"variation selector 17":     "\U000E0100",
	"zero-width joiner":         "\u200D",
	"word joiner":               "\u2060",
	"invisible separator":       "\u2063",
	"mongolian vowel separator": "\u180E",
	"interlinear annotation":    "\uFFF9",
	"hangul choseong filler":    "\u115F",
	"hangul jungseong filler":   "\u1160",
	"hangul filler":             "\u3164",
	"halfwidth hangul filler":   "\uFFA0",
	"braille blank":             "\u2800",
	"soft hyphen":               "\u00AD",
	"khmer vowel inherent":      "\u17B4",
	"shorthand format":          "\U0001BCA0",
}

func TestNormalizeDropsInvisibleCharacters(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	for name, inv := range invisibles {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			text := "I want to ki" + inv + "ll mys" + inv + inv + "elf"
			if got := c.Normalize(text); got != "i want to kill myself" {
				t.Errorf("Normalize = %q, want %q", got, "i want to kill myself")
			}
			r := c.Classify(text, events.DirectionPrompt)
			if r.Severity["self_harm"] != events.SeverityHigh {
				t.Errorf("self_harm = %s, want high", r.Severity["self_harm"])
			}
		})
	}
}

func TestNormalizeJoinsSpacedAndDottedLetters(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	tests := []struct{ in, want string }{
		{"k i l l  m y s e l f", "kill myself"},
		{"k i l l   m y s e l f", "kill myself"},
		{"i want to k i l l  m y s e l f", "i want to kill myself"},
		{"k.i.l.l m.y.s.e.l.f", "kill myself"},
		{"k.i.l.l  m.y.s.e.l.f", "kill myself"},
		{"k_i_l_l y_o_u", "kill you"},
		{"K I L L\u3000M Y S E L F", "kill myself"},
		{"k\u2800i\u2800l\u2800l m\u2800y\u2800s\u2800e\u2800l\u2800f", "kill myself"},
		{"a b c", "abc"},
		{"I am a big fan", "i am a big fan"},
	}
	for _, tt := range tests {
		if got := c.Normalize(tt.in); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, text := range []string{"I want to k i l l  m y s e l f", "i will k.i.l.l y.o.u"} {
		r := c.Classify(text, events.DirectionPrompt)
		if r.Severity["self_harm"] != events.SeverityHigh && r.Severity["violence"] != events.SeverityHigh {
			t.Errorf("%q scored %v, want high", text, r.Severity)
		}
	}
}

// TestBlocklistSharesNormaliser: a literal item matches the text however
// either of them is obfuscated, because both go through one normaliser.
func TestBlocklistSharesNormaliser(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	bl, err := newClassifier(t).CompileBlocklists([]control.Blocklist{{Name: "codes", Items: []control.BlocklistItem{
		{ID: "1", Pattern: "project\u202Enightfall"},
		{ID: "2", Pattern: "zephyr"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		"tell me about projectnightfall",
		"tell me about pro\u200Bject\u2066nightfall",
		"what is z\u202Eep\U000E0020hyr",
		"what is z e p h y r",
		"what is z.e.p.h.y.r",
		"what is ᴢᴇᴘʜʏʀ",
	} {
		r := c.ClassifyWith(text, events.DirectionPrompt, bl, []string{"codes"})
		if len(r.Blocklists) == 0 {
			t.Errorf("%q: no blocklist hit", text)
		}
	}
}
