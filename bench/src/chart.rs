//! The PNG chart: warm-execute throughput and p99 per language against the
//! baseline, at the middle connection level (32 in full mode).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Report;

/// Fonts tried for labels (plotters' ab_glyph backend needs one); without
/// any the chart is drawn without text.
const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// The bar of the result-cache row.
const CACHE_HIT_LABEL: &str = "cache hit";

struct Bar {
    label: String,
    throughput: f64,
    p99_ms: f64,
    baseline: bool,
}

fn bars(report: &Report) -> (usize, Vec<Bar>) {
    let levels = &report.measurements.rows;
    let level = if levels.iter().any(|row| row.connections == 32) {
        32
    } else {
        1
    };
    let bars: Vec<Bar> = report
        .measurements
        .rows
        .iter()
        .filter(|row| {
            (row.scenario == "warm execute" || row.scenario == crate::harness::CACHED_SCENARIO)
                && row.connections == level
        })
        .map(|row| Bar {
            label: if row.language == "baseline" {
                "baseline".into()
            } else if row.scenario == crate::harness::CACHED_SCENARIO {
                // The platform's path without a runtime: every runtime's ceiling.
                CACHE_HIT_LABEL.into()
            } else {
                row.language.clone()
            },
            throughput: row.load.rps,
            p99_ms: row.load.latency.p99_us as f64 / 1000.0,
            baseline: row.language == "baseline",
        })
        .collect();
    // The baseline runs between the others: one bar, their mean.
    let (baselines, mut bars): (Vec<Bar>, Vec<Bar>) =
        bars.into_iter().partition(|bar| bar.baseline);
    if !baselines.is_empty() {
        let n = baselines.len() as f64;
        bars.push(Bar {
            label: "baseline".into(),
            throughput: baselines.iter().map(|bar| bar.throughput).sum::<f64>() / n,
            p99_ms: baselines.iter().map(|bar| bar.p99_ms).sum::<f64>() / n,
            baseline: true,
        });
    }
    // The baseline first, then the ceiling, then the languages.
    bars.sort_by_key(|bar| (!bar.baseline, bar.label != CACHE_HIT_LABEL));
    (level, bars)
}

fn colour(bar: &Bar) -> RGBColor {
    if bar.baseline {
        RGBColor(120, 120, 120)
    } else {
        match bar.label.as_str() {
            "nodejs" => RGBColor(68, 136, 68),
            "python" => RGBColor(53, 114, 165),
            "wasm" => RGBColor(101, 79, 240),
            CACHE_HIT_LABEL => RGBColor(170, 170, 170),
            _ => RGBColor(206, 94, 40),
        }
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[Bar],
    value: fn(&Bar) -> f64,
    with_text: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let max = bars.iter().map(value).fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = bars.len().max(1);
    if with_text {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            // A segmented range has one segment per value at both ends:
            // 0..n would leave an empty slot after the last bar.
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0.0..max)
            .map_err(|error| anyhow!("{error}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|segment| match segment {
                SegmentValue::CenterOf(index) | SegmentValue::Exact(index) => bars
                    .get(*index)
                    .map(|bar| bar.label.clone())
                    .unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|error| anyhow!("{error}"))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(index, bar)| {
                let mut rectangle = Rectangle::new(
                    [
                        (SegmentValue::Exact(index), 0.0),
                        (SegmentValue::Exact(index + 1), value(bar)),
                    ],
                    colour(bar).filled(),
                );
                rectangle.set_margin(0, 0, 12, 12);
                rectangle
            }))
            .map_err(|error| anyhow!("{error}"))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(index, bar)| {
                Text::new(
                    if value(bar) >= 100.0 {
                        format!("{:.0}", value(bar))
                    } else {
                        format!("{:.2}", value(bar))
                    },
                    (SegmentValue::CenterOf(index), value(bar) + max * 0.02),
                    ("sans-serif", 14).into_font(),
                )
            }))
            .map_err(|error| anyhow!("{error}"))?;
    } else {
        let (width, height) = area.dim_in_pixel();
        let slot = width as f64 / n as f64;
        for (index, bar) in bars.iter().enumerate() {
            let top = height as f64 * (1.0 - value(bar) / max);
            let left = (index as f64 * slot + slot * 0.15) as i32;
            let right = ((index as f64 + 1.0) * slot - slot * 0.15) as i32;
            area.draw(&Rectangle::new(
                [(left, top as i32), (right, height as i32)],
                colour(bar).filled(),
            ))
            .map_err(|error| anyhow!("{error}"))?;
        }
    }
    Ok(())
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let (level, bars) = bars(report);
    let with_text = register_font();
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow!("{error}"))?;
    let (left, right) = root.split_horizontally(600);
    panel(
        &left,
        &format!("Warm execute throughput, req/s (c={level})"),
        &bars,
        |bar| bar.throughput,
        with_text,
    )?;
    panel(
        &right,
        &format!("Warm execute p99, ms (c={level})"),
        &bars,
        |bar| bar.p99_ms,
        with_text,
    )?;
    root.present().map_err(|error| anyhow!("{error}"))?;
    Ok(())
}
