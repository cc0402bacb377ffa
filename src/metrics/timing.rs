//! A histogram of durations that never locks: each observation is three relaxed atomic adds
//! (its bucket, the count, the sum in nanoseconds). prometheus-client's own histogram takes a
//! mutex per observation, and two cores publishing to one app would meet on it per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: 50 µs × 2.5ⁿ, up to about 3 s, then +Inf.
const BOUNDS: [f64; 13] = [
    0.000_05,
    0.000_125,
    0.000_312_5,
    0.000_781_25,
    0.001_953_125,
    0.004_882_812_5,
    0.012_207_031_25,
    0.030_517_578_125,
    0.076_293_945_312_5,
    0.190_734_863_281_25,
    0.476_837_158_203_125,
    1.192_092_895_507_812_5,
    2.980_232_238_769_531,
];

#[derive(Debug, Default)]
struct Counts {
    /// One per bound, and the last for +Inf; not cumulative (the encoder sums them).
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing(Arc<Counts>);

impl Timing {
    pub(crate) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Timing {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timing {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&self.0.buckets)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::MAX,
            self.0.buckets[BOUNDS.len()].load(Ordering::Relaxed),
        ));
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_the_text_is_cumulative() {
        let t = Timing::default();
        t.observe(Duration::from_micros(10));
        t.observe(Duration::from_micros(100));
        t.observe(Duration::from_secs(10));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("t", "test", t.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(text.contains("t_bucket{le=\"0.00005\"} 1"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.000125\"} 2"), "{text}");
        assert!(text.contains("t_count 3"), "{text}");
        assert_eq!(t.count(), 3);
    }
}
