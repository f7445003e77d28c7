//! Errors of the embedded log. Every variant names the stream, partition and,
//! where one is involved, the offset or file.

use std::io;
use std::path::PathBuf;

use samza_task_api::{SystemError, SystemErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("corrupt data in stream {stream} partition {partition} at offset {offset} (segment {segment}, byte {position}): {reason}")]
    Corruption {
        stream: String,
        partition: u32,
        offset: u64,
        segment: PathBuf,
        position: u64,
        reason: String,
    },

    #[error("stream {0} does not exist")]
    StreamNotFound(String),

    #[error("stream {stream} has {partitions} partitions; partition {partition} does not exist")]
    PartitionNotFound { stream: String, partition: u32, partitions: u32 },

    #[error("stream {0} already exists")]
    StreamExists(String),

    #[error("offset {offset} is out of range for stream {stream} partition {partition} (oldest {oldest}, upcoming {upcoming})")]
    OffsetOutOfRange { stream: String, partition: u32, offset: u64, oldest: u64, upcoming: u64 },

    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName { name: String, reason: &'static str },

    #[error("invalid configuration for stream {stream}: {reason}")]
    InvalidConfig { stream: String, reason: String },

    #[error("batch of {size} bytes is larger than the maximum of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },

    #[error("bad metadata file {path}: {reason}")]
    BadMetadata { path: PathBuf, reason: String },

    #[error("fenced: producer {producer} epoch {epoch} may no longer write to stream {stream} partition {partition}; epoch {current} has taken over")]
    Fenced { stream: String, partition: u32, producer: String, epoch: u64, current: u64 },
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attaches the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| LogError::Io { op, path: path.to_path_buf(), source })
    }
}

impl From<LogError> for SystemError {
    fn from(e: LogError) -> Self {
        let kind = match &e {
            LogError::Io { .. } => SystemErrorKind::Io,
            LogError::Corruption { .. } => SystemErrorKind::Corruption,
            LogError::StreamNotFound(_) | LogError::PartitionNotFound { .. } => SystemErrorKind::NotFound,
            LogError::OffsetOutOfRange { .. } => SystemErrorKind::OffsetOutOfRange,
            LogError::StreamExists(_)
            | LogError::InvalidStreamName { .. }
            | LogError::InvalidConfig { .. }
            | LogError::BatchTooLarge { .. } => SystemErrorKind::InvalidInput,
            LogError::BadMetadata { .. } => SystemErrorKind::Corruption,
            LogError::Fenced { .. } => SystemErrorKind::Fenced,
        };
        SystemError::with_source(kind, e.to_string(), e)
    }
}
