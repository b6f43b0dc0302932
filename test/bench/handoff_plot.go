package main

// The hand-off's picture: one SVG, multifs (dedup on, the default) beside
// the reference, from the traces of handoff_trace.go, three rows of
// panels sharing the time axis of their run:
//
//  1. frames/s each link's vde_plug gave host B's multilink (link 1, the
//     new link);
//  2. at host B: frames/s it received for the first time, duplicates it
//     received, and duplicates B's multilink dropped instead (multifs);
//  3. iperf3's TCP throughput, interval by interval, in the hand-off's
//     iperf3 run.
//
// A grey band marks the hand-off, from its start to link 1's close; the
// overlap, both links up, lies within it. gonum.org/v1/plot draws it;
// only the bench imports it.

import (
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// series is one named line of a panel.
type series struct {
	name  string
	pts   plotter.XYs
	color color.Color
	dash  bool
}

var (
	colLink1   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	colLink2   = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff} // orange
	colFirst   = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff} // green
	colAgain   = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} // red
	colDropped = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff} // purple
	colTCP     = color.RGBA{R: 0x33, G: 0x33, B: 0x33, A: 0xff}
	colBand    = color.RGBA{R: 0xdd, G: 0xdd, B: 0xdd, A: 0xff}
)

// rates turns cumulative counts sampled at times at (ms) into a rate per
// second over each interval between samples, placed at the interval's
// middle. A count that went down (it cannot, unless a counter was reset)
// gives 0 rather than a wrapped value.
func rates(at []float64, cum []uint64) plotter.XYs {
	n := min(len(at), len(cum))
	var out plotter.XYs
	for i := 1; i < n; i++ {
		dt := at[i] - at[i-1]
		if dt <= 0 {
			continue
		}
		d := 0.0
		if cum[i] >= cum[i-1] {
			d = float64(cum[i] - cum[i-1])
		}
		out = append(out, plotter.XY{X: (at[i] + at[i-1]) / 2, Y: d * 1000 / dt})
	}
	return out
}

// binRates turns per-bin counts (bin i: i*binMs .. (i+1)*binMs) into a
// rate per second at each bin's middle.
func binRates(bins []uint64, binMs float64) plotter.XYs {
	if binMs <= 0 {
		return nil
	}
	out := make(plotter.XYs, len(bins))
	for i, c := range bins {
		out[i] = plotter.XY{X: (float64(i) + 0.5) * binMs, Y: float64(c) * 1000 / binMs}
	}
	return out
}

// frameSeries is what panels 1 and 2 draw of a trace: the links' series
// and host B's.
func frameSeries(tr *hoTrace) (links, host []series) {
	if tr.link[0] != nil {
		links = append(links,
			series{name: "link 1", pts: rates(tr.at, tr.link[0]), color: colLink1},
			series{name: "new link", pts: rates(tr.at, tr.link[1]), color: colLink2})
	}
	host = append(host,
		series{name: "received", pts: binRates(tr.first, tr.binMs), color: colFirst},
		series{name: "duplicates received", pts: binRates(tr.again, tr.binMs), color: colAgain})
	if tr.dropped != nil {
		host = append(host, series{name: "duplicates dropped by B's multilink", pts: rates(tr.at, tr.dropped), color: colDropped, dash: true})
	}
	return links, host
}

// tcpSeries draws iperf3's intervals as steps: each interval's throughput
// held from its start to its end.
func tcpSeries(t *hoTCPTrace) plotter.XYs {
	var out plotter.XYs
	for i := range t.mbps {
		out = append(out, plotter.XY{X: t.start[i], Y: t.mbps[i]}, plotter.XY{X: t.end[i], Y: t.mbps[i]})
	}
	return out
}

