//! Unit tests of `watch`.

use super::*;

fn flag(migration: &str, generation: u64) -> FlagFile {
    crate::flags::file::sample_flag(migration, generation)
}

fn path() -> &'static Path {
    Path::new("/x/flags.json")
}

#[test]
fn higher_generations_apply_and_lower_ones_are_ignored_once() {
    let mut rules = Rules::new(None);
    rules.observe(Ok(Some(flag("t", 5))), path());
    assert_eq!(rules.state.generation(), 5);
    for _ in 0..3 {
        rules.observe(Ok(Some(flag("t", 3))), path());
    }
    assert_eq!(rules.state.generation(), 5);
    assert_eq!(rules.state.ignored, 1);
    assert_eq!(
        rules.state.last_warning.as_deref(),
        Some("ignored generation 3 lower than applied 5")
    );
    assert_eq!(rules.state.errors, 0);
    rules.observe(Ok(Some(flag("t", 6))), path());
    assert_eq!(rules.state.generation(), 6);
}

#[test]
fn rereading_the_applied_document_changes_nothing() {
    let mut rules = Rules::new(None);
    let f = flag("t", 2);
    rules.observe(Ok(Some(f.clone())), path());
    let before = rules.state.clone();
    rules.observe(Ok(Some(f)), path());
    assert_eq!(rules.state, before);
}

#[test]
fn a_persistent_failure_counts_once_and_keeps_the_last_good() {
    let mut rules = Rules::new(None);
    rules.observe(Ok(Some(flag("t", 2))), path());
    for _ in 0..3 {
        rules.observe(Err(FlagError::Checksum), path());
    }
    assert_eq!(
        (rules.state.errors, rules.state.failing, rules.state.generation()),
        (1, true, 2)
    );
    rules.observe(Ok(Some(flag("t", 2))), path());
    assert!(!rules.state.failing);
    assert!(rules.state.last_error.as_deref().unwrap().contains("checksum"));
    rules.observe(Err(FlagError::Empty), path());
    assert_eq!(rules.state.errors, 2);
}

#[test]
fn a_missing_file_is_planned_until_something_was_applied() {
    let mut rules = Rules::new(None);
    rules.observe(Ok(None), path());
    assert_eq!(
        (rules.state.errors, rules.state.generation(), rules.state.phase()),
        (0, 0, "planned")
    );
    rules.observe(Ok(Some(flag("t", 4))), path());
    rules.observe(Ok(None), path());
    assert_eq!(rules.state.errors, 1);
    assert_eq!(
        rules.state.last_error.as_deref(),
        Some("/x/flags.json: flag file disappeared; keeping generation 4")
    );
    assert_eq!(rules.state.generation(), 4);
}

#[test]
fn another_migrations_file_is_an_error() {
    let mut rules = Rules::new(Some("tokens".into()));
    rules.observe(Ok(Some(flag("sessions", 9))), path());
    assert_eq!((rules.state.errors, rules.state.generation()), (1, 0));
    assert!(
        rules
            .state
            .last_error
            .as_deref()
            .unwrap()
            .contains("\"sessions\"")
    );
    rules.observe(Ok(Some(flag("tokens", 1))), path());
    assert_eq!(rules.state.generation(), 1);
}

#[test]
fn a_different_document_with_the_applied_generation_is_ignored() {
    let mut rules = Rules::new(None);
    let first = flag("t", 3);
    let mut other = first.clone();
    other.phase = "async-dual-write".into();
    other.seal();
    rules.observe(Ok(Some(first.clone())), path());
    rules.observe(Ok(Some(other)), path());
    assert_eq!(rules.state.applied.as_deref(), Some(&first));
    assert_eq!(rules.state.ignored, 1);
}

#[test]
fn a_watcher_can_be_shared_between_threads_and_tasks() {
    fn shareable<T: Send + Sync>() {}
    shareable::<FlagWatcher>();
    shareable::<WatchState>();
}

#[test]
fn the_watchers_own_reads_do_not_wake_it() {
    let open = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Read)));
    let closed = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)));
    let written = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)));
    let created = Event::new(EventKind::Create(notify::event::CreateKind::File));
    assert!(!worth_a_read(&Ok(open)));
    assert!(!worth_a_read(&Ok(closed)));
    assert!(worth_a_read(&Ok(written)));
    assert!(worth_a_read(&Ok(created)));
}
