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

impl Rec {
    /// A record without headers.
    pub fn new(key: String, value: Vec<u8>) -> Rec {
        Rec { key, value, headers: vec![] }
    }
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
    updates_of(stream, history(log, stream, false)?.into_iter().flatten())
}

/// Every user's count updates in `records` of the counter's output `stream`
/// (the key a user, the value a count as decimal text, maybe a `seq`
/// header), in order.
pub fn updates_of(stream: &str, records: impl IntoIterator<Item = Rec>) -> Result<Updates, String> {
    let mut out = Updates::new();
    for rec in records {
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
        bad.extend(went_down(user, ups));
        let last = ups.last().map(|x| x.0).unwrap_or(0);
        if last < *n {
            bad.push(format!("{user}: last count {last}, below the truth {n}"));
        }
    }
    bad
}

/// Violations of "a count never goes down", for every user updated.
pub fn counts_go_down(updates: &Updates) -> Vec<String> {
    let users: BTreeMap<&String, &Vec<(i64, Option<i64>)>> = updates.iter().collect();
    users.into_iter().filter_map(|(user, ups)| went_down(user, ups)).collect()
}

fn went_down(user: &str, ups: &[(i64, Option<i64>)]) -> Option<String> {
    let w = ups.windows(2).find(|w| w[1].0 < w[0].0)?;
    Some(format!("{user}: the count went down from {} to {}", w[0].0, w[1].0))
}

/// The last count of every user updated.
pub fn latest(updates: &Updates) -> HashMap<String, i64> {
    updates.iter().filter_map(|(u, ups)| Some((u.clone(), ups.last()?.0))).collect()
}

/// Violations in job `job`'s checkpoint stream: a task's checkpoint written
/// by an older generation after a newer one did, or an offset going back.
pub fn checkpoints(log: &Log, job: &str) -> Result<Vec<String>, String> {
    let stream = format!("__samza_checkpoint_{job}");
    Ok(checkpoints_of(job, history(log, &stream, false)?.into_iter().flatten())?.0)
}

/// The generations that wrote each task's checkpoints, in order (a
/// generation once, however many checkpoints it wrote in a row).
pub type Generations = BTreeMap<String, Vec<u64>>;

