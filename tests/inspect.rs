//! Online inspection against real redis-server processes (standalone and cluster).

mod common;

use std::time::Instant;

use cachemig::endpoint::{Endpoint, EndpointError};
use cachemig::inspect::{
    RdbVersionSource, inspect_source, inspect_source_with_password, inspect_target,
    inspect_target_with_password, rdb_version_for,
};
use cachemig::keys::KeyFilter;
use common::{RedisCluster, RedisServer, free_port};
use url::Url;

fn endpoint(role: &'static str, urls: &[String], password_env: Option<&str>) -> Endpoint {
    Endpoint {
        role,
        urls: urls.iter().map(|u| Url::parse(u).unwrap()).collect(),
        password_env: password_env.map(str::to_owned),
        tls: None,
    }
}

fn tokens_filter() -> KeyFilter {
    KeyFilter {
        include: vec!["token:*".into()],
        exclude: vec!["token:tmp:*".into()],
    }
}

/// Write operations a node has applied since start: must not move during an inspection.
fn changes(server: &RedisServer) -> String {
    server.info_field("rdb_changes_since_last_save").unwrap()
}

#[tokio::test]
async fn standalone_source_reports_version_rdb_and_dbsize() {
    let server = RedisServer::start();
    let empty = inspect_source(&endpoint("source", &[server.url()], None), &KeyFilter::default())
        .await
        .unwrap();
    assert_eq!(
        empty.masters[0].rdb_version_source,
        Some(RdbVersionSource::VersionTable)
    );

    let mut c = server.conn();
    redis::pipe()
        .cmd("SET")
        .arg("token:1")
        .arg("a")
        .cmd("SET")
        .arg("token:2")
        .arg("b")
        .cmd("HSET")
        .arg("token:h")
        .arg("f")
        .arg("v")
        .cmd("RPUSH")
        .arg("other:list")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap();
    let before = changes(&server);
    let report = inspect_source(&endpoint("source", &[server.url()], None), &tokens_filter())
        .await
        .unwrap();
    assert_eq!(changes(&server), before, "inspection must not write");

    assert!(!report.cluster_enabled && report.cluster_state.is_none() && report.slots_covered.is_none());
    assert_eq!(report.masters.len(), 1);
    let node = &report.masters[0];
    let version = server.info_field("redis_version").unwrap();
    assert_eq!(node.redis_version, version);
    assert_eq!(node.server, "redis");
    assert_eq!(node.run_id, server.info_field("run_id").unwrap());
    assert_eq!(node.addr, format!("127.0.0.1:{}", server.port()));
    assert_eq!(node.rdb_version_source, Some(RdbVersionSource::Dump));
    assert!(node.rdb_version.unwrap() >= 9);
    assert_eq!(
        node.rdb_version,
        rdb_version_for("redis", &version),
        "table agrees with DUMP"
    );
    assert_eq!((node.dbsize, report.total_dbsize()), (4, 4));
    assert!(node.used_memory > 0 && node.maxmemory == 0);
    assert_eq!(report.total_free_memory(), None, "maxmemory 0 = unlimited");
    assert_eq!(report.keys_in_range, None, "source keys are not counted");
}

#[tokio::test]
async fn cluster_target_counts_only_matching_keys() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 1);
    eprintln!("3 masters + 3 replicas up in {:?}", started.elapsed());
    let mut c = cluster.cluster_conn();
    for i in 0..20 {
        redis::cmd("SET")
            .arg(format!("token:{i}"))
            .arg(i)
            .query::<()>(&mut c)
            .unwrap();
    }
    for key in ["token:tmp:1", "token:tmp:2", "other:1", "other:2"] {
        redis::cmd("SET").arg(key).arg("x").query::<()>(&mut c).unwrap();
    }
    redis::cmd("HSET")
        .arg("__cachemig:{tokens}:proxies")
        .arg("p1")
        .arg("{}")
        .query::<()>(&mut c)
        .unwrap();
    let before: Vec<String> = cluster.masters().iter().map(changes).collect();

    // A dead seed first: the next reachable one is used.
    let mut urls = vec![format!("redis://127.0.0.1:{}", free_port())];
    urls.extend(cluster.seed_urls());
    let target = endpoint("target", &urls, None);
    let report = inspect_target(&target, &tokens_filter(), 1000).await.unwrap();
    assert!(report.cluster_enabled);
    assert_eq!(report.cluster_state.as_deref(), Some("ok"));
    assert_eq!(report.slots_covered, Some(16384));
    assert_eq!(
        report.masters.len(),
        3,
        "replicas are not masters: {:?}",
        report.masters
    );
    assert!(
        report
            .masters
            .iter()
            .all(|m| m.replication_role == "master" && m.rdb_version_source == Some(RdbVersionSource::Dump))
    );
    assert_eq!(report.keys_in_range, Some(20));
    assert!(!report.keys_in_range_truncated);
    assert_eq!(report.sample_keys.len(), 5);
    assert!(
        report
            .sample_keys
            .iter()
            .all(|k| k.starts_with("token:") && !k.starts_with("token:tmp:"))
    );
    assert_eq!(report.total_dbsize(), 25);

    let capped = inspect_target(&target, &tokens_filter(), 7).await.unwrap();
    assert_eq!(
        (capped.keys_in_range, capped.keys_in_range_truncated),
        (Some(7), true)
    );

    let everything = inspect_target(&target, &KeyFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(
        everything.keys_in_range,
        Some(24),
        "the reserved prefix never counts"
    );

    // The same cluster as a source: detected as a cluster, every master inspected.
    let source = inspect_source(
        &endpoint("source", &cluster.seed_urls()[1..2], None),
        &tokens_filter(),
    )
    .await
    .unwrap();
    assert!(source.cluster_enabled && source.masters.len() == 3 && source.total_dbsize() == 25);
    let after: Vec<String> = cluster.masters().iter().map(changes).collect();
    assert_eq!(before, after, "inspection must not write");
}

