//! Row: a source with database 3 and an ACL user (`redis://app@old/3`, the password from the
//! environment).
//!
//! Keys exist in database 3 before the backfill, and decoys of the same names in database 0.
//! Two proxies and writers go through every phase to `write-stop`: the backfill, the proxies'
//! writes and mirrors, the reverse mirror all use database 3 as `app`. At the end old's
//! database 3 and new equal the model (seeded keys included), database 0 still holds only its
//! decoys, and every cachemig connection on old is `app` in database 3.

use std::time::Duration;

use crate::common::load::{self, Model, Value, Writers};
use crate::common::proxy::ProxyProcess;
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

const PASSWORD: &str = "app-secret";

fn connect(port: u16, user: &str, db: u8) -> redis::Connection {
    redis::Client::open(format!("redis://{user}:{PASSWORD}@127.0.0.1:{port}/{db}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn source_db3_acl_user() {
    let mut sb = Sandbox::start_with_source_password(PASSWORD);
    let port = sb.source.port();
    let mut admin = connect(port, "default", 0);
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "app",
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .query(&mut admin)
        .unwrap();
    let mut db3 = connect(port, "app", 3);
    let mut seeded = Model::new();
    for i in 0..20 {
        let key = format!("token:d3:seed{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut db3).unwrap();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("decoy")
            .query(&mut admin)
            .unwrap();
        seeded.insert(key, Value::Text(i.to_string()));
    }
    // The writers' first INCRs find these counters in database 3 (100) and decoys in 0.
    for w in 0..4 {
        for i in 0..8 {
            let key = format!("token:d3:w{w}:counter{i}");
            let _: () = redis::cmd("SET").arg(&key).arg(100).query(&mut db3).unwrap();
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("decoy")
                .query(&mut admin)
                .unwrap();
        }
    }
    sb.rewrite_plan_source(&format!("redis://app@127.0.0.1:{port}/3"));
    load::configure(&mut sb, 2, "");
    let (p1, p2) = (
        ProxyProcess::start_with_env(&sb, "p1", &[]),
        ProxyProcess::start_with_env(&sb, "p2", &[]),
    );
    let writers = Writers::start("token:d3", &[p1.port, p2.port], 4);
    load::advance_to(&sb, &[&p1, &p2], "write-stop");
    writers.wait_progress(100);
    let out = writers.finish();
    assert!(out.errors.is_empty(), "client errors: {:?}", out.errors);
    for p in [&p1, &p2] {
        wait_for("reverse mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let counters = out.model.keys().filter(|k| k.contains(":counter")).count();
    assert!(counters > 0, "the writers INCRed the seeded counters");
    let mut model = seeded;
    model.extend(out.model);
    let differences = load::differences_on(&mut db3, &mut sb.target.cluster_conn(), &model);
    assert!(differences.is_empty(), "{differences:#?}");
    let db0: Vec<String> = redis::cmd("KEYS").arg("token:*").query(&mut admin).unwrap();
    assert_eq!(db0.len(), 20 + 32, "database 0 holds only its decoys: {db0:?}");
    let values: Vec<String> = redis::cmd("MGET").arg(&db0).query(&mut admin).unwrap();
    assert!(values.iter().all(|v| v == "decoy"), "{values:?}");
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let ours: Vec<&str> = clients.lines().filter(|l| l.contains("name=cachemig")).collect();
    assert!(!ours.is_empty(), "{clients}");
    assert!(
        ours.iter().all(|l| l.contains("user=app") && l.contains("db=3")),
        "{clients}"
    );
}
