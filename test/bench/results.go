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
// it makes sense, on the reference and on the ceiling (the same clients
// joined directly, one hop: see the package doc).
type Figure struct {
	Section   string   `json:"section"`
	Key       string   `json:"key"`
	Label     string   `json:"label"`
	Unit      string   `json:"unit"`
	Multifs   *float64 `json:"multifs"`
	Reference *float64 `json:"reference"`
	Ceiling   *float64 `json:"ceiling,omitempty"`
	// Ratio is multifs / reference: the median of the runs' own ratios
	// (run i of multifs against run i of the reference, measured one
	// after the other) when both have the same runs, else of the medians.
	Ratio *float64 `json:"ratio,omitempty"`
	// RatioSpread is the smallest and largest of the runs' ratios.
	RatioSpread []float64 `json:"ratio_spread,omitempty"`
	// OfCeiling is multifs / ceiling, the same way.
	OfCeiling       *float64  `json:"of_ceiling,omitempty"`
	OfCeilingSpread []float64 `json:"of_ceiling_spread,omitempty"`
	MultifsRuns     []float64 `json:"multifs_runs,omitempty"`
	RefRuns         []float64 `json:"reference_runs,omitempty"`
	CeilRuns        []float64 `json:"ceiling_runs,omitempty"`
	Median          bool      `json:"median"` // the values are medians of several runs
	// Decisions are the targets this figure is held to, decided.
	Decisions []Decision `json:"decisions,omitempty"`
	Note      string     `json:"note,omitempty"`
}

// Decision is one target decided on a figure: on the median of its runs,
// and "within noise" when the runs fall on both sides of the target.
type Decision struct {
	Target      string  `json:"target"`
	Met         bool    `json:"met"`
	WithinNoise bool    `json:"within_noise"`
	Value       float64 `json:"value"` // the median the decision was taken on
	Min         float64 `json:"min"`
	Max         float64 `json:"max"`
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
	return r.add3(section, key, label, unit, m, ref, nil)
}

// add3 is add with the ceiling's runs too.
func (r *results) add3(section, key, label, unit string, m, ref, ceil []float64) *Figure {
	f := &Figure{Section: section, Key: key, Label: label, Unit: unit, MultifsRuns: m, RefRuns: ref, CeilRuns: ceil}
	f.Median = len(m) > 1 || len(ref) > 1 || len(ceil) > 1
	f.Multifs, f.Reference, f.Ceiling = medianOrNil(m), medianOrNil(ref), medianOrNil(ceil)
	f.Ratio, f.RatioSpread = ratioOf(m, ref)
	if unit == "fps" || unit == "µs" {
		// A fraction of the physical limit means something for rates and
		// times, not for a loss.
		f.OfCeiling, f.OfCeilingSpread = ratioOf(m, ceil)
	}
	r.mu.Lock()
	r.Figures = append(r.Figures, f)
	r.mu.Unlock()
	return f
}

func medianOrNil(v []float64) *float64 {
	if len(v) == 0 {
		return nil
	}
	m := median(v)
	return &m
}

// ratioOf returns the median and the spread (min, max) of a[i]/b[i] when
// a and b have the same runs, else the ratio of their medians and no
// spread; nil when it is not defined.
func ratioOf(a, b []float64) (*float64, []float64) {
	rs := pairedRatios(a, b)
	if rs == nil {
		if len(a) == 0 || len(b) == 0 || median(b) == 0 {
			return nil, nil
		}
		v := median(a) / median(b)
		return &v, nil
	}
	v := median(rs)
	lo, hi := spread(rs)
	if len(rs) < 2 {
		return &v, nil
	}
	return &v, []float64{lo, hi}
}

