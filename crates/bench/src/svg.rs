//! Line charts as plain SVG: Services on a logarithmic x axis, one line per series, a legend.
//!
//! Hand-written rather than drawn with `plotters`: these charts need lines, circles, ticks and
//! text, which is a page of code; `plotters` with its SVG backend would add several crates,
//! and needs a font backend to measure text. The output is deterministic (same numbers, same
//! bytes), so a rerun's diff shows only what moved.

use std::fmt::Write as _;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 300.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

pub struct Series {
    pub name: String,
    /// (Services, value); values that are not positive are left out on a log scale.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// An index into the palette, so related series share a colour.
    pub colour: usize,
}

/// How an axis's range follows the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Out to whole decades (log) or a round step (linear).
    Round,
    /// The data's range and a little more: the x axis, where sizes are few and known.
    Tight,
}

/// One axis: the data range mapped onto a pixel range.
struct Axis {
    scale: Scale,
    min: f64,
    max: f64,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(scale: Scale, fit: Fit, values: impl Iterator<Item = f64>, from: f64, to: f64) -> Axis {
        let (mut min, mut max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !min.is_finite() {
            (min, max) = (1.0, 10.0);
        }
        match (scale, fit) {
            (Scale::Log, Fit::Tight) => {
                min /= 1.3;
                max *= 1.3;
            }
            (Scale::Log, Fit::Round) => {
                min = 10f64.powf(min.log10().floor());
                max = 10f64.powf(max.log10().ceil());
                if max <= min {
                    max = min * 10.0;
                }
            }
            (Scale::Linear, _) => {
                min = min.min(0.0);
                let step = nice_step(max - min);
                max = (max / step).ceil() * step;
                if max <= min {
                    max = min + 1.0;
                }
            }
        }
        Axis {
            scale,
            min,
            max,
            from,
            to,
        }
    }

    fn position(&self, value: f64) -> f64 {
        let t = match self.scale {
            Scale::Log => {
                (value.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
            }
            Scale::Linear => (value - self.min) / (self.max - self.min),
        };
        self.from + t * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Log => {
                let (low, high) = (
                    self.min.log10().floor() as i32,
                    self.max.log10().ceil() as i32,
                );
                let multiples: &[f64] = if (self.max / self.min).log10() <= 2.5 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                (low..=high)
                    .flat_map(|k| multiples.iter().map(move |m| m * 10f64.powi(k)))
                    .filter(|v| *v >= self.min * 0.9999 && *v <= self.max * 1.0001)
                    .collect()
            }
            Scale::Linear => {
                let step = nice_step(self.max - self.min);
                let count = ((self.max - self.min) / step).round() as usize;
                (0..=count).map(|i| self.min + step * i as f64).collect()
            }
        }
    }
}

/// A step of 1, 2 or 5 × 10^k giving about five intervals over `span`.
fn nice_step(span: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| m * magnitude >= raw)
        .unwrap_or(10.0);
    step * magnitude
}

/// `1k`, `50k`, `0.5`, `20`: short tick labels.
fn label(value: f64) -> String {
    if value >= 1000.0 && (value / 1000.0).fract() == 0.0 {
        format!("{}k", value / 1000.0)
    } else if value >= 1.0 && value.fract() == 0.0 {
        format!("{value}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(chart: &Chart) -> String {
    let visible = |&(x, y): &(f64, f64)| x > 0.0 && (chart.y_scale == Scale::Linear || y > 0.0);
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| visible(p)))
    };
    let x = Axis::new(
        Scale::Log,
        Fit::Tight,
        points().map(|p| p.0),
        LEFT,
        WIDTH - RIGHT,
    );
    let y = Axis::new(
        chart.y_scale,
        Fit::Round,
        points().map(|p| p.1),
        HEIGHT - BOTTOM,
        TOP,
    );

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(&chart.title)
    );
    for tick in x.ticks() {
        let px = x.position(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0,
            label(tick)
        );
    }
    for tick in y.ticks() {
        let py = y.position(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            label(tick)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        WIDTH - RIGHT - LEFT,
        HEIGHT - BOTTOM - TOP
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Services (log scale)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(&chart.y_label)
    );
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[series.colour % COLOURS.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|p| visible(p))
            .map(|&(px, py)| format!("{:.1},{:.1}", x.position(px), y.position(py)))
            .collect();
        if path.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
        }
        for point in &path {
            let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{colour}"/>"#
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = WIDTH - RIGHT + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        let axis =
            |scale, fit, values: [f64; 2]| Axis::new(scale, fit, values.into_iter(), 0.0, 1.0);
        let wide = axis(Scale::Log, Fit::Round, [0.07, 85.0]);
        assert_eq!(wide.ticks(), [0.01, 0.1, 1.0, 10.0, 100.0]);
        let sizes = axis(Scale::Log, Fit::Tight, [1000.0, 50_000.0]);
        assert_eq!(
            sizes.ticks(),
            [1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0, 50_000.0]
        );
        let narrow = axis(Scale::Log, Fit::Round, [120.0, 480.0]);
        assert_eq!(narrow.ticks(), [100.0, 200.0, 500.0, 1000.0]);
        let linear = axis(Scale::Linear, Fit::Round, [0.3, 47.0]);
        assert_eq!(linear.ticks(), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(label(50_000.0), "50k");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(20.0), "20");
    }

    #[test]
    fn a_chart_is_well_formed_and_deterministic() {
        let chart = Chart {
            title: "cold apply <netlink & nft>".into(),
            y_label: "seconds".into(),
            y_scale: Scale::Log,
            series: vec![Series {
                name: "netlink".into(),
                points: vec![(1000.0, 0.15), (10_000.0, 1.95), (50_000.0, 25.0)],
                dashed: false,
                colour: 0,
            }],
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("&lt;netlink &amp; nft&gt;"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg, render(&chart));
    }
}
