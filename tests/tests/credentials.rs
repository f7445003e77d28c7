//! Least privilege on a real local cluster: every route of the resource
//! manager, a node manager, a job coordinator and a container, tried with
//! every kind of credential (none, forged ones, the operator's, the
//! application's own, its coordinator's, another application's, the node's
//! launch token for the application, the node's own credential and another
//! node's), answers only those in its scope; no job process holds the
//! operator's token, and only the coordinator holds its own.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use samza_scheduler::proto::*;
use samza_test_support::wait_for;

/// The kinds of credentials tried on every route. No token, or a forged
/// one, is 401 everywhere; a credential out of its scope 401 or 403.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    NoToken,
    /// A forged application token naming the right application.
    Wrong,
    /// A forged coordinator token naming the right application.
    WrongCoordinator,
    Operator,
    /// What the application's containers hold.
    OwnApp,
    /// What only its coordinator holds.
    OwnCoordinator,
    OtherApp,
    /// Another application's coordinator token.
    OtherCoordinator,
    /// The node's launch token for the application (what the RM gives the
    /// coordinator with an allocation there).
    OwnLaunch,
    OwnNode,
    OtherNode,
}

const KINDS: [Kind; 11] = [
    Kind::NoToken,
    Kind::Wrong,
    Kind::WrongCoordinator,
    Kind::Operator,
    Kind::OwnApp,
    Kind::OwnCoordinator,
    Kind::OtherApp,
    Kind::OtherCoordinator,
    Kind::OwnLaunch,
    Kind::OwnNode,
    Kind::OtherNode,
];

/// One route, and the kinds it lets in (the others get 401 or 403).
struct Route {
    method: &'static str,
    url: String,
    body: Option<String>,
    passes: &'static [Kind],
}

fn route(method: &'static str, url: String, body: Option<&str>, passes: &'static [Kind]) -> Route {
    Route { method, url, body: body.map(str::to_string), passes }
}

