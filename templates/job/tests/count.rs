//! The task on in-memory streams with the real run loop: no files, no processes.

use samza::testing::TestRunner;

#[test]
fn counts_each_key_and_emits_the_totals() {
    let job = r#"
        [job]
        name = "count-by-key"
        [task]
        class = "count-by-key"
        inputs = ["mem.events"]
        window-ms = 1000
        [systems.mem]
        type = "in-memory"
        [systems.mem.streams.events]
        bounded = true
        [stores.counts]
        engine = "in-memory"
        [params]
        output = "mem.counts"
    "#;
    let mut t = TestRunner::with_config(my_job::tasks(), job, &[]).unwrap();
    t.create_stream("events", 2);
    t.create_stream("counts", 1);
    for key in ["ann", "bob", "ann", "cy", "ann"] {
        t.send("events", Some(key), "{}");
    }
    t.run().unwrap();
    let mut last = std::collections::BTreeMap::new();
    for m in t.messages("counts", 0) {
        let key = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
        last.insert(key, String::from_utf8(m.message.unwrap().to_vec()).unwrap());
    }
    assert_eq!(last["ann"], "3");
    assert_eq!(last["bob"], "1");
    assert_eq!(last["cy"], "1");
}
