//! The latency histogram picture written next to the JSON report (SVG, drawn with plotters).

use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const BINS: u32 = 60;

/// `report.json` + `join-latency` → `report-join-latency.svg`.
pub fn sibling(json: &Path, suffix: &str) -> PathBuf {
    let stem = json.file_stem().and_then(|s| s.to_str()).unwrap_or("loadtest");
    json.with_file_name(format!("{stem}-{suffix}.svg"))
}

/// Draws `histogram` (values in microseconds) in milliseconds. The x axis stops at p99.9 so one outlier does not
/// squash the picture; everything beyond lands in the last bar, and the title gives the true max.
pub fn write_histogram_svg(path: &Path, title: &str, histogram: &Histogram<u64>) -> anyhow::Result<()> {
    let (bins, bin_ms) = bin(histogram);
    let top = bins.iter().copied().max().unwrap_or(0).max(1);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let caption = if histogram.is_empty() {
        format!("{title}: no samples")
    } else {
        format!("{title}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, n={}", ms(0.5), ms(0.99), histogram.max() as f64 / 1000.0, histogram.len())
    };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..BINS).into_segmented(), 0u64..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("milliseconds")
        .y_desc("count")
        .x_labels(12)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => format!("{:.1}", *i as f64 * bin_ms),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    chart.draw_series(
        plotters::series::Histogram::vertical(&chart)
            .style(RGBColor(46, 110, 180).filled())
            .margin(1)
            .data(bins.iter().enumerate().map(|(i, n)| (i as u32, *n))),
    )?;
    root.present()?;
    Ok(())
}

/// Counts per bin and the bin width in milliseconds.
fn bin(h: &Histogram<u64>) -> (Vec<u64>, f64) {
    let mut bins = vec![0u64; BINS as usize];
    if h.is_empty() {
        return (bins, 1.0);
    }
    let upper_us = (h.value_at_quantile(0.999) as f64).max(1.0);
    let width_us = upper_us / (BINS - 1) as f64;
    for v in h.iter_recorded() {
        let i = ((v.value_iterated_to() as f64 / width_us) as usize).min(BINS as usize - 1);
        bins[i] += v.count_at_value();
    }
    (bins, width_us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_hold_every_sample_and_the_outlier_lands_last() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=999u64 {
            h.record(v * 10).unwrap();
        }
        h.record(5_000_000).unwrap();
        let (bins, width_ms) = bin(&h);
        assert_eq!(bins.iter().sum::<u64>(), 1000);
        assert!(*bins.last().unwrap() >= 1);
        assert!(width_ms > 0.0 && width_ms < 1.0, "{width_ms}");
    }

    #[test]
    fn writes_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = sibling(&dir.path().join("run.json"), "join-latency");
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [800u64, 900, 1200, 1500, 40_000] {
            h.record(v).unwrap();
        }
        write_histogram_svg(&path, "join latency", &h).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(path.ends_with("run-join-latency.svg"));
        assert!(svg.starts_with("<svg") && svg.contains("p99"), "{}", &svg[..200.min(svg.len())]);
    }
}
