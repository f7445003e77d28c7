//! The dependency direction ARCHITECTURE.md promises, read from the crates'
//! manifests: the runtime and the scheduler know no system crate (system
//! types reach them through the job binary's registry), and the systems
//! depend on the task API only.

fn dependencies(krate: &str) -> Vec<String> {
    let path = format!("{}/../{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_deps = line.trim() == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                out.push(name.trim().trim_end_matches(".workspace").to_string());
            }
        }
    }
    out
}

#[test]
fn the_runtime_knows_no_system_and_systems_know_only_the_task_api() {
    for krate in ["container", "scheduler", "state"] {
        let deps = dependencies(krate);
        for system in ["samza-log", "samza-kafka"] {
            assert!(!deps.contains(&system.to_string()), "{krate} depends on {system}: {deps:?}");
        }
    }
    for system in ["log", "kafka"] {
        let ours: Vec<String> = dependencies(system).into_iter().filter(|d| d.starts_with("samza")).collect();
        assert_eq!(ours, ["samza-task-api"], "{system} depends on {ours:?}");
    }
}
