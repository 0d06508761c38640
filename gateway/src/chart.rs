//! The PNG chart of `gridlet sim`: community exchange with the main grid (with and without
//! trading), every battery's state of charge, and trade prices over the simulated day.
//!
//! plotters draws the series; the labels use a built-in 5×7 pixel font, because plotters'
//! font backends need system font libraries a gateway box (and CI) may not have.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One sample of the community.
#[derive(Debug, Clone)]
pub struct ChartSample {
    /// Scenario hour.
    pub hour: f64,
    /// Community exchange with the grid, W (+ = import).
    pub community_w: i64,
    /// The same without trading, W.
    pub community_no_trading_w: i64,
    /// Each battery's state of charge, %.
    pub soc_pct: Vec<f64>,
}

/// Rows of a 5×7 glyph, top first, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        _ => [0; 7],
    }
}

/// Writes `text` with its top-left corner at `(x, y)`, `scale` pixels per font pixel.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    text: &str,
    scale: i32,
    color: &RGBColor,
) {
    for (n, c) in text.chars().enumerate() {
        let rows = glyph(c);
        let left = x + n as i32 * 6 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let _ = area.draw_pixel(
                                (left + col * scale + dx, y + r as i32 * scale + dy),
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
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

fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    title: &str,
    hours: f64,
    y: (f64, f64),
) -> Result<Chart<'a>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(28)
        .margin_bottom(22)
        .margin_left(80)
        .margin_right(20)
        .build_cartesian_2d(0.0..hours, y.0..y.1)
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .axis_style(BLACK)
        .x_labels(0)
        .y_labels(0)
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    text(area, 80, 6, title, 2, &BLACK);
    // Axis figures: the y range at its ends, the hours along the bottom.
    for v in [y.0, (y.0 + y.1) / 2.0, y.1] {
        let (_, py) = chart.backend_coord(&(0.0, v));
        let (_, oy) = area.get_base_pixel();
        text(area, 4, py - oy - 7, &format!("{v:.0}"), 2, &BLACK);
    }
    let step = if hours > 12.0 { 3.0 } else { 1.0 };
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        let (px, _) = chart.backend_coord(&(h, y.0));
        let (ox, _) = area.get_base_pixel();
        let (_, height) = area.dim_in_pixel();
        let (width, _) = area.dim_in_pixel();
        let x = (px - ox - 6).min(width as i32 - 40);
        text(area, x, height as i32 - 18, &format!("{h:.0}H"), 2, &BLACK);
        h += step;
    }
    Ok(chart)
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if (hi - lo).abs() < 1.0 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    }
}

/// Draws the chart into `path`.
pub fn draw(path: &Path, samples: &[ChartSample], prices: &[(f64, u64)]) -> Result<()> {
    let hours = samples.last().map_or(1.0, |s| s.hour.max(1.0));
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
        "COMMUNITY GRID EXCHANGE KW (+ IMPORT)  BLUE: TRADING  ORANGE: WITHOUT",
        hours,
        y,
    )?;
    for (n, series) in [
        samples
            .iter()
            .map(|s| (s.hour, kw(s.community_w)))
            .collect::<Vec<_>>(),
        samples
            .iter()
            .map(|s| (s.hour, kw(s.community_no_trading_w)))
            .collect(),
    ]
    .into_iter()
    .enumerate()
    {
        c.draw_series(LineSeries::new(series, PALETTE[n].stroke_width(2)))
            .map_err(|e| anyhow!("chart: {e}"))?;
    }

    let mut c = panel(
        &panels[1],
        "BATTERY STATE OF CHARGE % (ONE LINE PER HOME)",
        hours,
        (0.0, 100.0),
    )?;
    let homes = samples.first().map_or(0, |s| s.soc_pct.len());
    for home in 0..homes {
        let series: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| s.soc_pct.get(home).map(|v| (s.hour, *v)))
            .collect();
        c.draw_series(LineSeries::new(
            series,
            PALETTE[home % PALETTE.len()].stroke_width(2),
        ))
        .map_err(|e| anyhow!("chart: {e}"))?;
    }

    let milli = |p: u64| p as f64 / 1000.0;
    let y = range(prices.iter().map(|p| milli(p.1)));
    let mut c = panel(
        &panels[2],
        "TRADE PRICES (MILLI-CREDITS PER KWH)",
        hours,
        (y.0.min(0.0), y.1 * 1.1),
    )?;
    c.draw_series(
        prices
            .iter()
            .map(|p| Circle::new((p.0, milli(p.1)), 4, PALETTE[2].filled())),
    )
    .map_err(|e| anyhow!("chart: {e}"))?;
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}
