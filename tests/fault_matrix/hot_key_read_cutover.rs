//! Row: a hot key at about 1,000 writes/s through two proxies in `read-cutover` (a counter INCRed
//! from eight threads through both proxies, a queue fed through one and drained through the
//! other): zero client errors, no failed mirror, and old and new both equal the model (the
//! counter = the INCRs acknowledged, the queue = what was pushed and not popped). The writers
//! live in `tests/common/hotkeys.rs`; `tests/proxy_hotkeys.rs` runs them in the other phases.

use crate::common::hotkeys::hot_keys_in;

#[test]
fn hot_key_read_cutover() {
    hot_keys_in("read-cutover");
}
