package classifier_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

func TestBlocklists(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	bl, err := newClassifier(t).CompileBlocklists([]control.Blocklist{
		{Name: "food", Items: []control.BlocklistItem{
			{ID: "pizza", Pattern: "pizza"},
			{ID: "hot-dog", Pattern: "Hot Dog"},
			{ID: "pie", Pattern: "pie"},
		}},
		{Name: "codes", Items: []control.BlocklistItem{
			{ID: "project", Pattern: "Project Falcon"},
			{ID: "ticket", Pattern: `\bTKT-[0-9]{4}\b`, IsRegex: true},
			{ID: "norm", Pattern: `^secret plan$`, IsRegex: true},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"food", "codes"}
	tests := []struct {
		name  string
		text  string
		names []string
		want  []classifier.BlocklistHit
	}{
		{name: "literal", text: "I want pizza tonight.", names: all, want: []classifier.BlocklistHit{{"food", "pizza"}}},
		{name: "case and phrase", text: "HOT   DOG stand", names: all, want: []classifier.BlocklistHit{{"food", "hot-dog"}}},
		{name: "word boundary", text: "pizzazz and pies and a piece", names: all},
		{name: "leetspeak", text: "p1zza", names: all, want: []classifier.BlocklistHit{{"food", "pizza"}}},
		{name: "spaced", text: "p i z z a", names: all, want: []classifier.BlocklistHit{{"food", "pizza"}}},
		{name: "confusable", text: "\u0440izza", names: all, want: []classifier.BlocklistHit{{"food", "pizza"}}},
		{name: "overlapping items", text: "pie and pizza", names: all, want: []classifier.BlocklistHit{{"food", "pie"}, {"food", "pizza"}}},
		{name: "regex on raw text", text: "see TKT-1234 please", names: all, want: []classifier.BlocklistHit{{"codes", "ticket"}}},
		{name: "regex on normalised text", text: "SECRET, plan!", names: all, want: []classifier.BlocklistHit{{"codes", "norm"}}},
		{name: "two lists", text: "Project falcon needs pizza", names: all, want: []classifier.BlocklistHit{{"codes", "project"}, {"food", "pizza"}}},
		{name: "only named lists", text: "Project falcon needs pizza", names: []string{"codes"}, want: []classifier.BlocklistHit{{"codes", "project"}}},
		{name: "unknown name", text: "pizza", names: []string{"nope"}},
		{name: "no names", text: "pizza"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := c.ClassifyWith(tt.text, events.DirectionPrompt, bl, tt.names).Blocklists
			if !slices.Equal(got, tt.want) {
				t.Errorf("hits = %v, want %v", got, tt.want)
			}
		})
	}
	if got := c.ClassifyWith("pizza", events.DirectionPrompt, nil, all).Blocklists; got != nil {
		t.Errorf("nil blocklists matched %v", got)
	}
}

func TestCompileBlocklistsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		item control.BlocklistItem
	}{
		{"bad regex", control.BlocklistItem{ID: "r1", Pattern: "(unclosed", IsRegex: true}},
		{"empty literal", control.BlocklistItem{ID: "l1", Pattern: " !!! "}},
	}
	for _, tt := range tests {
		_, err := newClassifier(t).CompileBlocklists([]control.Blocklist{{Name: "mylist", Items: []control.BlocklistItem{tt.item}}})
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), "mylist") || !strings.Contains(err.Error(), tt.item.ID) {
			t.Errorf("%s: error %q does not name the list and item", tt.name, err)
		}
	}
}

func TestBlocklistReplacedByName(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	bl, err := newClassifier(t).CompileBlocklists([]control.Blocklist{
		{Name: "l", Items: []control.BlocklistItem{{ID: "old", Pattern: "apple"}}},
		{Name: "l", Items: []control.BlocklistItem{{ID: "new", Pattern: "pear"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ClassifyWith("apple pear", events.DirectionPrompt, bl, []string{"l"}).Blocklists; !slices.Equal(got, []classifier.BlocklistHit{{"l", "new"}}) {
		t.Errorf("hits = %v", got)
	}
}
