//! Summaries of measured durations.

/// The median, 99th percentile and maximum of `took` (not empty).
pub fn p50_p99_max(mut took: Vec<f64>) -> [f64; 3] {
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    [at(0.5), at(0.99), took[took.len() - 1]]
}
