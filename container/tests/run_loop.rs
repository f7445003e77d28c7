//! Run-loop semantics through the in-process test runner (real run loop,
//! in-memory streams): window timer and shutdown votes, bootstrap streams and
//! priorities, serde checks, and the commit order of invariant 1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use samza_container::memory::{InMemoryConfig, InMemoryStreams};
use samza_container::systems::SystemRegistry;
use samza_container::testing::TestRunner;
use samza_task_api::*;

/// Records the stream and value of every message it sees, in order.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

impl StreamTask for Recorder {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.seen.lock().unwrap().push(format!("{}:{}", env.ssp.stream(), env.message_str()?));
        Ok(())
    }
}

fn recorder(seen: &Arc<Mutex<Vec<String>>>) -> TaskRegistry {
    let seen = seen.clone();
    TaskRegistry::new().register_with("rec", move |_| Ok(Box::new(Recorder { seen: seen.clone() })))
}

const TWO_INPUTS: &str = r#"
[job]
name = "t"
[task]
class = "rec"
inputs = ["mem.main", "mem.side"]
[systems.mem]
type = "in-memory"
[systems.mem.streams.main]
bounded = true
[systems.mem.streams.side]
bounded = true
"#;

#[test]
fn bootstrap_stream_is_read_to_its_end_before_anything_else() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let toml = format!("{TWO_INPUTS}bootstrap = true\n");
    let mut t = TestRunner::with_config(recorder(&seen), &toml, &[]).unwrap();
    t.create_stream("main", 1);
    t.create_stream("side", 1);
    for i in 0..300 {
        t.send("main", None, &format!("m{i}"));
        t.send("side", None, &format!("s{i}"));
    }
    t.run().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 600);
    assert!(seen[..300].iter().all(|s| s.starts_with("side:")), "side first: {:?}", &seen[295..305]);
    // Offsets within a partition stay in order.
    assert_eq!(seen[300], "main:m0");
    assert_eq!(seen[599], "main:m299");
}

#[test]
fn higher_priority_stream_goes_first_and_equals_share_round_robin() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let toml =
        TWO_INPUTS.replace("[systems.mem.streams.main]\n", "[systems.mem.streams.main]\npriority = 5\n");
    let mut t = TestRunner::with_config(recorder(&seen), &toml, &[]).unwrap();
    t.create_stream("main", 1);
    t.create_stream("side", 1);
    for i in 0..100 {
        t.send("main", None, &format!("m{i}"));
        t.send("side", None, &format!("s{i}"));
    }
    t.run().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen[..100].iter().all(|s| s.starts_with("main:")), "{:?}", &seen[..5]);

    // Without priorities both streams are interleaved, not one after the other.
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let mut t =
        TestRunner::with_config(recorder(&seen2), TWO_INPUTS, &["task.poll-batch=8".to_string()]).unwrap();
    t.create_stream("main", 1);
    t.create_stream("side", 1);
    for i in 0..2000 {
        t.send("main", None, &format!("m{i}"));
        t.send("side", None, &format!("s{i}"));
    }
    t.run().unwrap();
    let seen2 = seen2.lock().unwrap();
    let first_side = seen2.iter().position(|s| s.starts_with("side:")).unwrap();
    let first_main = seen2.iter().position(|s| s.starts_with("main:")).unwrap();
    assert!(first_side.max(first_main) < 1000, "round-robin: main at {first_main}, side at {first_side}");
}

/// Counts windows and votes to shut down after the third.
#[derive(Default)]
struct Windowed {
    processed: u64,
    windows: u32,
    in_process: bool,
}

impl StreamTask for Windowed {
    fn process(
        &mut self,
        _: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.in_process = true;
        self.processed += 1;
        self.in_process = false;
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, coord: &mut TaskCoordinator) -> Result<(), TaskError> {
        assert!(!self.in_process, "window never runs during process");
        self.windows += 1;
        out.send(OutgoingMessageEnvelope::new(
            SystemStream::new("mem", "windows"),
            None,
            Some(format!("window {} after {}", self.windows, self.processed).into()),
        ));
        if self.windows == 3 {
            coord.shutdown(RequestScope::CurrentTask);
        }
        Ok(())
    }
}

