//! `FLUSHDB`/`FLUSHALL` through the proxy (issue 8): refused unless the plan allows them; then
//! applied to both sides, sparing cachemig's own keys.

mod common;

use common::compare::differences;
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;
use common::wire::phase;
use redis::Commands;

/// Every key on old and on every master of new.
fn all_keys(sb: &Sandbox) -> (Vec<String>, Vec<String>) {
    let mut old: Vec<String> = sb.source.conn().keys("*").unwrap();
    let mut new: Vec<String> = sb
        .target
        .masters()
        .iter()
        .flat_map(|m| m.conn().keys::<_, Vec<String>>("*").unwrap())
        .collect();
    old.sort();
    new.sort();
    (old, new)
}

#[test]
fn flushall_is_refused_by_default_and_with_allow_flush_empties_both_sides_but_cachemigs_own_keys() {
    let mut sb = Sandbox::start();
    let migrating: Vec<String> = (0..40).map(|i| format!("token:flush:{i}")).collect();
    let staying: Vec<String> = (0..5).map(|i| format!("other:{i}")).collect();
    let write_all = |c: &mut redis::Connection| {
        for k in migrating.iter().chain(&staying) {
            let _: () = c.set(k, "v").unwrap();
        }
    };
    {
        let proxy = ProxyProcess::start(&sb, "p1");
        phase(&sb, &proxy, "sync-dual-write", 1);
        let mut c = proxy.conn();
        write_all(&mut c);
        let refused = redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap_err();
        assert!(refused.to_string().contains("allow_flush"), "{refused}");
        let left: i64 = sb.source.conn().exists(&migrating).unwrap();
        assert_eq!(left, 40, "a refused FLUSHALL deleted nothing");
    }
    // The sandbox appends this right after its `[proxies]` table.
    sb.set_plan_extra("allow_flush = true\n");
    let proxy = ProxyProcess::start(&sb, "p2");
    phase(&sb, &proxy, "sync-dual-write", 2);
    let mut c = proxy.conn();
    write_all(&mut c);
    // Keys that are not the application's: cachemig's own on old, another tenant's on new.
    let _: () = sb.source.conn().set("__cachemig:probe", "kept").unwrap();
    let _: () = sb.target.cluster_conn().set("foreign:key", "kept").unwrap();
    common::wait_for(
        "the proxy's report on new",
        std::time::Duration::from_secs(10),
        || all_keys(&sb).1.iter().any(|k| k.starts_with("__cachemig:")),
    );
    let bad = redis::cmd("FLUSHALL").arg("NOW").query::<()>(&mut c).unwrap_err();
    assert!(bad.to_string().contains("syntax error"), "{bad}");
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let (old, new) = all_keys(&sb);
    assert_eq!(old, ["__cachemig:probe"], "old after FLUSHALL");
    assert!(new.contains(&"foreign:key".to_string()), "{new:?}");
    assert!(
        new.iter()
            .all(|k| k == "foreign:key" || k.starts_with("__cachemig:")),
        "new after FLUSHALL: {new:?}"
    );
    // The proxy goes on: a write after the flush is applied and mirrored; FLUSHDB ASYNC too.
    let _: () = c.set(&migrating[0], "after").unwrap();
    let _: () = redis::cmd("FLUSHDB").arg("ASYNC").query(&mut c).unwrap();
    let _: () = c.set(&migrating[1], "last").unwrap();
    let model: Vec<(String, Option<String>)> = migrating
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), (i == 1).then(|| "last".to_string())))
        .collect();
    let (mut o, mut n) = (sb.source.conn(), sb.target.cluster_conn());
    for (key, want) in &model {
        let (on_old, on_new): (Option<String>, Option<String>) = (o.get(key).unwrap(), n.get(key).unwrap());
        assert_eq!((&on_old, &on_new), (want, want), "{key}");
    }
    assert!(differences(&sb, &migrating).is_empty());
}
