package main

// Figures, targets, the table and the JSON file.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Figure is one row of the table: a quantity measured on multifs and, where
// it makes sense, on the reference.
type Figure struct {
	Section     string    `json:"section"`
	Key         string    `json:"key"`
	Label       string    `json:"label"`
	Unit        string    `json:"unit"`
	Multifs     *float64  `json:"multifs"`
	Reference   *float64  `json:"reference"`
	Ratio       *float64  `json:"ratio,omitempty"` // multifs / reference
	MultifsRuns []float64 `json:"multifs_runs,omitempty"`
	RefRuns     []float64 `json:"reference_runs,omitempty"`
	Median      bool      `json:"median"` // the value is the median of several runs
	Target      string    `json:"target,omitempty"`
	Met         *bool     `json:"met,omitempty"`
	Note        string    `json:"note,omitempty"`

	check func(f *Figure) (met, applicable bool)
}

type results struct {
	mu      sync.Mutex
	Figures []*Figure `json:"figures"`
	Notices []string  `json:"notices"`
	Errors  []string  `json:"errors"`
	elapsed time.Duration
}

func newResults() *results { return &results{} }

// add records a figure from its runs (either may be empty: not measured).
func (r *results) add(section, key, label, unit string, m, ref []float64) *Figure {
	f := &Figure{Section: section, Key: key, Label: label, Unit: unit, MultifsRuns: m, RefRuns: ref}
	f.Median = len(m) > 1 || len(ref) > 1
	if len(m) > 0 {
		v := median(m)
		f.Multifs = &v
	}
	if len(ref) > 0 {
		v := median(ref)
		f.Reference = &v
	}
	if f.Multifs != nil && f.Reference != nil && *f.Reference != 0 {
		v := *f.Multifs / *f.Reference
		f.Ratio = &v
	}
	r.mu.Lock()
	r.Figures = append(r.Figures, f)
	r.mu.Unlock()
	return f
}

// one is add for a single value per column; nil means not measured.
func (r *results) one(section, key, label, unit string, m, ref *float64) *Figure {
	var ms, rs []float64
	if m != nil {
		ms = []float64{*m}
	}
	if ref != nil {
		rs = []float64{*ref}
	}
	return r.add(section, key, label, unit, ms, rs)
}

func (r *results) notice(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Notices = append(r.Notices, fmt.Sprintf(format, args...))
}

func (r *results) fail(scenario string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", scenario, err))
}

func (r *results) find(key string) *Figure {
	for _, f := range r.Figures {
		if f.Key == key {
			return f
		}
	}
	return nil
}

// Targets. A ratio target needs both columns; the others only multifs.
func ratioAtLeast(x float64) func(*Figure) (bool, bool) {
	return func(f *Figure) (bool, bool) {
		if f.Ratio == nil {
			return false, false
		}
		return *f.Ratio >= x, true
	}
}

func notAboveRef(f *Figure) (bool, bool) {
	if f.Multifs == nil || f.Reference == nil {
		return false, false
	}
	return *f.Multifs <= *f.Reference, true
}

func below(x float64) func(*Figure) (bool, bool) {
	return func(f *Figure) (bool, bool) {
		if f.Multifs == nil {
			return false, false
		}
		return *f.Multifs < x, true
	}
}

func equals(x float64) func(*Figure) (bool, bool) {
	return func(f *Figure) (bool, bool) {
		if f.Multifs == nil {
			return false, false
		}
		return *f.Multifs == x, true
	}
}

// targets maps figure keys to the brief's targets.
var targets = []struct {
	key, text string
	check     func(*Figure) (bool, bool)
}{
	{"link_to_host.64.fps", ">= 1.5x ref", ratioAtLeast(1.5)},
	{"link_to_host.1500.fps", ">= 1.5x ref", ratioAtLeast(1.5)},
	{"fan_out.2.fps_per_link", ">= 1.5x ref", ratioAtLeast(1.5)},
	{"latency.p50", "<= ref", notAboveRef},
	{"latency.p99", "<= ref", notAboveRef},
	{"handoff.lost", "= 0", equals(0)},
	{"control.ls_1000", "< 100 ms", below(100)},
	{"control.close_to_eof.p50", "< 10 ms", below(10)},
	{"memory.rss_1000", "< 64 MiB", below(64)},
}