// pairedRatios returns a[i]/b[i] for runs of the same index, nil when the
// runs do not pair up. 0/0 is 1 (equal: no retransmit against none);
// x/0 is +Inf.
func pairedRatios(a, b []float64) []float64 {
	if len(a) == 0 || len(a) != len(b) {
		return nil
	}
	out := make([]float64, len(a))
	for i := range a {
		switch {
		case b[i] != 0:
			out[i] = a[i] / b[i]
		case a[i] == 0:
			out[i] = 1
		default:
			out[i] = math.Inf(1)
		}
	}
	return out
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

// ---------------------------------------------------------------------------
// targets

// basis says what a target compares.
type basis int

const (
	vsRef     basis = iota // multifs / the same run's reference
	vsCeiling              // multifs / the same run's ceiling
	absolute               // multifs's own value
)

// target is one of the targets: the figure's basis (a ratio or the
// value) compared with x.
type target struct {
	key   string
	basis basis
	op    string // ">=", "<=", "<", "="
	x     float64
}

// text is the target as the table prints it; an absolute one is in the
// figure's unit.
func (t target) text(unit string) string {
	switch t.basis {
	case vsRef:
		return fmt.Sprintf("%s %gx ref", t.op, t.x)
	case vsCeiling:
		return fmt.Sprintf("%s %g of ceil", t.op, t.x)
	}
	if unit == "count" || unit == "" {
		return fmt.Sprintf("%s %g", t.op, t.x)
	}
	return fmt.Sprintf("%s %g %s", t.op, t.x, unit)
}

func (t target) holds(v float64) bool {
	switch t.op {
	case ">=":
		return v >= t.x
	case "<=":
		return v <= t.x
	case "<":
		return v < t.x
	case "=":
		return v == t.x
	}
	return false
}

// decide takes the target's decision on the runs' values (the paired
// ratios or multifs's own runs): met when their median holds, within noise
// when some run holds and some does not. ok is false when the figure lacks
// what the target needs.
func (t target) decide(f *Figure) (d Decision, ok bool) {
	var vs []float64
	switch t.basis {
	case vsRef:
		vs = pairedRatios(f.MultifsRuns, f.RefRuns)
	case vsCeiling:
		vs = pairedRatios(f.MultifsRuns, f.CeilRuns)
	case absolute:
		vs = f.MultifsRuns
	}
	if len(vs) == 0 {
		return Decision{}, false
	}
	return decideOn(t, f.Unit, vs), true
}

func decideOn(t target, unit string, vs []float64) Decision {
	d := Decision{Target: t.text(unit), Value: median(vs)}
	d.Min, d.Max = spread(vs)
	d.Met = t.holds(d.Value)
	some, all := false, true
	for _, v := range vs {
		h := t.holds(v)
		some = some || h
		all = all && h
	}
	d.WithinNoise = some && !all
	return d
}

// targets are the ratios against the same run's reference or ceiling
// (on the real clients' rows) and the absolute ones of the control plane,
// the hand-off and memory.
var targets = []target{
	{"real.link_to_host.64.cpu", vsRef, "<=", 0.5},
	{"real.link_to_host.64.fps", vsRef, ">=", 1.25},
	{"real.link_to_host.64.fps", vsCeiling, ">=", 0.8},
	{"real.link_to_host.1500.fps", vsRef, ">=", 1.25},
	{"real.link_to_host.1500.fps", vsCeiling, ">=", 0.8},
	{"rate.10000.cpu", vsRef, "<=", 1.0},
	{"real.fan_out.8.fps_per_link", vsRef, ">=", 1.5},
	{"real.latency.p50", vsRef, "<=", 1.0},
	{"real.latency.p99", vsRef, "<=", 1.0},
	{"iperf.mbps", vsRef, ">=", 1.3},
	{"iperf.retransmits", vsRef, "<=", 1.0},
	{"handoff.lost", absolute, "=", 0},
	{"handoff.dups", absolute, "=", 0},
	{"handoff.off.lost", absolute, "=", 0},
	{"handoff.udp.lost", absolute, "=", 0},
	{"handoff.udp.dups", absolute, "=", 0},
	{"handoff.off.udp.lost", absolute, "=", 0},
	{"control.ls_1000", absolute, "<", 100},
	{"control.close_to_eof.p50", absolute, "<", 10},
	{"memory.rss_1000", absolute, "<", 64},
}

func (r *results) evaluate(haveRef bool) {
	for _, f := range r.Figures {
		// A relay above the physical limit means the ceiling's runs met
		// more of the machine's noise than the relay's did.
		if f.OfCeiling != nil && f.Unit == "fps" && *f.OfCeiling > 1 {
			r.Notices = append(r.Notices, fmt.Sprintf("%s, %s: multifs at %.3f of the ceiling: the ceiling's runs were slowed by something else on the machine",
				f.Section, f.Label, *f.OfCeiling))
		}
	}
	for _, t := range targets {
		f := r.find(t.key)
		if f == nil {
			continue
		}
		if d, ok := t.decide(f); ok {
			f.Decisions = append(f.Decisions, d)
		} else if t.basis == vsRef && !haveRef {
			f.Note = strings.TrimSpace(f.Note + " no reference")
		}
	}
}

// tally counts the decisions: met, missed, and how many of either were
// within noise.
func (r *results) tally() (met, missed, noisy int) {
	for _, f := range r.Figures {
		for _, d := range f.Decisions {
			if d.Met {
				met++
			} else {
				missed++
			}
			if d.WithinNoise {
				noisy++
			}
		}
	}
	return
}

// ---------------------------------------------------------------------------
// output

func (r *results) printTable(w io.Writer, header string) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, header)
	// Labels, targets and results left-aligned, numbers right-aligned.
	const cols = 8
	rows := [][]string{{"figure", "multifs", "reference", "ceiling", "ratio (min-max)", "of ceiling", "target", "result"}}
	section := ""
	for _, f := range r.Figures {
		if f.Section != section {
			section = f.Section
			rows = append(rows, []string{"[" + section + "]"})
		}
		label := f.Label
		if f.Median {
			label += " ~"
		}
		row := []string{"  " + label, formatValue(f.Multifs, f.Unit), formatValue(f.Reference, f.Unit),
			formatValue(f.Ceiling, f.Unit), formatRatio(f.Ratio, f.RatioSpread, "x"), formatRatio(f.OfCeiling, f.OfCeilingSpread, ""), "", ""}
		if len(f.Decisions) == 0 && f.Note != "" {
			row[7] = "(" + f.Note + ")"
		}
		for i, d := range f.Decisions {
			if i > 0 {
				rows = append(rows, row)
				row = []string{"", "", "", "", "", "", "", ""}
			}
			row[6], row[7] = d.Target, decisionText(d)
			if i == 0 && f.Note != "" {
				row[7] += " (" + f.Note + ")"
			}
		}
		rows = append(rows, row)
	}
	widths := make([]int, cols)
	for _, row := range rows {
		if len(row) == 1 {
			continue
		}
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	line := func(row []string) {
		var b strings.Builder
		for i, c := range row {
			pad := max(widths[i]-len([]rune(c)), 0)
			switch i {
			case 0, 6, 7:
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
		if len(row) == 1 {
			fmt.Fprintln(w, row[0])
			continue
		}
		line(row)
		if i == 0 {
			fmt.Fprintln(w, strings.Repeat("-", total))
		}
	}
	fmt.Fprintln(w, strings.Repeat("-", total))
	fmt.Fprintln(w, "~ = median of the runs; ratio = multifs/reference, of ceiling = multifs/ceiling: medians of the runs' own ratios,")
	fmt.Fprintln(w, "(min-max) their spread; a target is decided on that median, \"within noise\" when its runs fall on both sides;")
	fmt.Fprintln(w, "'-' = not measured or not applicable")
	met, missed, noisy := r.tally()
	fmt.Fprintf(w, "targets: %d met, %d missed (%d of them within noise); bench time %.1f s\n", met, missed, noisy, r.elapsed.Seconds())
	for _, n := range r.Notices {
		fmt.Fprintln(w, "notice: "+n)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "ERROR: "+e)
	}
}

func decisionText(d Decision) string {
	s := "MISSED"
	if d.Met {
		s = "met"
	}
	if d.WithinNoise {
		s += " (within noise)"
	}
	return s
}

// formatRatio prints a ratio with its spread, "-" when there is none.
func formatRatio(v *float64, sp []float64, suffix string) string {
	if v == nil {
		return "-"
	}
	s := fmtRatio(*v) + suffix
	if len(sp) == 2 {
		s += " (" + fmtRatio(sp[0]) + "-" + fmtRatio(sp[1]) + ")"
	}
	return s
}

func fmtRatio(v float64) string {
	if math.IsInf(v, 1) {
		return "inf"
	}
	if v >= 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
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
	case "ns":
		return fmt.Sprintf("%.0f ns", x)
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
	// JSON has no infinity (a ratio against 0): the largest float stands
	// for it.
	for _, f := range r.Figures {
		for _, p := range []*float64{f.Ratio, f.OfCeiling} {
			if p != nil {
				*p = finite(*p)
			}
		}
		for _, sp := range [][]float64{f.RatioSpread, f.OfCeilingSpread} {
			for i := range sp {
				sp[i] = finite(sp[i])
			}
		}
		for i := range f.Decisions {
			d := &f.Decisions[i]
			d.Value, d.Min, d.Max = finite(d.Value), finite(d.Min), finite(d.Max)
		}
	}
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

func finite(v float64) float64 {
	if math.IsInf(v, 1) {
		return math.MaxFloat64
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// spread returns the smallest and the largest of v.
func spread(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi = v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
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
