//! Parsing `INFO` and `CLUSTER NODES` replies.

use std::collections::HashMap;

/// `INFO` as a map of `field → value` (section headers and blank lines dropped).
pub(crate) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One master line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterMaster {
    /// Announced host; empty when the node does not know its own address yet.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Slots served by this master.
    pub slots: u32,
    /// Flagged `fail` or `fail?` by the node we asked.
    pub failing: bool,
}

/// The masters serving at least one slot, sorted by address. Lines flagged `noaddr` or
/// `handshake` are skipped; importing/migrating markers (`[slot->-id]`) are not counted.
pub(crate) fn parse_cluster_masters(text: &str) -> Vec<ClusterMaster> {
    let mut masters: Vec<ClusterMaster> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "noaddr" | "handshake")) {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = fields[1].split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let slots = fields[8..].iter().map(|s| slot_count(s)).sum();
            let failing = flags.iter().any(|f| matches!(*f, "fail" | "fail?"));
            let port = port.parse().ok()?;
            (slots > 0).then(|| ClusterMaster {
                host: host.to_string(),
                port,
                slots,
                failing,
            })
        })
        .collect();
    masters.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    masters
}

fn slot_count(token: &str) -> u32 {
    if token.starts_with('[') {
        return 0;
    }
    match token.split_once('-') {
        Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if b >= a => b - a + 1,
            _ => 0,
        },
        None => u32::from(token.parse::<u16>().is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = parse_info(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n",
        );
        assert_eq!(info["redis_version"], "7.0.15");
        assert_eq!(info["cluster_enabled"], "1");
    }

    #[test]
    fn cluster_nodes_masters() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002,host-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail? - 0 1426238318243 3 connected 10923-16383 [5460->-67ed]
e7d1 :30001@31001 myself,master - 0 0 1 connected 0-5459 5460
aaaa 127.0.0.1:30009@31009 master - 0 0 9 connected
bbbb 127.0.0.1:30010@31010 master,noaddr - 0 0 9 disconnected 1
";
        let masters = parse_cluster_masters(text);
        assert_eq!(masters.len(), 3, "{masters:?}");
        assert_eq!(
            masters[0],
            ClusterMaster {
                host: "".into(),
                port: 30001,
                slots: 5461,
                failing: false
            }
        );
        assert_eq!(masters[1].slots, 5462);
        assert!(masters[2].failing && masters[2].slots == 5461);
        assert_eq!(masters.iter().map(|m| m.slots).sum::<u32>(), 16384);
    }
}
