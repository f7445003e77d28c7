//! Arbitrary record bytes inside a batch with valid checksums: the record and
//! header decoder must return records or errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let count = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let last_delta = u32::from(u16::from_le_bytes([data[2], data[3]]));
    let attributes = u16::from_le_bytes([data[4], data[5]]);
    let batch = samza_log::format::wrap_body_for_fuzzing(&data[6..], count, last_delta, attributes);
    let _ = samza_log::fuzz_decode_segment(&batch);
});
