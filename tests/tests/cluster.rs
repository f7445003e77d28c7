//! The cluster scheduler with real processes on loopback: a resource manager
//! and node managers (`samza-rm`, `samza-nm`), jobs submitted with
//! `samza-run`, and SIGKILL for the coordinator, the resource manager and
//! crashing containers; plus the token and package checks.

mod common;

use samza_scheduler::grant::GrantKey;
use samza_scheduler::now_ms;
use std::time::{Duration, Instant};

use common::*;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;
use samza_test_support::wait_for;
#[test]
fn bounded_job_succeeds_and_a_killed_coordinator_is_replaced_while_containers_keep_running() {
    let s = Setup::new(3);
    s.input(30_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 500000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let before: Vec<(String, u32)> =
        running_job_containers(&info).iter().map(|c| (c.id.clone(), c.pid.unwrap())).collect();
    let am = coordinator(&info).unwrap();
    assert_eq!(info.attempt, 1);
    let token_of = |pid: u32| environ(pid).get("SAMZA_COORDINATOR_TOKEN").cloned().unwrap();
    let first_token = token_of(am.pid.unwrap());
    // SAFETY: the coordinator is a process of this test's cluster.
    unsafe { libc::kill(am.pid.unwrap() as i32, libc::SIGKILL) };

    let info2 = s.wait(&app, "a second coordinator attempt running", Duration::from_secs(30), |i| {
        i.attempt == 2 && coordinator(i).is_some_and(|c| c.state == ContainerState::Running)
    });
    // Each attempt has a token of its own: the first one's no longer works.
    assert_ne!(token_of(coordinator(&info2).unwrap().pid.unwrap()), first_token);
    let e =
        Client::new(&s.cluster.rm_url, &first_token).get::<AppInfo>(&format!("/v1/apps/{app}")).unwrap_err();
    assert!(format!("{e:#}").contains("401"), "{e:#}");
    std::thread::sleep(Duration::from_secs(1));
    let info2 = s.app(&app);
    let after: Vec<(String, u32)> =
        running_job_containers(&info2).iter().map(|c| (c.id.clone(), c.pid.unwrap())).collect();
    if after != before {
        // What the containers that ended said last.
        let logs: Vec<String> = info2
            .containers
            .iter()
            .filter(|c| c.state.is_done())
            .map(|c| {
                let p = s.cluster.dir.join(format!("{}/containers/{}/stderr", c.node, c.id));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!("{}: {}", c.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect();
        panic!(
            "the new attempt did not adopt the running containers: {after:?} != {before:?}\n{:#?}\n{}",
            info2.events,
            logs.join("\n\n")
        );
    }
    assert!(before.iter().all(|(_, pid)| alive(*pid)));

    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    assert_eq!(s.out_count(), 60_000, "every input message copied exactly once");
    let text = s.status_text(&app);
    assert!(text.contains("SUCCEEDED") && text.contains("coordinator attempt 2"), "{text}");
}

#[test]
fn a_restarted_resource_manager_recovers_applications_and_nodes_and_kills_nothing() {
    let mut s = Setup::new(2);
    s.input(30_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 500000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let pids = running_pids(&info);
    assert_eq!(pids.len(), 3, "coordinator and two containers");

    let _ = s.cluster.rm.kill();
    let _ = s.cluster.rm.wait();
    std::thread::sleep(Duration::from_secs(2));
    s.cluster.restart_rm().unwrap();

    let start = Instant::now();
    loop {
        let nodes: Vec<NodeInfo> = s.rm().get("/v1/nodes").unwrap();
        if nodes.len() == 2 && nodes.iter().all(|n| n.state == NodeState::Running) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "nodes did not register again: {nodes:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = s.app(&app);
    assert_eq!(info.state, AppState::Running);
    assert_eq!(info.attempt, 1, "the coordinator kept running through the restart");
    for pid in &pids {
        assert!(alive(*pid), "pid {pid} survived the resource manager restart");
    }
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    assert_eq!(s.out_count(), 60_000);
}

#[test]
fn a_container_that_crashes_on_every_start_spends_the_budget_and_fails_the_job() {
    let s = Setup::new(2);
    s.input(100);
    let job = s.job("fail", "retry-count = 2\n\n[params]\nfail-on = \"p0-5\"\n");
    let app = s.submit(&job);
    let done = s.wait(&app, "FAILED", Duration::from_secs(90), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Failed, "{:#?}", done.events);
    let reason = done.reason.clone().unwrap();
    assert!(reason.contains("3 container failures within 300 s (budget 2)"), "{reason}");
    assert!(reason.contains("refusing message"), "the container's error is in the reason: {reason}");
    let failed_starts =
        done.containers.iter().filter(|c| c.role != Role::Coordinator && c.exit_code == Some(1)).count();
    assert_eq!(failed_starts, 3, "three starts of the failing container");
    let text = s.status_text(&app);
    assert!(text.contains("FAILED") && text.contains("budget 2"), "{text}");
    // `samza-run` following the job exits non-zero with the reason.
    let out = s.samza_run(&["logs", &app, "0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("refusing message"), "logs: {out:?}");
}

#[test]
fn requests_without_the_token_and_packages_with_a_wrong_hash_are_refused() {
    let s = Setup::new(1);
    let http = reqwest::blocking::Client::new();
    let nm_url = std::fs::read_to_string(s.cluster.dir.join("node-1/nm.url")).unwrap();
    for url in [
        format!("{}/v1/apps", s.cluster.rm_url),
        format!("{}/v1/nodes", s.cluster.rm_url),
        format!("{nm_url}/v1/containers"),
    ] {
        let r = http.get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{url} without a token");
        let r = http.get(&url).bearer_auth("wrong").send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{url} with a wrong token");
        let r = http.get(&url).bearer_auth(&s.cluster.token).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url} with the token");
    }
    let rm = s.rm();
    // Uploads are checked against the hash they claim.
    let e = rm
        .put_bytes(&format!("/v1/packages/{}", "ab".repeat(32)), b"#!/bin/sh\necho hi\n".to_vec())
        .unwrap_err();
    assert!(format!("{e:#}").contains("package hash mismatch"), "{e:#}");
    // A package corrupted at rest is refused by the node before it runs.
    let script = b"#!/bin/sh\ntouch ran\n".to_vec();
    let sha = samza_scheduler::auth::sha256_hex(&script);
    std::fs::write(s.cluster.dir.join("rm/packages").join(&sha), b"#!/bin/sh\ntouch pwned\n").unwrap();
    // Launches take the node's launch token of the application and carry
    // the application's token, which the grant names (the test holds the
    // operator's secret, so it signs as the RM does).
    let keys = samza_scheduler::auth::Keys::new(&s.cluster.token);
    let key = keys.grant_key("node-1", 0);
    let app_token = "samza-app.x.not-issued-by-the-rm";
    let token_sha = samza_scheduler::auth::sha256_hex(app_token.as_bytes());
    let nm = Client::new(&nm_url, &key.launch_token("x"));
    let size = Resources { memory_mb: 64, vcores: 1 };
    let mut launch = Launch {
        container: "x-c1".into(),
        app: "x".into(),
        package_sha256: sha,
        args: vec![],
        env: Default::default(),
        files: Default::default(),
        resources: size,
        stop_grace_ms: 1000,
        grant: None,
        app_token: app_token.into(),
    };
    // A node launches only what the RM allocated, at the size it accounted for.
    let e = nm.post::<_, NodeContainer>("/v1/containers", &launch).unwrap_err();
    assert!(
        format!("{e:#}").contains("403")
            && format!("{e:#}")
                .contains("the launch of x-c1 carries no allocation grant from the resource manager"),
        "{e:#}"
    );
    for forger in [GrantKey::from_secret("not the cluster's"), keys.grant_key("node-2", 0)] {
        launch.grant = Some(forger.sign("x-c1", "x", "node-1", size, &token_sha, now_ms()));
        let e = nm.post::<_, NodeContainer>("/v1/containers", &launch).unwrap_err();
        assert!(format!("{e:#}").contains("is not signed by this cluster's resource manager"), "{e:#}");
    }
    // A real grant, sent with anything but x's launch token on this node.
    launch.grant = Some(key.sign("x-c1", "x", "node-1", size, &token_sha, now_ms()));
    for (other, status, why) in [
        // An application's token this node knows no container of (a known
        // one is 403: tests/credentials.rs).
        (app_token.to_string(), 401, "not a token this node manager accepts"),
        (s.cluster.token.clone(), 403, "a launch takes this node's launch token"),
        (key.launch_token("y"), 403, "the launch token is application y's; the launch is for \"x\""),
        (keys.grant_key("node-2", 0).launch_token("x"), 401, "not a token this node manager accepts"),
    ] {
        let e = Client::new(&nm_url, &other).post::<_, NodeContainer>("/v1/containers", &launch).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(&status.to_string()) && e.contains(why), "{other}: {e}");
    }
    // The grant names the token the process is to get: no other.
    for (other, why) in [
        ("samza-app.x.another-token", "does not come with the token of the application the grant is for"),
        ("samza-app.y.another-apps-token", "the launch of x-c1 carries no token of application x"),
    ] {
        let l = Launch { app_token: other.into(), ..launch.clone() };
        let e = nm.post::<_, NodeContainer>("/v1/containers", &l).unwrap_err();
        assert!(format!("{e:#}").contains(why), "{other}: {e:#}");
    }
    let unlimited = Launch { resources: Resources { memory_mb: 0, vcores: 1 }, ..launch.clone() };
    let e = nm.post::<_, NodeContainer>("/v1/containers", &unlimited).unwrap_err();
    assert!(format!("{e:#}").contains("allows 64 MB and 1 vcores; the launch asks for 0 MB"), "{e:#}");
    let elsewhere =
        Launch { grant: Some(key.sign("x-c1", "x", "node-2", size, &token_sha, now_ms())), ..launch.clone() };
    let e = nm.post::<_, NodeContainer>("/v1/containers", &elsewhere).unwrap_err();
    assert!(format!("{e:#}").contains("the grant is for node \"node-2\""), "{e:#}");
    let e = nm.post::<_, NodeContainer>("/v1/containers", &launch).unwrap_err();
    assert!(format!("{e:#}").contains("package hash mismatch"), "{e:#}");
    assert!(!s.cluster.dir.join("node-1/containers/x-c1/pwned").exists());
    // Names cannot leave their directory.
    let evil = Launch { container: "../../x".into(), ..launch };
    let e = nm.post::<_, NodeContainer>("/v1/containers", &evil).unwrap_err();
    assert!(format!("{e:#}").contains("invalid container"), "{e:#}");
}

#[test]
fn a_restarted_node_manager_readopts_its_running_containers() {
    let mut s = Setup::new(1);
    s.input(30_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 400000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let before: Vec<(String, u32)> = info
        .containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| (c.id.clone(), c.pid.unwrap()))
        .collect();
    // kill -9 the node manager alone; its containers keep running.
    let (_, nm) = s.cluster.nodes.iter_mut().find(|(n, _)| n == "node-1").unwrap();
    nm.kill().unwrap();
    nm.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(before.iter().all(|(_, pid)| alive(*pid)));
    s.cluster.start_node("node-1").unwrap();
    s.cluster.wait_node_ready("node-1").unwrap();
    let nm_url = std::fs::read_to_string(s.cluster.dir.join("node-1/nm.url")).unwrap();
    let listed: Vec<NodeContainer> = Client::new(&nm_url, &s.cluster.token).get("/v1/containers").unwrap();
    for (id, pid) in &before {
        let c =
            listed.iter().find(|c| &c.id == id).unwrap_or_else(|| panic!("{id} not re-adopted: {listed:?}"));
        assert_eq!((c.state, c.pid), (ContainerState::Running, Some(*pid)), "{id}");
    }
    // The job finishes; exits of re-adopted containers are read from their
    // exit-code files, so they count as finished, not failed.
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    assert_eq!(done.attempt, 1);
    let job_containers: Vec<&ContainerInfo> =
        done.containers.iter().filter(|c| c.role != Role::Coordinator).collect();
    assert_eq!(job_containers.len(), 2, "no container was restarted: {:#?}", done.events);
    assert!(job_containers.iter().all(|c| c.exit_code == Some(0)), "{job_containers:#?}");
    assert_eq!(s.out_count(), 60_000);
}

#[test]
fn a_container_over_its_memory_limit_is_killed_with_the_reason() {
    let s = Setup::new(1);
    s.input(30_000);
    let job = s.job("copy", "retry-count = 0\n\n[params]\nsleep-us = 200000\n");
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("container-memory-mb = 512", "container-memory-mb = 1");
    std::fs::write(&job, text).unwrap();
    let app = s.submit(&job);
    let done = s.wait(&app, "FAILED", Duration::from_secs(60), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Failed, "{:#?}", done.events);
    let reason = done.reason.unwrap();
    assert!(
        reason.contains("resident memory") && reason.contains("exceeds the container's 1 MB"),
        "{reason}"
    );
}

#[test]
fn containers_get_the_job_model_from_the_coordinator_and_a_hung_one_is_replaced() {
    let s = Setup::new(2);
    s.input(30_000);
    let job = s.job("copy", "container-heartbeat-timeout-ms = 3000\n\n[params]\nsleep-us = 300000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let hung =
        running_job_containers(&info).into_iter().find(|c| c.role == Role::Container(0)).unwrap().clone();
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: a container process of this test's cluster; stopped, not killed.
    unsafe { libc::kill(hung.pid.unwrap() as i32, libc::SIGSTOP) };
    let info = s.wait(&app, "container 0 replaced", Duration::from_secs(30), |i| {
        i.containers
            .iter()
            .any(|c| c.role == Role::Container(0) && c.id != hung.id && c.state == ContainerState::Running)
    });
    let old = info.containers.iter().find(|c| c.id == hung.id).unwrap();
    assert!(matches!(old.state, ContainerState::Killed | ContainerState::Running), "{old:?}");
    let state = info.coordinator_state.as_ref().expect("the coordinator saved its state");
    assert_eq!(state.containers[&0].restarts, 1, "{state:#?}");
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    s.wait(&app, "the hung container stopped", Duration::from_secs(15), |i| {
        i.containers.iter().any(|c| c.id == hung.id && c.state == ContainerState::Killed)
    });
    assert!(s.out_count() >= 60_000, "at least once");
    let out = s.samza_run(&["logs", &app, "1"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("JobModel from the coordinator"), "{log}");
}

#[test]
fn samza_run_kill_stops_the_application_and_its_containers() {
    let s = Setup::new(2);
    s.input(30_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 500000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let pids = running_pids(&info);
    let out = s.samza_run(&["kill", &app]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{app} KILLED"));
    let done = s.wait(&app, "every container stopped", Duration::from_secs(30), |i| {
        i.containers.iter().all(|c| c.state.is_done())
    });
    assert_eq!(done.state, AppState::Killed);
    assert!(done.containers.iter().all(|c| c.state == ContainerState::Killed), "{:#?}", done.containers);
    let start = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        assert!(start.elapsed() < Duration::from_secs(10), "processes still alive after the kill");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_submission_and_a_stale_attempt_are_refused() {
    let s = Setup::new(2);
    s.input(30_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 500000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    // The same job again, while it runs: refused, naming the running application.
    let out = s.samza_run(&[job.to_str().unwrap(), "--detach"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("job copy-job is running already as application {app} (RUNNING)")),
        "{err}"
    );
    // A coordinator attempt that is not the current one changes nothing.
    let rm = s.rm();
    let stale = info.attempt + 1;
    let e = rm
        .put(&format!("/v1/apps/{app}/coordinator-state?attempt={stale}"), &serde_json::json!({}))
        .unwrap_err();
    let h = e.downcast_ref::<samza_scheduler::client::HttpError>().expect("an HTTP error");
    assert_eq!(h.status, 409, "{e:#}");
    assert!(h.message.contains(&format!("coordinator attempt {stale} is not the current one (1)")), "{e:#}");
    let finish = Finish { state: AppState::Failed, reason: Some("stale".into()), attempt: stale };
    let e = rm.post::<_, AppInfo>(&format!("/v1/apps/{app}/finish"), &finish).unwrap_err();
    assert!(e.to_string().contains("is not the current one"), "{e:#}");
    let alloc = Allocate { attempt: stale, ..Default::default() };
    let e = rm.post::<_, AllocateReply>(&format!("/v1/apps/{app}/allocate"), &alloc).unwrap_err();
    assert!(e.to_string().contains("is not the current one"), "{e:#}");
    let after = s.app(&app);
    assert_eq!(after.state, AppState::Running, "{:#?}", after.events);
    assert_ne!(
        after.coordinator_state,
        Some(CoordinatorState::default()),
        "the stale attempt's state was not taken"
    );
    // Once it is killed, the job may run again. `kill` returns only once
    // every container of it has stopped.
    let out = s.samza_run(&["kill", &app]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = s.app(&app);
    assert!(killed.containers.iter().all(|c| c.state.is_done()), "{:#?}", killed.containers);
    let again = s.submit(&job);
    assert_ne!(again, app);
}

#[test]
fn a_node_manager_with_an_unreadable_table_starts_and_reports_what_its_containers_left() {
    let mut s = Setup::new(1);
    s.input(20_000);
    let job = s.job("copy", "\n[params]\nsleep-us = 100000\n");
    let app = s.submit(&job);
    let info = s.wait_running(&app);
    let job_pids: Vec<u32> = running_job_containers(&info).iter().filter_map(|c| c.pid).collect();
    assert_eq!(job_pids.len(), 2, "{:#?}", info.containers);
    // kill -9 the node manager; its job containers finish their bounded input meanwhile.
    let (_, nm) = s.cluster.nodes.iter_mut().find(|(n, _)| n == "node-1").unwrap();
    nm.kill().unwrap();
    nm.wait().unwrap();
    let start = Instant::now();
    while job_pids.iter().any(|p| alive(*p)) {
        assert!(start.elapsed() < Duration::from_secs(8), "the containers did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A torn table: the node manager starts anyway, from the containers' own records.
    std::fs::write(s.cluster.dir.join("node-1/containers.json"), b"{\"app-0001-c2\": {\"info\"").unwrap();
    s.cluster.start_node("node-1").unwrap();
    assert!(s.cluster.dir.join("node-1/containers.json.unreadable").is_file());
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(60), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    let job_containers: Vec<&ContainerInfo> =
        done.containers.iter().filter(|c| c.role != Role::Coordinator).collect();
    assert_eq!(job_containers.len(), 2, "none run again: {:#?}", done.events);
    assert!(
        job_containers.iter().all(|c| c.exit_code == Some(0)),
        "their real exit codes: {job_containers:#?}"
    );
    assert_eq!(s.out_count(), 40_000);
}

#[test]
fn a_job_whose_input_does_not_exist_is_refused_before_it_is_submitted() {
    let s = Setup::new(1);
    let job = s.job("copy", "");
    let out = s.samza_run(&[job.to_str().unwrap(), "--detach"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input stream log.in does not exist and declares no partition count"), "{err}");
    let apps: Vec<AppInfo> = s.rm().get("/v1/apps").unwrap();
    assert!(apps.is_empty(), "no application (and no coordinator attempt) for it: {apps:#?}");
}

/// Sends `POST path` declaring a body of `declared` bytes and sending at
/// most `len` of them (as far as the server reads), and returns the status
/// line and the body of the answer.
fn post_big(url: &str, token: &str, path: &str, declared: usize, len: usize) -> (String, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {declared}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < len {
        // The server stops reading at its limit and answers: a failing write
        // means it has.
        if tcp.write_all(&chunk[..chunk.len().min(len - sent)]).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn a_body_over_its_routes_limit_is_refused_with_413_naming_the_route() {
    let s = Setup::new(1);
    let nm_url = std::fs::read_to_string(s.cluster.dir.join("node-1/nm.url")).unwrap();
    let limit = samza::http::JSON_BODY_LIMIT;
    // Launches take the node's launch token of an application.
    let launch_token =
        samza_scheduler::auth::Keys::new(&s.cluster.token).grant_key("node-1", 0).launch_token("x");
    for (url, path, token) in [
        (&s.cluster.rm_url, "/v1/apps", s.cluster.token.as_str()),
        (&s.cluster.rm_url, "/v1/nodes/node-1/heartbeat", s.cluster.token.as_str()),
        (&nm_url, "/v1/containers", launch_token.as_str()),
    ] {
        // 1 GiB declared, 5 MiB sent: the answer comes without the rest.
        let (status, body) = post_big(url, token, path, 1 << 30, limit + (1 << 20));
        assert!(status.contains(" 413 "), "{path}: {status} {body}");
        assert!(
            body.contains(&format!("the request body of POST {path} is over its limit of {limit} bytes")),
            "{path}: {body}"
        );
    }
    // A body under the limit is read and judged on what it says.
    let (status, body) = post_big(&s.cluster.rm_url, &s.cluster.token, "/v1/apps", 1 << 20, 1 << 20);
    assert!(status.contains(" 400 ") || status.contains(" 422 "), "{status} {body}");
    assert_eq!(s.rm().get::<Vec<AppInfo>>("/v1/apps").unwrap().len(), 0, "nothing was accepted");
}

#[test]
fn a_package_replaced_in_a_nodes_cache_is_never_run() {
    let s = Setup::new(1);
    let nm_url = std::fs::read_to_string(s.cluster.dir.join("node-1/nm.url")).unwrap();
    let script = b"#!/bin/sh\ntouch ran\n".to_vec();
    let sha = samza_scheduler::auth::sha256_hex(&script);
    s.rm().put_bytes(&format!("/v1/packages/{sha}"), script).unwrap();
    let app_token = "samza-app.x.not-issued-by-the-rm";
    let token_sha = samza_scheduler::auth::sha256_hex(app_token.as_bytes());
    let key = samza_scheduler::auth::Keys::new(&s.cluster.token).grant_key("node-1", 0);
    let nm = Client::new(&nm_url, &key.launch_token("x"));
    let size = Resources { memory_mb: 64, vcores: 1 };
    let launch = |id: &str| Launch {
        container: id.into(),
        app: "x".into(),
        package_sha256: sha.clone(),
        args: vec![],
        env: Default::default(),
        files: Default::default(),
        resources: size,
        stop_grace_ms: 1000,
        grant: Some(key.sign(id, "x", "node-1", size, &token_sha, now_ms())),
        app_token: app_token.into(),
    };
    let ran = |id: &str| s.cluster.dir.join(format!("node-1/containers/{id}/ran"));
    let _: NodeContainer = nm.post("/v1/containers", &launch("x-c1")).unwrap();
    wait_for("the first launch to run", Duration::from_secs(10), || ran("x-c1").exists());
    // Someone replaces the cached package with another file.
    let cached = s.cluster.dir.join("node-1/packages").join(&sha);
    std::fs::remove_file(&cached).unwrap();
    std::fs::write(&cached, b"#!/bin/sh\ntouch pwned\n").unwrap();
    let _: NodeContainer = nm.post("/v1/containers", &launch("x-c2")).unwrap();
    wait_for("the second launch to run", Duration::from_secs(10), || ran("x-c2").exists());
    assert!(!s.cluster.dir.join("node-1/containers/x-c2/pwned").exists(), "the replaced file ran");
    assert_eq!(samza_scheduler::auth::sha256_hex(&std::fs::read(&cached).unwrap()), sha, "fetched again");

    // A grant launches once: replayed, even once its container ended and
    // its directory is gone, it is refused (after the table forgot it too:
    // scheduler/src/nm.rs a_grant_launches_once_also_after_the_table_forgot_its_container).
    let once = "a grant launches once";
    let e = nm.post::<_, NodeContainer>("/v1/containers", &launch("x-c1")).unwrap_err();
    assert!(format!("{e:#}").contains("409") && format!("{e:#}").contains(once), "{e:#}");
    wait_for("x-c1 to end", Duration::from_secs(10), || {
        let all: Vec<NodeContainer> =
            Client::new(&nm_url, &s.cluster.token).get("/v1/containers").unwrap_or_default();
        all.iter().any(|c| c.id == "x-c1" && c.state.is_done())
    });
    std::fs::remove_dir_all(s.cluster.dir.join("node-1/containers/x-c1")).unwrap();
    let e = nm.post::<_, NodeContainer>("/v1/containers", &launch("x-c1")).unwrap_err();
    assert!(format!("{e:#}").contains(once), "{e:#}");
    assert!(!s.cluster.dir.join("node-1/containers/x-c1").exists(), "the replay made nothing");
    // A directory already there is never written into: what is in it (here
    // a link to a file of the node's in place of a log) stays as it was.
    let kept = s.cluster.dir.join("node-1/nm.url");
    let before = std::fs::read(&kept).unwrap();
    let planted = s.cluster.dir.join("node-1/containers/x-c3");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&kept, planted.join("stdout")).unwrap();
    let e = nm.post::<_, NodeContainer>("/v1/containers", &launch("x-c3")).unwrap_err();
    assert!(format!("{e:#}").contains("409") && format!("{e:#}").contains(once), "{e:#}");
    assert_eq!(std::fs::read(&kept).unwrap(), before, "written through a planted link");
    // The node manager's own files of a container's directory are not a launch's to give.
    let mut own = launch("x-c4");
    own.files.insert("stdout".into(), "x".into());
    let e = nm.post::<_, NodeContainer>("/v1/containers", &own).unwrap_err();
    assert!(format!("{e:#}").contains("is the node manager's own"), "{e:#}");
    // ... and a launch refused for that, or refused before anything of it
    // was made here (a package the node cannot fetch), can be made right.
    let _: NodeContainer = nm.post("/v1/containers", &launch("x-c4")).unwrap();
    let unknown = Launch { package_sha256: "ab".repeat(32), ..launch("x-c5") };
    let e = nm.post::<_, NodeContainer>("/v1/containers", &unknown).unwrap_err();
    assert!(format!("{e:#}").contains("502"), "{e:#}");
    assert!(!s.cluster.dir.join("node-1/containers/x-c5").exists());
    let _: NodeContainer = nm.post("/v1/containers", &launch("x-c5")).unwrap();
    wait_for("x-c5 to run", Duration::from_secs(10), || ran("x-c5").exists());
}

/// Every file and directory under `dir` whose mode lets others than the
/// owner in (anything but 0600/0700-style modes).
fn open_to_others(dir: &std::path::Path, out: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        if m.permissions().mode() & 0o077 != 0 {
            out.push(format!("{} {:o}", e.path().display(), m.permissions().mode() & 0o777));
        }
        if m.is_dir() {
            open_to_others(&e.path(), out);
        }
    }
}

#[test]
fn the_daemons_state_packages_logs_and_stores_are_their_owners_only() {
    let s = Setup::new(1);
    s.input(200);
    let job = s.job("copy", "[stores.seen]\nengine = \"rocksdb\"\nchangelog = \"log.seen-changelog\"\n");
    let app = s.submit(&job);
    let done = s.wait(&app, "the job to succeed", Duration::from_secs(60), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    let mut open = Vec::new();
    for d in ["rm", "node-1"] {
        open_to_others(&s.cluster.dir.join(d), &mut open);
    }
    assert!(open.is_empty(), "readable by others: {open:#?}");
    // What was checked: the RM's state and packages, a container's directory
    // and logs, and a task's store (with its marker).
    for f in ["rm/state.json", "rm/token", "node-1/containers.json"] {
        assert!(s.cluster.dir.join(f).is_file(), "{f}");
    }
    for d in ["rm/packages", "node-1/packages"] {
        assert_eq!(std::fs::read_dir(s.cluster.dir.join(d)).unwrap().count(), 1, "the job's package in {d}");
    }
    let logs =
        done.containers.iter().map(|c| s.cluster.dir.join(format!("{}/containers/{}/stderr", c.node, c.id)));
    assert!(logs.clone().all(|l| l.is_file()), "every container's log: {:?}", logs.collect::<Vec<_>>());
    let stores = s.cluster.dir.join("node-1/state/copy-job/stores/seen");
    assert!(std::fs::read_dir(&stores).unwrap().count() > 0, "a store was written in {}", stores.display());
}

#[test]
fn secrets_of_a_job_file_are_never_shown_and_the_job_still_gets_them() {
    let s = Setup::new(1);
    s.input(2_000);
    let job = s
        .job_toml("copy")
        .set("systems.log.streams.in.bounded", true)
        .set("job.secret-keys", vec!["params.note".to_string()])
        .set("params.db-password", "hunter2")
        .set("params.note", "hunter3")
        .set("params.page", "/home")
        .write(s.dir.path());
    let app = s.submit(&job);
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(60), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    // Shown: redacted, everything else as written.
    let listed = serde_json::to_string(&s.rm().get::<serde_json::Value>("/v1/apps").unwrap()).unwrap();
    let one =
        serde_json::to_string(&s.rm().get::<serde_json::Value>(&format!("/v1/apps/{app}")).unwrap()).unwrap();
    let status = s.samza_run(&["status", &app, "--json"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    for (what, text) in
        [("/v1/apps", &listed), ("/v1/apps/{app}", &one), ("samza-run status --json", &status)]
    {
        assert!(!text.contains("hunter2") && !text.contains("hunter3"), "{what} shows a secret: {text}");
    }
    assert!(one.contains("<redacted>") && one.contains("/home"), "{one}");
    // The coordinator read the file whole, and the containers got it.
    let file: JobFile = s.rm().get(&format!("/v1/apps/{app}/config")).unwrap();
    assert!(file.config.contains("hunter2") && file.config.contains("hunter3"));
    let c = done.containers.iter().find(|c| c.role == Role::Container(0)).unwrap();
    let given = std::fs::read_to_string(s.cluster.dir.join("node-1/containers").join(&c.id).join("job.toml"))
        .unwrap();
    assert!(given.contains("hunter2"), "{given}");
    // Nor do the daemons' logs show them.
    for log in ["rm.log", "node-1.log"] {
        let text = std::fs::read_to_string(s.cluster.dir.join(log)).unwrap_or_default();
        assert!(!text.contains("hunter2"), "{log} shows a secret");
    }
}
