//! Systems by type: how the runtime gets an admin, consumer and producer for
//! each `[systems.<name>]` of a job. `embedded-log` is built in; a job binary
//! (or the test runner) can register more types.

use std::collections::BTreeMap;
use std::sync::Arc;

use samza_log::system::{LogSystemAdmin, LogSystemConsumer, LogSystemProducer};
use samza_log::Log;
use samza_task_api::{SystemAdmin, SystemConsumer, SystemError, SystemErrorKind, SystemProducer};

use crate::config::SystemConfig;

/// Makes the three roles of one system type.
pub trait SystemFactory: Send + Sync {
    fn admin(&self, config: &SystemConfig) -> Result<Arc<dyn SystemAdmin>, SystemError>;
    fn consumer(&self, config: &SystemConfig) -> Result<Box<dyn SystemConsumer>, SystemError>;
    fn producer(&self, config: &SystemConfig) -> Result<Box<dyn SystemProducer>, SystemError>;
}

/// The embedded log (`type = "embedded-log"`, `dir = ...`).
pub struct EmbeddedLogFactory;

fn open_log(config: &SystemConfig) -> Result<Log, SystemError> {
    let dir = config.dir.as_ref().ok_or_else(|| {
        SystemError::new(SystemErrorKind::InvalidInput, format!("systems.{}.dir is not set", config.name))
    })?;
    Ok(Log::open(dir)?)
}

impl SystemFactory for EmbeddedLogFactory {
    fn admin(&self, config: &SystemConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(LogSystemAdmin::new(open_log(config)?)))
    }

    fn consumer(&self, config: &SystemConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(LogSystemConsumer::new(open_log(config)?)?))
    }

    fn producer(&self, config: &SystemConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(LogSystemProducer::new(open_log(config)?)))
    }
}

/// System factories by type name.
#[derive(Clone)]
pub struct SystemRegistry {
    factories: BTreeMap<String, Arc<dyn SystemFactory>>,
}

impl Default for SystemRegistry {
    fn default() -> Self {
        let mut r = SystemRegistry { factories: BTreeMap::new() };
        r.register("embedded-log", EmbeddedLogFactory);
        r
    }
}

impl SystemRegistry {
    pub fn register(&mut self, kind: &str, factory: impl SystemFactory + 'static) {
        self.factories.insert(kind.to_string(), Arc::new(factory));
    }

    /// Whether a factory is registered for `kind`.
    pub fn contains(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    pub fn get(&self, config: &SystemConfig) -> Result<&Arc<dyn SystemFactory>, SystemError> {
        self.factories.get(&config.kind).ok_or_else(|| {
            SystemError::new(
                SystemErrorKind::InvalidInput,
                format!(
                    "systems.{}.type: unknown system type {:?} (known: {})",
                    config.name,
                    config.kind,
                    self.factories.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }
}
