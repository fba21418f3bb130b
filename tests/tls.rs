//! TLS to both sides: a standalone source and a 3-master cluster target that speak only TLS
//! (cluster bus and replication too) and require a client certificate, with certificates made
//! in the test. Backfill and verify, the proxy in sync-dual-write and read-cutover, a wrong CA,
//! `tls_insecure_skip_verify`, and the plan's checks of the `tls_*` keys.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::compare::differences;
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::{TlsFiles, cachemig, write_plan};
use redis::Commands;

/// What every key should hold: a string, or a list (`token:q:*`, written `[a,b]`).
type Model = BTreeMap<String, String>;

/// Each side read key by key and compared with the model; both sides compared type by type.
fn assert_sides_equal_model(sb: &Sandbox, model: &Model) {
    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    let read = |conn: &mut dyn redis::ConnectionLike, key: &str| -> Option<String> {
        if key.starts_with("token:q:") {
            let items: Vec<String> = redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).unwrap();
            return Some(format!("[{}]", items.join(",")));
        }
        redis::cmd("GET").arg(key).query(conn).unwrap()
    };
    for (key, want) in model {
        assert_eq!(read(&mut old, key).as_deref(), Some(want.as_str()), "old {key}");
        assert_eq!(read(&mut new, key).as_deref(), Some(want.as_str()), "new {key}");
    }
    let keys: Vec<String> = model.keys().cloned().collect();
    assert_eq!(differences(sb, &keys), Vec::<String>::new());
}

#[test]
fn backfill_and_verify_run_over_tls_from_a_standalone_source_to_a_tls_cluster() {
    let tls = TlsFiles::generate();
    let sb = Sandbox::start_tls(&tls);
    let mut model = Model::new();
    let mut src = sb.source.conn();
    for i in 0..600 {
        let (k, v) = (format!("token:{i}"), format!("value-{i}"));
        let _: () = src.set(&k, &v).unwrap();
        model.insert(k, v);
    }
    let _: () = src.hset("token:hash", "f", "1").unwrap();
    let _: () = src.rpush("token:list", &["a", "b"]).unwrap();
    // Online plan: both sides inspected over TLS (the cluster's masters found by CLUSTER NODES).
    sb.cachemig(&["plan"])
        .assert_code(0)
        .assert_stdout_contains("3 master(s)");
    sb.cachemig(&["advance", "--yes"])
        .assert_code(0)
        .assert_stdout_contains("entry action backfill");
    let run = sb.cachemig(&["verify", "--format", "json"]);
    run.assert_success();
    let json = run.json();
    assert_eq!(json["found"], 0, "{json:#}");
    assert_eq!(json["source_checked"], 602, "{json:#}");
    assert_sides_equal_model(&sb, &model);
    let extra = ["token:hash".to_string(), "token:list".to_string()];
    assert_eq!(differences(&sb, &extra), Vec::<String>::new());
    assert_eq!(sb.target.dbsize(), 602);
}

/// Writes through the proxy in `phase`: strings, a counter, a transaction and a blocking pop
/// (a dedicated connection), recorded in the model.
fn write_through(conn: &mut redis::Connection, phase: &str, model: &mut Model) {
    for i in 0..150 {
        let (k, v) = (format!("token:{phase}:{i}"), format!("{phase}-{i}"));
        let _: () = conn.set(&k, &v).unwrap();
        model.insert(k, v);
        let n: i64 = conn.incr("token:counter", 1).unwrap();
        model.insert("token:counter".into(), n.to_string());
    }
    let tx = format!("token:tx:{{{phase}}}");
    let _: () = redis::pipe()
        .atomic()
        .set(format!("{tx}:a"), "1")
        .set(format!("{tx}:b"), "2")
        .query(conn)
        .unwrap();
    model.insert(format!("{tx}:a"), "1".into());
    model.insert(format!("{tx}:b"), "2".into());
    let queue = format!("token:q:{phase}");
    let _: i64 = conn.rpush(&queue, &["x", "y"]).unwrap();
    let popped: Option<(String, String)> = conn.blpop(&queue, 1.0).unwrap();
    assert_eq!(popped, Some((queue.clone(), "x".into())));
    let rest: Vec<String> = conn.lrange(&queue, 0, -1).unwrap();
    assert_eq!(rest, ["y"]);
    model.insert(queue, "[y]".into());
}

