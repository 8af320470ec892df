package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// serverColors: gowsgi stands out, peers get muted distinct colours.
var serverColors = map[string]string{
	"gowsgi":           "#d62728",
	"gunicorn-sync":    "#9ecae1",
	"gunicorn-gthread": "#4292c6",
	"gunicorn-gevent":  "#08519c",
	"uwsgi-http":       "#a1d99b",
	"uwsgi-http11":     "#31a354",
	"waitress":         "#bcbddc",
	goBaseline:         "#969696",
}

// niceStep rounds v up to 1, 2, 2.5 or 5 × a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// unfairBelow: bars of servers whose fairness (Jain) is below this are drawn pale and
// starred, since their req/s is not what every connection got.
const unfairBelow = 0.9

func shortNum(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// renderChart draws one panel per (mode, app) with a bar per server showing the median
// req/s; every panel has its own scale (the apps differ by two orders of magnitude).
func renderChart(res Results) string {
	modes, apps := res.Settings.Modes, res.Settings.Apps
	servers := res.Settings.Servers
	const (
		panelW, panelH = 240.0, 186.0
		left, top      = 74.0, 78.0
		gapX, gapY     = 46.0, 30.0
		plotH          = 150.0
	)
	width := left + float64(len(apps))*(panelW+gapX) + 10
	height := top + float64(len(modes))*(panelH+gapY) + 24
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	title := fmt.Sprintf("Requests per second (median of %d, %d connections) — %s", res.Settings.Reps, res.Settings.Conns, res.Meta.Started[:10])
	if res.Settings.Quick {
		title += " — quick mode"
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))

	// Legend.
	x := left
	for _, s := range servers {
		fmt.Fprintf(&b, `<rect x="%.0f" y="36" width="12" height="12" fill="%s"/><text x="%.0f" y="46">%s</text>`+"\n",
			x, serverColors[s], x+16, html.EscapeString(s))
		x += 24 + 6.5*float64(len(s))
	}

	for mi, mode := range modes {
		y0 := top + float64(mi)*(panelH+gapY)
		label := mode
		fmt.Fprintf(&b, `<text x="12" y="%.0f" font-size="13" font-weight="bold" transform="rotate(-90 12 %.0f)" text-anchor="middle">%s</text>`+"\n",
			y0+plotH/2+20, y0+plotH/2+20, html.EscapeString(label))
		for ai, app := range apps {
			x0 := left + float64(ai)*(panelW+gapX)
			var rows []*Summary
			for _, s := range servers {
				if sum := find(res.Summary, mode, app, s); sum != nil {
					rows = append(rows, sum)
				}
			}
			top := 0.0
			for _, r := range rows {
				top = math.Max(top, r.RPS)
			}
			ymax := 4 * niceStep(top*1.12/4)
			py := y0 + 24 // plot top
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold" text-anchor="middle">%s</text>`+"\n",
				x0+panelW/2, y0+12, html.EscapeString(app))
			// Grid and axis labels.
			for k := 0; k <= 4; k++ {
				v := ymax * float64(k) / 4
				gy := py + plotH - plotH*float64(k)/4
				fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e0e0e0"/>`, x0, gy, x0+panelW, gy)
				fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#555" font-size="10">%s</text>`+"\n", x0-3, gy+3, shortNum(v))
			}
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`+"\n", x0, py+plotH, x0+panelW, py+plotH)
			if len(rows) == 0 {
				continue
			}
			slot := panelW / float64(len(rows))
			bw := slot * 0.72
			for i, r := range rows {
				h := plotH * r.RPS / ymax
				bx := x0 + float64(i)*slot + (slot-bw)/2
				by := py + plotH - h
				opacity, star := "", ""
				if r.Jain < unfairBelow {
					opacity, star = ` fill-opacity="0.4" stroke="#333" stroke-dasharray="2,2"`, "*"
				}
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"%s><title>%s %s %s: %.0f req/s, p99 %.2f ms, fairness %.3f</title></rect>`,
					bx, by, bw, h, serverColors[r.Server], opacity, html.EscapeString(mode), html.EscapeString(app), html.EscapeString(r.Server), r.RPS, r.P99ms, r.Jain)
				weight := ""
				if r.Server == "gowsgi" {
					weight = ` font-weight="bold"`
				}
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9"%s>%s%s</text>`+"\n",
					bx+bw/2, by-3, weight, shortNum(r.RPS), star)
			}
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#333">* pale, dashed bars: fairness (Jain) below %.1f in the fairness pass: some connections were starved or favoured, so req/s overstates what every client got.</text>`+"\n",
		left, height-10, unfairBelow)
	b.WriteString("</svg>\n")
	return b.String()
}
