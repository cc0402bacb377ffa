//! A pair of counters (events and their bytes) spread over cache lines, one per thread slot,
//! for the paths both cores run all the time (deliveries, client messages): a single shared
//! atomic would bounce its cache line between the cores on every add. A scrape sums the slots
//! (see [`super::collector`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    count: AtomicU64,
    bytes: AtomicU64,
}

fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    INDEX.with(|i| *i)
}

/// Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spread(Arc<[Slot; SLOTS]>);

impl Spread {
    #[inline]
    pub(crate) fn add(&self, count: u64, bytes: u64) {
        let slot = &self.0[slot_index()];
        slot.count.fetch_add(count, Ordering::Relaxed);
        slot.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.iter().map(|s| s.count.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.0.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_up() {
        let spread = Spread::default();
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let s = spread.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        s.add(2, 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_default();
        }
        assert_eq!(spread.count(), 4000);
        assert_eq!(spread.bytes(), 20_000);
    }
}
