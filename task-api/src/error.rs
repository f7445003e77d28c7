//! The error type tasks return and the runtime reports.

use std::fmt;

/// What kind of failure a [`TaskError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The task's own logic failed.
    Task,
    /// A message could not be decoded by its serde.
    Serde,
    /// Configuration is missing or wrong.
    Config,
    /// A system (stream storage) failed.
    System,
}

/// An error from a task or from the framework on its behalf. Opaque, so that it
/// can grow without breaking job authors.
pub struct TaskError {
    kind: TaskErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TaskError {
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        TaskError { kind, message: message.into(), source: None }
    }

    /// A failure of the task's own logic.
    pub fn task(message: impl Into<String>) -> Self {
        Self::new(TaskErrorKind::Task, message)
    }

    pub fn serde(message: impl Into<String>) -> Self {
        Self::new(TaskErrorKind::Serde, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(TaskErrorKind::Config, message)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskError({:?}, {:?})", self.kind, self.message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::SystemError> for TaskError {
    fn from(e: crate::SystemError) -> Self {
        TaskError::new(TaskErrorKind::System, e.to_string())
    }
}
