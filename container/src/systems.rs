//! Systems by type: the factories a job binary registered
//! ([`SystemRegistry`]), and the job's systems bound to their checked configs
//! ([`Systems`]), from which the runtime gets admins, consumers and producers.
//!
//! The runtime knows no system type by name. Each `[systems.<name>]` section
//! names its `type`; the factory registered for that type deserializes the
//! section's own keys (after `--config` overrides) into its config type, and
//! checks it. A section that is refused is read again from the file as
//! written, so the error names its line. The built-in types (`embedded-log`, `kafka`) are registered by
//! the facade crate, `samza`, like any other.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use samza_task_api::{
    SystemAdmin, SystemConsumer, SystemContext, SystemError, SystemErrorKind, SystemFactory, SystemProducer,
    COMMON_SYSTEM_KEYS,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::{keyed, ConfigError, Guarantee, JobConfig, SystemConfig};

/// A factory with its config type erased, so factories of different types
/// share one map.
trait ErasedFactory: Send + Sync {
    fn parse(
        &self,
        job: &JobConfig,
        system: &SystemConfig,
    ) -> Result<Arc<dyn Any + Send + Sync>, ConfigError>;
    fn admin(&self, system: &str, config: &dyn Any) -> Result<Arc<dyn SystemAdmin>, SystemError>;
    fn consumer(&self, system: &str, config: &dyn Any) -> Result<Box<dyn SystemConsumer>, SystemError>;
    fn producer(&self, system: &str, config: &dyn Any) -> Result<Box<dyn SystemProducer>, SystemError>;
    fn transactional(&self) -> bool;
}

struct Typed<F>(F);

impl<F: SystemFactory> Typed<F> {
    fn config(config: &dyn Any) -> &F::Config {
        // `Systems` pairs each config with the factory that parsed it.
        config.downcast_ref().expect("a system's config is of its factory's type")
    }
}

impl<F: SystemFactory> ErasedFactory for Typed<F> {
    fn parse(
        &self,
        job: &JobConfig,
        system: &SystemConfig,
    ) -> Result<Arc<dyn Any + Send + Sync>, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse { path: job.path.clone(), message };
        // The section as it runs (with `--config` overrides applied); only a
        // section that is refused is read again from the file as written,
        // where the error can name its line.
        let section = toml::Value::Table(system.section.clone());
        let mut config: F::Config = match serde_path_to_error::deserialize(section) {
            Ok(config) => config,
            Err(e) => {
                let mut track = serde_path_to_error::Track::new();
                let de =
                    serde_path_to_error::Deserializer::new(toml::Deserializer::new(&job.text), &mut track);
                let as_written = de
                    .deserialize_map(FileVisitor { system: &system.name, _config: PhantomData::<F::Config> });
                return Err(match as_written {
                    Err(e) => parse_err(keyed(&track.path().to_string(), &e)),
                    // Fine as written (or not in the file): the overrides broke it.
                    Ok(_) => {
                        let key = format!("systems.{}.{}", system.name, e.path());
                        let message = keyed(&key, e.inner());
                        match job.overrides.is_empty() {
                            true => parse_err(message),
                            false => parse_err(format!("after --config overrides: {message}")),
                        }
                    }
                });
            }
        };
        let context = SystemContext { name: &system.name, base_dir: &job.base_dir };
        self.0.check(&context, &mut config).map_err(|issue| ConfigError::Invalid {
            path: job.path.clone(),
            key: format!("systems.{}.{}", system.name, issue.key),
            message: issue.message,
        })?;
        Ok(Arc::new(config))
    }

    fn admin(&self, system: &str, config: &dyn Any) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        self.0.admin(system, Self::config(config))
    }

    fn consumer(&self, system: &str, config: &dyn Any) -> Result<Box<dyn SystemConsumer>, SystemError> {
        self.0.consumer(system, Self::config(config))
    }

    fn producer(&self, system: &str, config: &dyn Any) -> Result<Box<dyn SystemProducer>, SystemError> {
        self.0.producer(system, Self::config(config))
    }

    fn transactional(&self) -> bool {
        self.0.transactional()
    }
}

