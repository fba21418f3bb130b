//! The flag watcher against real files: every way a flag file can change under a reader.
//!
//! Each test ends on the newest valid generation and proves that no invalid document was applied
//! in between: invalid documents carry a high generation (`BAD`), so had one been applied, the
//! later valid, lower generation would have been ignored instead of applied.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cachemig::flags::{
    FlagFile, FlagRouting, FlagWatcher, ShadowRead, WatchOptions, WatchState, write_atomic,
};
use cachemig::phase::Catalog;

/// The generation given to every invalid document.
const BAD: u64 = 50;
/// How long a condition may take before the test fails; a failure bound, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(10);

fn flag(generation: u64) -> FlagFile {
    let phases = Catalog::builtin().phases();
    let phase = &phases[generation as usize % phases.len()];
    let shadow = ShadowRead {
        sample_rate: 0.05,
        timeout_ms: 50,
    };
    FlagFile::new("tokens", generation, phase, shadow, "plan-sha", false)
}

fn options(poll_interval: Duration) -> WatchOptions {
    WatchOptions {
        poll_interval,
        expected_migration: Some("tokens".into()),
    }
}

/// Events and a short poll: the configuration most tests use.
fn start(path: &Path) -> FlagWatcher {
    FlagWatcher::start(path.to_path_buf(), options(Duration::from_millis(100))).unwrap()
}

/// A poll interval no test outlives: only directory events can wake the watcher.
fn start_events_only(path: &Path) -> FlagWatcher {
    let watcher = FlagWatcher::start(path.to_path_buf(), options(Duration::from_secs(3600))).unwrap();
    assert_eq!(
        watcher.current().notify_error,
        None,
        "file-system notifications unavailable"
    );
    watcher
}