/// [`checkpoints`] over the records of `job`'s checkpoint stream (key the
/// task), in order; also the generations that wrote each task's.
pub fn checkpoints_of(
    job: &str,
    records: impl IntoIterator<Item = Rec>,
) -> Result<(Vec<String>, Generations), String> {
    let mut last: HashMap<String, (u64, BTreeMap<String, u64>)> = HashMap::new();
    let mut generations = Generations::new();
    let mut bad = Vec::new();
    for (i, rec) in records.into_iter().enumerate() {
        let cp: serde_json::Value =
            serde_json::from_slice(&rec.value).map_err(|e| format!("{job}: checkpoint #{i}: {e}"))?;
        let generation = cp["generation"]
            .as_u64()
            .ok_or_else(|| format!("{job}: checkpoint #{i} of {} names no generation", rec.key))?;
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
        let gens = generations.entry(rec.key.clone()).or_default();
        if gens.last() != Some(&generation) {
            gens.push(generation);
        }
        last.insert(rec.key, (generation, offsets));
    }
    Ok((bad, generations))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's updates as the tests write them.
    type Given<'a> = (&'a str, &'a [(i64, Option<i64>)]);

    fn ups(list: &[Given<'_>]) -> Updates {
        list.iter().map(|(u, v)| (u.to_string(), v.to_vec())).collect()
    }

    fn truth(list: &[(&str, i64)]) -> HashMap<String, i64> {
        list.iter().map(|(u, n)| (u.to_string(), *n)).collect()
    }

    #[test]
    fn the_checks_find_every_kind_of_violation() {
        let t = truth(&[("ann", 3), ("bob", 1)]);
        let good = ups(&[("ann", &[(1, Some(1)), (3, Some(2))]), ("bob", &[(1, Some(1))])]);
        assert_eq!(exactly_once(&good, &t), Vec::<String>::new());
        assert_eq!(at_least_once(&good, &t), Vec::<String>::new());

        let repeat = ups(&[("ann", &[(1, Some(1)), (2, Some(1)), (3, Some(2))]), ("bob", &[(1, Some(1))])]);
        assert!(
            exactly_once(&repeat, &t)[0].contains("a gap or a repeat"),
            "{:?}",
            exactly_once(&repeat, &t)
        );
        let gap = ups(&[("ann", &[(1, Some(1)), (3, Some(3))]), ("bob", &[(1, Some(1))])]);
        assert!(exactly_once(&gap, &t)[0].contains("seq Some(3)"));
        let over = ups(&[("ann", &[(1, Some(1)), (4, Some(2))]), ("bob", &[(1, Some(1))])]);
        assert_eq!(exactly_once(&over, &t), vec!["ann: last count 4, truth 3".to_string()]);
        assert_eq!(at_least_once(&over, &t), Vec::<String>::new(), "over the truth is at-least-once");
        let down = ups(&[("ann", &[(3, None), (2, None), (3, None)]), ("bob", &[(1, None)])]);
        assert_eq!(at_least_once(&down, &t), vec!["ann: the count went down from 3 to 2".to_string()]);
        let lost = ups(&[("ann", &[(2, None)])]);
        let v = at_least_once(&lost, &t);
        assert!(v.contains(&"ann: last count 2, below the truth 3".to_string()), "{v:?}");
        assert!(v.contains(&"bob: last count 0, below the truth 1".to_string()), "{v:?}");
        let stranger = ups(&[
            ("ann", &[(1, Some(1)), (3, Some(2))]),
            ("bob", &[(1, Some(1))]),
            ("eve", &[(1, Some(1))]),
        ]);
        assert_eq!(exactly_once(&stranger, &t), vec!["eve: counted, but never viewed a page".to_string()]);
        assert_eq!(counts_go_down(&down), vec!["ann: the count went down from 3 to 2".to_string()]);
        assert_eq!(counts_go_down(&stranger), Vec::<String>::new());
        assert_eq!(latest(&down), truth(&[("ann", 3), ("bob", 1)]));
    }

    #[test]
    fn checkpoints_and_repartitioned_views_are_checked_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let stream = "__samza_checkpoint_j";
        log.create_stream(stream, &samza_log::StreamConfig::with_partitions(1)).unwrap();
        let mut p = log.stream(stream).unwrap().producer();
        let cp = |generation: u64, offset: u64| {
            format!(
                r#"{{"generation":{generation},"offsets":[{{"system":"log","stream":"in","partition":0,"offset":{offset}}}]}}"#
            )
        };
        for (g, o) in [(1, 10), (1, 20), (2, 15), (1, 30)] {
            p.send(None, Some(b"Partition 0"), Some(cp(g, o).as_bytes()), 0, &[]).unwrap();
        }
        p.flush().unwrap();
        let bad = checkpoints(&log, "j").unwrap();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("went back from 20 to 15"), "{bad:?}");
        assert!(bad[1].contains("written by generation 1 after generation 2"), "{bad:?}");
        let records = history(&log, stream, false).unwrap().into_iter().flatten();
        let (_, generations) = checkpoints_of("j", records).unwrap();
        assert_eq!(generations, Generations::from([("Partition 0".to_string(), vec![1, 2, 1])]));

        log.create_stream("by-user", &samza_log::StreamConfig::with_partitions(2)).unwrap();
        let mut p = log.stream("by-user").unwrap().producer();
        for i in [0u64, 1, 1, 3] {
            p.send(None, Some(b"u"), Some(format!(r#"{{"i":{i}}}"#).as_bytes()), 0, &[]).unwrap();
        }
        p.flush().unwrap();
        let bad = repartitioned(&log, "by-user", 4, true).unwrap();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("1 page views missing, the first Some(2)"), "{bad:?}");
        assert!(bad[1].contains("1 page views more than once"), "{bad:?}");
        assert_eq!(
            repartitioned(&log, "by-user", 4, false).unwrap().len(),
            1,
            "at-least-once allows repeats"
        );
    }
}
