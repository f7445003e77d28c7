//! Generates page-view events into a stream of the embedded log.
//!
//! `page-view-gen --dir samza-data/log --stream page-views --events 1000000 --users 10000`
//! Event `i` is `{"user":"user-<u>","page":"/page-<p>","time":<ms>}` with `u` a
//! fixed pseudo-random function of `i`, so a run is reproducible and its true
//! counts can be recomputed. With `--keyed` the user id is the record key (as
//! job one's output is); otherwise records have no key.
//!
//! For the join example (`country-views`):
//! `page-view-gen --profiles --stream profiles --users 10000` writes every
//! user's profile `{"user","country"}` keyed by user (`samza_examples::country_of`;
//! one user in 41 has none), and `page-view-gen --reference-countries --events N
//! --users U` prints the true views per country of those events
//! (`country<TAB>count`), to compare with `samza-log consume country-counts`.

use samza_examples::user_of;
use std::path::PathBuf;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "samza-data/log".into()));
    let stream = arg(&args, "--stream").unwrap_or_else(|| "page-views".into());
    let events: u64 = arg(&args, "--events").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let users: u64 = arg(&args, "--users").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let start: u64 = arg(&args, "--start").and_then(|v| v.parse().ok()).unwrap_or(0);
    let partitions: u32 = arg(&args, "--partitions").and_then(|v| v.parse().ok()).unwrap_or(4);
    let keyed = args.iter().any(|a| a == "--keyed");
    if args.iter().any(|a| a == "--reference-countries") {
        for (country, n) in samza_examples::views_per_country(start, start + events, users) {
            println!("{country}\t{n}");
        }
        return;
    }
    let profiles = args.iter().any(|a| a == "--profiles");
    let log = samza_log::Log::open(&dir).unwrap_or_else(|e| panic!("cannot open log {}: {e}", dir.display()));
    let s = if log.stream_exists(&stream) {
        log.stream(&stream)
    } else {
        log.create_stream(&stream, &samza_log::StreamConfig::with_partitions(partitions))
    }
    .unwrap_or_else(|e| panic!("cannot open stream {stream}: {e}"));
    let mut p = s.producer();
    let t0 = std::time::Instant::now();
    if profiles {
        let mut written = 0;
        for u in 0..users {
            if let Some(country) = samza_examples::country_of(u) {
                let v = format!(r#"{{"user":"user-{u}","country":"{country}"}}"#);
                p.send(None, Some(format!("user-{u}").as_bytes()), Some(v.as_bytes()), 0, &[])
                    .expect("append");
                written += 1;
            }
        }
        p.flush().expect("flush");
        eprintln!("page-view-gen: {written} profiles of {users} users into {stream}");
        return;
    }
    let mut line = String::new();
    for i in start..start + events {
        let u = user_of(i, users);
        line.clear();
        use std::fmt::Write;
        let _ = write!(
            line,
            r#"{{"user":"user-{u}","page":"/page-{}","time":{}}}"#,
            i % 50,
            1_700_000_000_000 + i
        );
        let key = format!("user-{u}");
        let key = keyed.then_some(key.as_bytes());
        p.send(None, key, Some(line.as_bytes()), (1_700_000_000_000 + i) as i64, &[]).expect("append");
    }
    p.flush().expect("flush");
    eprintln!(
        "page-view-gen: {events} events over {users} users into {stream} in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}
