//! A registry of named metrics (counters, gauges, timers) that a task or the
//! runtime updates, with labels, and its Prometheus text rendering.
//!
//! Handles are cheap atomics: keep the handle, the lookup by name takes a lock.
//! Names use dots (`store.gets`); Prometheus sees `samza_store_gets_total`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

    /// Sets the count from a tally kept elsewhere (the run loop counts in
    /// plain integers and publishes them).
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
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

/// Upper bounds of the timer buckets, in microseconds: 1 µs to ~16.8 s by
/// powers of 2 (25 buckets, plus +Inf).
const BUCKETS: usize = 25;

#[derive(Debug, Default)]
struct TimerCells {
    count: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS + 1],
}

/// A histogram of durations (count, sum, and log2 buckets from 1 µs).
#[derive(Clone, Debug, Default)]
pub struct Timer(Arc<TimerCells>);

impl Timer {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = if us <= 1 { 0 } else { (64 - (us - 1).leading_zeros() as usize).min(BUCKETS) };
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` and records how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let r = f();
        self.record(start.elapsed());
        r
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.0.sum_us.load(Ordering::Relaxed))
    }

    /// An upper bound of the `q` quantile (0..=1), from the buckets.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(1u64 << i.min(BUCKETS)));
            }
        }
        None
    }
}

/// A metric's name and labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricKey {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

impl MetricKey {
    fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

/// One metric's current value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Value {
    Counter {
        value: i64,
    },
    Gauge {
        value: i64,
    },
    /// Count, sum in microseconds, and the cumulative-free bucket counts.
    Timer {
        count: u64,
        sum_us: u64,
        buckets: Vec<u64>,
    },
}

impl Value {
    /// The counter's or gauge's value; a timer's count.
    pub fn scalar(&self) -> i64 {
        match self {
            Value::Counter { value } | Value::Gauge { value } => *value,
            Value::Timer { count, .. } => *count as i64,
        }
    }
}

/// Every metric of a registry at one moment (sent in container heartbeats).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub metrics: Vec<(MetricKey, Value)>,
}

impl Snapshot {
    /// The value of the metric with this name and exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let key = MetricKey::new(name, labels);
        self.metrics.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The sum of the scalar values of every series of `name`.
    pub fn sum(&self, name: &str) -> i64 {
        self.metrics.iter().filter(|(k, _)| k.name == name).map(|(_, v)| v.scalar()).sum()
    }

    /// Prometheus text exposition format (version 0.0.4), with `extra`
    /// labels added to every series.
    pub fn to_prometheus(&self, extra: &[(&str, &str)], out: &mut String) {
        let mut last = "";
        for (key, value) in &self.metrics {
            let base = prometheus_name(&key.name);
            let (kind, name) = match value {
                Value::Counter { .. } => ("counter", format!("{base}_total")),
                Value::Gauge { .. } => ("gauge", base.clone()),
                Value::Timer { .. } => ("histogram", format!("{base}_seconds")),
            };
            if key.name != last {
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last = &key.name;
            }
            let labels =
                || extra.iter().copied().chain(key.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            match value {
                Value::Counter { value } | Value::Gauge { value } => {
                    out.push_str(&name);
                    render_labels(out, labels(), None);
                    let _ = writeln!(out, " {value}");
                }
                Value::Timer { count, sum_us, buckets } => {
                    let mut cumulative = 0;
                    for (i, c) in buckets.iter().enumerate() {
                        cumulative += c;
                        let le = if i < BUCKETS {
                            format!("{}", (1u64 << i) as f64 / 1e6)
                        } else {
                            "+Inf".to_string()
                        };
                        let _ = write!(out, "{name}_bucket");
                        render_labels(out, labels(), Some(("le", &le)));
                        let _ = writeln!(out, " {cumulative}");
                    }
                    let _ = write!(out, "{name}_sum");
                    render_labels(out, labels(), None);
                    let _ = writeln!(out, " {}", *sum_us as f64 / 1e6);
                    let _ = write!(out, "{name}_count");
                    render_labels(out, labels(), None);
                    let _ = writeln!(out, " {count}");
                }
            }
        }
    }
}

/// `store.gets` -> `samza_store_gets` (Prometheus names: `[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn prometheus_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 6);
    s.push_str("samza_");
    s.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    s
}

