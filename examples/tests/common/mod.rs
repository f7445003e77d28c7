//! Helpers shared by the example's end-to-end tests.

use std::collections::BTreeMap;

use samza_log::{Log, StartAt};

/// Latest value per key of a stream (its keys are UTF-8).
pub fn latest(log: &Log, stream: &str) -> BTreeMap<String, Vec<u8>> {
    let s = log.stream(stream).unwrap();
    let mut out = BTreeMap::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).unwrap();
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let k = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
                out.insert(k, rec.value.unwrap_or_default().to_vec());
            }
        }
    }
    out
}
