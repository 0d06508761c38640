//! The PNG chart of `gridlet sim`: community exchange with the main grid (with and without
//! trading), every battery's state of charge, and trade prices over the simulated hours.
//!
//! plotters draws the series; its `ab_glyph` backend renders the labels with DejaVu Sans,
//! embedded in the binary (`assets/`, Bitstream Vera licence), so no system font library is
//! needed on a gateway box or in CI.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One sample of the community.
#[derive(Debug, Clone)]
pub struct ChartSample {
    /// Community hour (hours since the first midnight).
    pub hour: f64,
    /// Community exchange with the grid, W (+ = import).
    pub community_w: i64,
    /// The same without trading, W.
    pub community_no_trading_w: i64,
    /// Each battery's state of charge, %.
    pub soc_pct: Vec<f64>,
}

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font once per process.
fn font_ready() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("chart: the embedded font does not load"))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel over the run's hours (`x`), labelled with the time of day.
fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<Chart<'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(10)
        .margin_right(35)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(|e| anyhow!("chart: {e}"))?;
    let span = x.1 - x.0;
    let labels = if span > 12.0 {
        span / 3.0
    } else {
        span.max(1.0)
    };
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_labels(labels.ceil() as usize + 1)
        .x_label_formatter(&|h| {
            let minutes = (h * 60.0).round() as i64;
            format!("{:02}:{:02}", minutes / 60 % 24, minutes % 60)
        })
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    Ok(chart)
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if (hi - lo).abs() < 1.0 {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    }
}

fn legend(chart: &mut Chart<'_>) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))
}

/// Draws the chart into `path`: `samples` of the community, `prices` as (community hour,
/// micro-credits per kWh), one line per home named by `homes`.
pub fn draw(
    path: &Path,
    samples: &[ChartSample],
    prices: &[(f64, u64)],
    homes: &[String],
) -> Result<()> {
    font_ready()?;
    let first = samples.first().map_or(0.0, |s| s.hour);
    let last = samples.last().map_or(1.0, |s| s.hour);
    let x = (first, last.max(first + 0.25));
    let root = BitMapBackend::new(path, (1200, 1050)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let panels = root.split_evenly((3, 1));

    let kw = |w: i64| w as f64 / 1000.0;
    let y = range(
        samples
            .iter()
            .flat_map(|s| [kw(s.community_w), kw(s.community_no_trading_w)]),
    );
    let mut c = panel(
        &panels[0],
        "Community exchange with the main grid",
        "kW (+ import)",
        x,
        y,
    )?;
    for (n, (label, series)) in [
        (
            "with trading",
            samples
                .iter()
                .map(|s| (s.hour, kw(s.community_w)))
                .collect::<Vec<_>>(),
        ),
        (
            "without trading",
            samples
                .iter()
                .map(|s| (s.hour, kw(s.community_no_trading_w)))
                .collect(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let color = PALETTE[n];
        c.draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut c)?;

    let mut c = panel(&panels[1], "Battery state of charge", "%", x, (0.0, 100.0))?;
    let count = samples.first().map_or(0, |s| s.soc_pct.len());
    for home in 0..count {
        let series: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| s.soc_pct.get(home).map(|v| (s.hour, *v)))
            .collect();
        let color = PALETTE[home % PALETTE.len()];
        let name = homes
            .get(home)
            .cloned()
            .unwrap_or_else(|| format!("home {home}"));
        c.draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut c)?;

    let milli = |p: u64| p as f64 / 1000.0;
    let y = range(prices.iter().map(|p| milli(p.1)));
    let mut c = panel(
        &panels[2],
        "Trade prices",
        "milli-credits per kWh",
        x,
        (y.0.min(0.0), y.1 * 1.1),
    )?;
    c.draw_series(
        prices
            .iter()
            .filter(|p| (x.0..=x.1).contains(&p.0))
            .map(|p| Circle::new((p.0, milli(p.1)), 4, PALETTE[2].filled())),
    )
    .map_err(|e| anyhow!("chart: {e}"))?
    .label(format!("{} trades", prices.len()))
    .legend(|(x, y)| Circle::new((x + 10, y), 4, PALETTE[2].filled()));
    legend(&mut c)?;
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_afternoon_fills_the_width_with_text_and_legends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let samples: Vec<ChartSample> = (0..=36)
            .map(|i| ChartSample {
                hour: 15.0 + f64::from(i) / 12.0,
                community_w: 1000 - i64::from(i) * 50,
                community_no_trading_w: 1500,
                soc_pct: vec![50.0 + f64::from(i), 80.0 - f64::from(i)],
            })
            .collect();
        let names = ["home-0".to_string(), "home-1".to_string()];
        draw(&path, &samples, &[(16.0, 120_000), (17.5, 150_000)], &names).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1200, 1050));
        let count = |xs: std::ops::Range<u32>, ys: std::ops::Range<u32>, c: RGBColor| {
            let mut n = 0;
            for x in xs {
                for y in ys.clone() {
                    if img.get_pixel(x, y).0 == [c.0, c.1, c.2] {
                        n += 1;
                    }
                }
            }
            n
        };
        // The axis covers the run (15:00 to 18:00), not the day from midnight: the left part of
        // the first panel's plot holds both lines, not blank space.
        assert!(
            count(70..200, 40..330, PALETTE[0]) > 50,
            "no trading line at the left"
        );
        assert!(
            count(70..200, 40..330, PALETTE[1]) > 50,
            "no no-trading line at the left"
        );
        // The second home's line is there, and text (dark pixels) in the caption and labels.
        assert!(count(70..1190, 390..680, PALETTE[1]) > 200);
        let dark = img.pixels().filter(|p| p.0.iter().all(|v| *v < 60)).count();
        assert!(dark > 3_000, "{dark} dark pixels: no text?");
    }
}
