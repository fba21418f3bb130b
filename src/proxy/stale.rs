//! Is this proxy's flag file current? (design §11)
//!
//! Every heartbeat reads the generation beacon the CLI publishes in the new cluster. A proxy whose
//! applied generation stays behind it for longer than `stale_after` (a ConfigMap that lags, a
//! mount that broke, a file the proxy can no longer read) refuses writes, keeps serving reads
//! with its last good routing, and reports itself stale, until its flag file catches up. A proxy
//! that starts behind the beacon is stale at once. Writes refused are not applied anywhere, so a
//! stale proxy can never be the second primary.

use std::time::Instant;

use super::Proxy;
use crate::beacon::{self, Beacon};
use crate::cluster::Router;

/// Tracks how long the proxy has been behind the beacon.
#[derive(Default)]
pub struct Check {
    /// When the applied generation was first seen behind the beacon (`None`: not behind). The
    /// first check counts as "long ago": a proxy that starts behind is stale at once.
    behind_since: Option<Instant>,
    checked: bool,
    /// Behind since the first check: stale until caught up, without a grace.
    started_behind: bool,
}

impl Check {
    /// Reads the beacon and updates the proxy's stale state. An unreadable beacon (new down)
    /// leaves the state as it was.
    pub async fn tick(&mut self, proxy: &Proxy, router: &Router) {
        let Ok(read) = beacon::read(router, &proxy.migration).await else {
            return;
        };
        let applied = proxy.applied().generation;
        let verdict = self.judge(read.as_ref(), applied, proxy.stale_after);
        let changed = proxy.stale() != verdict;
        if changed {
            match &verdict {
                Some(why) => tracing::warn!("stale: {why}"),
                None => tracing::info!("no longer stale: the flag file caught up with the beacon"),
            }
        }
        proxy.metrics.stale.set(i64::from(verdict.is_some()));
        if let Ok(mut stale) = proxy.stale.write() {
            *stale = verdict;
        }
    }

    fn judge(
        &mut self,
        read: Option<&Beacon>,
        applied: u64,
        stale_after: std::time::Duration,
    ) -> Option<String> {
        let first = !std::mem::replace(&mut self.checked, true);
        let Some(beacon) = read.filter(|b| b.generation > applied) else {
            self.behind_since = None;
            self.started_behind = false;
            return None;
        };
        self.started_behind |= first;
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        if self.started_behind || since.elapsed() > stale_after {
            return Some(format!(
                "the flag file's generation {applied} is behind the migration's generation {} ({}); writes are refused until the flag file catches up",
                beacon.generation, beacon.phase
            ));
        }
        None
    }
}

/// What a write gets from a stale proxy.
pub fn refusal(why: &str) -> String {
    format!("TRYAGAIN cachemig: this proxy is stale: {why}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn beacon(generation: u64) -> Beacon {
        Beacon {
            generation,
            phase: "write-stop".into(),
        }
    }

    #[test]
    fn behind_at_start_is_stale_at_once_and_a_lag_only_after_the_grace() {
        let grace = Duration::from_millis(50);
        let mut check = Check::default();
        assert!(
            check.judge(Some(&beacon(5)), 0, grace).is_some(),
            "started behind"
        );
        assert!(check.judge(Some(&beacon(5)), 5, grace).is_none(), "caught up");
        let mut check = Check::default();
        assert!(check.judge(None, 0, grace).is_none(), "no beacon: planned");
        assert!(
            check.judge(Some(&beacon(6)), 5, grace).is_none(),
            "within the grace"
        );
        std::thread::sleep(Duration::from_millis(80));
        let why = check.judge(Some(&beacon(6)), 5, grace).expect("past the grace");
        assert!(check.judge(Some(&beacon(6)), 5, grace).is_some(), "stays stale");
        assert!(
            why.contains("generation 5 is behind the migration's generation 6"),
            "{why}"
        );
        assert!(
            check.judge(Some(&beacon(6)), 7, grace).is_none(),
            "ahead of the beacon"
        );
    }
}
