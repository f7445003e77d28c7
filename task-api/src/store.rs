//! Key-value stores: a task's local state.
//!
//! A task gets its stores from [`crate::TaskContext::store`]. Each store is
//! private to one task instance, lives on the container's machine (RocksDB or
//! memory, chosen in `job.toml`), and is backed by a changelog stream, so it
//! survives the loss of the container. Writes are visible to the task's own
//! reads at once; they reach the changelog and the disk at the next commit.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::{Serde, TaskError};

/// The byte-level store the runtime provides; tasks use [`KeyValueStore`].
/// A read-modify-write step (see [`RawStore::update`]): the current value in,
/// the new one written to the buffer; `false` deletes the key.
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> Result<bool, TaskError> + 'a;

pub trait RawStore: Send {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TaskError>;
    /// Like [`RawStore::get`], into `out` (cleared first); `false` when absent.
    /// Stores override it to read without allocating.
    fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, TaskError> {
        out.clear();
        Ok(self.get(key)?.map(|v| out.extend_from_slice(&v)).is_some())
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TaskError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), TaskError>;
    /// Read-modify-write of one key: `f` gets the current value and writes
    /// the new one into its buffer (cleared first), returning `true` to store
    /// it or `false` to delete the key. Stores override it to find the key once.
    fn update(&mut self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<(), TaskError> {
        let mut current = Vec::new();
        let found = self.get_into(key, &mut current)?;
        let mut new = Vec::new();
        if f(found.then_some(current.as_slice()), &mut new)? {
            self.put(key, &new)
        } else {
            self.delete(key)
        }
    }
    /// Entries with `from <= key < to`, in key order.
    fn range(&mut self, from: &[u8], to: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError>;
    /// Entries whose key starts with `prefix`, in key order.
    fn prefix(&mut self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError>;
    /// Every entry, in key order.
    fn all(&mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TaskError>;
    /// Asks the runtime to commit as soon as the current call returns: every
    /// write so far then reaches the changelog and local disk (which every
    /// periodic commit does too).
    fn flush(&mut self) -> Result<(), TaskError>;

    /// For runtimes, to reach their own store type.
    #[doc(hidden)]
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// A shared handle on a runtime store.
pub type SharedStore = Arc<Mutex<Box<dyn RawStore>>>;

thread_local! {
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two empty buffers for an encoded key and value, reused across
/// calls on this thread (fresh ones if a serde re-enters the store).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (k, v) = &mut *bufs;
            k.clear();
            v.clear();
            f(k, v)
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// A typed key-value store; keys and values go through their serdes.
pub struct KeyValueStore<K, V> {
    raw: SharedStore,
    keys: Arc<dyn Serde<K>>,
    values: Arc<dyn Serde<V>>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for KeyValueStore<K, V> {
    fn clone(&self) -> Self {
        KeyValueStore {
            raw: self.raw.clone(),
            keys: self.keys.clone(),
            values: self.values.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> KeyValueStore<K, V> {
    pub fn new(raw: SharedStore, keys: impl Serde<K> + 'static, values: impl Serde<V> + 'static) -> Self {
        KeyValueStore { raw, keys: Arc::new(keys), values: Arc::new(values), _types: PhantomData }
    }

    fn raw(&self) -> std::sync::MutexGuard<'_, Box<dyn RawStore>> {
        self.raw.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, TaskError> {
        with_scratch(|k, v| {
            self.keys.write_to(key, k)?;
            match self.raw().get_into(k, v)? {
                true => self.values.from_bytes(v).map(Some),
                false => Ok(None),
            }
        })
    }

    pub fn put(&self, key: &K, value: &V) -> Result<(), TaskError> {
        with_scratch(|k, v| {
            self.keys.write_to(key, k)?;
            self.values.write_to(value, v)?;
            self.raw().put(k, v)
        })
    }

    /// Read-modify-write of one key in one step (a counter: `update(&user,
    /// |n| Some(n.unwrap_or(0) + 1))`); `None` from `f` deletes the key.
    /// Returns the new value.
    pub fn update(&self, key: &K, f: impl FnOnce(Option<V>) -> Option<V>) -> Result<Option<V>, TaskError> {
        let mut f = Some(f);
        let mut result = None;
        with_scratch(|k, _| {
            self.keys.write_to(key, k)?;
            self.raw().update(k, &mut |current, out| {
                let current = current.map(|c| self.values.from_bytes(c)).transpose()?;
                let f = f.take().expect("update calls its function once");
                match f(current) {
                    Some(v) => {
                        out.clear();
                        self.values.write_to(&v, out)?;
                        result = Some(v);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })
        })?;
        Ok(result)
    }

    pub fn put_all<'a>(&self, entries: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<(), TaskError>
    where
        K: 'a,
        V: 'a,
    {
        let mut raw = self.raw();
        for (k, v) in entries {
            raw.put(&self.keys.to_bytes(k)?, &self.values.to_bytes(v)?)?;
        }
        Ok(())
    }

    pub fn delete(&self, key: &K) -> Result<(), TaskError> {
        with_scratch(|k, _| {
            self.keys.write_to(key, k)?;
            self.raw().delete(k)
        })
    }

    fn decode(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(K, V)>, TaskError> {
        entries
            .into_iter()
            .map(|(k, v)| Ok((self.keys.from_bytes(&k)?, self.values.from_bytes(&v)?)))
            .collect()
    }

    /// Entries with `from <= key < to` in the order of the encoded keys.
    pub fn range(&self, from: &K, to: &K) -> Result<Vec<(K, V)>, TaskError> {
        let (f, t) = (self.keys.to_bytes(from)?, self.keys.to_bytes(to)?);
        let entries = self.raw().range(&f, &t)?;
        self.decode(entries)
    }

    /// Entries whose key starts with `prefix`, encoded with the key serde
    /// (so for serdes whose encodings keep prefixes: strings, bytes, and
    /// big-endian integers for a range of them; see [`Self::prefix_bytes`]
    /// for an encoded prefix).
    pub fn prefix(&self, prefix: &K) -> Result<Vec<(K, V)>, TaskError> {
        let p = self.keys.to_bytes(prefix)?;
        self.prefix_bytes(&p)
    }

    /// Entries whose encoded key starts with the bytes `prefix`.
    pub fn prefix_bytes(&self, prefix: &[u8]) -> Result<Vec<(K, V)>, TaskError> {
        let entries = self.raw().prefix(prefix)?;
        self.decode(entries)
    }

    /// Every entry, in the order of the encoded keys.
    pub fn all(&self) -> Result<Vec<(K, V)>, TaskError> {
        let entries = self.raw().all()?;
        self.decode(entries)
    }

    /// Asks for a commit once the current call returns (see [`RawStore::flush`]).
    pub fn flush(&self) -> Result<(), TaskError> {
        self.raw().flush()
    }
}
