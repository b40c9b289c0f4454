package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// hist is a set of latency samples; percentiles are exact (nearest rank
// over the sorted samples), not bucketed.
type hist []time.Duration

func (h hist) sorted() hist {
	s := slices.Clone(h)
	slices.Sort(s)
	return s
}

// quantile returns the nearest-rank q-quantile of sorted samples.
func (h hist) quantile(q float64) time.Duration {
	if len(h) == 0 {
		return 0
	}
	i := int(q*float64(len(h))+0.999999999) - 1
	return h[min(max(i, 0), len(h)-1)]
}

// row is one line of the result table. Empty cells print as "-".
type row struct {
	name    string
	n       int
	lat     hist // sorted samples; empty when the row is not a latency
	value   string
	errors  int
	target  string
	met     string // "yes", "no" or empty when there is no target
	comment string
}

func latencyRow(name string, samples hist) row {
	return row{name: name, n: len(samples), lat: samples.sorted()}
}

func ms(d time.Duration) string {
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

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func printTable(w io.Writer, rows []row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintln(tw, "measurement\tn\tp50\tp90\tp99\tmax\tvalue\terrors\ttarget\tmet\t")
	for _, r := range rows {
		cells := []string{r.name, "-", "-", "-", "-", "-", dash(r.value), fmt.Sprint(r.errors), dash(r.target), dash(r.met)}
		if r.n > 0 {
			cells[1] = fmt.Sprint(r.n)
		}
		if len(r.lat) > 0 {
			cells[2], cells[3], cells[4], cells[5] = ms(r.lat.quantile(0.50)), ms(r.lat.quantile(0.90)), ms(r.lat.quantile(0.99)), ms(r.lat[len(r.lat)-1])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("printing the table: %w", err)
	}
	var notes []string
	for _, r := range rows {
		if r.comment != "" {
			notes = append(notes, "  "+r.name+": "+r.comment)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "notes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	return nil
}