#[test]
fn window_runs_on_its_timer_and_every_task_voting_stops_the_container() {
    // Unbounded input: only the shutdown votes of both tasks end the run.
    let toml = r#"
[job]
name = "w"
[task]
class = "win"
inputs = ["mem.in"]
window-ms = 50
[systems.mem]
type = "in-memory"
[systems.mem.streams.windows]
partitions = 1
"#;
    let mut t = TestRunner::with_config(TaskRegistry::new().register::<Windowed>("win"), toml, &[]).unwrap();
    t.create_stream("in", 2);
    for i in 0..10 {
        t.send_to("in", i % 2, None, "x");
    }
    let start = std::time::Instant::now();
    let outcome = t.run().unwrap();
    assert_eq!(outcome, samza_container::run_loop::Outcome::Shutdown);
    assert!(start.elapsed() >= Duration::from_millis(150), "three 50 ms windows");
    let windows = t.values("windows");
    assert_eq!(windows.len(), 8, "3 windows of each of 2 tasks, and a final one at the stop: {windows:?}");
    assert!(windows.contains(&"window 3 after 5".to_string()), "{windows:?}");
    // The final commit checkpointed both tasks at the end of their partitions.
    let cps = t.checkpoints();
    assert_eq!(cps.len(), 2);
    for cp in cps.values() {
        assert_eq!(cp.offsets[0].offset, 5);
    }
}

#[test]
fn a_message_that_does_not_decode_with_its_serde_fails_naming_partition_and_offset() {
    let toml = r#"
[job]
name = "s"
[task]
class = "rec"
inputs = ["mem.in"]
[systems.mem]
type = "in-memory"
msg-serde = "json"
[systems.mem.streams.in]
bounded = true
"#;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestRunner::with_config(recorder(&seen), toml, &[]).unwrap();
    t.create_stream("in", 1);
    t.send("in", None, "{\"ok\":1}");
    t.send("in", None, "not json");
    let err = t.run().unwrap_err().to_string();
    assert!(
        err.contains(
            "task Partition 0 failed processing mem.in[0] offset 1: message does not decode as Json"
        ),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// An in-memory system that logs sends and flushes, to check the commit order.
#[derive(Clone)]
struct Logged {
    inner: InMemoryStreams,
    events: Arc<Mutex<Vec<String>>>,
}

struct LoggedProducer {
    inner: Box<dyn SystemProducer>,
    events: Arc<Mutex<Vec<String>>>,
}

impl SystemProducer for LoggedProducer {
    fn send(&mut self, env: OutgoingMessageEnvelope) -> Result<(), SystemError> {
        let kind = if env.stream.stream.starts_with("__samza_checkpoint") { "checkpoint" } else { "output" };
        self.events.lock().unwrap().push(kind.to_string());
        self.inner.send(env)
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        self.events.lock().unwrap().push("flush".to_string());
        self.inner.flush()
    }
}

impl SystemFactory for Logged {
    type Config = InMemoryConfig;

    fn admin(&self, s: &str, c: &InMemoryConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        self.inner.admin(s, c)
    }
    fn consumer(&self, s: &str, c: &InMemoryConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
        self.inner.consumer(s, c)
    }
    fn producer(&self, s: &str, c: &InMemoryConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(LoggedProducer { inner: self.inner.producer(s, c)?, events: self.events.clone() }))
    }
}

/// Copies every message and asks for a commit every 10 messages.
#[derive(Default)]
struct CommitEvery10 {
    n: u32,
}

impl StreamTask for CommitEvery10 {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        coord: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        out.send(OutgoingMessageEnvelope::new(SystemStream::new("mem", "out"), None, env.message.clone()));
        self.n += 1;
        if self.n % 10 == 0 {
            coord.commit(RequestScope::CurrentTask);
        }
        Ok(())
    }
}

