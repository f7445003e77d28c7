//! The page-view example's two jobs as one pipeline in the test harness: the
//! repartition job and the counter over shared in-memory streams, with the
//! stores the example's job files declare (RocksDB with changelogs), the
//! real run loop, and exact counts at the end. No files but the stores, no
//! processes.

use std::collections::BTreeMap;

use samza::testing::{Msg, TestJob, TestPipeline};
use samza::StringSerde;
use samza_examples::{page_view_counter, page_views, user_of};

#[test]
fn both_page_view_jobs_run_as_a_pipeline_with_exact_counts() {
    let p = TestPipeline::new();
    p.stream("page-views", 3).stream("page-views-by-user", 4).stream("user-counts", 4);
    let (events, users) = (5_000u64, 97);
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    let mut times = BTreeMap::new();
    for i in 0..events {
        let user = format!("user-{}", user_of(i, users));
        *truth.entry(user.clone()).or_default() += 1;
        let time = 1_700_000_000_000 + i as i64;
        times.insert(i, time);
        let view =
            serde_json::json!({"user": user, "page": format!("/page/{}", i % 13), "time": time, "i": i});
        // Unkeyed, as a web tier writes them: spread over the partitions.
        p.send("page-views", Msg::json(&view).at(time));
    }

    let repartition = TestJob::new("page-views", page_views::tasks(), "repartition")
        .input("page-views")
        .containers(2)
        .set("params.output", "mem.page-views-by-user");
    p.run(&repartition).unwrap();
    let counter = TestJob::new("page-view-counter", page_view_counter::tasks(), "count")
        .input("page-views-by-user")
        .store("counts", "rocksdb")
        .store("emits", "rocksdb")
        .window_ms(1000)
        .containers(2)
        .set("params.output", "mem.user-counts");
    p.run(&counter).unwrap();

    // Job one: every view once, keyed by its user, in its user's partition,
    // with its event time.
    let by_user: Vec<(Option<String>, serde_json::Value)> =
        p.read("page-views-by-user", StringSerde, samza::JsonSerde);
    assert_eq!(by_user.len() as u64, events);
    for (partition, m) in
        (0..4).flat_map(|n| p.messages_in("page-views-by-user", n).into_iter().map(move |m| (n, m)))
    {
        let user = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
        assert_eq!(samza::partition_for_key(user.as_bytes(), 4), partition, "{user}");
        let view: serde_json::Value = serde_json::from_slice(&m.message.unwrap()).unwrap();
        assert_eq!(view["user"], user.as_str());
        assert_eq!(m.timestamp, times[&view["i"].as_u64().unwrap()], "the event time travels with the view");
    }

    // Job two: every user's last update is its count, and its updates are
    // numbered 1, 2, 3, ... with counts that only grow.
    let counts: BTreeMap<String, u64> = p
        .latest("user-counts", StringSerde, StringSerde)
        .into_iter()
        .map(|(user, n)| (user, n.parse().unwrap()))
        .collect();
    assert_eq!(counts, truth);
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in p.messages("user-counts") {
        let user = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
        let n: u64 = std::str::from_utf8(&m.message.unwrap()).unwrap().parse().unwrap();
        let seq: u64 = m
            .headers
            .iter()
            .find(|(h, _)| h == "seq")
            .map(|(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap())
            .expect("a seq header");
        let (prev_seq, prev_n) = last.get(&user).copied().unwrap_or((0, 0));
        assert_eq!(seq, prev_seq + 1, "{user}: updates numbered without gap or repeat");
        assert!(n > prev_n, "{user}: counts only grow");
        last.insert(user, (seq, n));
    }
    // Both jobs committed where their inputs end.
    let committed: u64 =
        p.checkpoints(&counter).values().flat_map(|c| c.offsets.iter().map(|e| e.offset)).sum();
    assert_eq!(committed, events, "the counter's checkpoints cover every view");
}
