//! A task's store: a write-back cache over an engine, whose dirty entries go
//! to the changelog at each commit and to the engine after that.
//!
//! Writes update the cache only, so a hot key costs one changelog record per
//! commit however often it changes; reads see the task's own writes. At
//! commit the runtime takes the dirty entries ([`TaskStore::take_dirty`]),
//! sends them to the changelog and flushes it; only then may it write them
//! back to the engine ([`TaskStore::write_back`]) and move the store's marker
//! to the changelog's end. Write-back happens when it is due (enough entries
//! or `write_back_ms` waited) and at a clean stop, so a key that changes in
//! every commit is written to the engine once per write-back, not once per
//! commit. The engine is never ahead of the changelog, and the marker never
//! ahead of the engine, so replaying the changelog from the marker always
//! rebuilds the store.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
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
    /// Dirty entries beyond which the store asks for a commit, and entries
    /// waiting for the engine beyond which a commit writes them back.
    pub write_batch_entries: usize,
    /// Entries older than this read as absent (the value carries its expiry).
    pub ttl_ms: Option<u64>,
    /// How long writes whose changelog records are durable may wait in the
    /// cache before they are written to the engine (see [`TaskStore::write_back`]).
    pub write_back_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_entries: 100_000,
            write_batch_entries: 50_000,
            ttl_ms: None,
            write_back_ms: 10_000,
        }
    }
}

struct Entry {
    value: Option<Bytes>,
    /// Written since the last commit: its changelog record is still to send.
    dirty: bool,
    /// In the changelog but not yet in the engine.
    unapplied: bool,
}

impl Entry {
    fn pinned(&self) -> bool {
        self.dirty || self.unapplied
    }
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
    cache: FxHashMap<Bytes, Entry>,
    dirty: usize,
    unapplied: usize,
    /// When the engine last caught up with the changelog (store clock).
    written_back_at: i64,
    options: StoreOptions,
    clock: Clock,
    metrics: Metrics,
    commit_requested: Arc<AtomicBool>,
}

thread_local! {
    /// The new value an update writes, before it is copied into the cache.
    static UPDATE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with the cleared update buffer; a fresh one when it is in use
/// (a task's update function updating another store).
fn with_update_buf<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    UPDATE_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            f(&mut buf)
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// A value as the cache keeps it: with its expiry first when the store has a TTL.
fn wrap(ttl_ms: Option<u64>, clock: &Clock, value: &[u8]) -> Bytes {
    match ttl_ms {
        None => Bytes::copy_from_slice(value),
        Some(ttl) => {
            let expiry = clock().saturating_add(ttl as i64);
            let mut v = Vec::with_capacity(8 + value.len());
            v.extend_from_slice(&expiry.to_be_bytes());
            v.extend_from_slice(value);
            v.into()
        }
    }
}

/// A value as stored in the engine, without its expiry prefix when the store
/// has a TTL; `None` once expired at `now_ms` (for tools reading a store).
pub fn stored_value(ttl_ms: Option<u64>, now_ms: i64, stored: &[u8]) -> Option<&[u8]> {
    live(ttl_ms, &(Arc::new(move || now_ms) as Clock), stored)
}

/// `stored` without its expiry prefix when the store has a TTL; `None` once
/// expired.
fn live<'a>(ttl_ms: Option<u64>, clock: &Clock, stored: &'a [u8]) -> Option<&'a [u8]> {
    match ttl_ms {
        None => Some(stored),
        Some(_) => {
            let expiry = i64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
            (clock() < expiry).then(|| &stored[8..])
        }
    }
}

fn task_err(e: StateError) -> TaskError {
    TaskError::new(samza_task_api::TaskErrorKind::System, "the store failed").with_source(e)
}

impl TaskStore {
    /// `task` labels the store's metrics (with the store's name).
    pub fn new(
        name: &str,
        task: &str,
        engine: Box<dyn Engine>,
        options: StoreOptions,
        clock: Clock,
        metrics: &MetricsRegistry,
        commit_requested: Arc<AtomicBool>,
    ) -> Self {
        let m =
            |what: &str| metrics.counter_with(&format!("store.{what}"), &[("store", name), ("task", task)]);
        TaskStore {
            name: name.to_string(),
            engine,
            cache: FxHashMap::default(),
            dirty: 0,
            unapplied: 0,
            written_back_at: clock(),
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

    /// The value without its expiry, or `None` when expired.
    fn unwrap_live<'a>(&self, stored: &'a [u8]) -> Option<&'a [u8]> {
        live(self.options.ttl_ms, &self.clock, stored)
    }

    /// The live value of `key`, from the cache or, on a miss, from the engine
    /// through the cache.
    fn lookup(&mut self, key: &[u8]) -> Result<Option<&[u8]>, TaskError> {
        self.metrics.gets.inc();
        if self.cache.contains_key(key) {
            self.metrics.hits.inc();
        } else {
            self.metrics.misses.inc();
            let v = self.engine.get(key).map_err(task_err)?.map(Bytes::from);
            self.evict();
            self.cache
                .insert(Bytes::copy_from_slice(key), Entry { value: v, dirty: false, unapplied: false });
        }
        let stored = self.cache.get(key).and_then(|e| e.value.as_deref());
        Ok(stored.and_then(|v| live(self.options.ttl_ms, &self.clock, v)))
    }