func (r *results) evaluate(haveRef bool) {
	for _, t := range targets {
		f := r.find(t.key)
		if f == nil {
			continue
		}
		f.Target = t.text
		met, ok := t.check(f)
		if ok {
			f.Met = &met
		} else if !haveRef {
			f.Note = strings.TrimSpace(f.Note + " no reference")
		}
	}
}

// ---------------------------------------------------------------------------
// output

func (r *results) printTable(w io.Writer, header string) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, header)
	// Labels, targets and results left-aligned, numbers right-aligned.
	rows := [][]string{{"figure", "multifs", "reference", "ratio", "target", "result"}}
	section := ""
	for _, f := range r.Figures {
		if f.Section != section {
			section = f.Section
			rows = append(rows, []string{"[" + section + "]", "", "", "", "", ""})
		}
		label := f.Label
		if f.Median {
			label += " ~"
		}
		res := ""
		if f.Met != nil {
			if *f.Met {
				res = "met"
			} else {
				res = "MISSED"
			}
		}
		if f.Note != "" {
			res = strings.TrimSpace(res + " (" + f.Note + ")")
		}
		ratio := "-"
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx", *f.Ratio)
		}
		rows = append(rows, []string{"  " + label, formatValue(f.Multifs, f.Unit), formatValue(f.Reference, f.Unit), ratio, f.Target, res})
	}
	widths := make([]int, 6)
	for _, row := range rows {
		for i, c := range row {
			if n := len([]rune(c)); n > widths[i] && !(i == 0 && strings.HasPrefix(c, "[")) {
				widths[i] = n
			}
		}
	}
	line := func(row []string) {
		var b strings.Builder
		for i, c := range row {
			pad := widths[i] - len([]rune(c))
			if pad < 0 {
				pad = 0
			}
			switch i {
			case 0, 4, 5:
				b.WriteString(c + strings.Repeat(" ", pad))
			default:
				b.WriteString(strings.Repeat(" ", pad) + c)
			}
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	total := 0
	for _, n := range widths {
		total += n + 2
	}
	fmt.Fprintln(w, strings.Repeat("-", total))
	for i, row := range rows {
		if strings.HasPrefix(row[0], "[") {
			fmt.Fprintln(w, row[0])
			continue
		}
		line(row)
		if i == 0 {
			fmt.Fprintln(w, strings.Repeat("-", total))
		}
	}
	fmt.Fprintln(w, strings.Repeat("-", total))
	fmt.Fprintln(w, "~ = median of the runs; ratio = multifs/reference; '-' = not measured or not applicable")
	met, missed := 0, 0
	for _, f := range r.Figures {
		if f.Met != nil {
			if *f.Met {
				met++
			} else {
				missed++
			}
		}
	}
	fmt.Fprintf(w, "targets: %d met, %d missed; bench time %.1f s\n", met, missed, r.elapsed.Seconds())
	for _, n := range r.Notices {
		fmt.Fprintln(w, "notice: "+n)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "ERROR: "+e)
	}
}

func formatValue(v *float64, unit string) string {
	if v == nil {
		return "-"
	}
	x := *v
	switch unit {
	case "fps", "frames":
		return thousands(int64(math.Round(x))) + " " + unit
	case "count":
		return thousands(int64(math.Round(x)))
	case "%":
		return fmt.Sprintf("%.2f %%", x)
	case "Mbit/s", "MiB":
		return fmt.Sprintf("%.1f %s", x, unit)
	case "µs":
		return fmt.Sprintf("%.0f µs", x)
	case "ms":
		if x < 1 {
			return fmt.Sprintf("%.3f ms", x)
		}
		return fmt.Sprintf("%.2f ms", x)
	}
	return fmt.Sprintf("%.2f %s", x, unit)
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r *results) writeJSON(path string, config map[string]any) error {
	doc := map[string]any{
		"time":            time.Now().UTC().Format(time.RFC3339),
		"config":          config,
		"elapsed_seconds": r.elapsed.Seconds(),
		"figures":         r.Figures,
		"notices":         nonNil(r.Notices),
		"errors":          nonNil(r.Errors),
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<= ref" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
