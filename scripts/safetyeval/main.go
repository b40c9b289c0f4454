// Command safetyeval measures Terroir's content-safety classifier and
// prints a table: per-category precision, recall (per severity) and F1,
// jailbreak and profanity precision and recall, the false-positive rate on
// the benign items of the evaluation set and on public-domain prose, and
// the classification speed in µs per KB of text. A second table measures
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
// the items the classifier got wrong; -guard-calls sets how many calls the
// guard rows measure (0 skips them).
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
	items, err := evaluation.LoadItems(filepath.Join(dir, "eval.jsonl"))
	if err != nil {
		return err
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
	if *misses {
		fmt.Fprintln(out, "\nmisses (item, what, want, got):")
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
