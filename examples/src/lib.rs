//! Shared by the example binaries and their tests.

/// The user of page-view event `i` out of `users` (splitmix64 of `i`): every
/// generator and test derives the same events, so true counts can be recomputed.
pub fn user_of(i: u64, users: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % users
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