#[test]
fn checkpoints_are_written_only_after_every_earlier_output_is_flushed() {
    use std::sync::atomic::AtomicBool;
    let streams = InMemoryStreams::new();
    streams.create("in", 1);
    streams.create("out", 1);
    for i in 0..95 {
        streams.append("in", Some(0), None, Some(format!("{i}").into()), 0).unwrap();
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut registry = SystemRegistry::new();
    registry.register("in-memory", Logged { inner: streams.clone(), events: events.clone() });
    let toml = "[job]\nname = \"c\"\n[task]\nclass = \"c\"\ninputs = [\"mem.in\"]\ncommit-ms = 3600000\n[systems.mem]\ntype = \"in-memory\"\n[systems.mem.streams.in]\nbounded = true\n";
    let cfg = samza_container::config::JobConfig::parse(toml, std::path::Path::new("c.toml"), &[]).unwrap();
    let systems = registry.resolve(&cfg).unwrap();
    samza_container::run_loop::run(samza_container::run_loop::ContainerSpec {
        config: Arc::new(cfg),
        container_id: 0,
        tasks: TaskRegistry::new().register::<CommitEvery10>("c"),
        systems,
        shutdown: Arc::new(AtomicBool::new(false)),
        status_path: None,
        model: None,
        metrics: Default::default(),
        queries: None,
        owner: None,
        lease: None,
    })
    .unwrap();
    let events = events.lock().unwrap();
    let checkpoints = events.iter().filter(|e| *e == "checkpoint").count();
    assert_eq!(checkpoints, 10, "9 requested commits and the final one: {events:?}");
    let mut unflushed_output = false;
    for e in events.iter() {
        match e.as_str() {
            "output" => unflushed_output = true,
            "flush" => unflushed_output = false,
            "checkpoint" => {
                assert!(!unflushed_output, "checkpoint written before outputs were flushed: {events:?}")
            }
            _ => {}
        }
    }
    assert_eq!(streams.messages("out", 0).len(), 95);
}

/// Counts messages in its store and, in `close`, writes and emits its total.
#[derive(Default)]
struct Totals {
    store: Option<KeyValueStore<String, String>>,
    n: u64,
}

impl StreamTask for Totals {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.store = Some(ctx.store("totals", StringSerde, StringSerde)?);
        Ok(())
    }

    fn process(
        &mut self,
        _: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.n += 1;
        Ok(())
    }

    fn close(&mut self, out: &mut MessageCollector) -> Result<(), TaskError> {
        self.store.as_ref().unwrap().put(&"total".to_string(), &self.n.to_string())?;
        out.send(OutgoingMessageEnvelope::new(
            SystemStream::new("mem", "out"),
            None,
            Some(format!("closed after {}", self.n).into()),
        ));
        Ok(())
    }
}

#[test]
fn what_close_writes_and_emits_is_in_the_final_commit() {
    let toml = r#"
[job]
name = "t"
[task]
class = "totals"
inputs = ["mem.in"]
window-ms = 100000
[systems.mem]
type = "in-memory"
[systems.mem.streams.in]
bounded = true
[systems.mem.streams.out]
partitions = 1
[stores.totals]
engine = "in-memory"
changelog = "mem.totals-changelog"
"#;
    let mut t = TestRunner::with_config(TaskRegistry::new().register::<Totals>("totals"), toml, &[]).unwrap();
    t.create_stream("in", 1);
    for i in 0..25 {
        t.send("in", None, &format!("m{i}"));
    }
    t.run().unwrap();
    assert_eq!(t.values("out"), ["closed after 25"]);
    assert_eq!(t.values("totals-changelog"), ["25"], "the store write of close reached the changelog");
    let cp = t.checkpoints();
    assert_eq!(cp.values().next().unwrap().offsets[0].offset, 25);
}

#[test]
fn bootstrap_makes_progress_with_several_tasks_per_container_and_a_small_poll_batch() {
    // Two tasks in one container, each with a bootstrap partition, behind a
    // backlog of main input far larger than the poll batch.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let toml = format!("{TWO_INPUTS}bootstrap = true\n");
    let mut t = TestRunner::with_config(recorder(&seen), &toml, &["task.poll-batch=100".into()]).unwrap();
    t.create_stream("main", 2);
    t.create_stream("side", 2);
    for p in 0..2 {
        for i in 0..5_000 {
            t.send_to("main", p, None, &format!("m{p}-{i}"));
        }
        for i in 0..300 {
            t.send_to("side", p, None, &format!("s{p}-{i}"));
        }
    }
    run_within_a_minute(&seen, t);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10_600);
    // Both side partitions were read to their end before any main message.
    let first_main = seen.iter().position(|s| s.starts_with("main:")).unwrap();
    assert_eq!(first_main, 600, "{:?}", &seen[..first_main.min(10)]);
}

