//! What a running container reports: its progress in the status file (for
//! `samza-run` and the tools), its metrics (plain counters published once a
//! second, snapshots to `metrics.snapshot-stream`), and the inputs' upcoming
//! offsets for lag, read by a thread of its own.

use super::*;
use crate::status::{ContainerStatus, PartitionStatus, StoreStatus};

impl Loop {
    /// Sends the container's metrics to `metrics.snapshot-stream` when an
    /// interval has passed (they become durable with the next commit's flush).
    /// A reporter that cannot send logs it; the job goes on.
    pub(super) fn report_snapshot(&mut self) {
        let Some(m) = &self.cfg.metrics else {
            return;
        };
        if self.last_snapshot.elapsed() < Duration::from_millis(m.snapshot_interval_ms) {
            return;
        }
        self.last_snapshot = Instant::now();
        let time_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let body = serde_json::json!({
            "job": self.cfg.name,
            "container": self.container_id,
            "time_ms": time_ms as u64,
            "metrics": self.metrics.snapshot(),
        });
        let key = format!("{}/{}", self.cfg.name, self.container_id);
        let out = OutgoingMessageEnvelope::new(
            m.snapshot_stream.clone(),
            Some(key.into_bytes().into()),
            Some(body.to_string().into_bytes().into()),
        );
        if let Err(e) = self.producers.send(&self.cfg, &self.systems, out) {
            tracing::warn!("cannot send a metrics snapshot: {e}");
        }
    }

    /// Messages processed, over every input partition.
    /// Publishes the metrics kept in plain counters (processed, offsets, lag
    /// = the partition's upcoming offset minus the next one to process) and
    /// writes progress for `samza-run` when it asked for it. Once a second.
    pub(super) fn write_status(&mut self, finished: bool) {
        self.last_status = Instant::now();
        if finished {
            // The last status has exact figures.
            self.upcoming.refresh(&self.admins);
        }
        let upcoming = self.upcoming.get();
        let up = |s: &SspState| {
            upcoming.get(&s.ssp.system_stream).and_then(|v| v.get(s.ssp.partition as usize)).copied()
        };
        self.m_processed.set(self.processed() as i64);
        for s in &self.ssps {
            s.m_processed.set(s.processed as i64);
            s.m_offset.set(s.next_offset as i64);
            if let Some(u) = up(s) {
                s.m_lag.set(u.saturating_sub(s.next_offset) as i64);
            }
        }
        self.report_snapshot();
        let Some(path) = &self.status_path else {
            return;
        };
        let partitions = self
            .ssps
            .iter()
            .map(|s| PartitionStatus {
                system: s.ssp.system().to_string(),
                stream: s.ssp.stream().to_string(),
                partition: s.ssp.partition,
                next_offset: s.next_offset,
                upcoming: up(s),
            })
            .collect();
        let stores = self
            .tasks
            .iter()
            .flat_map(|t| {
                t.stores.iter().map(move |s| StoreStatus {
                    task: t.name.as_str().to_string(),
                    store: s.name.clone(),
                    restore: s.report.clone(),
                })
            })
            .collect();
        let status = ContainerStatus {
            container: self.container_id,
            pid: std::process::id(),
            processed: self.processed(),
            finished,
            partitions,
            stores,
            commits: crate::status::CommitStats::of(self.m_commit.count(), &self.commit_times),
        };
        if let Err(e) = status.write(path) {
            tracing::debug!(path = %path.display(), "cannot write status: {e}");
        }
    }
}

/// The inputs' upcoming offsets (for lag), refreshed once a second by a
/// thread of its own: the run loop never waits on a system's metadata (a
/// remote broker's can take a while, or time out).
pub(super) struct UpcomingOffsets {
    streams: Vec<samza_task_api::SystemStream>,
    map: Arc<UpcomingMap>,
    stop: Arc<AtomicBool>,
}

impl UpcomingOffsets {
    pub(super) fn start(
        admins: BTreeMap<String, Arc<dyn SystemAdmin>>,
        streams: Vec<samza_task_api::SystemStream>,
    ) -> Self {
        let me = UpcomingOffsets { streams, map: Default::default(), stop: Arc::new(AtomicBool::new(false)) };
        let (streams, map, stop) = (me.streams.clone(), me.map.clone(), me.stop.clone());
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new().name("upcoming-offsets".into()).spawn(move || {
            let _in_span = span.entered();
            while !stop.load(Ordering::Relaxed) {
                read_upcoming(&admins, &streams, &map);
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that reads the inputs' offsets (no lag figures): {e}");
        }
        me
    }

    pub(super) fn refresh(&self, admins: &BTreeMap<String, Arc<dyn SystemAdmin>>) {
        read_upcoming(admins, &self.streams, &self.map);
    }

    pub(super) fn get(&self) -> BTreeMap<samza_task_api::SystemStream, Vec<u64>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type UpcomingMap = std::sync::Mutex<BTreeMap<samza_task_api::SystemStream, Vec<u64>>>;

fn read_upcoming(
    admins: &BTreeMap<String, Arc<dyn SystemAdmin>>,
    streams: &[samza_task_api::SystemStream],
    map: &UpcomingMap,
) {
    for ss in streams {
        if let Ok(meta) = admins[&*ss.system].partition_metadata(&ss.stream) {
            let up = meta.iter().map(|m| m.upcoming).collect();
            map.lock().unwrap_or_else(|p| p.into_inner()).insert(ss.clone(), up);
        }
    }
}

impl Drop for UpcomingOffsets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