// drawHandoff writes the picture of the traces recorded into file.
func (b *bench) drawHandoff(file string) error {
	p := b.picture
	cols := []string{hoDedup, hoRef}
	for _, c := range cols {
		if p.frames[c] == nil {
			return fmt.Errorf("no recorded frame-level run of %s (the hand-off scenario failed or was skipped)", c)
		}
	}
	heads := map[string]string{hoDedup: "multifs", hoRef: "reference"}
	var grid [][]*plot.Plot
	row := func(mk func(col string) (*plot.Plot, error)) error {
		var r []*plot.Plot
		for _, c := range cols {
			pl, err := mk(c)
			if err != nil {
				return err
			}
			r = append(r, pl)
		}
		sameY(r)
		grid = append(grid, r)
		return nil
	}
	if p.frames[hoDedup].link[0] != nil && p.frames[hoRef].link[0] != nil {
		if err := row(func(c string) (*plot.Plot, error) {
			tr := p.frames[c]
			links, _ := frameSeries(tr)
			return panel(heads[c]+": frames each link gave host B's multilink", "ms after the first frame", "frames/s",
				links, tr.startMs, tr.endMs, tr.durMs)
		}); err != nil {
			return err
		}
	} else {
		b.res.notice("the hand-off picture has no per-link row: %s", p.frames[hoDedup].linkCountsMissing)
	}
	if err := row(func(c string) (*plot.Plot, error) {
		tr := p.frames[c]
		_, host := frameSeries(tr)
		title := heads[c] + ": frames host B received"
		if tr.dropped == nil {
			title += " (vde_plug suppresses no duplicates)"
		}
		return panel(title, "ms after the first frame", "frames/s", host, tr.startMs, tr.endMs, tr.durMs)
	}); err != nil {
		return err
	}
	if p.tcp[hoDedup] != nil && p.tcp[hoRef] != nil {
		if err := row(func(c string) (*plot.Plot, error) {
			t := p.tcp[c]
			return panel(fmt.Sprintf("%s: TCP A → B, iperf3 -i 0.5; %.0f retransmits, %.0f in the hand-off", heads[c], t.retransmits, t.retransmitsDur),
				"s after the client started", "Mbit/s",
				[]series{{name: "TCP throughput", pts: tcpSeries(t), color: colTCP}}, t.startS, t.endS, float64(t.secs))
		}); err != nil {
			return err
		}
	} else {
		b.res.notice("the hand-off picture has no TCP row (iperf3 rows skipped or failed)")
	}

	const w, rowH, headH = 13 * vg.Inch, 3.3 * vg.Inch, 0.95 * vg.Inch
	h := vg.Length(len(grid))*rowH + headH
	// The fonts stay out of the file (they would make it 0.5 MB): a
	// viewer may draw the text a little wider than the layout measured,
	// which the left-aligned legends and short titles leave room for.
	cv := vgsvg.New(w, h)
	dc := draw.New(cv)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: len(grid), Cols: len(cols), PadX: 0.4 * vg.Inch, PadY: 0.3 * vg.Inch,
		PadTop: headH, PadLeft: 0.1 * vg.Inch, PadRight: 0.2 * vg.Inch, PadBottom: 0.1 * vg.Inch}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j := range grid[i] {
			grid[i][j].Draw(canvases[i][j])
		}
	}
	head := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, 13), Handler: plot.DefaultTextHandler}
	small := head
	small.Font = font.From(plot.DefaultFont, 10)
	tr := p.frames[hoDedup]
	dc.FillText(head, vg.Point{X: 0.15 * vg.Inch, Y: h - 0.3*vg.Inch},
		fmt.Sprintf("Handing link 1 over to a new link: multifs (left), the reference (right); %s numbered frames/s host A → host B, then TCP",
			thousands(int64(tr.rate))))
	for i, line := range b.pictureProvenance() {
		dc.FillText(small, vg.Point{X: 0.15 * vg.Inch, Y: h - 0.55*vg.Inch - vg.Length(i)*0.18*vg.Inch}, line)
	}

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := cv.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pictureProvenance says what the picture shows, and where and when the
// figures were taken.
func (b *bench) pictureProvenance() []string {
	commit := "unknown commit"
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = b.root
	if out, err := cmd.Output(); err == nil {
		commit = "commit " + strings.TrimSpace(string(out))
	}
	host, _ := os.Hostname()
	return []string{
		fmt.Sprintf("Grey: the hand-off, from its start to link 1's close (both links up for %v of it). The first run of each column; frames in bins of %v.", hoOverlap, hoBin),
		fmt.Sprintf("%s, machine %s, %s. %s", time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, commit, b.header()),
	}
}

// panel is one plot of 0..xmax: the series as lines over a grey band
// from bandLo to bandHi (the hand-off), legend at the top left.
func panel(title, xlabel, ylabel string, ss []series, bandLo, bandHi, xmax float64) (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = title
	pl.Title.TextStyle.Font.Size = 10
	pl.X.Label.Text = xlabel
	pl.Y.Label.Text = ylabel
	pl.Y.Min = 0
	pl.X.Min = 0
	pl.Legend.Top = true
	pl.Legend.Left = true
	pl.Legend.XOffs = vg.Points(6)
	pl.Legend.TextStyle.Font.Size = 9
	pl.Add(plotter.NewGrid())
	ymax := 1.0
	for _, s := range ss {
		for _, p := range s.pts {
			ymax = max(ymax, p.Y)
		}
	}
	ymax *= 1.5 // room for the legend above the data
	if bandHi > bandLo {
		pl.Add(band{lo: bandLo, hi: bandHi})
	}
	for _, s := range ss {
		if len(s.pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		l.Color = s.color
		l.Width = vg.Points(1.5)
		if s.dash {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		pl.Add(l)
		pl.Legend.Add(s.name, l)
	}
	pl.Y.Max = ymax
	if xmax > 0 {
		pl.X.Max = xmax
	}
	return pl, nil
}

// band shades x from lo to hi over the whole height of the data area,
// whatever the y range becomes.
type band struct{ lo, hi float64 }

func (bd band) Plot(c draw.Canvas, pl *plot.Plot) {
	trX, _ := pl.Transforms(&c)
	x0, x1 := max(trX(bd.lo), c.Min.X), min(trX(bd.hi), c.Max.X)
	if x1 <= x0 {
		return
	}
	var p vg.Path
	p.Move(vg.Point{X: x0, Y: c.Min.Y})
	p.Line(vg.Point{X: x1, Y: c.Min.Y})
	p.Line(vg.Point{X: x1, Y: c.Max.Y})
	p.Line(vg.Point{X: x0, Y: c.Max.Y})
	p.Close()
	c.SetColor(colBand)
	c.Fill(p)
}

// sameY gives a row's panels one y range, so that the columns compare at
// a glance.
func sameY(r []*plot.Plot) {
	ymax := 0.0
	for _, p := range r {
		ymax = max(ymax, p.Y.Max)
	}
	for _, p := range r {
		p.Y.Max = ymax
	}
}