/// Walks the job file to `[systems.<system>]` and deserializes its own keys
/// there, so the deserializer's errors carry the position in the file.
struct FileVisitor<'a, C> {
    system: &'a str,
    _config: PhantomData<C>,
}

impl<'de, C: DeserializeOwned> Visitor<'de> for FileVisitor<'_, C> {
    type Value = Option<C>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a job file")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<C>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "systems" && found.is_none() {
                found = Some(map.next_value_seed(SystemsSeed { system: self.system, _config: PhantomData })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        // A system only `--config` declares has no section to read here.
        Ok(found.flatten())
    }
}

/// `[systems]`: finds the one system's section.
struct SystemsSeed<'a, C> {
    system: &'a str,
    _config: PhantomData<C>,
}

impl<'de, C: DeserializeOwned> DeserializeSeed<'de> for SystemsSeed<'_, C> {
    type Value = Option<C>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<C>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, C: DeserializeOwned> Visitor<'de> for SystemsSeed<'_, C> {
    type Value = Option<C>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of systems")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<C>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.system && found.is_none() {
                found = Some(map.next_value_seed(OwnKeysSeed(PhantomData))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// One system's section, minus the keys the runtime owns.
struct OwnKeysSeed<C>(PhantomData<C>);

impl<'de, C: DeserializeOwned> DeserializeSeed<'de> for OwnKeysSeed<C> {
    type Value = C;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<C, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, C: DeserializeOwned> Visitor<'de> for OwnKeysSeed<C> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a system's table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<C, A::Error> {
        C::deserialize(de::value::MapAccessDeserializer::new(OwnKeys(map)))
    }
}

/// A map that skips the runtime's keys of a system section.
struct OwnKeys<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for OwnKeys<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, mut seed: K) -> Result<Option<K::Value>, A::Error> {
        // The config's key seed runs inside the deserializer's own key
        // deserialization, so an unknown key is reported at its line.
        loop {
            match self.0.next_key_seed(OwnKey(seed))? {
                None => return Ok(None),
                Some(Ok(key)) => return Ok(Some(key)),
                Some(Err(unused)) => {
                    self.0.next_value::<IgnoredAny>()?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// A key of a system section: handed to the config's seed, or (for a key
/// the runtime owns) the seed is handed back unused.
struct OwnKey<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for OwnKey<K> {
    type Value = Result<K::Value, K>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(d)?;
        if COMMON_SYSTEM_KEYS.contains(&key.as_str()) {
            return Ok(Err(self.0));
        }
        let key: de::value::StringDeserializer<de::value::Error> =
            de::IntoDeserializer::into_deserializer(key);
        self.0.deserialize(key).map(Ok).map_err(de::Error::custom)
    }
}

/// System factories by type name.
#[derive(Clone, Default)]
pub struct SystemRegistry {
    factories: BTreeMap<String, Arc<dyn ErasedFactory>>,
}

impl SystemRegistry {
    /// No system types; the facade's `samza::systems()` has the built-in ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` for `type = "<kind>"` (replacing one of the same type).
    pub fn register<F: SystemFactory>(&mut self, kind: &str, factory: F) -> &mut Self {
        self.factories.insert(kind.to_string(), Arc::new(Typed(factory)));
        self
    }

    /// Adds `other`'s factories, replacing those of the same types.
    pub fn extend(&mut self, other: SystemRegistry) -> &mut Self {
        self.factories.extend(other.factories);
        self
    }

    /// Whether a factory is registered for `kind`.
    pub fn contains(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    /// The job's systems, each section parsed and checked by its type's factory.
    pub fn resolve(&self, job: &JobConfig) -> Result<Systems, ConfigError> {
        let mut bound = BTreeMap::new();
        for system in job.systems.values() {
            let factory = self.factories.get(&system.kind).ok_or_else(|| ConfigError::Invalid {
                path: job.path.clone(),
                key: format!("systems.{}.type", system.name),
                message: format!(
                    "unknown system type {:?} (known: {})",
                    system.kind,
                    self.factories.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            let config = factory.parse(job, system)?;
            bound.insert(system.name.clone(), Bound { factory: factory.clone(), config });
        }
        let mut systems = Systems { bound, ..Systems::default() };
        (systems.guarantee, systems.why_at_least_once) = guarantee(job, &systems)?;
        Ok(systems)
    }

    /// As [`resolve`](Self::resolve), for the systems whose type is
    /// registered here; the others are left to a binary that knows them.
    pub fn resolve_known(&self, job: &JobConfig) -> Result<Systems, ConfigError> {
        let mut known = job.clone();
        known.systems.retain(|_, s| self.contains(&s.kind));
        self.resolve(&known)
    }
}

#[derive(Clone)]
struct Bound {
    factory: Arc<dyn ErasedFactory>,
    config: Arc<dyn Any + Send + Sync>,
}

/// A job's systems, by name, bound to their checked configs.
#[derive(Clone)]
pub struct Systems {
    bound: BTreeMap<String, Bound>,
    guarantee: Guarantee,
    why_at_least_once: Option<String>,
}

impl Default for Systems {
    fn default() -> Self {
        Systems { bound: BTreeMap::new(), guarantee: Guarantee::AtLeastOnce, why_at_least_once: None }
    }
}

/// The processing guarantee a job runs with: exactly-once unless it says
/// otherwise or cannot have it (then at-least-once, and why). Exactly-once
/// needs one system that writes transactions for every input, output,
/// changelog and checkpoint, and a changelog behind every store (a store
/// without one could not be rolled back to a commit).
fn guarantee(job: &JobConfig, systems: &Systems) -> Result<(Guarantee, Option<String>), ConfigError> {
    let blocker = if job.systems.len() != 1 {
        Some(format!(
            "the job has {} systems ({}) and a transaction spans one",
            job.systems.len(),
            job.systems.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    } else if let Some(s) =
        job.systems.values().find(|s| !systems.bound.get(&s.name).is_some_and(|b| b.factory.transactional()))
    {
        Some(format!("system {:?} (type {:?}) cannot write transactions", s.name, s.kind))
    } else {
        job.stores
            .values()
            .find(|s| s.changelog.is_none())
            .map(|s| format!("store {:?} has no changelog to roll it back to a commit", s.name))
    };
    match (job.processing_guarantee, blocker) {
        (Some(Guarantee::AtLeastOnce), _) => Ok((Guarantee::AtLeastOnce, None)),
        (Some(Guarantee::ExactlyOnce), Some(why)) => Err(ConfigError::Invalid {
            path: job.path.clone(),
            key: "task.processing-guarantee".into(),
            message: format!("exactly-once is not possible for this job: {why} (set \"at-least-once\")"),
        }),
        (_, None) => Ok((Guarantee::ExactlyOnce, None)),
        (None, Some(why)) => Ok((Guarantee::AtLeastOnce, Some(why))),
    }
}

impl fmt::Debug for Systems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.bound.keys()).finish()
    }
}

impl Systems {
    fn get(&self, system: &str) -> Result<&Bound, SystemError> {
        self.bound.get(system).ok_or_else(|| {
            SystemError::new(
                SystemErrorKind::InvalidInput,
                format!("system {system:?} is not defined under [systems] (or its type is unknown here)"),
            )
        })
    }

    /// The processing guarantee the job runs with.
    pub fn guarantee(&self) -> Guarantee {
        self.guarantee
    }

    /// Why a job that did not choose runs at-least-once (its systems or
    /// stores cannot do exactly-once).
    pub fn why_at_least_once(&self) -> Option<&str> {
        self.why_at_least_once.as_deref()
    }

    /// Whether `system` is one of the job's systems of a type known here.
    pub fn contains(&self, system: &str) -> bool {
        self.bound.contains_key(system)
    }

    pub fn admin(&self, system: &str) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        let b = self.get(system)?;
        b.factory.admin(system, b.config.as_ref())
    }

    pub fn consumer(&self, system: &str) -> Result<Box<dyn SystemConsumer>, SystemError> {
        let b = self.get(system)?;
        b.factory.consumer(system, b.config.as_ref())
    }

    pub fn producer(&self, system: &str) -> Result<Box<dyn SystemProducer>, SystemError> {
        let b = self.get(system)?;
        b.factory.producer(system, b.config.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use samza_task_api::ConfigIssue;

    use super::*;

    /// A system type as a job author would write one: its own keys, checked.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct GenConfig {
        count: u64,
        #[serde(default)]
        dir: Option<PathBuf>,
    }

    struct Gen;

    impl SystemFactory for Gen {
        type Config = GenConfig;

        fn check(&self, system: &SystemContext<'_>, c: &mut GenConfig) -> Result<(), ConfigIssue> {
            if c.count == 0 {
                return Err(ConfigIssue::new("count", "must be positive"));
            }
            c.dir = c.dir.as_deref().map(|d| system.resolve(d));
            Ok(())
        }

        // The admin shows the config it was given, for the tests to read.
        fn admin(&self, system: &str, c: &GenConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
            Err(SystemError::new(
                SystemErrorKind::Other,
                format!("{system}: count {} dir {:?}", c.count, c.dir),
            ))
        }

        fn consumer(&self, system: &str, _: &GenConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
            Err(SystemError::new(SystemErrorKind::Other, format!("{system}: no consumer in these tests")))
        }

        fn producer(&self, system: &str, _: &GenConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
            Err(SystemError::new(SystemErrorKind::Other, format!("{system}: no producer in these tests")))
        }
    }

    const JOB: &str = r#"[job]
name = "j"
[task]
class = "c"
inputs = ["gen.in"]
[systems.gen]
type = "gen"
msg-serde = "json"
count = 5
dir = "data"
[systems.gen.streams.in]
partitions = 2
"#;

    fn resolve(text: &str, overrides: &[&str]) -> Result<Systems, String> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let job = JobConfig::parse(text, Path::new("/jobs/job.toml"), &o).map_err(|e| e.to_string())?;
        let mut registry = SystemRegistry::new();
        registry.register("gen", Gen);
        registry.resolve(&job).map_err(|e| e.to_string())
    }

    fn shown(systems: &Systems) -> String {
        systems.admin("gen").err().unwrap().to_string()
    }

    #[test]
    fn a_factory_gets_its_own_keys_checked_and_resolved() {
        let systems = resolve(JOB, &[]).unwrap();
        assert_eq!(shown(&systems), "gen: count 5 dir Some(\"/jobs/data\")");
        let systems = resolve(JOB, &["systems.gen.count=7"]).unwrap();
        assert_eq!(shown(&systems), "gen: count 7 dir Some(\"/jobs/data\")");
        let e = systems.admin("other").err().unwrap().to_string();
        assert!(e.contains("system \"other\" is not defined"), "{e}");
    }

    #[test]
    fn errors_in_a_systems_own_keys_name_the_key_and_line() {
        let e = resolve(&JOB.replace("count = 5", "count = \"five\""), &[]).unwrap_err();
        assert!(
            e.contains("systems.gen.count: TOML parse error at line 9") && e.contains("expected u64"),
            "{e}"
        );
        let e = resolve(&JOB.replace("count = 5", "cuont = 5"), &[]).unwrap_err();
        assert!(e.contains("line 9") && e.contains("unknown field `cuont`"), "{e}");
        let e = resolve(&JOB.replace("count = 5\n", ""), &[]).unwrap_err();
        assert!(e.contains("missing field `count`"), "{e}");
        let e = resolve(&JOB.replace("count = 5", "count = 0"), &[]).unwrap_err();
        assert!(e.ends_with("systems.gen.count: must be positive"), "{e}");
        let e = resolve(JOB, &["systems.gen.count=many"]).unwrap_err();
        assert!(e.contains("after --config overrides: systems.gen.count: invalid type"), "{e}");
        let e = resolve(&JOB.replace("type = \"gen\"", "type = \"nope\""), &[]).unwrap_err();
        assert!(e.ends_with("systems.gen.type: unknown system type \"nope\" (known: gen)"), "{e}");
    }

    /// `Gen` whose producers write transactions.
    struct TxnGen;

    impl SystemFactory for TxnGen {
        type Config = GenConfig;

        fn admin(&self, system: &str, c: &GenConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
            Gen.admin(system, c)
        }

        fn consumer(&self, system: &str, c: &GenConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
            Gen.consumer(system, c)
        }

        fn producer(&self, system: &str, c: &GenConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
            Gen.producer(system, c)
        }

        fn transactional(&self) -> bool {
            true
        }
    }

    #[test]
    fn exactly_once_is_the_default_where_one_transactional_system_and_changelogs_make_it_possible() {
        let guarantee = |text: &str| -> Result<(Guarantee, Option<String>), String> {
            let job = JobConfig::parse(text, Path::new("/jobs/job.toml"), &[]).map_err(|e| e.to_string())?;
            let mut registry = SystemRegistry::new();
            registry.register("gen", Gen).register("txn", TxnGen);
            let s = registry.resolve(&job).map_err(|e| e.to_string())?;
            Ok((s.guarantee(), s.why_at_least_once().map(str::to_string)))
        };
        let txn = JOB.replace("type = \"gen\"", "type = \"txn\"");
        assert_eq!(guarantee(&txn).unwrap(), (Guarantee::ExactlyOnce, None));
        let chosen = txn.replace("[systems.gen]", "processing-guarantee = \"at-least-once\"\n[systems.gen]");
        assert_eq!(guarantee(&chosen).unwrap(), (Guarantee::AtLeastOnce, None));

        // A system that cannot write transactions.
        let (g, why) = guarantee(JOB).unwrap();
        assert_eq!(g, Guarantee::AtLeastOnce);
        assert_eq!(why.unwrap(), "system \"gen\" (type \"gen\") cannot write transactions");
        let asked = JOB.replace("[systems.gen]", "processing-guarantee = \"exactly-once\"\n[systems.gen]");
        let e = guarantee(&asked).unwrap_err();
        assert!(
            e.ends_with("task.processing-guarantee: exactly-once is not possible for this job: system \"gen\" (type \"gen\") cannot write transactions (set \"at-least-once\")"),
            "{e}"
        );

        // A store without a changelog; then with one.
        let store = format!("{txn}[stores.s]\nengine = \"in-memory\"\n");
        let (g, why) = guarantee(&store).unwrap();
        assert_eq!(g, Guarantee::AtLeastOnce);
        assert_eq!(why.unwrap(), "store \"s\" has no changelog to roll it back to a commit");
        let logged = format!("{store}changelog = \"gen.s-changelog\"\n");
        assert_eq!(guarantee(&logged).unwrap(), (Guarantee::ExactlyOnce, None));

        // Two systems: a transaction spans one.
        let two = format!("{txn}[systems.other]\ntype = \"txn\"\ncount = 1\n")
            .replace("[systems.gen]", "checkpoint-system = \"gen\"\n[systems.gen]");
        let (g, why) = guarantee(&two).unwrap();
        assert_eq!(g, Guarantee::AtLeastOnce);
        assert_eq!(why.unwrap(), "the job has 2 systems (gen, other) and a transaction spans one");
    }
}