/// Runs `t` on a thread; fails the test if it has not finished within a minute.
fn run_within_a_minute(seen: &Arc<Mutex<Vec<String>>>, t: TestRunner) {
    let runner = std::thread::spawn(move || {
        let mut t = t;
        t.run().unwrap();
    });
    let start = std::time::Instant::now();
    while !runner.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stalled at {} messages",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    runner.join().unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Bootstrap, priority and round-robin choice make progress whatever the
    /// number of tasks per container, the poll batch and the backlog: every
    /// message is processed, and no main message before the whole bootstrap
    /// input (as of start) of the container's tasks.
    #[test]
    fn bootstrap_and_priorities_make_progress_for_any_tasks_poll_batch_and_backlog(
        partitions in 1u32..6,
        poll_batch in 1usize..300,
        main in proptest::collection::vec(0u32..2000, 5),
        side in proptest::collection::vec(0u32..200, 5),
        priority in -1i32..2,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // The main input's priority (above, equal to or below the bootstrap input's 0) must not matter.
        let toml = format!("{TWO_INPUTS}bootstrap = true\n");
        let overrides =
            [format!("task.poll-batch={poll_batch}"), format!("systems.mem.streams.main.priority={priority}")];
        let mut t = TestRunner::with_config(recorder(&seen), &toml, &overrides).unwrap();
        t.create_stream("main", partitions);
        t.create_stream("side", partitions);
        let mut total = 0;
        let mut bootstrap = 0;
        for p in 0..partitions {
            for i in 0..main[p as usize] {
                t.send_to("main", p, None, &format!("m{p}-{i}"));
            }
            for i in 0..side[p as usize] {
                t.send_to("side", p, None, &format!("s{p}-{i}"));
            }
            total += main[p as usize] + side[p as usize];
            bootstrap += side[p as usize];
        }
        run_within_a_minute(&seen, t);
        let seen = seen.lock().unwrap();
        proptest::prop_assert_eq!(seen.len() as u32, total);
        let first_main = seen.iter().position(|s| s.starts_with("main:")).unwrap_or(seen.len());
        proptest::prop_assert_eq!(first_main as u32, bootstrap, "a main message came before the bootstrap input ended");
        // Each partition in order.
        for p in 0..partitions {
            for (stream, prefix) in [("main", "m"), ("side", "s")] {
                let got: Vec<&String> = seen.iter().filter(|s| s.starts_with(&format!("{stream}:{prefix}{p}-"))).collect();
                let want: Vec<String> = (0..got.len()).map(|i| format!("{stream}:{prefix}{p}-{i}")).collect();
                proptest::prop_assert!(got.iter().zip(&want).all(|(g, w)| *g == w), "{} partition {} out of order", stream, p);
            }
        }
    }
}

/// A [`Recorder`] that also records `caught_up` calls and sends an event for each.
struct CatchUpRecorder(Recorder);

impl StreamTask for CatchUpRecorder {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        coord: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.0.process(env, out, coord)
    }

    fn caught_up(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.0.seen.lock().unwrap().push("caught up".to_string());
        out.send(OutgoingMessageEnvelope::new(
            SystemStream::new("mem", "events"),
            None,
            Some("caught up".into()),
        ));
        Ok(())
    }
}

#[test]
fn a_task_is_told_once_when_its_bootstrap_inputs_are_caught_up() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = {
        let seen = seen.clone();
        TaskRegistry::new()
            .register_with("rec", move |_| Ok(Box::new(CatchUpRecorder(Recorder { seen: seen.clone() }))))
    };
    let toml = format!("{TWO_INPUTS}bootstrap = true\n");
    let mut t = TestRunner::with_config(tasks, &toml, &["task.poll-batch=7".into()]).unwrap();
    t.create_stream("main", 2);
    t.create_stream("side", 2);
    t.create_stream("events", 1);
    for i in 0..30 {
        t.send_to("main", 0, None, &format!("m0-{i}"));
        t.send_to("main", 1, None, &format!("m1-{i}"));
        t.send_to("side", 0, None, &format!("s0-{i}"));
    }
    // Partition 1's bootstrap partition is empty: its task is caught up at once.
    t.run().unwrap();
    let seen = seen.lock().unwrap();
    let caught: Vec<usize> =
        seen.iter().enumerate().filter(|(_, s)| s.starts_with("caught up")).map(|(i, _)| i).collect();
    assert_eq!(caught.len(), 2, "once per task: {seen:?}");
    assert_eq!(caught[0], 0, "the task without bootstrap input first: {seen:?}");
    // The other right after the last bootstrap message, before any main one.
    assert_eq!(seen[caught[1] - 1], "side:s0-29", "{seen:?}");
    assert_eq!(seen.iter().position(|s| s.starts_with("main:")), Some(caught[1] + 1), "{seen:?}");
    assert_eq!(t.values("events"), ["caught up", "caught up"], "what caught_up sends is delivered");
}
