//! A small registry of named counters and gauges a task or the runtime updates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicI64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Named metrics, cheap to clone; a metric is created on first use.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    counters: Arc<Mutex<BTreeMap<String, Counter>>>,
    gauges: Arc<Mutex<BTreeMap<String, Gauge>>>,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter named `name` (keep the handle; the lookup takes a lock).
    pub fn counter(&self, name: &str) -> Counter {
        self.counters.lock().unwrap().entry(name.to_string()).or_default().clone()
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        self.gauges.lock().unwrap().entry(name.to_string()).or_default().clone()
    }

    /// Every metric and its current value.
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        let mut out: BTreeMap<String, i64> =
            self.counters.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.get())).collect();
        out.extend(self.gauges.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.get())));
        out
    }
}
