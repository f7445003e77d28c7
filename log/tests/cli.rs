//! The `samza-log` command line, run as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CLI: &str = env!("CARGO_BIN_EXE_samza-log");

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(CLI)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(dir, args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn create_produce_consume_describe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["create", "views", "--partitions", "3"], None);
    ok(d, &["produce", "views", "--key-separator", ","], Some("u1,/a\nu2,/b\nu1,/c\n"));
    let p_u1 = samza_task_api::partition_for_key(b"u1", 3);
    let p_u2 = samza_task_api::partition_for_key(b"u2", 3);
    let mut expected = vec![format!("{p_u1}\t0\tu1\t/a"), format!("{p_u1}\t1\tu1\t/c")];
    expected.insert(if p_u2 < p_u1 { 0 } else { 2 }, format!("{p_u2}\t0\tu2\t/b"));
    let out = ok(d, &["consume", "views"], None);
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    // Keyed by a JSON field; the whole line is the value.
    ok(d, &["produce", "views", "--key-field", "user"], Some("{\"user\":\"u2\",\"page\":\"/x\"}\n"));
    let out = ok(d, &["consume", "views", "--partition", &p_u2.to_string(), "--from", "newest"], None);
    assert_eq!(out, format!("{p_u2}\t1\tu2\t{{\"user\":\"u2\",\"page\":\"/x\"}}\n"));

    let out = ok(
        d,
        &["consume", "views", "--partition", &p_u1.to_string(), "--from", "1", "--format", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["offset"].as_u64(), v["key"].as_str(), v["value"].as_str()),
        (Some(1), Some("u1"), Some("/c"))
    );

    let out = ok(d, &["describe", "views", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total: u64 =
        v["partitions"].as_array().unwrap().iter().map(|p| p["upcoming"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);
    assert_eq!(ok(d, &["list"], None), "views\t3 partitions\n");
}

#[test]
fn bad_input_is_named_and_earlier_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["create", "s", "-p", "1"], None);
    let out = run(
        d,
        &["produce", "s", "--key-field", "id"],
        Some("{\"id\":1}\n{\"id\":2}\nnot json\n{\"id\":3}\n"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3 of stdin: not valid JSON"), "{err}");
    assert_eq!(ok(d, &["consume", "s"], None).lines().count(), 2, "lines before the bad one were written");

    let out = run(d, &["consume", "nope"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream nope does not exist"));
    let out = run(d, &["consume", "s", "--from", "7"], None);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("offset 7 is out of range for stream s partition 0 (oldest 0, upcoming 2)"));
    let out = run(d, &["create", "s", "-p", "1"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream s already exists"));
    let out = run(d, &["create", "t", "-p", "1", "--fsync", "sometimes"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid fsync policy \"sometimes\""));
}

#[test]
fn help_explains_each_command() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["create", "list", "describe", "delete", "produce", "consume", "get", "compact"] {
        let out = ok(dir.path(), &[cmd, "--help"], None);
        assert!(out.len() > 100, "{cmd} --help: {out}");
    }
}

#[test]
fn transactions_are_listed_consumed_committed_only_and_finished_for_a_producer_gone_for_good() {
    use samza_task_api::{OutgoingMessageEnvelope, ProducerOwner, SystemProducer, SystemStream};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["create", "out", "--partitions", "2"], None);
    // A producer commits one record to partition 0, then dies with one open in partition 1.
    let log = samza_log::Log::open(d).unwrap();
    let mut p = samza_log::system::LogSystemProducer::new(log);
    p.init_transactions(&ProducerOwner { id: "job/container-0".into(), epoch: 5 }).unwrap();
    let send = |p: &mut samza_log::system::LogSystemProducer, partition: u32, v: &str| {
        let env = OutgoingMessageEnvelope::new(
            SystemStream::new("log", "out"),
            None,
            Some(v.as_bytes().to_vec().into()),
        )
        .with_partition(partition);
        p.send(env).unwrap();
    };
    send(&mut p, 0, "committed");
    p.commit_transaction().unwrap();
    send(&mut p, 1, "open");
    p.flush().unwrap();
    drop(p);

    assert_eq!(ok(d, &["consume", "out"], None), "0\t0\tnull\tcommitted\n");
    assert_eq!(
        ok(d, &["consume", "out", "--read-uncommitted"], None),
        "0\t0\tnull\tcommitted\n1\t0\tnull\topen\n"
    );
    assert_eq!(
        ok(d, &["transactions"], None),
        "job/container-0\tgeneration 5\tcommitted 1\tpartitions 2\tunfinished []\n"
    );
    // Records appended after the open transaction wait behind it ...
    ok(d, &["produce", "out", "--partition", "1"], Some("later\n"));
    assert_eq!(ok(d, &["consume", "out", "--partition", "1"], None), "");
    // ... until it is finished.
    let out = ok(d, &["finish-transactions", "job/container-0"], None);
    assert_eq!(out, "finished job/container-0: generation 5 fenced, transaction 1 committed and 2 aborted in 2 partitions\n");
    assert_eq!(ok(d, &["consume", "out", "--partition", "1"], None), "1\t1\tnull\tlater\n");
    assert_eq!(ok(d, &["consume", "out", "--partition", "0"], None), "0\t0\tnull\tcommitted\n");
    let e = run(d, &["finish-transactions", "nobody"], None);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("no producer \"nobody\" writes transactions"));
}
