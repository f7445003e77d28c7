//! The public API that job authors and system implementers program against.
//!
//! Everything in this crate is a public promise: types here change only with a
//! major version. Runtimes (the container, the scheduler) and systems (the
//! embedded log, Kafka) depend on this crate; it depends on none of them.

pub mod crash;
mod error;
pub mod factory;
pub mod metrics;
pub mod partitioner;
pub mod serdes;
pub mod store;
pub mod system;
pub mod task;

pub use error::{TaskError, TaskErrorKind};
pub use factory::{ConfigIssue, SystemContext, SystemFactory, COMMON_SYSTEM_KEYS};
pub use metrics::{Counter, Gauge, MetricsRegistry, Timer};
pub use serdes::{BytesSerde, I32Serde, I64Serde, JsonSerde, Serde, SerdeName, StringSerde};
pub use store::{KeyValueStore, RawStore, SharedStore, UpdateFn};
pub use task::{
    BuildTask, Config, MessageCollector, RequestScope, StreamTask, TaskContext, TaskCoordinator, TaskFactory,
    TaskName, TaskRegistry,
};

pub use partitioner::{murmur2, partition_for_key};
pub use system::{
    IncomingMessageEnvelope, Offset, OutgoingMessageEnvelope, ParseStreamError, PartitionMetadata,
    ProducerOwner, StreamSpec, SystemAdmin, SystemConsumer, SystemError, SystemErrorKind, SystemProducer,
    SystemStream, SystemStreamPartition,
};
