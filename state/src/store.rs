//! A task's store: a write-back cache over an engine, whose dirty entries go
//! to the changelog and then to the engine at each commit.
//!
//! Writes update the cache only, so a hot key costs one changelog record and
//! one engine write per commit however often it changes; reads see the task's
//! own writes. At commit the runtime takes the dirty entries
//! ([`TaskStore::take_dirty`]), sends them to the changelog, flushes the
//! changelog, and only then applies them to the engine
//! ([`TaskStore::apply`]): the engine is never ahead of the changelog, so
//! replaying the changelog from the store's marker always rebuilds it.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use samza_task_api::{Counter, MetricsRegistry, RawStore, TaskError};

use crate::engine::{Engine, Write};
use crate::StateError;

/// Milliseconds since the epoch; tests drive their own clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    })
}

/// Settings of one store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Entries kept in the cache (clean ones are evicted beyond this).
    pub cache_entries: usize,
    /// Dirty entries beyond which the store asks for a commit.
    pub write_batch_entries: usize,
    /// Entries older than this read as absent (the value carries its expiry).
    pub ttl_ms: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_entries: 100_000, write_batch_entries: 50_000, ttl_ms: None }
    }
}

struct Entry {
    value: Option<Vec<u8>>,
    dirty: bool,
}

struct Metrics {
    gets: Counter,
    puts: Counter,
    deletes: Counter,
    hits: Counter,
    misses: Counter,
}

pub struct TaskStore {
    name: String,
    engine: Box<dyn Engine>,
    cache: FxHashMap<Vec<u8>, Entry>,
    dirty: usize,
    options: StoreOptions,
    clock: Clock,
    metrics: Metrics,
    commit_requested: Arc<AtomicBool>,
}

fn task_err(e: StateError) -> TaskError {
    TaskError::new(samza_task_api::TaskErrorKind::System, e.to_string())
}

impl TaskStore {
    pub fn new(
        name: &str,
        engine: Box<dyn Engine>,
        options: StoreOptions,
        clock: Clock,
        metrics: &MetricsRegistry,
        commit_requested: Arc<AtomicBool>,
    ) -> Self {
        let m = |what: &str| metrics.counter(&format!("store.{name}.{what}"));
        TaskStore {
            name: name.to_string(),
            engine,
            cache: FxHashMap::default(),
            dirty: 0,
            options,
            clock,
            metrics: Metrics {
                gets: m("gets"),
                puts: m("puts"),
                deletes: m("deletes"),
                hits: m("cache-hits"),
                misses: m("cache-misses"),
            },
            commit_requested,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn engine_mut(&mut self) -> &mut dyn Engine {
        self.engine.as_mut()
    }

    /// Wraps a value with its expiry when the store has a TTL.
    fn wrap(&self, value: &[u8]) -> Vec<u8> {
        match self.options.ttl_ms {
            None => value.to_vec(),
            Some(ttl) => {
                let expiry = (self.clock)().saturating_add(ttl as i64);
                let mut v = Vec::with_capacity(8 + value.len());
                v.extend_from_slice(&expiry.to_be_bytes());
                v.extend_from_slice(value);
                v
            }
        }
    }

    /// The value without its expiry, or `None` when expired.
    fn unwrap_live(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        match self.options.ttl_ms {
            None => Some(stored),
            Some(_) => {
                if stored.len() < 8 {
                    return None;
                }
                let expiry = i64::from_be_bytes(stored[..8].try_into().unwrap());
                ((self.clock)() < expiry).then(|| stored[8..].to_vec())
            }
        }
    }

    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        match self.cache.get_mut(key) {
            Some(e) => {
                if !e.dirty {
                    self.dirty += 1;
                }
                e.value = value;
                e.dirty = true;
            }
            None => {
                self.cache.insert(key.to_vec(), Entry { value, dirty: true });
                self.dirty += 1;
            }
        }
        if self.dirty >= self.options.write_batch_entries {
            self.commit_requested.store(true, Ordering::Relaxed);
        }
        self.evict();
    }

    /// Drops clean entries while the cache is over its size.
    fn evict(&mut self) {
        if self.cache.len() <= self.options.cache_entries {
            return;
        }
        let excess = self.cache.len() - self.options.cache_entries;
        let victims: Vec<Vec<u8>> = self
            .cache
            .iter()
            .filter(|(_, e)| !e.dirty)
            .take(excess.max(self.options.cache_entries / 10))
            .map(|(k, _)| k.clone())
            .collect();
        for k in victims {
            self.cache.remove(&k);
        }
    }

    /// Dirty entries, in key order, marked clean; the runtime sends them to the
    /// changelog, flushes it, then calls [`TaskStore::apply`] with them.
    pub fn take_dirty(&mut self) -> Vec<Write> {
        if self.dirty == 0 {
            return Vec::new();
        }
        let mut out: Vec<Write> = self
            .cache
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(k, e)| {
                e.dirty = false;
                (k.clone(), e.value.clone())
            })
            .collect();
        self.dirty = 0;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.evict();
        out
    }

    /// Writes entries whose changelog records are durable to the engine.
    pub fn apply(&mut self, batch: &[Write]) -> Result<(), StateError> {
        self.engine.write(batch, true)
    }

    fn merged(
        &mut self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError> {
        let mut map: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            self.engine.scan(from, to).map_err(task_err)?.into_iter().collect();
        let in_range = |k: &[u8]| {
            from.is_none_or(|f| k >= f) && to.is_none_or(|t| k < t) && prefix.is_none_or(|p| k.starts_with(p))
        };
        for (k, e) in &self.cache {
            if e.dirty && in_range(k) {
                match &e.value {
                    Some(v) => map.insert(k.clone(), v.clone()),
                    None => map.remove(k),
                };
            }
        }
        Ok(map
            .into_iter()
            .filter(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
            .filter_map(|(k, v)| self.unwrap_live(v).map(|v| (k, v)))
            .collect())
    }
}

impl RawStore for TaskStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        self.metrics.gets.inc();
        let stored = match self.cache.get(key) {
            Some(e) => {
                self.metrics.hits.inc();
                e.value.clone()
            }
            None => {
                self.metrics.misses.inc();
                let v = self.engine.get(key).map_err(task_err)?;
                self.cache.insert(key.to_vec(), Entry { value: v.clone(), dirty: false });
                self.evict();
                v
            }
        };
        Ok(stored.and_then(|v| self.unwrap_live(v)))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.metrics.puts.inc();
        let v = self.wrap(value);
        self.set(key, Some(v));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), TaskError> {
        self.metrics.deletes.inc();
        self.set(key, None);
        Ok(())
    }

    fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.merged(Some(from), Some(to), None)
    }

    fn prefix(&mut self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError> {
        self.merged(Some(prefix), None, Some(prefix))
    }

    fn all(&mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError> {
        self.merged(None, None, None)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        // Durability comes with the commit protocol; ask for one now.
        self.commit_requested.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
