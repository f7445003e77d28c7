//! Shared by the example binaries and their tests.

/// The user of page-view event `i` out of `users` (splitmix64 of `i`): every
/// generator and test derives the same events, so true counts can be recomputed.
pub fn user_of(i: u64, users: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % users
}
