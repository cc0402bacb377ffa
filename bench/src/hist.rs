//! Log-linear latency histogram (about 1.5 % relative precision), mergeable across processes.

use serde_json::{Value, json};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS; // 64 sub-buckets per octave
const EXACT: u64 = 2 * SUB; // values below 128 are exact

#[derive(Clone, Debug, Default)]
pub(crate) struct Hist {
    counts: Vec<u64>,
    pub(crate) n: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) sum: u128,
}

fn index(v: u64) -> usize {
    if v < EXACT {
        v as usize
    } else {
        let e = 63 - v.leading_zeros(); // >= 7
        let shift = e - SUB_BITS;
        let sub = (v >> shift) - SUB;
        (EXACT + (e - SUB_BITS - 1) as u64 * SUB + sub) as usize
    }
}

/// Midpoint of bucket `i`.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        i
    } else {
        let k = i - EXACT;
        let e = k / SUB + SUB_BITS as u64 + 1;
        let shift = e - SUB_BITS as u64;
        let low = (SUB + k % SUB) << shift;
        low + (1u64 << shift) / 2
    }
}

impl Hist {
    pub(crate) fn new() -> Self {
        Hist {
            counts: Vec::new(),
            n: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    pub(crate) fn record(&mut self, v: u64) {
        let i = index(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    pub(crate) fn merge(&mut self, o: &Hist) {
        if o.counts.len() > self.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (i, c) in o.counts.iter().enumerate() {
            self.counts[i] += c;
        }
        self.n += o.n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// Value at quantile q (0..=1); 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return value_of(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let b: Vec<[u64; 2]> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| [i as u64, *c])
            .collect();
        json!({"n": self.n, "min": if self.n == 0 { 0 } else { self.min }, "max": self.max,
               "sum": self.sum as f64, "b": b})
    }

    pub(crate) fn from_json(v: &Value) -> Hist {
        let mut h = Hist::new();
        if let Some(b) = v["b"].as_array() {
            for p in b {
                let i = p[0].as_u64().unwrap_or(0) as usize;
                let c = p[1].as_u64().unwrap_or(0);
                if i >= h.counts.len() {
                    h.counts.resize(i + 1, 0);
                }
                h.counts[i] += c;
            }
        }
        h.n = v["n"].as_u64().unwrap_or(0);
        h.min = if h.n == 0 {
            u64::MAX
        } else {
            v["min"].as_u64().unwrap_or(0)
        };
        h.max = v["max"].as_u64().unwrap_or(0);
        h.sum = v["sum"].as_f64().unwrap_or(0.0) as u128;
        h
    }

    /// Summary in the unit recorded (µs everywhere in this tool), converted to ms.
    pub(crate) fn summary_ms(&self) -> Value {
        let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
        json!({"n": self.n, "p50_ms": ms(self.quantile(0.5)), "p90_ms": ms(self.quantile(0.9)),
               "p99_ms": ms(self.quantile(0.99)), "p999_ms": ms(self.quantile(0.999)),
               "max_ms": ms(self.max), "mean_ms": (self.mean() / 1000.0 * 1000.0).round() / 1000.0})
    }

    pub(crate) fn line_ms(&self) -> String {
        if self.n == 0 {
            return "n=0".into();
        }
        let f = |v: u64| v as f64 / 1000.0;
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (n={})",
            f(self.quantile(0.5)),
            f(self.quantile(0.99)),
            f(self.quantile(0.999)),
            f(self.max),
            self.n
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn buckets_roundtrip() {
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 12345, 1 << 40] {
            let i = index(v);
            let m = value_of(i);
            assert!(
                (m as f64 - v as f64).abs() <= v as f64 * 0.02 + 1.0,
                "{v} {m}"
            );
        }
        let mut h = Hist::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((490..=510).contains(&p50), "{p50}");
        let h2 = Hist::from_json(&h.to_json());
        assert_eq!(h2.quantile(0.99), h.quantile(0.99));
    }
}
