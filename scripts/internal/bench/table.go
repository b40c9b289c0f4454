// Package bench holds what Terroir's benchmark commands share: latency
// samples and their percentiles, the result table with its targets, the
// line describing the machine, and the set-up of a dev keyring, an
// in-process Kafka cluster and buses.
package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Hist is a set of latency samples; percentiles are exact (nearest rank
// over the sorted samples), not bucketed.
type Hist []time.Duration

// Sorted returns a sorted copy of the samples.
func (h Hist) Sorted() Hist {
	s := slices.Clone(h)
	slices.Sort(s)
	return s
}

// Quantile returns the nearest-rank q-quantile of sorted samples, 0 when
// there are none.
func (h Hist) Quantile(q float64) time.Duration {
	if len(h) == 0 {
		return 0
	}
	i := int(q*float64(len(h))+0.999999999) - 1
	return h[min(max(i, 0), len(h)-1)]
}

// Row is one line of the result table. Empty cells print as "-".
type Row struct {
	Name    string
	N       int
	Lat     Hist // sorted samples; empty when the row is not a latency
	Value   string
	Errors  int
	Target  string
	Met     string // "yes", "no" or empty when there is no target
	Comment string // printed under "notes:" after the table
}

// LatencyRow is a row of the given samples, sorted.
func LatencyRow(name string, samples Hist) Row {
	return Row{Name: name, N: len(samples), Lat: samples.Sorted()}
}

// MS formats d in milliseconds with three significant digits or more.
func MS(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.3f ms", v)
	case v < 100:
		return fmt.Sprintf("%.2f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

// YesNo is the met cell of a row with a target.
func YesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// PrintTable prints the rows as an aligned table with the columns
// measurement, n, p50, p90, p99, max, value, errors, target and met, then
// the rows' comments as notes.
func PrintTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintln(tw, "measurement\tn\tp50\tp90\tp99\tmax\tvalue\terrors\ttarget\tmet\t")
	for _, r := range rows {
		cells := []string{r.Name, "-", "-", "-", "-", "-", dash(r.Value), fmt.Sprint(r.Errors), dash(r.Target), dash(r.Met)}
		if r.N > 0 {
			cells[1] = fmt.Sprint(r.N)
		}
		if len(r.Lat) > 0 {
			cells[2], cells[3], cells[4], cells[5] = MS(r.Lat.Quantile(0.50)), MS(r.Lat.Quantile(0.90)), MS(r.Lat.Quantile(0.99)), MS(r.Lat[len(r.Lat)-1])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("printing the table: %w", err)
	}
	var notes []string
	for _, r := range rows {
		if r.Comment != "" {
			notes = append(notes, "  "+r.Name+": "+r.Comment)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "notes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	return nil
}

// PrintReport prints a benchmark's result: a blank line, the facts about
// where and how it was measured, a blank line and the table.
func PrintReport(w io.Writer, facts string, rows []Row) error {
	fmt.Fprintln(w)
	fmt.Fprintln(w, facts)
	fmt.Fprintln(w)
	return PrintTable(w, rows)
}
