//! Arbitrary bytes through the batch and record decoder: must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = samza_log::fuzz_decode_segment(data);
});
