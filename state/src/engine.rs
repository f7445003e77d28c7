//! Storage engines under a task store: RocksDB on local disk, or memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::StateError;

/// A write: a put (`Some`) or a delete (`None`). Shared bytes, so the same
/// entry goes to the cache, the changelog and the engine without copies.
pub type Write = (Bytes, Option<Bytes>);

/// A write whose bytes live elsewhere (a restore's read buffer).
pub type BorrowedWrite<'a> = (&'a [u8], Option<&'a [u8]>);

/// What a task store needs from its engine.
pub trait Engine: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Applies `batch` atomically. With `durable`, it survives a machine crash
    /// when this returns (RocksDB: WAL synced); otherwise it survives the
    /// process.
    fn write(&mut self, batch: &[Write], durable: bool) -> Result<(), StateError>;
    /// Entries with `from <= key < to` (unbounded where `None`), in key order.
    fn scan(&self, from: Option<&[u8]>, to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError>;
    /// Bulk loading (restore): writes skip the write-ahead log. Entries are
    /// borrowed, so a restore copies each record once, into the engine.
    fn bulk_write(&mut self, batch: &[BorrowedWrite<'_>]) -> Result<(), StateError>;
    /// Makes bulk writes durable (RocksDB: flushes memtables to files).
    fn finish_bulk(&mut self) -> Result<(), StateError>;
    /// Bytes the engine holds on disk (0 in memory).
    fn disk_bytes(&self) -> u64;
}

/// Entries in a `BTreeMap`; nothing survives the process, so every start
/// restores from the changelog.
#[derive(Default)]
pub struct MemoryEngine {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map.get(key).cloned())
    }

    fn write(&mut self, batch: &[Write], _durable: bool) -> Result<(), StateError> {
        for (k, v) in batch {
            match v {
                Some(v) => self.map.insert(k.to_vec(), v.to_vec()),
                None => self.map.remove(&k[..]),
            };
        }
        Ok(())
    }

    fn scan(&self, from: Option<&[u8]>, to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        use std::ops::Bound;
        let lo = from.map_or(Bound::Unbounded, |f| Bound::Included(f.to_vec()));
        let hi = to.map_or(Bound::Unbounded, |t| Bound::Excluded(t.to_vec()));
        if let (Bound::Included(a), Bound::Excluded(b)) = (&lo, &hi) {
            if a >= b {
                return Ok(Vec::new());
            }
        }
        Ok(self.map.range((lo, hi)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn bulk_write(&mut self, batch: &[BorrowedWrite<'_>]) -> Result<(), StateError> {
        for (k, v) in batch {
            match v {
                Some(v) => self.map.insert(k.to_vec(), v.to_vec()),
                None => self.map.remove(*k),
            };
        }
        Ok(())
    }

    fn finish_bulk(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

/// RocksDB in a directory of its own.
pub struct RocksEngine {
    db: rocksdb::DB,
    dir: PathBuf,
}

fn rocks_err(dir: &Path, op: &'static str, source: rocksdb::Error) -> StateError {
    StateError::Engine { op, dir: dir.to_path_buf(), source }
}

impl RocksEngine {
    pub fn open(dir: &Path) -> Result<RocksEngine, StateError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(64 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_level_compaction_dynamic_level_bytes(true);
        // Tasks mostly do point lookups, and many of them miss (a key seen for
        // the first time): bloom filters in the tables answer those without
        // reading data blocks. (A memtable bloom filter as well cost restores
        // 15% and did not speed up the keyed-count benchmark.)
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        let db = rocksdb::DB::open(&opts, dir).map_err(|e| rocks_err(dir, "open", e))?;
        Ok(RocksEngine { db, dir: dir.to_path_buf() })
    }

    /// Opens an existing store without writing to it (offline tools; works
    /// beside a process that has it open).
    pub fn open_read_only(dir: &Path) -> Result<RocksEngine, StateError> {
        if !dir.join("CURRENT").is_file() {
            return Err(StateError::NoStore { dir: dir.to_path_buf() });
        }
        let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), dir, false)
            .map_err(|e| rocks_err(dir, "open (read-only)", e))?;
        Ok(RocksEngine { db, dir: dir.to_path_buf() })
    }

    fn batch(batch: &[Write]) -> rocksdb::WriteBatch {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        wb
    }
}

impl Engine for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(key).map_err(|e| rocks_err(&self.dir, "get", e))
    }

    fn write(&mut self, batch: &[Write], durable: bool) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(Self::batch(batch), &wo).map_err(|e| rocks_err(&self.dir, "write", e))?;
        if durable {
            self.db.flush_wal(true).map_err(|e| rocks_err(&self.dir, "sync of the write-ahead log", e))?;
        }
        Ok(())
    }

    fn scan(&self, from: Option<&[u8]>, to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let mode = match from {
            Some(f) => rocksdb::IteratorMode::From(f, rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator(mode) {
            let (k, v) = item.map_err(|e| rocks_err(&self.dir, "scan", e))?;
            if to.is_some_and(|t| &*k >= t) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn bulk_write(&mut self, batch: &[BorrowedWrite<'_>]) -> Result<(), StateError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(wb, &wo).map_err(|e| rocks_err(&self.dir, "restore write", e))
    }

    fn finish_bulk(&mut self) -> Result<(), StateError> {
        self.db.flush().map_err(|e| rocks_err(&self.dir, "flush", e))
    }

    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