#[tokio::test]
async fn standalone_target_is_reported_not_an_error() {
    let server = RedisServer::start();
    let report = inspect_target(&endpoint("target", &[server.url()], None), &tokens_filter(), 10)
        .await
        .unwrap();
    assert!(!report.cluster_enabled && report.cluster_state.is_none());
    assert_eq!(report.keys_in_range, Some(0));
}

#[tokio::test]
async fn unreachable_url_names_role_and_hides_password() {
    let port = free_port();
    let url = format!("redis://admin:hunter2-secret@127.0.0.1:{port}");
    let err = inspect_source(
        &endpoint("source", std::slice::from_ref(&url), None),
        &KeyFilter::default(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            EndpointError::Unreachable {
                role: Some("source"),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains(&format!("redis://admin:***@127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(msg.contains("[source]"), "{msg}");
    assert!(
        !msg.contains("hunter2-secret") && !format!("{err:?}").contains("hunter2-secret"),
        "{msg}"
    );

    let seeds = [
        format!("redis://127.0.0.1:{}", free_port()),
        format!("redis://127.0.0.1:{}", free_port()),
    ];
    let msg = inspect_target(&endpoint("target", &seeds, None), &KeyFilter::default(), 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot reach target") && msg.contains("[target]"),
        "{msg}"
    );
}

#[tokio::test]
async fn password_protected_source() {
    let server = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]);
    server.cli(&["SET", "token:1", "v"]);
    let ep = endpoint("source", &[server.url()], Some("CACHEMIG_TEST_PW_UNSET_91d2"));

    let report = inspect_source_with_password(&ep, Some("s3cr3t-pw"), &KeyFilter::default())
        .await
        .unwrap();
    assert_eq!(report.total_dbsize(), 1);

    let err = inspect_source_with_password(&ep, None, &KeyFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EndpointError::Auth {
                role: Some("source"),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("requires a password"), "{err}");

    let err = inspect_target_with_password(&ep, Some("wrong-pw-xyz"), &KeyFilter::default(), 5)
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(matches!(err, EndpointError::Auth { .. }), "{msg}");
    assert!(
        !msg.contains("wrong-pw-xyz") && !msg.contains("s3cr3t-pw"),
        "{msg}"
    );

    // password_env names an unset variable: the error names it, and nothing is contacted.
    let msg = inspect_source(&ep, &KeyFilter::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("CACHEMIG_TEST_PW_UNSET_91d2") && msg.contains("[source]"),
        "{msg}"
    );

    // The real environment path, without mutating this process' environment: re-run this test
    // binary's `password_from_env_child` with the variable set.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "password_from_env_child", "--nocapture"])
        .env("CACHEMIG_TEST_PW_CHILD", "s3cr3t-pw")
        .env("CACHEMIG_TEST_PW_CHILD_URL", server.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("child inspected 1 key"),
        "{text}"
    );
}

/// Runs only when spawned by `password_protected_source` (which sets the variables).
#[tokio::test]
async fn password_from_env_child() {
    let Ok(url) = std::env::var("CACHEMIG_TEST_PW_CHILD_URL") else {
        return;
    };
    let ep = endpoint("source", &[url], Some("CACHEMIG_TEST_PW_CHILD"));
    let report = inspect_source(&ep, &KeyFilter::default()).await.unwrap();
    println!("child inspected {} key", report.total_dbsize());
}

#[test]
fn harness_cluster_starts_and_frees_its_ports() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    eprintln!("3-master cluster up in {:?}", started.elapsed());
    assert!(cluster.is_ok());
    assert_eq!(cluster.nodes().len(), 3);
    let mut c = cluster.cluster_conn();
    redis::cmd("SET").arg("k").arg("v").query::<()>(&mut c).unwrap();
    assert_eq!(cluster.cli(&["GET", "k"]), "v");
    assert_eq!(cluster.dbsize(), 1);
    let ports: Vec<u16> = cluster
        .nodes()
        .iter()
        .flat_map(|n| [n.port(), n.bus_port().unwrap()])
        .collect();
    drop(cluster);
    for port in ports {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
}

#[test]
fn plan_warns_when_the_target_may_evict_migrated_keys() {
    let sb = common::sandbox::Sandbox::start();
    for m in sb.target.masters() {
        m.cli(&["CONFIG", "SET", "maxmemory", "1gb"]);
        m.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    }
    sb.cachemig(&["plan"])
        .assert_stdout_contains("maxmemory-policy allkeys-lru")
        .assert_stdout_contains("evicts migrated keys");
}