fn render_labels<'a>(
    out: &mut String,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    last: Option<(&str, &str)>,
) {
    let mut first = true;
    let mut one = |out: &mut String, k: &str, v: &str| {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    };
    for (k, v) in labels {
        one(out, k, v);
    }
    if let Some((k, v)) = last {
        one(out, k, v);
    }
    if !first {
        out.push('}');
    }
}

#[derive(Debug, Default)]
struct Metrics {
    counters: BTreeMap<MetricKey, Counter>,
    gauges: BTreeMap<MetricKey, Gauge>,
    timers: BTreeMap<MetricKey, Timer>,
}

/// Named metrics, cheap to clone; a metric is created on first use.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Metrics>>,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter named `name` (keep the handle; the lookup takes a lock).
    pub fn counter(&self, name: &str) -> Counter {
        self.counter_with(name, &[])
    }

    /// The counter named `name` with these labels, e.g. `[("store", "counts")]`.
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        self.lock().counters.entry(MetricKey::new(name, labels)).or_default().clone()
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        self.gauge_with(name, &[])
    }

    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Gauge {
        self.lock().gauges.entry(MetricKey::new(name, labels)).or_default().clone()
    }

    /// A histogram of durations (Prometheus: `samza_<name>_seconds`).
    pub fn timer(&self, name: &str) -> Timer {
        self.timer_with(name, &[])
    }

    pub fn timer_with(&self, name: &str, labels: &[(&str, &str)]) -> Timer {
        self.lock().timers.entry(MetricKey::new(name, labels)).or_default().clone()
    }

    /// Every metric and its current value, sorted by name then labels.
    pub fn snapshot(&self) -> Snapshot {
        let m = self.lock();
        let mut metrics: Vec<(MetricKey, Value)> = Vec::new();
        metrics.extend(m.counters.iter().map(|(k, c)| (k.clone(), Value::Counter { value: c.get() })));
        metrics.extend(m.gauges.iter().map(|(k, g)| (k.clone(), Value::Gauge { value: g.get() })));
        metrics.extend(m.timers.iter().map(|(k, t)| {
            let cells = &t.0;
            (
                k.clone(),
                Value::Timer {
                    count: cells.count.load(Ordering::Relaxed),
                    sum_us: cells.sum_us.load(Ordering::Relaxed),
                    buckets: cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
                },
            )
        }));
        metrics.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot { metrics }
    }

    /// Prometheus text of every metric, with `extra` labels on each series.
    pub fn to_prometheus(&self, extra: &[(&str, &str)]) -> String {
        let mut out = String::new();
        self.snapshot().to_prometheus(extra, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_types_labels_and_cumulative_buckets() {
        let r = MetricsRegistry::new();
        r.counter_with("store.gets", &[("store", "counts"), ("task", "Partition 0")]).add(7);
        r.counter_with("store.gets", &[("store", "counts"), ("task", "Partition 1")]).add(2);
        r.gauge("ssp.lag").set(-3);
        let t = r.timer("commit");
        t.record(Duration::from_micros(3)); // bucket le 4 µs
        t.record(Duration::from_millis(1)); // 1000 µs: bucket le 1024 µs
        let text = r.to_prometheus(&[("job", "a\"b")]);
        assert!(text.contains("# TYPE samza_store_gets_total counter\n"), "{text}");
        assert_eq!(text.matches("# TYPE samza_store_gets_total").count(), 1, "{text}");
        assert!(
            text.contains("samza_store_gets_total{job=\"a\\\"b\",store=\"counts\",task=\"Partition 0\"} 7\n")
        );
        assert!(text.contains("samza_ssp_lag{job=\"a\\\"b\"} -3\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_bucket{job=\"a\\\"b\",le=\"0.000002\"} 0\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_bucket{job=\"a\\\"b\",le=\"0.000004\"} 1\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_bucket{job=\"a\\\"b\",le=\"0.001024\"} 2\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_bucket{job=\"a\\\"b\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_count{job=\"a\\\"b\"} 2\n"), "{text}");
        assert!(text.contains("samza_commit_seconds_sum{job=\"a\\\"b\"} 0.001003\n"), "{text}");
        assert_eq!(t.quantile(0.5), Some(Duration::from_micros(4)));
        assert_eq!(t.quantile(1.0), Some(Duration::from_micros(1024)));
        let snap = r.snapshot();
        assert_eq!(snap.sum("store.gets"), 9);
        assert_eq!(snap.get("ssp.lag", &[]), Some(&Value::Gauge { value: -3 }));
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);
    }
}
