package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// unit says how a figure's numbers read.
type unit int

const (
	perSecond unit = iota // things per second; higher is better
	mbPerSecond
	latency // seconds; lower is better
	bytesPer
	count
	perCPUSecond // things per CPU-second of the server
	cpuTime      // seconds of CPU per thing; lower is better
)

// figure is one row of the table: a value per run, and the baseline's.
type figure struct {
	scenario, name string
	unit           unit
	vals           []float64
	base           []float64
	baseName       string
	// target states the goal; check says whether the median meets it
	// (nil: no verdict).
	target string
	check  func(v, base float64) bool
	text   string // a row that is a note (pending, error) rather than a number
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (u unit) format(v float64) string {
	switch u {
	case perSecond:
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2fM/s", v/1e6)
		case v >= 1e3:
			return fmt.Sprintf("%.1fk/s", v/1e3)
		}
		return fmt.Sprintf("%.0f/s", v)
	case perCPUSecond:
		return strings.TrimSuffix(perSecond.format(v), "/s") + "/CPU-s"
	case mbPerSecond:
		return fmt.Sprintf("%.1f MB/s", v/1e6)
	case latency:
		d := time.Duration(v * float64(time.Second))
		switch {
		case d >= time.Second:
			return fmt.Sprintf("%.2f s", d.Seconds())
		case d >= time.Millisecond:
			return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
		}
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case cpuTime:
		switch us := v * 1e6; {
		case us >= 1000:
			return fmt.Sprintf("%.2f ms", us/1000)
		case us >= 100:
			return fmt.Sprintf("%.0f µs", us)
		case us >= 10:
			return fmt.Sprintf("%.1f µs", us)
		default:
			return fmt.Sprintf("%.2f µs", us)
		}
	case bytesPer:
		switch {
		case v >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		case v >= 1<<10:
			return fmt.Sprintf("%.1f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// cell is the median, with the spread when there were several runs.
func (u unit) cell(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	s := u.format(median(xs))
	if len(xs) > 1 {
		s += fmt.Sprintf(" [%s–%s]", u.format(slices.Min(xs)), u.format(slices.Max(xs)))
	}
	return s
}

func (r *runner) print(out io.Writer) {
	fmt.Fprintf(out, "buildlog bench — %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(out, "machine: %s\n", machine())
	fmt.Fprintf(out, "load:    1-minute load average %s at the start, %s at the end\n", r.load0, loadAverage())
	fmt.Fprintf(out, "store:   %s\n", r.storeIs)
	fmt.Fprintf(out, "figures: median of %d runs [min–max]; fan-out and farm run once; fleet's runs alternate buildlog and Redis\n\n", r.cfg.Runs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tfigure\tbuildlog\tbaseline\tratio\ttarget\t")
	var notes []figure
	for _, f := range r.figs {
		if f.text != "" {
			notes = append(notes, f)
			continue
		}
		base, ratio := "—", "—"
		if len(f.base) > 0 {
			base = f.unit.cell(f.base) + " " + f.baseName
			if b := median(f.base); b > 0 {
				ratio = fmt.Sprintf("%.2f×", median(f.vals)/b)
			}
		}
		target := f.target
		if f.check != nil {
			verdict := "not met"
			if f.check(median(f.vals), median(f.base)) {
				verdict = "met"
			}
			target += " " + verdict
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", f.scenario, f.name, f.unit.cell(f.vals), base, ratio, strings.TrimSpace(target))
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(out)
	}
	for _, f := range notes {
		fmt.Fprintf(out, "%s, %s: %s\n", f.scenario, f.name, f.text)
	}
}

// Targets, as docs/PERFORMANCE.md states them.
func atLeastBase(x float64) func(v, b float64) bool {
	return func(v, b float64) bool { return b > 0 && v >= x*b }
}

func atMost(limit float64) func(v, b float64) bool {
	return func(v, _ float64) bool { return v <= limit }
}

func atLeast(limit float64) func(v, b float64) bool {
	return func(v, _ float64) bool { return v >= limit }
}
