//! Issue 11: `cachemig finalize`, the one irreversible step (only from write-stop, gated,
//! confirmed by the migration's name, a dry run changes nothing; afterwards new serves everything
//! and every mutating command refuses), and the rollback out of write-stop when the proxies are
//! down (a refusal that says what to do, and a journaled `--force`).

mod common;

use std::time::Duration;

use common::load::{Model, Value, Writers, advance_to, configure, differences, settle};
use common::proxy::ProxyProcess;
use common::reports::{clear_reports, expect_proxies, report, verify_for_gate, walk_to, write_report};
use common::sandbox::Sandbox;
use redis::Commands;

/// The sandbox migration's name (`--confirm` wants it).
const NAME: &str = "sandbox";

/// Waits, as an operator would, until `plan --detailed-exitcode` says the next step is ready.
fn wait_finalize_ready(sb: &Sandbox) {
    common::wait_for("finalize's gates pass", Duration::from_secs(60), || {
        sb.cachemig(&["plan", "--detailed-exitcode"]).status == 4
    });
}

#[test]
fn finalize_is_gated_confirmed_and_irreversible_and_then_new_alone_is_written() {
    let mut sb = Sandbox::start();
    configure(&mut sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let proxies = [&p1, &p2];
    sb.fill_source(50);

    // Not before write-stop.
    sb.cachemig(&["finalize", "--confirm", NAME])
        .assert_code(2)
        .assert_stderr_contains("finalize goes only from write-stop")
        .assert_stderr_contains("planned");

    let writers = Writers::start("token:live", &[p1.port, p2.port], 2);
    advance_to(&sb, &proxies, "write-stop");
    writers.wait_progress(200);
    let outcome = writers.finish();
    assert!(
        outcome.errors.is_empty(),
        "clients saw errors: {:?}",
        outcome.errors
    );
    let write_stop = sb.flag().unwrap().generation;

    // Not without the migration's name.
    sb.cachemig(&["finalize"])
        .assert_code(2)
        .assert_stderr_contains("--confirm sandbox");
    sb.cachemig(&["finalize", "--confirm", "sandbx"])
        .assert_code(2)
        .assert_stderr_contains("`sandbx` is not this migration's name")
        .assert_stderr_contains("--confirm sandbox");

    // Not while a gate blocks: the last verify was taken in read-cutover. The refusal is journaled.
    settle(&sb, &proxies);
    let blocked = sb.cachemig(&["finalize", "--confirm", NAME, "--format", "json"]);
    blocked
        .assert_code(3)
        .assert_stderr_contains("gate blocked finalize");
    let verified = blocked.json()["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "verified")
        .unwrap()
        .clone();
    assert_eq!(verified["verdict"], "blocked", "{verified}");
    let measured = verified["measured"].as_str().unwrap();
    assert!(
        measured.contains("not fresh") && measured.contains("run `cachemig verify"),
        "{measured}"
    );
    assert_eq!(sb.flag().unwrap().generation, write_stop);
    let last = sb.journal_text().lines().last().unwrap().to_string();
    assert!(
        last.contains("\"phase\":\"finalized\"") && last.contains("\"passed\":false"),
        "{last}"
    );

    // A dry run shows the gates and the flag-file change, and writes nothing.
    verify_for_gate(&sb);
    wait_finalize_ready(&sb);
    let before = sb.snapshot();
    let dry = sb.cachemig(&["finalize", "--dry-run", "--format", "json"]);
    dry.assert_success();
    let json = dry.json();
    assert_eq!(json["command"], "finalize");
    assert_eq!(json["to"]["phase"], "finalized");
    assert_eq!(json["to"]["generation"], write_stop + 1, "no fence: {json}");
    assert_eq!(json["fenced"], false);
    let gate = |name: &str| {
        json["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gate"] == name)
            .unwrap_or_else(|| panic!("no gate {name}: {json}"))
            .clone()
    };
    for name in ["soak", "proxies-acked", "reverse-mirror-drained", "verified"] {
        assert_eq!(gate(name)["verdict"], "pass", "{}", gate(name));
    }
    assert!(
        gate("reverse-mirror-drained")["measured"]
            .as_str()
            .unwrap()
            .contains("mirror queues empty"),
        "{json}"
    );
    assert_eq!(before, sb.snapshot(), "a dry run wrote something");

    // Finalize, with writers still running through both proxies.
    let late = Writers::start("token:late", &[p1.port, p2.port], 2);
    late.wait_progress(100);
    let reason = "cutover accepted, CHG-42";
    let run = sb.cachemig(&["finalize", "--confirm", NAME, "--reason", reason]);
    run.assert_success().assert_stdout_contains("is finalized");
    settle(&sb, &proxies);
    late.wait_progress(100);
    let late = late.finish();
    assert!(
        late.errors.is_empty(),
        "clients saw errors across finalize: {:?}",
        late.errors
    );
    let on_new: Vec<String> = differences(&sb, &late.model)
        .into_iter()
        .filter(|d| d.starts_with("new "))
        .collect();
    assert_eq!(
        on_new,
        Vec::<String>::new(),
        "every write across finalize is on new"
    );
    let flag = sb.flag().unwrap();
    assert_eq!(
        (flag.phase.as_str(), flag.generation),
        ("finalized", write_stop + 1)
    );
    let r = flag.routing;
    assert_eq!(
        (r.read, r.write, r.mirror, r.fence, r.shadow_read.is_none()),
        (
            cachemig::phase::Side::New,
            cachemig::phase::Side::New,
            cachemig::phase::MirrorMode::Off,
            false,
            true
        )
    );
    let last = sb.journal_entries().pop().unwrap();
    let text = serde_json::to_string(&last).unwrap();
    assert!(
        text.contains("\"kind\":\"finalize\"") && text.contains(reason),
        "{text}"
    );
    assert!(last.user.contains('@'), "user@host: {}", last.user);

    // A write through a live proxy lands on new only; old is not written any more.
    settle(&sb, &proxies);
    let migrated_on_old = |old: &mut redis::Connection| {
        let mut keys: Vec<String> = old.keys("token:*").unwrap();
        keys.sort();
        keys
    };
    let old_keys = migrated_on_old(&mut sb.source.conn());
    let _: () = p1.conn().set("token:after", "new-only").unwrap();
    let _: i64 = p2.conn().rpush("token:after-list", "x").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut new = sb.target.cluster_conn();
    assert_eq!(
        new.get::<_, Option<String>>("token:after").unwrap().as_deref(),
        Some("new-only")
    );
    assert_eq!(
        new.lrange::<_, Vec<String>>("token:after-list", 0, -1).unwrap(),
        ["x"]
    );
    let mut old = sb.source.conn();
    assert_eq!(old.get::<_, Option<String>>("token:after").unwrap(), None);
    assert_eq!(migrated_on_old(&mut old), old_keys, "old unchanged");
    let read: String = p2.conn().get("token:after").unwrap();
    assert_eq!(read, "new-only", "reads come from new");

    // Every mutating command refuses, saying when and by whom; read-only ones still work.
    for args in [
        &["rollback", "--yes"][..],
        &["advance", "--yes"],
        &["resume"],
        &["verify", "--repair"],
        &["finalize", "--confirm", NAME],
    ] {
        sb.cachemig(args)
            .assert_code(2)
            .assert_stderr_contains("migration sandbox was finalized at")
            .assert_stderr_contains(&last.user)
            .assert_stderr_contains(reason);
    }
    assert_eq!(sb.flag().unwrap().generation, write_stop + 1);
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("FINALIZED at")
        .assert_stdout_contains(reason);
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    assert_eq!(status["phase"], "finalized");
    assert_eq!(status["finalized"]["reason"], reason);
    assert!(
        status["previous"].is_null() && status["next"].is_null(),
        "{status}"
    );
    let plan = sb.cachemig(&["plan", "--format", "json"]).json();
    assert_eq!(plan["finalized"]["generation"], write_stop + 1);
    assert!(plan["next"].is_null(), "{plan}");

    // Every write acknowledged before finalize is on both sides; the ones after it on new only.
    let mut model = outcome.model;
    for i in 0..50 {
        model.insert(format!("token:{i}"), Value::Text(format!("value-{i}")));
    }
    assert!(model.len() > 50, "the writers wrote: {}", model.len());
    assert_eq!(differences(&sb, &model), Vec::<String>::new());
}

#[test]
fn rollback_out_of_write_stop_with_the_proxies_down_says_what_to_do_and_force_is_journaled() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[shadow_read]\nmin_samples = 10\n\n[verify]\ngate_sample = 5\n",
    );
    expect_proxies(&sb, 2, "");
    sb.fill_source(20);
    walk_to(&sb, "write-stop");
    let generation = sb.flag().unwrap().generation;

    // Both proxies died in write-stop; p1's crash-safe backlog still names a key it took on new
    // and never mirrored back.
    clear_reports(&sb);
    let mut dead = report("p1", generation, "write-stop");
    dead.written_at_ms -= 60_000;
    write_report(&sb, &dead);
    let mut new = sb.target.cluster_conn();
    let _: () = new.set("token:owed", "written-in-write-stop").unwrap();
    let backlog = cachemig::proxy::backlog::set_key(NAME, "p1");
    let _: i64 = new.sadd(&backlog, "token:owed").unwrap();

    // Without --force: the dead proxy's backlog is synced to old, then the rollback is refused at
    // once (no fence written), and the way out spelled out.
    let refused = sb.cachemig(&["rollback", "--yes"]);
    refused
        .assert_code(3)
        .assert_stderr_contains("drained the mirror backlog of proxy p1: 1 key(s)")
        .assert_stderr_contains("cannot give it: cannot fence: 0 of 2 expected proxies live")
        .assert_stderr_contains("Nothing changed; write-stop stays in force")
        .assert_stderr_contains("1. start the proxies")
        .assert_stderr_contains("2. wait")
        .assert_stderr_contains("--force --reason TEXT")
        .assert_stderr_contains("It risks");
    assert_eq!(sb.flag().unwrap().generation, generation, "no fence was written");
    sb.cachemig(&["rollback", "--dry-run"])
        .assert_success()
        .assert_stdout_contains("would refuse");
    sb.cachemig(&["rollback", "--yes", "--force"]).assert_code(2);

    let on_old: Option<String> = sb.source.conn().get("token:owed").unwrap();
    assert_eq!(
        on_old.as_deref(),
        Some("written-in-write-stop"),
        "the backlog reached old"
    );

    // --force: the switch without the fence, journaled.
    let reason = "proxies cannot start, INC-9";
    sb.cachemig(&["rollback", "--yes", "--force", "--reason", reason])
        .assert_success()
        .assert_stdout_contains("WITHOUT the fence")
        .assert_stderr_contains("warning: forced rollback");
    let flag = sb.flag().unwrap();
    assert_eq!(
        (flag.phase.as_str(), flag.generation, flag.routing.fence),
        ("read-cutover", generation + 1, false)
    );
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    let forced = &status["overrides"][0];
    assert_eq!(
        (forced["gate"].as_str(), forced["reason"].as_str()),
        (Some("fence"), Some(reason))
    );
    // Wide enough that the journal's event cell does not wrap.
    sb.command(&["status"])
        .env("COLUMNS", "400")
        .run()
        .assert_success()
        .assert_stdout_contains(&format!("rollback write-stop -> read-cutover: {reason}"));

    // --force is for that one case only.
    sb.cachemig(&["rollback", "--yes", "--force", "--reason", "x"])
        .assert_code(2)
        .assert_stderr_contains("applies only to the rollback out of write-stop");

    // Old, the primary again, holds what the dead proxy owed it; every key equals the model.
    let mut model = Model::new();
    model.insert("token:owed".into(), Value::Text("written-in-write-stop".into()));
    for i in 0..20 {
        model.insert(format!("token:{i}"), Value::Text(format!("value-{i}")));
    }
    assert_eq!(differences(&sb, &model), Vec::<String>::new());
}