#[test]
fn the_proxy_speaks_tls_to_both_sides_in_sync_dual_write_and_read_cutover() {
    let tls = TlsFiles::generate();
    let mut sb = Sandbox::start_tls(&tls);
    // Room for a loaded test host: a sync over a fresh TLS connection missed the default 100 ms
    // at load 20, and from read-cutover on a failed sync is the client's error.
    sb.set_plan_extra("[dual_write]\nsync_timeout_ms = 1000\n");
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut conn = proxy.conn();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", proxy.port)).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("token:news").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut model = Model::new();
    for (generation, phase) in [(1u64, "sync-dual-write"), (2, "read-cutover")] {
        set_phase(&sb.flag_path(), phase, generation, false, 0.0);
        proxy.wait_generation(generation);
        write_through(&mut conn, phase, &mut model);
        // Sync mirroring: both sides hold every acknowledged write when its reply arrives.
        assert_sides_equal_model(&sb, &model);
        // Reads through the proxy (from new in read-cutover) return the model.
        for (key, want) in model.iter().filter(|(k, _)| !k.starts_with("token:q:")) {
            let got: String = conn.get(key).unwrap();
            assert_eq!(&got, want, "{phase}: GET {key} through the proxy");
        }
        let _: i64 = conn.publish("token:news", phase).unwrap();
        let msg = pubsub.get_message().expect("the message arrives over TLS");
        assert_eq!(msg.get_payload::<String>().unwrap(), phase);
    }
    // A slot moves to a master the proxy has never seen (not a seed, not in its slot map): the
    // mirror's write is redirected there with MOVED, and the proxy dials it over TLS.
    let added = sb.target.add_empty_master();
    sb.target.move_empty_slot_of("token:moved", added);
    let _: () = conn.set("token:moved", "here").unwrap();
    model.insert("token:moved".into(), "here".into());
    let direct: Option<String> = sb.target.nodes()[added].conn().get("token:moved").unwrap();
    assert_eq!(
        direct.as_deref(),
        Some("here"),
        "the write landed on the added master"
    );
    let got: String = conn.get("token:moved").unwrap();
    assert_eq!(got, "here", "read-cutover reads it from the added master");
    assert_sides_equal_model(&sb, &model);
    let status = proxy.status();
    assert_eq!(
        status["counters_since_generation"]["mirror_errors"], 0,
        "{status}"
    );
    assert!(!proxy.log().contains("unreachable"), "{}", proxy.log());
}

