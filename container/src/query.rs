//! Queryable state: a read of one key from a running task's store, asked
//! over HTTP (`http::store_routes`) and answered by the run loop between runs
//! of messages (`run_loop::Loop::answer_queries`), so it sees the task's
//! latest writes without a lock held across processing.

use samza_task_api::{TaskError, TaskName};

/// A read of one key from a running task's store.
pub struct StoreQuery {
    pub store: String,
    pub key: Vec<u8>,
    /// The task whose store to read; `None`: the first of the container's
    /// tasks that has the key.
    pub task: Option<String>,
    pub reply: tokio::sync::oneshot::Sender<QueryAnswer>,
}

/// The task that has the key and its value, none, or why it cannot be read.
pub type QueryAnswer = Result<Option<(String, Vec<u8>)>, QueryError>;

/// Why a store query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The container has no such task or store: the question is for
    /// another container (answered 404).
    #[error("{0}")]
    NotHere(String),
    /// The store failed reading the key (answered 500).
    #[error("task {task}: store {store}: {source}")]
    Failed {
        task: TaskName,
        store: String,
        #[source]
        source: TaskError,
    },
}
