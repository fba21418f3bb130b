//! Issue 9, the fault matrix: one test per row, black box (real redis-servers, real proxies, the
//! real CLI), faults injected with kill -9, SIGSTOP, CLIENT PAUSE, a TCP relay that delays or
//! cuts, and cluster failovers. Every row ends with old and new compared key by key against a
//! model of every acknowledged write: zero differences.
//!
//! Each row lives in its own module below, so rows can be read (and run, with
//! `cargo test --test fault_matrix <module>`) one at a time. Rows proved elsewhere are listed in
//! `docs/guarantees.md` with the test that proves them.

#[path = "../common/mod.rs"]
mod common;

mod acked;
mod bypassing_writer;
mod flag_file_delayed_20s;
mod hot_key_read_cutover;
mod load;
mod missing_flag_file_in_write_stop;
mod new_master_failover;
mod proxy_clock_skew;
mod proxy_kill;
mod rolling_restart;
mod source_db3_acl_user;
mod surplus_proxy_lags_one_generation;
mod verify_repair_write_stop;
