//! A full disk under a store fails the container with a clear message and
//! loses nothing: the checkpoint does not move past what the store holds.
//! Mounts a 2 MiB tmpfs (needs root, as CI and the dev machines have).

use std::process::Command;

use samza_container::testing::TestRunner;
use samza_task_api::*;

#[derive(Default)]
struct Count {
    counts: Option<KeyValueStore<String, i64>>,
}

impl StreamTask for Count {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.counts = Some(ctx.store("counts", StringSerde, I64Serde)?);
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let c = self.counts.as_ref().unwrap();
        let k = env.message_str()?.to_string();
        let n = c.get(&k)?.unwrap_or(0) + 1;
        c.put(&k, &n)
    }
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_under_a_store_fails_the_container_clearly_without_moving_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let ok =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&state).status().unwrap();
    assert!(ok.success(), "this test mounts a small tmpfs and needs root");
    let _mount = Mount(state.clone());

    let toml = format!(
        r#"[job]
name = "full"
state-dir = "{}"
[task]
class = "count"
inputs = ["mem.in"]
commit-ms = 100000
[systems.mem]
type = "in-memory"
[systems.mem.streams.in]
bounded = true
[stores.counts]
engine = "rocksdb"
changelog = "mem.counts-changelog"
write-batch-entries = 20000
"#,
        state.display()
    );
    let mut t = TestRunner::with_config(TaskRegistry::new().register::<Count>("count"), &toml, &[]).unwrap();
    t.create_stream("in", 1);
    for i in 0..200_000 {
        t.send("in", None, &format!("a-rather-long-key-for-user-number-{i}"));
    }
    let err = t.run().unwrap_err().to_string();
    assert!(err.contains("store counts of task Partition 0"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // The failed commit wrote no checkpoint past what the store holds.
    let cps = t.checkpoints();
    let at = cps.values().next().map_or(0, |c| c.offsets[0].offset);
    assert!(at < 200_000, "checkpoint at {at}");
}
