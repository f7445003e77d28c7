//! The public API that job authors and system implementers program against.
//!
//! Everything in this crate is a public promise: types here change only with a
//! major version. Runtimes (the container, the scheduler) and systems (the
//! embedded log, Kafka) depend on this crate; it depends on none of them.

pub mod partitioner;
pub mod system;

pub use partitioner::{murmur2, partition_for_key};
pub use system::{
    IncomingMessageEnvelope, Offset, OutgoingMessageEnvelope, PartitionMetadata, StreamSpec,
    SystemAdmin, SystemConsumer, SystemError, SystemErrorKind, SystemProducer, SystemStream,
    SystemStreamPartition,
};
