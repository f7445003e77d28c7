//! Arbitrary bytes as a segment on disk: opening a writer (recovery) and
//! reading must return data or an error, never panic or loop.
#![no_main]
use libfuzzer_sys::fuzz_target;
use samza_log::{Log, StartAt, StreamConfig};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.create_stream("f", &StreamConfig::with_partitions(1)).unwrap();
    std::fs::write(dir.path().join("f/0/00000000000000000000.log"), data).unwrap();
    if let Ok(mut r) = stream.reader(0, StartAt::Oldest) {
        for _ in 0..64 {
            match r.read(4096) {
                Ok(c) if c.is_empty() => break,
                Ok(c) => {
                    for rec in c.records() {
                        if rec.is_err() {
                            break;
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }
    let _ = stream.writer(0);
});
