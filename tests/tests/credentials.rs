//! Least privilege on a real local cluster: every route of the resource
//! manager, a node manager, a job coordinator and a container, tried with
//! every kind of credential (none, a wrong one, the operator's, the
//! application's own, another application's, an ended application's, the
//! node's own credential and another node's), answers only those in its
//! scope; and no job process holds the operator's token.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use samza_scheduler::proto::*;

/// The kinds of credentials tried on every route. A wrong token is 401
/// everywhere but at a node manager's launch, which judges an
/// application's token by the grant it comes with (403 without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    NoToken,
    Wrong,
    Operator,
    OwnApp,
    OtherApp,
    OwnNode,
    OtherNode,
}

const KINDS: [Kind; 7] = [
    Kind::NoToken,
    Kind::Wrong,
    Kind::Operator,
    Kind::OwnApp,
    Kind::OtherApp,
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

/// The process's environment, from `/proc`.
fn environ(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect()
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
    // token, never the operator's, nor a file naming a credential.
    let mut tokens = BTreeMap::new();
    for info in [&info_a, &info_b] {
        for pid in running_pids(info) {
            let env = environ(pid);
            let token = env.get("SAMZA_TOKEN").cloned().unwrap_or_default();
            assert!(token.starts_with(&format!("samza-app.{}.", info.app)), "{pid}: {token}");
            assert!(!env.values().any(|v| v.contains(&s.cluster.token)), "{pid} holds the operator's token");
            assert!(!env.contains_key("SAMZA_TOKEN_FILE"), "{pid} names a token file");
            tokens.insert(info.app.clone(), token);
        }
    }
    let credential =
        |node: &str| std::fs::read_to_string(s.cluster.dir.join(node).join("credential")).unwrap();
    let token_of = |k: Kind| -> Option<String> {
        match k {
            Kind::NoToken => None,
            // A forgery naming the right application.
            Kind::Wrong => Some(format!("samza-app.{a}.{}", "0".repeat(64))),
            Kind::Operator => Some(s.cluster.token.clone()),
            Kind::OwnApp => Some(tokens[&a].clone()),
            Kind::OtherApp => Some(tokens[&b].clone()),
            Kind::OwnNode => Some(credential("node-1")),
            Kind::OtherNode => Some(credential("node-2")),
        }
    };
    // Application tokens do not turn into node credentials, nor into each other.
    assert_ne!(credential("node-1"), credential("node-2"));
    assert!(credential("node-1").starts_with("samza-node.node-1."));

    // The routes, with `a`'s ids and node-1's; bodies that are refused for
    // what they say (400/422), so that a request let in changes nothing.
    use Kind::*;
    let rm = &s.cluster.rm_url;
    let nm = std::fs::read_to_string(s.cluster.dir.join("node-1/nm.url")).unwrap();
    let c0 = running_job_containers(&info_a)[0].id.clone();
    let coordinator_url = info_a.coordinator_state.as_ref().and_then(|st| st.url.clone()).unwrap();
    let metrics: serde_json::Value = s.rm().get(&format!("/v1/apps/{a}/metrics")).unwrap();
    let container_url = metrics["containers"]
        .as_object()
        .and_then(|m| m.values().find_map(|c| c["url"].as_str().map(str::to_string)))
        .expect("a container reports its address");
    let bad = Some("{not json");
    let sha = "ab".repeat(32);
    let app_routes: &[Kind] = &[Operator, OwnApp];
    let launch = serde_json::to_string(&Launch {
        container: "x-c1".into(),
        app: "x".into(),
        package_sha256: sha.clone(),
        args: vec![],
        env: Default::default(),
        files: Default::default(),
        resources: Resources { memory_mb: 64, vcores: 1 },
        stop_grace_ms: 0,
        grant: None,
    })
    .unwrap();
    let routes = vec![
        // The resource manager.
        route("POST", format!("{rm}/v1/nodes"), bad, &[Operator, OwnNode, OtherNode]),
        route("GET", format!("{rm}/v1/nodes"), None, &[Operator]),
        route("POST", format!("{rm}/v1/nodes/node-1/heartbeat"), bad, &[Operator, OwnNode]),
        route("POST", format!("{rm}/v1/nodes/node-1/credential"), None, &[Operator]),
        route("POST", format!("{rm}/v1/apps"), bad, &[Operator]),
        route("GET", format!("{rm}/v1/apps"), None, &[Operator]),
        route("GET", format!("{rm}/v1/apps/{a}"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/config"), None, app_routes),
        // The operator's kill is tried last, on the other application.
        route("POST", format!("{rm}/v1/apps/{a}/kill"), None, &[]),
        route("POST", format!("{rm}/v1/apps/{a}/allocate"), bad, app_routes),
        route("PUT", format!("{rm}/v1/apps/{a}/coordinator-state?attempt=1"), bad, app_routes),
        route("POST", format!("{rm}/v1/apps/{a}/finish"), bad, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/containers/{c0}/lease?lease_ms=1000"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/metrics"), None, app_routes),
        route("GET", format!("{rm}/v1/apps/{a}/stores/seen/k1"), None, app_routes),
        route("GET", format!("{rm}/metrics"), None, &[Operator]),
        route("PUT", format!("{rm}/v1/packages/{sha}"), Some("not that package"), &[Operator]),
        route("GET", format!("{rm}/v1/packages/{sha}"), None, &[Operator, OwnNode, OtherNode]),
        route("HEAD", format!("{rm}/v1/packages/{sha}"), None, &[Operator, OwnNode, OtherNode]),
        // Node-1's manager: a launch comes with an application's token and
        // is then judged by its grant (here: none).
        route("POST", format!("{nm}/v1/containers"), Some(&launch), &[OwnApp, OtherApp]),
        route("GET", format!("{nm}/v1/containers"), None, &[Operator]),
        route("POST", format!("{nm}/v1/containers/no-such/stop"), None, &[Operator]),
        route("GET", format!("{nm}/v1/containers/{c0}/logs/stderr?tail=10"), None, app_routes),
        route("GET", format!("{nm}/metrics"), None, &[Operator]),
        // The application's coordinator.
        route("GET", format!("{coordinator_url}/v1/model"), None, app_routes),
        route("GET", format!("{coordinator_url}/v1/metrics"), None, app_routes),
        route("GET", format!("{coordinator_url}/metrics"), None, app_routes),
        route("GET", format!("{coordinator_url}/v1/stores/seen/k1"), None, app_routes),
        route("POST", format!("{coordinator_url}/v1/containers/0/heartbeat"), bad, app_routes),
        // One of its containers.
        route("GET", format!("{container_url}/metrics"), None, app_routes),
        route("GET", format!("{container_url}/v1/metrics"), None, app_routes),
        route("GET", format!("{container_url}/v1/stores/seen/k1"), None, app_routes),
    ];
    let http = reqwest::blocking::Client::new();
    let mut wrong = Vec::new();
    let mut tried = 0;
    for r in &routes {
        for kind in KINDS {
            if kind == Operator && r.url.ends_with("/kill") {
                continue; // tried below, on the other application
            }
            let (status, body) = send(&http, r, token_of(kind).as_deref());
            tried += 1;
            let launch = r.url.ends_with("/v1/containers") && r.method == "POST";
            let ok = if r.passes.contains(&kind) && launch {
                status == 403 && body.contains("carries no allocation grant")
            } else if r.passes.contains(&kind) {
                status != 401 && status != 403
            } else if kind == NoToken || (kind == Wrong && !launch) {
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
    let e = as_b.post::<_, serde_json::Value>(&format!("/v1/apps/{b}/allocate"), &serde_json::json!({}));
    assert!(format!("{:#}", e.unwrap_err()).contains("401"));
    // Its processes stop (their lease is refused with the token).
    s.wait(&b, "b's containers to stop", Duration::from_secs(30), |i| {
        i.containers.iter().all(|c| c.state.is_done())
    });
    assert_eq!(s.app(&a).state, AppState::Running);
}
