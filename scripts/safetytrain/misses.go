package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
)

// writeMisses lists, one per line, the items c gets wrong at the default
// policy: harmful items (a category labelled medium or high) it does not
// block, jailbreaks it does not detect and benign items it blocks. Each
// line is the kind of miss, the labels, the item ID and the text (line
// breaks shown as " | "), tab-separated, for error analysis of the
// held-out and check shards (-misses).
func writeMisses(c *classifier.Classifier, items []evaluation.Item, out io.Writer) {
	policy := control.DefaultFilterPolicy("training")
	for _, it := range items {
		r := c.Classify(it.Text, it.Dir)
		_, blocked := classifier.Apply(policy, it.Dir, r)
		var labels []string
		harmful := false
		for cat, sev := range it.Labels {
			labels = append(labels, cat+"="+string(sev))
			harmful = harmful || classifier.SeverityRank(sev) >= 2
		}
		slices.Sort(labels)
		var kind string
		switch {
		case harmful && !blocked:
			kind = "harmful-not-blocked"
		case it.Jailbreak && !r.Jailbreak:
			kind = "jailbreak-not-detected"
		case it.Benign() && blocked:
			kind = "benign-blocked"
		default:
			continue
		}
		text := strings.ReplaceAll(strings.ReplaceAll(it.Text, "\r", ""), "\n", " | ")
		fmt.Fprintf(out, "%s\t%s\t%s\t%s\n", kind, strings.Join(labels, ","), it.ID, text)
	}
}
