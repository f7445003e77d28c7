//! What the end-to-end suites share (a dev-dependency only): job files built
//! from keys instead of copied text, the workspace's binaries beside the
//! running test, processes waited for, containers' status files and streams
//! of the embedded log read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use samza_container::layout;
use samza_container::status::ContainerStatus;
use samza_log::{BatchBuilder, Log, StartAt, StreamConfig};

/// A job file, built key by key, written in the order the keys were set
/// (tables as `[a.b]` sections), with raw TOML appended where a test wants
/// a section verbatim.
///
/// ```
/// # use samza_test_support::JobToml;
/// let job = JobToml::new("copy-job", "/bin/job".as_ref(), "copy", &["log.in"])
///     .set("job.container-count", 2)
///     .set_in(&["systems", "log", "streams", "in.v2", "bounded"], true);
/// let text = job.text();
/// assert!(text.starts_with("[job]\nname = \"copy-job\"\ncontainer-count = 2\n"), "{text}");
/// assert!(text.contains("[systems.log.streams.\"in.v2\"]\nbounded = true\n"), "{text}");
/// ```
#[derive(Clone, Debug, Default)]
pub struct JobToml {
    root: Table,
    tail: String,
}

#[derive(Clone, Debug, Default)]
struct Table {
    entries: Vec<(String, Entry)>,
}

#[derive(Clone, Debug)]
enum Entry {
    Value(toml::Value),
    Table(Table),
}

impl Table {
    fn table(&mut self, key: &str) -> &mut Table {
        let i = match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.entries.push((key.to_string(), Entry::Table(Table::default())));
                self.entries.len() - 1
            }
        };
        match &mut self.entries[i].1 {
            Entry::Table(t) => t,
            Entry::Value(_) => panic!("{key} is a value, not a table"),
        }
    }

    fn render(&self, path: &mut Vec<String>, out: &mut String) {
        let values: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Value(v) => Some((k, v)),
                Entry::Table(_) => None,
            })
            .collect();
        if !values.is_empty() && !path.is_empty() {
            out.push_str(&format!("[{}]\n", path.join(".")));
        }
        for (k, v) in values {
            out.push_str(&format!("{} = {v}\n", key(k)));
        }
        for (k, e) in &self.entries {
            if let Entry::Table(t) = e {
                path.push(key(k));
                t.render(path, out);
                path.pop();
            }
        }
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn key(k: &str) -> String {
    let bare = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

impl JobToml {
    /// Job `name` running task `class` of `binary` over `inputs`, with one
    /// system, `log`: the embedded log in `log/` beside the job file.
    pub fn new(name: &str, binary: &Path, class: &str, inputs: &[&str]) -> JobToml {
        let inputs: Vec<toml::Value> = inputs.iter().map(|i| toml::Value::from(*i)).collect();
        JobToml::default()
            .set("job.name", name)
            .set("package.binary", binary.to_str().expect("a UTF-8 path"))
            .set("task.class", class)
            .set("task.inputs", inputs)
            .set("systems.log.type", "embedded-log")
            .set("systems.log.dir", "log")
    }

    /// Moves the job from the embedded log to a Kafka system, `kafka`, at
    /// `bootstrap_servers` (one broker: replication factor 1), which also
    /// keeps the checkpoints.
    pub fn on_kafka(self, bootstrap_servers: &str) -> JobToml {
        self.unset("systems.log")
            .set("systems.kafka.type", "kafka")
            .set("systems.kafka.bootstrap-servers", bootstrap_servers)
            .set("systems.kafka.replication-factor", 1)
            .set("task.checkpoint-system", "kafka")
    }

    /// Sets the key at the dotted `path` (segments without dots; see
    /// [`JobToml::set_in`] for others).
    pub fn set(self, path: &str, value: impl Into<toml::Value>) -> JobToml {
        let segments: Vec<&str> = path.split('.').collect();
        self.set_in(&segments, value)
    }

    /// Sets the key at `path`, one segment each.
    pub fn set_in(mut self, path: &[&str], value: impl Into<toml::Value>) -> JobToml {
        let (last, tables) = path.split_last().expect("a key path");
        let mut t = &mut self.root;
        for seg in tables {
            t = t.table(seg);
        }
        let value = Entry::Value(value.into());
        match t.entries.iter_mut().find(|(k, _)| k == last) {
            Some((_, e)) => *e = value,
            None => t.entries.push((last.to_string(), value)),
        }
        self
    }

    /// Removes the key at the dotted `path`, if it is set.
    pub fn unset(mut self, path: &str) -> JobToml {
        let segments: Vec<&str> = path.split('.').collect();
        let (last, tables) = segments.split_last().expect("a key path");
        let mut t = &mut self.root;
        for seg in tables {
            match t.entries.iter_mut().find(|(k, _)| k == seg) {
                Some((_, Entry::Table(next))) => t = next,
                _ => return self,
            }
        }
        t.entries.retain(|(k, _)| k != last);
        self
    }

    /// Appends `toml` verbatim (sections the builder does not write).
    pub fn append(mut self, toml: &str) -> JobToml {
        self.tail.push('\n');
        self.tail.push_str(toml);
        self
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        self.root.render(&mut Vec::new(), &mut out);
        out.push_str(&self.tail);
        out
    }

    /// Writes the file as `dir/job.toml`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("job.toml");
        self.write_to(&path);
        path
    }

    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, self.text()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// The directory of the workspace's binaries (beside the running test's
/// `deps/`), checked to hold `needed`.
pub fn bin_dir(needed: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
    for b in needed {
        assert!(
            dir.join(b).is_file(),
            "{b} is missing in {}: build the workspace's binaries (`cargo build --workspace`)",
            dir.display()
        );
    }
    dir
}

/// The `samza-run` beside the test.
pub fn samza_run() -> PathBuf {
    bin_dir(&["samza-run"]).join("samza-run")
}

/// Polls `f` every 20 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` (its output piped); returns the output and its stderr as text.
pub fn finish(child: Child) -> (Output, String) {
    let out = child.wait_with_output().expect("the child's output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

/// Container `id`'s last status on this machine, when it wrote one.
pub fn status(state_dir: &Path, job: &str, id: u32) -> Option<ContainerStatus> {
    ContainerStatus::read(&layout::status_file(state_dir, job, id))
}

/// Creates `stream` with `partitions` partitions and appends `per_partition`
/// records to each: `record(partition, i)` gives the key and value.
pub fn write_stream(
    log: &Log,
    stream: &str,
    partitions: u32,
    per_partition: u64,
    record: impl Fn(u32, u64) -> (String, String),
) {
    let s = log.create_stream(stream, &StreamConfig::with_partitions(partitions)).expect("a new stream");
    for p in 0..partitions {
        let mut w = s.writer(p).expect("a writer");
        let mut b = BatchBuilder::new();
        for i in 0..per_partition {
            let (k, v) = record(p, i);
            b.push(Some(k.as_bytes()), Some(v.as_bytes()), 0, &[]);
            if b.len() == 1000 {
                w.append(&mut b).expect("an append");
                b.clear();
            }
        }
        w.append(&mut b).expect("an append");
    }
}

/// Every record value of `stream`, partition by partition, as text.
pub fn values(log: &Log, stream: &str) -> Vec<String> {
    let s = log.stream(stream).expect("the stream exists");
    let mut out = Vec::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).expect("a reader");
        loop {
            let c = r.read(1 << 20).expect("a read");
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.expect("a valid record");
                out.push(String::from_utf8_lossy(rec.value.unwrap_or_default()).into_owned());
            }
        }
    }
    out
}
