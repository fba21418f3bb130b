//! Row: a hot key at about 1,000 writes/s through two proxies in `read-cutover` (a counter INCRed
//! from eight threads through both proxies, paced at up to 2,000/s, until 4,000 INCRs were
//! acknowledged; a queue fed through one and drained through the other; the rate reached is
//! printed, not asserted, since the loaded test machine sets it): zero client errors, no failed mirror, and old and new both equal the model (the
//! counter = the INCRs acknowledged, the queue = what was pushed and not popped). The writers
//! live in `tests/common/hotkeys.rs`; `tests/proxy_hotkeys.rs` runs them in the other phases.

use crate::common::hotkeys::hot_keys_in;

#[test]
fn hot_key_read_cutover() {
    hot_keys_in("read-cutover");
}
