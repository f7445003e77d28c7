//! The system plugin boundary: how a type of system (the embedded log, Kafka,
//! one a job author writes) plugs into the framework.
//!
//! A job file declares systems as `[systems.<name>]` sections. The runtime
//! owns the keys every system has (`type`, `streams`, `default-offset`,
//! `reset-offset`, `key-serde`, `msg-serde`); everything else in the section
//! belongs to the system's type. A [`SystemFactory`] names the type of that
//! part ([`SystemFactory::Config`]), which the runtime deserializes from the
//! section as written (so a wrong key or type is reported with its line), and
//! checks it with [`SystemFactory::check`] before anything starts. The factory
//! then makes the system's admin, consumers and producers from the checked
//! config. The runtime never matches a system type by name: it looks the
//! type up among the factories the job binary registered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::system::{SystemAdmin, SystemConsumer, SystemError, SystemProducer};

/// The keys of a `[systems.<name>]` section that the runtime reads itself;
/// a factory's config never sees them.
pub const COMMON_SYSTEM_KEYS: &[&str] =
    &["type", "streams", "default-offset", "reset-offset", "key-serde", "msg-serde"];

/// Where a system's section sits: its name and the directory relative paths
/// in it are resolved against (the job file's).
#[derive(Clone, Debug)]
pub struct SystemContext<'a> {
    /// The system's name in the job file (`log` for `[systems.log]`).
    pub name: &'a str,
    /// The job file's directory.
    pub base_dir: &'a Path,
}

impl SystemContext<'_> {
    /// `path` resolved against the job file's directory (absolute paths stay).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// Why a system's section was refused: the key within the section (dotted,
/// e.g. `bootstrap-servers` or `settings.acks`) and what is wrong with it.
/// The runtime reports it as `systems.<name>.<key>: <message>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigIssue {}

/// Makes the three roles of one type of system from its own config section.
pub trait SystemFactory: Send + Sync + 'static {
    /// The section's own keys (all but [`COMMON_SYSTEM_KEYS`]), as serde
    /// deserializes them; `#[serde(deny_unknown_fields)]` turns a misspelt key
    /// into an error naming it.
    type Config: DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// Checks (and completes) a deserialized section: required keys, ranges,
    /// paths resolved against [`SystemContext::base_dir`]. Runs before
    /// anything starts.
    fn check(&self, system: &SystemContext<'_>, config: &mut Self::Config) -> Result<(), ConfigIssue> {
        let _ = (system, config);
        Ok(())
    }

    /// The system's admin (streams and offsets); `system` is its name.
    fn admin(&self, system: &str, config: &Self::Config) -> Result<Arc<dyn SystemAdmin>, SystemError>;

    fn consumer(&self, system: &str, config: &Self::Config) -> Result<Box<dyn SystemConsumer>, SystemError>;

    fn producer(&self, system: &str, config: &Self::Config) -> Result<Box<dyn SystemProducer>, SystemError>;

    /// Whether this type's producers write transactions and its consumers
    /// read committed records only, so a job on it alone can run
    /// exactly-once (`task.processing-guarantee`).
    fn transactional(&self) -> bool {
        false
    }
}