    fn set(&mut self, key: &[u8], value: Option<Bytes>) {
        match self.cache.get_mut(key) {
            Some(e) => {
                if !e.dirty {
                    self.dirty += 1;
                }
                e.value = value;
                e.dirty = true;
            }
            None => {
                self.cache
                    .insert(Bytes::copy_from_slice(key), Entry { value, dirty: true, unapplied: false });
                self.dirty += 1;
            }
        }
        if self.dirty >= self.options.write_batch_entries {
            self.commit_requested.store(true, Ordering::Relaxed);
        }
        self.evict();
    }

    /// Drops clean entries (in the engine, nothing to send) while the cache is
    /// over its size.
    fn evict(&mut self) {
        if self.cache.len() <= self.options.cache_entries {
            return;
        }
        let excess = self.cache.len() - self.options.cache_entries;
        let victims: Vec<Bytes> = self
            .cache
            .iter()
            .filter(|(_, e)| !e.pinned())
            .take(excess.max(self.options.cache_entries / 10))
            .map(|(k, _)| k.clone())
            .collect();
        for k in victims {
            self.cache.remove(&k);
        }
    }

    /// The entries written since the last commit, for the changelog. They
    /// stay in the cache, waiting for [`TaskStore::write_back`], which the
    /// runtime calls only once their changelog records are durable.
    pub fn take_dirty(&mut self) -> Vec<Write> {
        if self.dirty == 0 {
            return Vec::new();
        }
        let mut newly_unapplied = 0;
        let out: Vec<Write> = self
            .cache
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(k, e)| {
                e.dirty = false;
                newly_unapplied += usize::from(!e.unapplied);
                e.unapplied = true;
                (k.clone(), e.value.clone())
            })
            .collect();
        self.dirty = 0;
        self.unapplied += newly_unapplied;
        out
    }

    /// Whether a commit should write back now: `write_batch_entries` entries
    /// wait for the engine, or the oldest has waited `write_back_ms`.
    pub fn write_back_due(&self) -> bool {
        self.unapplied > 0
            && (self.unapplied >= self.options.write_batch_entries
                || (self.clock)().saturating_sub(self.written_back_at) >= self.options.write_back_ms as i64)
    }

    /// Writes every entry taken for the changelog to the engine, in key order,
    /// durably (RocksDB: WAL synced); returns how many. Afterwards the engine
    /// reflects the changelog up to the last record sent, which is what the
    /// runtime then records in the store's marker. Writing back less often
    /// than every commit saves engine writes of keys that change again; the
    /// price is a longer tail to replay after a crash.
    pub fn write_back(&mut self) -> Result<usize, StateError> {
        debug_assert_eq!(self.dirty, 0, "write_back after take_dirty, before new writes");
        self.written_back_at = (self.clock)();
        if self.unapplied == 0 {
            return Ok(0);
        }
        let mut batch: Vec<Write> = self
            .cache
            .iter_mut()
            .filter(|(_, e)| e.unapplied)
            .map(|(k, e)| {
                e.unapplied = false;
                (k.clone(), e.value.clone())
            })
            .collect();
        self.unapplied = 0;
        // The memtable inserts sorted keys faster than the sort costs.
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.engine.write(&batch, true)?;
        self.evict();
        Ok(batch.len())
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
            if e.pinned() && in_range(k) {
                match &e.value {
                    Some(v) => map.insert(k.to_vec(), v.to_vec()),
                    None => map.remove(&k[..]),
                };
            }
        }
        Ok(map
            .into_iter()
            .filter(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
            .filter_map(|(k, v)| self.unwrap_live(&v).map(|v| (k, v.to_vec())))
            .collect())
    }
}

impl RawStore for TaskStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TaskError> {
        Ok(self.lookup(key)?.map(<[u8]>::to_vec))
    }

    fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, TaskError> {
        out.clear();
        Ok(self.lookup(key)?.map(|v| out.extend_from_slice(v)).is_some())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.metrics.puts.inc();
        let v = wrap(self.options.ttl_ms, &self.clock, value);
        self.set(key, Some(v));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), TaskError> {
        self.metrics.deletes.inc();
        self.set(key, None);
        Ok(())
    }

    fn update(&mut self, key: &[u8], f: &mut samza_task_api::store::UpdateFn<'_>) -> Result<(), TaskError> {
        self.metrics.gets.inc();
        // A hit finds the key once (get, then put, would look it up three times).
        if let Some(e) = self.cache.get_mut(key) {
            self.metrics.hits.inc();
            let put = with_update_buf(|out| -> Result<bool, TaskError> {
                let current = e.value.as_deref().and_then(|v| live(self.options.ttl_ms, &self.clock, v));
                if !f(current, out)? {
                    return Ok(false);
                }
                e.value = Some(wrap(self.options.ttl_ms, &self.clock, out));
                Ok(true)
            })?;
            if !put {
                e.value = None;
            }
            if !e.dirty {
                e.dirty = true;
                self.dirty += 1;
            }
            if put { &self.metrics.puts } else { &self.metrics.deletes }.inc();
            if self.dirty >= self.options.write_batch_entries {
                self.commit_requested.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
        self.metrics.misses.inc();
        let stored = self.engine.get(key).map_err(task_err)?;
        let current = stored.as_deref().and_then(|v| self.unwrap_live(v));
        let value = with_update_buf(|out| -> Result<_, TaskError> {
            Ok(f(current, out)?.then(|| wrap(self.options.ttl_ms, &self.clock, out)))
        })?;
        if value.is_some() { &self.metrics.puts } else { &self.metrics.deletes }.inc();
        self.set(key, value);
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