fn send(http: &reqwest::blocking::Client, r: &Route, token: Option<&str>) -> (u16, String) {
    let mut req = http.request(r.method.parse().unwrap(), &r.url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = &r.body {
        req = req.header("content-type", "application/json").body(b.clone());
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

#[test]
fn every_route_answers_only_the_credentials_in_its_scope() {
    let s = Setup::new(2);
    s.input(100);
    let a = s.submit(&s.job_toml("copy").write(s.dir.path()));
    let dir_b = s.dir.path().join("b");
    std::fs::create_dir_all(&dir_b).unwrap();
    let log_dir = s.dir.path().join("log");
    let job_b =
        s.job_toml("copy").set("job.name", "copy-b").set("systems.log.dir", log_dir.to_str().unwrap());
    let b = s.submit(&job_b.write(&dir_b));
    let info_a = s.wait_running(&a);
    let info_b = s.wait_running(&b);

    // What the issue measured: a job's processes hold their application's
    // token, never the operator's, nor a file naming a credential; the
    // coordinator alone holds its own token.
    let mut tokens = BTreeMap::new();
    let mut coordinator_tokens = BTreeMap::new();
    for info in [&info_a, &info_b] {
        let coordinator_pid = coordinator(info).and_then(|c| c.pid).unwrap();
        let coordinator_token = environ(coordinator_pid).get("SAMZA_COORDINATOR_TOKEN").cloned().unwrap();
        assert!(coordinator_token.starts_with(&format!("samza-coordinator.{}.", info.app)));
        for pid in running_pids(info) {
            let env = environ(pid);
            let token = env.get("SAMZA_TOKEN").cloned().unwrap_or_default();
            assert!(token.starts_with(&format!("samza-app.{}.", info.app)), "{pid}: {token}");
            assert!(!env.values().any(|v| v.contains(&s.cluster.token)), "{pid} holds the operator's token");
            assert!(!env.contains_key("SAMZA_TOKEN_FILE"), "{pid} names a token file");
            if pid != coordinator_pid {
                assert!(
                    !env.values().any(|v| v.contains(&coordinator_token)),
                    "container {pid} holds its coordinator's token"
                );
            }
            tokens.insert(info.app.clone(), token);
        }
        coordinator_tokens.insert(info.app.clone(), coordinator_token);
    }
    assert_eq!(running_job_containers(&info_a).len(), 2, "containers to check: {info_a:?}");
    let credential =
        |node: &str| std::fs::read_to_string(s.cluster.dir.join(node).join("credential")).unwrap();
    // The node routes are tried on is one that runs a job container of `a`
    // (its manager knows `a`'s token from it).
    let c0 = running_job_containers(&info_a)[0].clone();
    let own_node = c0.node.clone();
    let other_node = if own_node == "node-1" { "node-2" } else { "node-1" };
    // Launch tokens are signed under a node's grant key (the test holds the
    // operator's secret, so it derives them as the resource manager does).
    let keys = samza_scheduler::auth::Keys::new(&s.cluster.token);
    let token_of = |k: Kind| -> Option<String> {
        match k {
            Kind::NoToken => None,
            // A forgery naming the right application.
            Kind::Wrong => Some(format!("samza-app.{a}.{}", "0".repeat(64))),
            Kind::WrongCoordinator => Some(format!("samza-coordinator.{a}.{}", "0".repeat(64))),
            Kind::Operator => Some(s.cluster.token.clone()),
            Kind::OwnApp => Some(tokens[&a].clone()),
            Kind::OwnCoordinator => Some(coordinator_tokens[&a].clone()),
            Kind::OtherApp => Some(tokens[&b].clone()),
            Kind::OtherCoordinator => Some(coordinator_tokens[&b].clone()),
            Kind::OwnLaunch => Some(keys.grant_key(&own_node, 0).launch_token(&a)),
            Kind::OwnNode => Some(credential(&own_node)),
            Kind::OtherNode => Some(credential(other_node)),
        }
    };
    // Application tokens do not turn into node credentials, nor into each other.
    assert_ne!(credential("node-1"), credential("node-2"));
    assert!(credential("node-1").starts_with("samza-node.node-1."));

    // The routes, with `a`'s ids and its node's; bodies that are refused for
    // what they say (400/422), so that a request let in changes nothing.
    use Kind::*;
    let rm = &s.cluster.rm_url;
    let nm = std::fs::read_to_string(s.cluster.dir.join(&own_node).join("nm.url")).unwrap();
    let c0 = c0.id;
    let coordinator_url = info_a.coordinator_state.as_ref().and_then(|st| st.url.clone()).unwrap();
    let metrics: serde_json::Value = s.rm().get(&format!("/v1/apps/{a}/metrics")).unwrap();
    let container_url = metrics["containers"]
        .as_object()
        .and_then(|m| m.values().find_map(|c| c["url"].as_str().map(str::to_string)))
        .expect("a container reports its address");
    let bad = Some("{not json");
    let sha = "ab".repeat(32);
    // The RM's routes of an application; those only its coordinator may
    // call; and those of its job processes, which serve behind the
    // application's token (and the operator's).
    let app_routes: &[Kind] = &[Operator, OwnApp, OwnCoordinator];
    let coordinator_routes: &[Kind] = &[Operator, OwnCoordinator];
    let job_routes: &[Kind] = &[Operator, OwnApp];
    // A launch of `a`'s, carrying its token but no grant.
    let launch = serde_json::to_string(&Launch {
        container: format!("{a}-c99"),
        app: a.clone(),
        package_sha256: sha.clone(),
        args: vec![],
        env: Default::default(),
        files: Default::default(),
        resources: Resources { memory_mb: 64, vcores: 1 },
        stop_grace_ms: 0,
        grant: None,
        app_token: tokens[&a].clone(),
    })
    .unwrap();
    let routes = vec![
        // The resource manager.
        route("POST", format!("{rm}/v1/nodes"), bad, &[Operator, OwnNode, OtherNode]),
        route("GET", format!("{rm}/v1/nodes"), None, &[Operator]),
        route("POST", format!("{rm}/v1/nodes/{own_node}/heartbeat"), bad, &[Operator, OwnNode]),
        route("POST", format!("{rm}/v1/nodes/{own_node}/credential"), None, &[Operator]),
        route("POST", format!("{rm}/v1/apps"), bad, &[Operator]),
        route("GET", format!("{rm}/v1/apps"), None, &[Operator]),
        route("GET", format!("{rm}/v1/apps/{a}"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/config"), None, app_routes),
        // The operator's kill is tried last, on the other application.
        route("POST", format!("{rm}/v1/apps/{a}/kill"), None, &[]),
        route("POST", format!("{rm}/v1/apps/{a}/allocate"), bad, coordinator_routes),
        route("PUT", format!("{rm}/v1/apps/{a}/coordinator-state?attempt=1"), bad, coordinator_routes),
        route("POST", format!("{rm}/v1/apps/{a}/finish"), bad, coordinator_routes),
        route("GET", format!("{rm}/v1/apps/{a}/containers/{c0}/lease?lease_ms=1000"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/metrics"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/stores/seen/k1"), None, app_routes),
        route("GET", format!("{rm}/metrics"), None, &[Operator]),
        route("PUT", format!("{rm}/v1/packages/{sha}"), Some("not that package"), &[Operator]),
        route("GET", format!("{rm}/v1/packages/{sha}"), None, &[Operator, OwnNode, OtherNode]),
        route("HEAD", format!("{rm}/v1/packages/{sha}"), None, &[Operator, OwnNode, OtherNode]),
        // The node's manager: a launch takes the node's launch token for the
        // application only, and is then judged by its grant (here: none).
        route("POST", format!("{nm}/v1/containers"), Some(&launch), &[OwnLaunch]),
        route("GET", format!("{nm}/v1/containers"), None, &[Operator]),
        route("POST", format!("{nm}/v1/containers/no-such/stop"), None, &[Operator]),
        route("GET", format!("{nm}/v1/containers/{c0}/logs/stderr?tail=10"), None, job_routes),
        route("GET", format!("{nm}/metrics"), None, &[Operator]),
        // The application's coordinator.
        route("GET", format!("{coordinator_url}/v1/model"), None, job_routes),
        route("GET", format!("{coordinator_url}/v1/metrics"), None, job_routes),
        route("GET", format!("{coordinator_url}/metrics"), None, job_routes),
        route("GET", format!("{coordinator_url}/v1/stores/seen/k1"), None, job_routes),
        route("POST", format!("{coordinator_url}/v1/containers/0/heartbeat"), bad, job_routes),
        // One of its containers.
        route("GET", format!("{container_url}/metrics"), None, job_routes),
        route("GET", format!("{container_url}/v1/metrics"), None, job_routes),
        route("GET", format!("{container_url}/v1/stores/seen/k1"), None, job_routes),
    ];
    let http = reqwest::blocking::Client::new();
    let mut wrong = Vec::new();
    let mut tried = 0;
    // Refusals (401, 403) by the RM and by the node manager, which count them.
    let (mut refused_by_rm, mut refused_by_nm) = (0, 0);
    for r in &routes {
        for kind in KINDS {
            if kind == Operator && r.url.ends_with("/kill") {
                continue; // tried below, on the other application
            }
            let (status, body) = send(&http, r, token_of(kind).as_deref());
            tried += 1;
            if status == 401 || status == 403 {
                if r.url.starts_with(rm.as_str()) {
                    refused_by_rm += 1;
                } else if r.url.starts_with(nm.as_str()) {
                    refused_by_nm += 1;
                }
            }
            let launch = r.url.ends_with("/v1/containers") && r.method == "POST";
            let ok = if r.passes.contains(&kind) && launch {
                status == 403 && body.contains("carries no allocation grant")
            } else if r.passes.contains(&kind) {
                status != 401 && status != 403
            } else if matches!(kind, NoToken | Wrong | WrongCoordinator) {
                status == 401
            } else {
                status == 401 || status == 403
            };
            if !ok {
                wrong.push(format!("{} {} with {kind:?}: {status} {body}", r.method, r.url));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {tried} answers out of scope:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(tried, routes.len() * KINDS.len() - 1);
    // Each daemon counted exactly the requests it refused.
    let counted = |url: &str, metric: &str| -> u64 {
        let text = String::from_utf8(
            samza_scheduler::client::Client::new(url, &s.cluster.token).get_bytes("/metrics").unwrap(),
        )
        .unwrap();
        let lines = text.lines().filter(|l| l.starts_with(&format!("{metric}{{")));
        lines.map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum()
    };
    assert!(refused_by_rm > 100 && refused_by_nm > 20, "{refused_by_rm} {refused_by_nm}");
    assert_eq!(counted(rm, "samza_rm_requests_refused_total"), refused_by_rm);
    assert_eq!(counted(&nm, "samza_nm_requests_refused_total"), refused_by_nm);

    // Nothing was changed by what was let in: both applications still run.
    for app in [&a, &b] {
        assert_eq!(s.app(app).state, AppState::Running, "{app}");
    }
    // A node's credential registers that node only.
    let as_node_1 = RegisterNode {
        node: "node-1".into(),
        url: "http://127.0.0.1:9".into(),
        capacity: Resources { memory_mb: 1, vcores: 1 },
        containers: vec![],
    };
    let node_2 = samza_scheduler::client::Client::new(rm, &credential("node-2"));
    let e = node_2.post::<_, HeartbeatReply>("/v1/nodes", &as_node_1).unwrap_err();
    assert!(format!("{e:#}").contains("403") && format!("{e:#}").contains("may not register node node-1"));
    // One application cannot kill another.
    let as_a = samza_scheduler::client::Client::new(rm, &tokens[&a]);
    let e = as_a.post::<_, AppInfo>(&format!("/v1/apps/{b}/kill"), &serde_json::json!({})).unwrap_err();
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    // What a container holds cannot get it containers, nor launch one: a
    // real ask is refused before it is read, and so is a launch with the
    // application's token, however good its grant.
    let ask = Allocate {
        attempt: 1,
        asks: vec![Ask {
            role: Role::Container(7),
            resources: Resources { memory_mb: 64, vcores: 1 },
            preferred_node: None,
            relax_after_ms: 0,
        }],
        release: vec![],
    };
    let e = as_a.post::<_, AllocateReply>(&format!("/v1/apps/{a}/allocate"), &ask).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("403")
            && e.contains(&format!("the token of application {a} may not POST /v1/apps/{a}/allocate")),
        "{e}"
    );
    let signed = Launch {
        grant: Some(keys.grant_key(&own_node, 0).sign(
            &format!("{a}-c99"),
            &a,
            &own_node,
            Resources { memory_mb: 64, vcores: 1 },
            &samza_scheduler::auth::sha256_hex(tokens[&a].as_bytes()),
            samza_scheduler::now_ms(),
        )),
        ..serde_json::from_str(&launch).unwrap()
    };
    let e = samza_scheduler::client::Client::new(&nm, &tokens[&a])
        .post::<_, NodeContainer>("/v1/containers", &signed)
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("403") && e.contains("a launch takes this node's launch token"), "{e}");

    // The operator kills `b`: its token stops working everywhere it worked.
    let _: AppInfo = s.rm().post(&format!("/v1/apps/{b}/kill"), &serde_json::json!({})).unwrap();
    let as_b = samza_scheduler::client::Client::new(rm, &tokens[&b]);
    for path in [format!("/v1/apps/{b}"), format!("/v1/apps/{b}/config"), format!("/v1/apps/{b}/metrics")] {
        let e = as_b.get::<serde_json::Value>(&path).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("401") && e.contains(&format!("application {b} has ended (KILLED)")),
            "{path}: {e}"
        );
    }
    let as_b_coordinator = samza_scheduler::client::Client::new(rm, &coordinator_tokens[&b]);
    let e =
        as_b_coordinator.post::<_, serde_json::Value>(&format!("/v1/apps/{b}/allocate"), &ask).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("401") && e.contains(&format!("application {b} has ended (KILLED)")), "{e}");
    // Every node refuses its launch tokens from its next heartbeat on (any
    // grant it still held would be judged by them), and its token at the
    // logs of its containers, which the node still keeps.
    let b_launch = Launch {
        container: format!("{b}-c99"),
        app: b.clone(),
        app_token: tokens[&b].clone(),
        ..serde_json::from_str(&launch).unwrap()
    };
    for node in ["node-1", "node-2"] {
        let url = std::fs::read_to_string(s.cluster.dir.join(node).join("nm.url")).unwrap();
        let b_launches =
            samza_scheduler::client::Client::new(&url, &keys.grant_key(node, 0).launch_token(&b));
        wait_for(&format!("{node} to refuse b's launch token"), Duration::from_secs(10), || {
            let e = b_launches.post::<_, NodeContainer>("/v1/containers", &b_launch).unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains("401") || e.contains("carries no allocation grant"), "{e}");
            e.contains(&format!("application {b} has ended: its launch token no longer works"))
        });
    }
    let b0 = running_job_containers(&info_b)[0];
    let url = std::fs::read_to_string(s.cluster.dir.join(&b0.node).join("nm.url")).unwrap();
    let e = samza_scheduler::client::Client::new(&url, &tokens[&b])
        .get_bytes(&format!("/v1/containers/{}/logs/stderr", b0.id))
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("401") && e.contains(&format!("application {b} has ended: its token no longer works")),
        "{e}"
    );
    // Its processes stop (their lease is refused with the token).
    s.wait(&b, "b's containers to stop", Duration::from_secs(30), |i| {
        i.containers.iter().all(|c| c.state.is_done())
    });
    assert_eq!(s.app(&a).state, AppState::Running);
}

#[test]
fn a_rotated_node_credential_stops_working_and_the_node_keeps_its_containers_with_the_next() {
    let mut s = Setup::new(2);
    s.input(30_000);
    let app = s.submit(&s.job("copy", "\n[params]\nsleep-us = 400000\n"));
    let info = s.wait_running(&app);
    let file = s.cluster.dir.join("node-2").join("credential");
    let old = std::fs::read_to_string(&file).unwrap();
    let running_before = running_pids(&info);

    // An operator rotates node-2's credential (one leaked, say).
    let out = s.samza_run(&["node-credential", "node-2", "--rotate", "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = std::fs::read_to_string(&file).unwrap();
    assert!(new.starts_with("samza-node-1.node-2."), "{new}");
    // The one before is refused at once, with what to do; the new one works.
    let heartbeat = "/v1/nodes/node-2/heartbeat";
    let body = NodeHeartbeat { containers: vec![] };
    let e = samza_scheduler::client::Client::new(&s.cluster.rm_url, &old)
        .post::<_, HeartbeatReply>(heartbeat, &body)
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("401") && e.contains("this credential of node node-2 was rotated"), "{e}");
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{}{heartbeat}", s.cluster.rm_url))
        .bearer_auth(&new)
        .header("content-type", "application/json")
        .body("{not json")
        .send();
    assert_eq!(r.unwrap().status().as_u16(), 400, "the new credential is let in (and its body refused)");
    // Issuing again gives the new one, not the revoked one.
    let again: NodeCredential = s.rm().post("/v1/nodes/node-2/credential", &serde_json::json!({})).unwrap();
    assert_eq!(again.credential, new);

    // Its node manager, restarted with the new credential within the node
    // timeout, registers again and keeps its containers.
    let (_, nm) = s.cluster.nodes.iter_mut().find(|(n, _)| n == "node-2").unwrap();
    nm.kill().unwrap();
    nm.wait().unwrap();
    s.cluster.start_node("node-2").unwrap();
    s.cluster.wait_node_ready("node-2").unwrap();
    wait_for("node-2 to register with its new credential", Duration::from_secs(10), || {
        let nodes: Vec<NodeInfo> = s.rm().get("/v1/nodes").unwrap();
        nodes.iter().any(|n| n.node == "node-2" && n.state == NodeState::Running && n.heartbeat_age_ms < 1000)
    });
    std::thread::sleep(Duration::from_secs(2));
    let now = s.app(&app);
    assert_eq!(running_pids(&now), running_before, "containers kept: {:#?}", now.events);
    // Launches there take the launch tokens of the new key only.
    let keys = samza_scheduler::auth::Keys::new(&s.cluster.token);
    let nm_url = std::fs::read_to_string(s.cluster.dir.join("node-2/nm.url")).unwrap();
    let launch = Launch {
        container: format!("{app}-c99"),
        app: app.clone(),
        package_sha256: "ab".repeat(32),
        args: vec![],
        env: Default::default(),
        files: Default::default(),
        resources: Resources { memory_mb: 64, vcores: 1 },
        stop_grace_ms: 0,
        grant: None,
        app_token: format!("samza-app.{app}.x"),
    };
    for (epoch, expected) in
        [(0, "not a token this node manager accepts"), (1, "carries no allocation grant")]
    {
        let token = keys.grant_key("node-2", epoch).launch_token(&app);
        let e = samza_scheduler::client::Client::new(&nm_url, &token)
            .post::<_, NodeContainer>("/v1/containers", &launch)
            .unwrap_err();
        assert!(format!("{e:#}").contains(expected), "epoch {epoch}: {e:#}");
    }
    let done = s.wait(&app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
}

/// Runs `cmd` as user `uid` (no groups): whether it succeeded.
fn as_user(uid: u32, cmd: &[&str]) -> bool {
    std::process::Command::new("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()])
        .args(cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("setpriv (util-linux)")
        .success()
}

/// The real user id of process `pid`.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn with_container_uids_each_job_runs_as_a_user_of_its_own_that_reaches_nothing_of_the_nodes_or_another_jobs()
{
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: starting processes as other users needs root");
        return;
    }
    let mut s = Setup::new(1);
    // Node-1's manager restarted to run each job as a user of its own.
    s.cluster.nm_args = vec!["--container-uids".into(), "20000-20001".into()];
    let (_, nm) = s.cluster.nodes.iter_mut().find(|(n, _)| n == "node-1").unwrap();
    nm.kill().unwrap();
    nm.wait().unwrap();
    s.cluster.start_node("node-1").unwrap();
    s.cluster.wait_node_ready("node-1").unwrap();
    let node_dir = s.cluster.dir.join("node-1");
    // Each job's log is its user's (the first job to run here gets 20000).
    let chown = |dir: &std::path::Path, uid: u32| {
        let ok = std::process::Command::new("chown").arg("-R").arg(format!("{uid}:{uid}")).arg(dir).status();
        assert!(ok.unwrap().success());
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    s.input(20_000);
    chown(&s.dir.path().join("log"), 20000);
    let a = s.submit(&s.job("copy", "\n[params]\nsleep-us = 300000\n"));
    let info_a = s.wait_running(&a);
    let dir_b = s.dir.path().join("b");
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::set_permissions(&dir_b, std::fs::Permissions::from_mode(0o711)).unwrap();
    let log_b = samza_log::Log::open(dir_b.join("log")).unwrap();
    samza_test_support::write_stream(&log_b, "in", 2, 20_000, |p, i| (format!("k{i}"), format!("p{p}-{i}")));
    chown(&dir_b.join("log"), 20001);
    let job_b = s
        .job_toml("copy")
        .set("job.name", "copy-b")
        .set("systems.log.streams.in.bounded", true)
        .append("\n[params]\nsleep-us = 300000\n")
        .write(&dir_b);
    let b = s.submit(&job_b);
    let info_b = s.wait_running(&b);

    // Every process of a job runs as its job's user.
    for (info, uid) in [(&info_a, 20000), (&info_b, 20001)] {
        let pids = running_pids(info);
        assert_eq!(pids.len(), 3, "{info:?}");
        for pid in pids {
            assert_eq!(uid_of(pid), uid, "{} process {pid}", info.app);
        }
    }
    let uids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("uids.json")).unwrap()).unwrap();
    assert_eq!(uids, serde_json::json!({"copy-job": 20000, "copy-b": 20001}));
    // What a job's user reaches: its own state and container directories,
    // not the node's credential, nor the other job's.
    let a0 = running_job_containers(&info_a)[0].id.clone();
    let b0 = running_job_containers(&info_b)[0].id.clone();
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    let own_state = path(node_dir.join("state/copy-job"));
    let own_dir = path(node_dir.join("containers").join(&a0));
    assert!(as_user(20000, &["ls", &own_state]) && as_user(20000, &["ls", &own_dir]), "the control");
    for file in [
        path(node_dir.join("credential")),
        path(node_dir.join("containers.json")),
        path(node_dir.join("containers").join(&b0).join("job.toml")),
        path(s.cluster.dir.join("rm/token")),
    ] {
        assert!(!as_user(20000, &["cat", &file]), "user 20000 reads {file}");
    }
    for dir in [
        path(node_dir.join("state/copy-b")),
        path(node_dir.join("containers").join(&b0)),
        path(node_dir.join("containers")),
        path(node_dir.join("packages")),
    ] {
        assert!(!as_user(20000, &["ls", &dir]), "user 20000 lists {dir}");
    }
    // A job's user owns its container's directory, so it can put a link
    // where its log was: the node manager's logs route, which reads as
    // root, refuses it rather than serving the node's credential.
    let stderr = path(node_dir.join("containers").join(&a0).join("stderr"));
    assert!(as_user(20000, &["ln", "-sf", "../../credential", &stderr]), "the job's user replaces its log");
    let a0_pid = running_job_containers(&info_a)[0].pid.unwrap();
    let token_a = environ(a0_pid).get("SAMZA_TOKEN").cloned().unwrap();
    let nm_url = std::fs::read_to_string(node_dir.join("nm.url")).unwrap();
    let e = samza_scheduler::client::Client::new(&nm_url, &token_a)
        .get_bytes(&format!("/v1/containers/{a0}/logs/stderr"))
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("403") && e.contains("is a symbolic link"), "{e}");
    let credential = std::fs::read_to_string(node_dir.join("credential")).unwrap();
    assert!(!e.contains(credential.trim()), "{e}");
    // A job's process has nothing of the node manager's environment but
    // what locates and formats things (this test's, which the node manager
    // inherited, included), and a session of its own (no terminal).
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "the control: cargo sets it for tests");
    let names: Vec<String> = environ(a0_pid).into_keys().collect();
    let set_by_the_node = [
        "SAMZA_APP_ID",
        "SAMZA_BIND",
        "SAMZA_CONTAINER_ID",
        "SAMZA_GENERATION",
        "SAMZA_NODE",
        "SAMZA_NODE_STATE_DIR",
        "SAMZA_OPERATOR_SHA256",
        "SAMZA_RM_URL",
        "SAMZA_TOKEN",
    ];
    let passed = |k: &str| {
        set_by_the_node.contains(&k)
            || k.starts_with("LC_")
            || k.starts_with("RUST_")
            || ["PATH", "LANG", "TZ", "SAMZA_LOG", "SAMZA_LOG_FORMAT"].contains(&k)
    };
    assert!(names.iter().all(|k| passed(k)), "{names:?}");
    let stat = std::fs::read_to_string(format!("/proc/{a0_pid}/stat")).unwrap();
    let session: u32 =
        stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, a0_pid, "the container leads a session of its own");
    // Both jobs run to the end with every message copied once.
    for (app, log) in [(&a, &s.log), (&b, &log_b)] {
        let done = s.wait(app, "SUCCEEDED", Duration::from_secs(120), |i| i.state.is_final());
        assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
        let out = log.stream("out").unwrap();
        let n: u64 = (0..out.partitions())
            .map(|p| {
                let mut r = out.reader(p, samza_log::StartAt::Oldest).unwrap();
                let mut n = 0;
                loop {
                    let c = r.read(1 << 20).unwrap();
                    if c.is_empty() {
                        return n;
                    }
                    n += c.records().count() as u64;
                }
            })
            .sum();
        assert_eq!(n, 40_000, "{app}");
    }
}
