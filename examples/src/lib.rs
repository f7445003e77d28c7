//! Shared by the example binaries and their tests: the example jobs' tasks
//! (each binary is `samza::main` of its module's `tasks()`), and what the
//! generators, benchmarks and tests derive events from.

pub mod country_views;
pub mod page_view_counter;
pub mod page_views;
pub mod verify;

/// The user of page-view event `i` out of `users` (splitmix64 of `i`): every
/// generator and test derives the same events, so true counts can be recomputed.
pub fn user_of(i: u64, users: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % users
}

/// The country in the profile of user `u` for the join example, or `None`
/// for the one user in 41 without a profile (whose views count as
/// `unknown`). `page-view-gen --profiles` writes these profiles.
pub fn country_of(u: u64) -> Option<&'static str> {
    const COUNTRIES: [&str; 5] = ["fr", "de", "nl", "se", "pt"];
    (u % 41 != 40).then(|| COUNTRIES[(u * 7 % 5) as usize])
}

/// The join example's reference: page views `from..to` over `users`, per
/// country of their user's profile (`unknown` without one).
pub fn views_per_country(from: u64, to: u64, users: u64) -> std::collections::BTreeMap<String, i64> {
    let mut truth = std::collections::BTreeMap::new();
    for i in from..to {
        let c = country_of(user_of(i, users)).unwrap_or("unknown");
        *truth.entry(c.to_string()).or_default() += 1;
    }
    truth
}

/// The value after `name` on the command line (`--records 1000`).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// [`arg`] parsed, or `default` when absent or not a `T`.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Page-view event `i` of `users` users, as the benchmarks feed it: the key
/// (`user-<u>`) and the JSON value, written into reused buffers; returns the user.
pub fn page_view(i: u64, users: u64, key: &mut String, value: &mut String) -> u64 {
    use std::fmt::Write as _;
    let u = user_of(i, users);
    key.clear();
    value.clear();
    let _ = write!(key, "user-{u}");
    let _ = write!(value, r#"{{"user":"user-{u}","page":"/page-{}","time":{i}}}"#, i % 50);
    u
}

/// `records` keyless 100-byte records spread evenly over `stream`'s
/// partitions, appended 1000 to a batch (the pass-through benchmarks' input).
pub fn fill_records(stream: &samza_log::Stream, records: u64) -> samza_log::Result<()> {
    let partitions = u64::from(stream.partitions());
    let value = [b'x'; 100];
    for p in 0..stream.partitions() {
        let mut w = stream.writer(p)?;
        let mut b = samza_log::BatchBuilder::with_capacity(128 * 1024);
        let n = records / partitions + u64::from(u64::from(p) < records % partitions);
        for i in 0..n {
            b.push(None, Some(&value), 0, &[]);
            if b.len() == 1000 || i + 1 == n {
                w.append(&mut b)?;
                b.clear();
            }
        }
    }
    Ok(())
}