fn wait_for(watcher: &FlagWatcher, what: &str, condition: impl Fn(&WatchState) -> bool) -> WatchState {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = watcher.current();
        if condition(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; state: {state:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_generation(watcher: &FlagWatcher, generation: u64) -> WatchState {
    wait_for(watcher, &format!("generation {generation}"), |s| {
        s.generation() == generation
    })
}

fn wait_for_error(watcher: &FlagWatcher, needle: &str) -> WatchState {
    let state = wait_for(watcher, &format!("an error mentioning {needle:?}"), |s| {
        s.failing && s.last_error.as_deref().is_some_and(|e| e.contains(needle))
    });
    assert!(state.errors >= 1);
    state
}

/// A temp dir with `flags.json` at generation 1 and a watcher on it that has applied it.
fn watched_at_generation_1() -> (tempfile::TempDir, PathBuf, FlagWatcher) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    write_atomic(&path, &flag(1)).unwrap();
    let watcher = start(&path);
    wait_for_generation(&watcher, 1);
    (dir, path, watcher)
}

/// Ends every scenario: a valid generation 2 is applied and the failure is over.
fn recovers_with_generation_2(path: &Path, watcher: &FlagWatcher) {
    write_atomic(path, &flag(2)).unwrap();
    let state = wait_for_generation(watcher, 2);
    assert!(!state.failing, "{state:#?}");
    assert_eq!(state.applied.as_deref(), Some(&flag_on_disk(path)));
}

fn flag_on_disk(path: &Path) -> FlagFile {
    FlagFile::parse(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn applies_the_initial_file_then_a_newer_one_renamed_over_it() {
    let (_dir, path, watcher) = watched_at_generation_1();
    let state = watcher.current();
    assert_eq!((state.errors, state.ignored, state.failing), (0, 0, false));
    assert_eq!(state.applied.as_deref(), Some(&flag_on_disk(&path)));

    write_atomic(&path, &flag(2)).unwrap();
    wait_for_generation(&watcher, 2);
    write_atomic(&path, &flag(3)).unwrap();
    let state = wait_for_generation(&watcher, 3);
    assert_eq!(state.phase(), flag(3).phase);
    assert_eq!(watcher.applied_generation(), 3);
    assert_eq!(state.errors, 0);
}

#[test]
fn directory_events_alone_pick_up_a_rename_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    write_atomic(&path, &flag(1)).unwrap();
    let watcher = start_events_only(&path);
    assert_eq!(
        watcher.applied_generation(),
        1,
        "the first read happens before start returns"
    );
    write_atomic(&path, &flag(2)).unwrap();
    wait_for_generation(&watcher, 2);
}

/// Lays out a directory the way the kubelet projects a ConfigMap volume.
#[cfg(unix)]
struct ConfigMapDir {
    dir: tempfile::TempDir,
    version: u32,
}

#[cfg(unix)]
impl ConfigMapDir {
    fn new(first: &FlagFile) -> ConfigMapDir {
        let dir = tempfile::tempdir().unwrap();
        let mut cm = ConfigMapDir { dir, version: 0 };
        let data = cm.add_version(first);
        std::os::unix::fs::symlink(&data, cm.path_of("..data")).unwrap();
        std::os::unix::fs::symlink("..data/flags.json", cm.flag_path()).unwrap();
        cm
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the application is told to read.
    fn flag_path(&self) -> PathBuf {
        self.path_of("flags.json")
    }

    /// Writes a new timestamped directory; returns its name.
    fn add_version(&mut self, flag: &FlagFile) -> String {
        self.version += 1;
        let name = format!("..2026_11_21_23_00_0{}", self.version);
        fs::create_dir(self.path_of(&name)).unwrap();
        fs::write(self.path_of(&name).join("flags.json"), flag.to_pretty_json()).unwrap();
        name
    }

    /// The kubelet's update: new directory, `..data_tmp` symlink, rename over `..data`, then the
    /// old directory is removed.
    fn swap_to(&mut self, flag: &FlagFile) {
        let old = fs::read_link(self.path_of("..data")).unwrap();
        let new = self.add_version(flag);
        std::os::unix::fs::symlink(&new, self.path_of("..data_tmp")).unwrap();
        fs::rename(self.path_of("..data_tmp"), self.path_of("..data")).unwrap();
        fs::remove_dir_all(self.dir.path().join(old)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn follows_a_kubernetes_configmap_symlink_swap() {
    let mut cm = ConfigMapDir::new(&flag(1));
    let watcher = start(&cm.flag_path());
    wait_for_generation(&watcher, 1);
    cm.swap_to(&flag(2));
    wait_for_generation(&watcher, 2);
    cm.swap_to(&flag(3));
    let state = wait_for_generation(&watcher, 3);
    assert_eq!(state.errors, 0, "{state:#?}");
}

#[cfg(unix)]
#[test]
fn directory_events_alone_pick_up_a_symlink_swap() {
    let mut cm = ConfigMapDir::new(&flag(1));
    let watcher = start_events_only(&cm.flag_path());
    assert_eq!(watcher.applied_generation(), 1);
    cm.swap_to(&flag(2));
    wait_for_generation(&watcher, 2);
}

#[test]
fn a_truncated_in_place_write_is_not_applied() {
    let (_dir, path, watcher) = watched_at_generation_1();
    let text = flag(BAD).to_pretty_json();
    // Non-atomic, as a careless writer (or an editor) would do it.
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let state = wait_for_error(&watcher, "malformed");
    assert_eq!(state.generation(), 1);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn garbage_keeps_the_last_good_generation() {
    let (_dir, path, watcher) = watched_at_generation_1();
    fs::write(&path, b"\x00\xff\xfe not json {{{").unwrap();
    let state = wait_for_error(&watcher, "malformed");
    assert_eq!(state.generation(), 1);
    assert_eq!(state.routing(), flag(1).routing);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn a_lower_generation_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    write_atomic(&path, &flag(5)).unwrap();
    let watcher = start(&path);
    wait_for_generation(&watcher, 5);
    write_atomic(&path, &flag(3)).unwrap();
    let state = wait_for(&watcher, "an ignored generation", |s| s.ignored >= 1);
    assert_eq!(state.generation(), 5);
    assert_eq!(
        state.last_warning.as_deref(),
        Some("ignored generation 3 lower than applied 5")
    );
    assert_eq!((state.errors, state.failing), (0, false));
    write_atomic(&path, &flag(6)).unwrap();
    wait_for_generation(&watcher, 6);
}

#[test]
fn a_tampered_field_fails_the_checksum_and_is_not_applied() {
    let (_dir, path, watcher) = watched_at_generation_1();
    let text = flag(BAD).to_pretty_json();
    let tampered = text.replacen(r#""read": "old""#, r#""read": "new""#, 1);
    assert_ne!(tampered, text);
    fs::write(&path, tampered).unwrap();
    let state = wait_for_error(&watcher, "checksum");
    assert_eq!(state.generation(), 1);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn an_empty_file_is_not_applied() {
    let (_dir, path, watcher) = watched_at_generation_1();
    fs::write(&path, b"").unwrap();
    let state = wait_for_error(&watcher, "empty");
    assert_eq!(state.generation(), 1);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn a_directory_created_after_start_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-yet/flags.json");
    let watcher = start(&path);
    let state = watcher.current();
    assert_eq!(
        (state.generation(), state.phase(), state.errors),
        (0, "planned", 0)
    );
    assert_eq!(state.routing(), FlagRouting::planned());

    fs::create_dir(path.parent().unwrap()).unwrap();
    write_atomic(&path, &flag(1)).unwrap();
    wait_for_generation(&watcher, 1);
    write_atomic(&path, &flag(2)).unwrap();
    let state = wait_for_generation(&watcher, 2);
    assert_eq!(state.errors, 0);
}

#[test]
fn a_deleted_file_keeps_its_generation_and_reports_it() {
    let (_dir, path, watcher) = watched_at_generation_1();
    fs::remove_file(&path).unwrap();
    let state = wait_for_error(&watcher, "disappeared; keeping generation 1");
    assert_eq!(state.generation(), 1);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn a_file_for_another_migration_is_never_applied() {
    let (_dir, path, watcher) = watched_at_generation_1();
    let spec = Catalog::builtin().get("backfill").unwrap();
    let other = FlagFile::new(
        "sessions",
        BAD,
        spec,
        ShadowRead {
            sample_rate: 0.1,
            timeout_ms: 5,
        },
        "",
        false,
    );
    write_atomic(&path, &other).unwrap();
    let state = wait_for_error(&watcher, "\"sessions\"");
    assert_eq!(state.generation(), 1);
    recovers_with_generation_2(&path, &watcher);
}

#[test]
fn check_now_rereads_without_an_event_or_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    // A file in a directory that is swapped in under the watched path's parent after start, so
    // neither the (missing) directory watch nor the hour-long poll would see it.
    let path = dir.path().join("later/flags.json");
    let watcher = FlagWatcher::start(path.clone(), options(Duration::from_secs(3600))).unwrap();
    let staging = dir.path().join("staging");
    write_atomic(&staging.join("flags.json"), &flag(1)).unwrap();
    fs::rename(&staging, path.parent().unwrap()).unwrap();
    watcher.check_now();
    wait_for_generation(&watcher, 1);
}

#[tokio::test]
async fn subscribers_are_told_about_a_new_generation() {
    let (_dir, path, watcher) = watched_at_generation_1();
    let mut updates = watcher.subscribe();
    assert!(
        updates.has_changed().unwrap(),
        "a new subscriber starts with the current state"
    );
    assert_eq!(updates.borrow_and_update().generation(), 1);
    write_atomic(&path, &flag(2)).unwrap();
    let wait = updates.wait_for(|s| s.generation() == 2);
    let state = tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("no update")
        .unwrap()
        .clone();
    assert_eq!(state.routing(), flag(2).routing);
}

#[test]
fn dropping_the_watcher_stops_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let watcher =
        FlagWatcher::start(dir.path().join("flags.json"), options(Duration::from_secs(3600))).unwrap();
    let updates = watcher.subscribe();
    // Drop joins the thread: with an hour-long poll this returns only if the stop request wakes it.
    drop(watcher);
    assert!(
        updates.has_changed().is_err(),
        "the publishing side is gone once the thread ended"
    );
}
