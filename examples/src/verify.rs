//! What the page-view example's promises mean, checked from its streams as a
//! downstream reader sees them (read-committed): used by `samza-chaos`, which
//! reports every violation instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use samza_log::{Log, StartAt};

/// One record as a reader sees it.
pub struct Rec {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every record of `stream`, per partition in log order (read-committed, or
/// everything written with `uncommitted`).
pub fn history(log: &Log, stream: &str, uncommitted: bool) -> Result<Vec<Vec<Rec>>, String> {
    let s = log.stream(stream).map_err(|e| format!("{stream}: {e}"))?;
    let mut out = Vec::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).map_err(|e| format!("{stream}[{p}]: {e}"))?;
        if uncommitted {
            r = r.read_uncommitted();
        }
        let mut part = Vec::new();
        loop {
            let c = r.read(1 << 20).map_err(|e| format!("{stream}[{p}]: {e}"))?;
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.map_err(|e| format!("{stream}[{p}]: {e}"))?;
                let headers = rec
                    .headers()
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.to_string(), v.unwrap_or_default().to_vec()))
                    .collect();
                part.push(Rec {
                    key: String::from_utf8_lossy(rec.key.unwrap_or_default()).into_owned(),
                    value: rec.value.unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        out.push(part);
    }
    Ok(out)
}

/// A user's count updates in log order: (count, seq header when there is one).
pub type Updates = HashMap<String, Vec<(i64, Option<i64>)>>;

/// Every user's count updates on the counter's output.
pub fn updates(log: &Log, stream: &str) -> Result<Updates, String> {
    let mut out = Updates::new();
    for rec in history(log, stream, false)?.into_iter().flatten() {
        let count = std::str::from_utf8(&rec.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{stream}: the update of {} is not a count", rec.key))?;
        let seq = rec
            .headers
            .iter()
            .find(|(k, _)| k == "seq")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
        out.entry(rec.key).or_default().push((count, seq));
    }
    Ok(out)
}

/// Violations of exactly-once in the updates: a user whose updates are not
/// numbered 1, 2, 3, ... (a gap or a repeat), whose count does not grow with
/// each update, or whose last count is not the truth; a user missing, or
/// one counted that never viewed a page.
pub fn exactly_once(
    updates: &HashMap<String, Vec<(i64, Option<i64>)>>,
    truth: &HashMap<String, i64>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (user, n) in truth {
        let Some(ups) = updates.get(user) else {
            bad.push(format!("{user}: no update for a truth of {n}"));
            continue;
        };
        for (i, (count, seq)) in ups.iter().enumerate() {
            if *seq != Some(i as i64 + 1) {
                bad.push(format!("{user}: update #{} carries seq {seq:?} (a gap or a repeat)", i + 1));
                break;
            }
            if i > 0 && *count <= ups[i - 1].0 {
                bad.push(format!("{user}: the count went from {} to {count}", ups[i - 1].0));
                break;
            }
        }
        let last = ups.last().map(|x| x.0).unwrap_or(0);
        if last != *n {
            bad.push(format!("{user}: last count {last}, truth {n}"));
        }
    }
    for user in updates.keys().filter(|u| !truth.contains_key(*u)) {
        bad.push(format!("{user}: counted, but never viewed a page"));
    }
    bad
}

/// Violations of at-least-once: a count below the truth at the end, or a
/// count that went down.
pub fn at_least_once(
    updates: &HashMap<String, Vec<(i64, Option<i64>)>>,
    truth: &HashMap<String, i64>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (user, n) in truth {
        let ups = updates.get(user).map(Vec::as_slice).unwrap_or_default();
        if let Some(w) = ups.windows(2).find(|w| w[1].0 < w[0].0) {
            bad.push(format!("{user}: the count went down from {} to {}", w[0].0, w[1].0));
        }
        let last = ups.last().map(|x| x.0).unwrap_or(0);
        if last < *n {
            bad.push(format!("{user}: last count {last}, below the truth {n}"));
        }
    }
    bad
}

/// Violations in job `job`'s checkpoint stream: a task's checkpoint written
/// by an older generation after a newer one did, or an offset going back.
pub fn checkpoints(log: &Log, job: &str) -> Result<Vec<String>, String> {
    let stream = format!("__samza_checkpoint_{job}");
    let mut last: HashMap<String, (u64, BTreeMap<String, u64>)> = HashMap::new();
    let mut bad = Vec::new();
    for (i, rec) in history(log, &stream, false)?.into_iter().flatten().enumerate() {
        let cp: serde_json::Value =
            serde_json::from_slice(&rec.value).map_err(|e| format!("{stream} #{i}: {e}"))?;
        let generation = cp["generation"].as_u64().unwrap_or(0);
        let offsets: BTreeMap<String, u64> = cp["offsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    format!("{}.{}[{}]", e["system"], e["stream"], e["partition"]),
                    e["offset"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if let Some((g, before)) = last.get(&rec.key) {
            if generation < *g {
                bad.push(format!(
                    "{job}: checkpoint #{i} of {} written by generation {generation} after generation {g}",
                    rec.key
                ));
            }
            for (ssp, o) in &offsets {
                let b = before.get(ssp).copied().unwrap_or(0);
                if *o < b {
                    bad.push(format!(
                        "{job}: checkpoint #{i} of {}: {ssp} went back from {b} to {o}",
                        rec.key
                    ));
                }
            }
        }
        last.insert(rec.key, (generation, offsets));
    }
    Ok(bad)
}

/// Violations of the repartition job's output: page views (`"i"` in each
/// JSON) missing, or present more than once when `once`.
pub fn repartitioned(log: &Log, stream: &str, events: u64, once: bool) -> Result<Vec<String>, String> {
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for rec in history(log, stream, false)?.into_iter().flatten() {
        let v: serde_json::Value =
            serde_json::from_slice(&rec.value).map_err(|e| format!("{stream}: {e}"))?;
        let i = v["i"].as_u64().ok_or_else(|| format!("{stream}: a page view without \"i\""))?;
        *seen.entry(i).or_default() += 1;
    }
    let mut bad = Vec::new();
    let missing: BTreeSet<u64> = (0..events).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() {
        bad.push(format!(
            "{stream}: {} page views missing, the first {:?}",
            missing.len(),
            missing.iter().next()
        ));
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    if once && twice > 0 {
        bad.push(format!("{stream}: {twice} page views more than once"));
    }
    Ok(bad)
}
