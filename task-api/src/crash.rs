//! Crash points: a test makes a process die at a named step, the way a
//! kill -9 landing exactly there would, with `SAMZA_CRASH_AT=<point>:<n>`
//! (die the `n`-th time `point` is reached; `n` defaults to 1). Without the
//! variable a crash point costs one load of a cached value.
//!
//! Points: `commit-flushed` (outputs and changelog writes appended, nothing
//! committed or checkpointed yet), `commit-partly-marked` (exactly-once: the
//! commit is decided and the first of its markers written),
//! `commit-written-back` (stores written back, before an at-least-once
//! checkpoint; after an exactly-once commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const ENV: &str = "SAMZA_CRASH_AT";

/// Dies (abort: no destructor, no flush of user-space buffers) when this is
/// the `n`-th time `point` is reached and `SAMZA_CRASH_AT` names it.
pub fn crash_point(point: &str) {
    static AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        let (p, n) = v.split_once(':').unwrap_or((&v, "1"));
        Some((p.to_string(), n.parse().unwrap_or(1)))
    });
    if let Some((p, n)) = at {
        if p == point && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            eprintln!("crash point {point} reached ({ENV}): aborting");
            std::process::abort();
        }
    }
}
