//! The embedded log: named, partitioned, offset-addressed streams stored in a
//! directory, read and written by any number of processes on one machine, with
//! no server.
//!
//! ```no_run
//! use samza_log::{BatchBuilder, Log, StartAt, StreamConfig};
//!
//! let log = Log::open("/tmp/samza-log")?;
//! let stream = log.create_stream("page-views", &StreamConfig::with_partitions(4))?;
//! let mut writer = stream.writer(0)?;
//! let mut batch = BatchBuilder::new();
//! batch.push(Some(b"user-1"), Some(b"/home"), 1_700_000_000_000, &[]);
//! writer.append(&mut batch)?;
//!
//! let mut reader = stream.reader(0, StartAt::Oldest)?;
//! for record in reader.read(1 << 20)?.records() {
//!     let record = record?;
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok::<(), samza_log::LogError>(())
//! ```
//!
//! Module map: [`format`] (batch bytes and checksums), `segment` (files, index,
//! tail repair), [`fence`] (one live writer per producer identity), [`writer`] (multi-process appends), [`reader`], `retention`,
//! `compaction`, [`watch`] (waking followers), [`producer`] (key routing),
//! [`system`] (the framework's System abstraction).

mod compaction;
mod config;
mod error;
pub mod fence;
pub mod format;
mod log;
pub mod producer;
pub mod reader;
mod retention;
mod segment;
pub mod system;
pub mod txn;
pub mod watch;
pub mod writer;

pub use compaction::CompactionStats;
pub use config::{FsyncPolicy, StreamConfig};
pub use error::{LogError, Result};
pub use fence::Fence;
pub use format::{BatchBuilder, ControlType, Header, ProducerInfo, RecordRef};
pub use log::{validate_stream_name, Log, PartitionInfo, StartAt, Stream};
pub use producer::Producer;
pub use reader::{Chunk, PartitionReader};
pub use segment::PartitionId;
pub use watch::Watcher;
pub use writer::{Appended, PartitionWriter};

/// Decodes one segment's bytes as the reader would, for fuzzing: every batch is
/// checked and every record decoded. Returns the number of valid records; never panics.
#[doc(hidden)]
pub fn fuzz_decode_segment(bytes: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < bytes.len() {
        match format::check_batch(&bytes[at..]) {
            format::Check::Valid(b) => {
                for r in b.records() {
                    match r {
                        Ok(r) => {
                            n += 1;
                            for h in r.headers() {
                                if h.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = b.control_type();
                at += b.len();
            }
            _ => break,
        }
    }
    n
}
