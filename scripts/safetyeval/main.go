// Command safetyeval measures Terroir's content-safety classifier and
// prints a table: per-category precision, recall (per severity) and F1,
// jailbreak and profanity precision and recall, the false-positive rate on
// the benign items of the evaluation set and on public-domain prose, and
// the classification speed in µs per KB of text. A second table compares,
// for the rules alone and for rules and linear model together, the
// training set's dev hold-out, the evaluation set and, when it is present,
// the frozen evaluation set (testdata/frozen.jsonl), which nothing was
// trained or tuned on: blocked recall per category, jailbreak recall,
// benign items blocked and severity calibration. A third table measures
// what the optional guard-model stage adds per call (p50, p90, p99)
// against an in-process stand-in server that answers in Llama Guard's
// format with no model delay: the client's own overhead and a loopback
// HTTP round trip, labelled as such. A real guard model adds its server's
// time to answer on top.
//
// Run it from the repository root:
//
//	go run ./scripts/safetyeval
//
// or from scripts/ as "go run ./safetyeval". -data names the classifier's
// testdata directory when it is somewhere else; -misses lists the IDs of
// the items the classifier got wrong (never listed for the frozen set);
// -frozen names the frozen set when it is not in testdata; -guard-calls
// sets how many calls the guard rows measure (0 skips them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"

	"github.com/terroir-ai/terroir/scripts/internal/bench"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "safetyeval:", err)
		os.Exit(1)
	}
}

// candidates are where the testdata is found from the repository root and
// from scripts/.
var candidates = []string{
	"services/contentsafety/classifier/testdata",
	"../services/contentsafety/classifier/testdata",
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("safetyeval", flag.ContinueOnError)
	data := fs.String("data", "", "the classifier's testdata directory (found automatically from the repository root or scripts/)")
	misses := fs.Bool("misses", false, "list the evaluation items the classifier got wrong")
	guardCalls := fs.Int("guard-calls", 2000, "calls per guard-stage row; 0 skips the guard rows")
	frozenPath := fs.String("frozen", "", "the frozen evaluation set (default <data>/frozen.jsonl when present)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := *data
	if dir == "" {
		for _, c := range candidates {
			if _, err := os.Stat(filepath.Join(c, "eval.jsonl")); err == nil {
				dir = c
				break
			}
		}
		if dir == "" {
			return errors.New("cannot find the classifier's testdata; run from the repository root or pass -data")
		}
	}
	c, err := classifier.New()
	if err != nil {
		return err
	}
	rules, err := classifier.NewRulesOnly()
	if err != nil {
		return err
	}
	items, err := evaluation.LoadItems(filepath.Join(dir, "eval.jsonl"))
	if err != nil {
		return err
	}
	trainset, err := evaluation.LoadTrainset(filepath.Join(dir, "..", "trainset"))
	if err != nil {
		return err
	}
	dev := evaluation.Split(trainset, func(it evaluation.Item) bool { return evaluation.DevHoldOut(it.ID) })
	if *frozenPath == "" {
		if p := filepath.Join(dir, "frozen.jsonl"); fileExists(p) {
			*frozenPath = p
		}
	}
	var frozen []evaluation.Item
	if *frozenPath != "" {
		if frozen, err = evaluation.LoadItems(*frozenPath); err != nil {
			return err
		}
	}
	sentences, err := evaluation.LoadCorpus(filepath.Join(dir, "corpus"))
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	report := evaluation.Evaluate(c, items)
	// the corpus is classified twice and the faster run is reported, so a
	// cold cache does not count against the speed
	corpus := evaluation.EvaluateCorpus(c, sentences)
	if again := evaluation.EvaluateCorpus(c, sentences); again.Elapsed < corpus.Elapsed {
		corpus = again
	}
	evaluation.WriteTable(out, report, corpus)

	heldout := evaluation.Split(items, func(it evaluation.Item) bool { return it.Split == "heldout" })
	cols := []evaluation.Column{
		{Name: "train-dev rules", Report: evaluation.Evaluate(rules, dev)},
		{Name: "train-dev", Report: evaluation.Evaluate(c, dev)},
		{Name: "eval rules", Report: evaluation.Evaluate(rules, items)},
		{Name: "eval", Report: report},
		{Name: "eval-heldout", Report: evaluation.Evaluate(c, heldout)},
	}
	if frozen != nil {
		cols = append(cols,
			evaluation.Column{Name: "frozen rules", Report: evaluation.Evaluate(rules, frozen)},
			evaluation.Column{Name: "frozen", Report: evaluation.Evaluate(c, frozen)})
	}
	fmt.Fprintf(out, "\nrules alone and rules + linear model; train-dev is the training set's dev hold-out (%d of %d items), eval the evaluation set (its dev items were trained on), eval-heldout its held-out items\n", len(dev), len(trainset))
	evaluation.WriteComparison(out, cols)
	if frozen == nil {
		fmt.Fprintln(out, "frozen set: not present (testdata/frozen.jsonl or -frozen)")
	}
	var unseen []string
	for _, s := range sentences {
		if !evaluation.TrainingSentence(s) {
			unseen = append(unseen, s)
		}
	}
	half := evaluation.EvaluateCorpus(c, unseen)
	fmt.Fprintf(out, "corpus flagged, any non-safe: %.4f of all %d sentences, %.4f of the %d the model was not trained on (target <= %.2f)\n",
		corpus.FlagRate(), corpus.Sentences, half.FlagRate(), half.Sentences, evaluation.Targets.CorpusFP)
	if *misses {
		fmt.Fprintln(out, "\nmisses in eval.jsonl (item, what, want, got):")
		for _, m := range report.Misses {
			fmt.Fprintf(out, "  %s %s want=%s got=%s\n", m.ID, m.What, m.Want, m.Got)
		}
	}
	if *guardCalls > 0 {
		rows, err := guardRows(ctx, *guardCalls)
		if err != nil {
			return err
		}
		facts := fmt.Sprintf("guard stage against an in-process stand-in (Llama Guard format, zero model delay) — machine: GOMAXPROCS=%d NumCPU=%d cpu=%q %s",
			runtime.GOMAXPROCS(0), runtime.NumCPU(), bench.CPUModel(), runtime.Version())
		return bench.PrintReport(out, facts, rows)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
