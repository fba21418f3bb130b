//! Row "a new-cluster master failover during sync mirror": two proxies in `sync-dual-write`
//! under a writer load; a master of the new cluster is killed with kill -9 and its replica takes
//! over. Syncs to its slots fail meanwhile (counted; the keys stay in the proxies' backlogs and
//! are retried); once the replica serves them the mirrors catch up; old and new end equal to the
//! model of every acknowledged write.

use std::time::Duration;

use super::load::{self, Load};
use crate::common::proxy::{ProxyProcess, set_phase};
use crate::common::reports::expect_proxies;
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

#[test]
fn new_master_failover_during_sync_mirror() {
    let mut sb = Sandbox::start_with_replicas();
    sb.set_plan_extra("[dual_write]\nsync_timeout_ms = 500\n");
    expect_proxies(&sb, 2, "");
    set_phase(&sb.flag_path(), "sync-dual-write", 1, false, 0.0);
    let p1 = ProxyProcess::start(&sb, "p1");
    let p2 = ProxyProcess::start(&sb, "p2");
    p1.wait_generation(1);
    p2.wait_generation(1);

    let load = Load::start(&[p1.port, p2.port]);
    load.wait_for_more(500);
    sb.target.nodes_mut()[0].kill();
    let survivor = &sb.target.nodes()[1];
    wait_for("a replica took over", Duration::from_secs(30), || {
        let info: String = survivor.query(&["CLUSTER", "INFO"]);
        info.contains("cluster_state:ok")
    });
    load.wait_for_more(1000);
    let model = load.finish();

    load::assert_drained_and_equal(&sb, &[&p1, &p2], &model, "the failover");
}