#[test]
fn a_wrong_ca_is_refused_clearly_and_skip_verify_connects_with_a_warning() {
    let tls = TlsFiles::generate();
    let stranger = TlsFiles::generate();
    let mut sb = Sandbox::start_tls(&tls);
    let client = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        tls.path("client.pem").display(),
        tls.path("client.key").display()
    );
    let wrong_ca = format!(
        "tls_ca_file = \"{}\"\n{client}",
        stranger.path("ca.pem").display()
    );
    sb.set_side_keys(&wrong_ca, &tls.plan_keys());
    // Blocked (exit 3): the source cannot be inspected, and the output says why.
    let run = sb.cachemig(&["plan", "--detailed-exitcode"]);
    run.assert_code(3);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("TLS to source") && said.contains("tls_ca_file") && said.contains("certificate"),
        "{said}"
    );
    let key = std::fs::read_to_string(tls.path("client.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    run.assert_output_lacks(body);

    sb.set_side_keys(
        &format!("tls_insecure_skip_verify = true\n{client}"),
        &tls.plan_keys(),
    );
    // Ready (exit 4): both sides inspected, the unverified one flagged.
    sb.cachemig(&["plan", "--detailed-exitcode"])
        .assert_code(4)
        .assert_stdout_contains("3 master(s)")
        .assert_stderr_contains("WARNING: [source] tls_insecure_skip_verify = true");
    // The proxy connects to the unverified source too, and mirrors to the verified target.
    let proxy = ProxyProcess::start(&sb, "p1");
    set_phase(&sb.flag_path(), "sync-dual-write", 1, false, 0.0);
    proxy.wait_generation(1);
    let mut conn = proxy.conn();
    let _: () = conn.set("token:skip", "yes").unwrap();
    let model = Model::from([("token:skip".to_string(), "yes".to_string())]);
    assert_sides_equal_model(&sb, &model);
    assert!(
        proxy.log().contains("tls_insecure_skip_verify is on"),
        "{}",
        proxy.log()
    );
}

#[test]
fn the_plan_checks_tls_keys_at_load_and_says_what_to_do() {
    let tls = TlsFiles::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca = tls.path("ca.pem").display().to_string();
    let cert = tls.path("client.pem").display().to_string();
    let key = tls.path("client.key").display().to_string();
    let plan = |source: &str, target: &str| {
        format!(
            "[migration]\nname = \"t\"\n\n[source]\n{source}\n\n[target]\n{target}\n\n[proxies]\nexpected = 0\n"
        )
    };
    let cases = [
        (
            plan(
                "url = \"rediss://127.0.0.1:1\"\ntls_ca_file = \"nope/ca.pem\"",
                "urls = [\"redis://127.0.0.1:2\"]",
            ),
            "6:",
            "cannot read the CA file",
        ),
        (
            plan(
                &format!("url = \"rediss://127.0.0.1:1\"\ntls_cert_file = \"{cert}\""),
                "urls = [\"redis://127.0.0.1:2\"]",
            ),
            "6:",
            "tls_cert_file is set without tls_key_file",
        ),
        (
            plan(
                "url = \"redis://127.0.0.1:1\"",
                &format!("urls = [\"redis://127.0.0.1:2\"]\ntls_ca_file = \"{ca}\""),
            ),
            "9:",
            "write the target URL as rediss://",
        ),
        (
            plan(
                "url = \"redis://127.0.0.1:1\"",
                "urls = [\"rediss://127.0.0.1:2\", \"redis://127.0.0.1:3\"]",
            ),
            "8:",
            "mixes redis:// and rediss://",
        ),
        (
            plan(
                &format!(
                    "url = \"rediss://127.0.0.1:1\"\ntls_cert_file = \"{key}\"\ntls_key_file = \"{cert}\""
                ),
                "urls = [\"redis://127.0.0.1:2\"]",
            ),
            "6:",
            "holds no PEM certificate",
        ),
    ];
    let listen_cert_only = plan(
        "url = \"redis://127.0.0.1:1\"",
        "urls = [\"redis://127.0.0.1:2\"]",
    ) + &format!("tls_cert_file = \"{cert}\"\n");
    let cases: Vec<(String, &str, &str)> = cases
        .into_iter()
        .chain([(
            listen_cert_only,
            "12:",
            "[proxies] needs both tls_cert_file and tls_key_file",
        )])
        .collect();
    for (i, (text, line, message)) in cases.iter().enumerate() {
        let path = write_plan(dir.path(), &format!("p{i}.toml"), text);
        let run = cachemig(&["plan", path.to_str().unwrap(), "--offline"]);
        run.assert_code(2).assert_stderr_contains(message);
        run.assert_stderr_contains(&format!("p{i}.toml:{line}"));
        let secret = std::fs::read_to_string(tls.path("client.key")).unwrap();
        run.assert_output_lacks(secret.lines().nth(1).unwrap());
    }
    // Relative paths are the plan folder's, and a good set loads.
    std::fs::copy(tls.path("ca.pem"), dir.path().join("ca.pem")).unwrap();
    let ok = write_plan(
        dir.path(),
        "ok.toml",
        &plan(
            "url = \"rediss://127.0.0.1:1\"\ntls_ca_file = \"ca.pem\"",
            "urls = [\"redis://127.0.0.1:2\"]",
        ),
    );
    cachemig(&["plan", ok.to_str().unwrap(), "--offline"]).assert_code(0);
}

/// A client of the proxy that trusts `ca`'s certificates.
fn tls_client(port: u16, ca: &TlsFiles) -> redis::RedisResult<redis::Connection> {
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(ca.path("ca.pem")).unwrap()),
    };
    let client = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), certs)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    redis::cmd("PING").query::<String>(&mut conn)?;
    Ok(conn)
}

#[test]
fn tls_clients_reach_the_proxy_and_a_renewed_certificate_is_served_without_dropping_any() {
    let mut sb = Sandbox::start();
    let (first, renewed) = (TlsFiles::generate(), TlsFiles::generate());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("proxy.pem"), dir.path().join("proxy.key"));
    let install = |ca: &TlsFiles| {
        std::fs::copy(ca.path("server.pem"), &cert).unwrap();
        std::fs::copy(ca.path("server.key"), &key).unwrap();
    };
    install(&first);
    // The extra lines land in [proxies], the plan's last table.
    sb.set_plan_extra(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let proxy = ProxyProcess::start(&sb, "p1");
    set_phase(&sb.flag_path(), "sync-dual-write", 1, false, 0.0);
    proxy.wait_generation(1);
    let mut model = Model::new();
    let mut conn = tls_client(proxy.port, &first).expect("a TLS client trusting the CA");
    let _: () = conn.set("token:tls", "1").unwrap();
    model.insert("token:tls".into(), "1".into());
    assert_sides_equal_model(&sb, &model);
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", proxy.port))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(plain.is_err(), "a plain-text client is not served: {plain:?}");

    install(&renewed);
    common::wait_for(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || tls_client(proxy.port, &renewed).is_ok(),
    );
    let stale = tls_client(proxy.port, &first);
    assert!(stale.is_err(), "the old certificate is no longer served");
    // The connection opened before the renewal was not dropped.
    let _: () = conn.set("token:tls", "2").unwrap();
    let mut fresh = tls_client(proxy.port, &renewed).unwrap();
    let _: () = fresh.set("token:tls:fresh", "3").unwrap();
    model.insert("token:tls".into(), "2".into());
    model.insert("token:tls:fresh".into(), "3".into());
    assert_sides_equal_model(&sb, &model);
}
