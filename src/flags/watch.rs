//! Following the flag file from the data plane: what proxies and client routers use.
//!
//! The watcher runs on its own thread (no tokio runtime needed) and publishes through a
//! `tokio::sync::watch` channel, so async code awaits changes and sync code reads the latest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use super::write::parent_dir;
use super::{FlagError, FlagFile, FlagRouting, read};
use crate::phase::Catalog;

/// A poll interval shorter than this would only burn CPU.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How a [`FlagWatcher`] follows the file.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the file is re-read even without a file-system event. Notifications can be lost
    /// (network file systems, overflowing queues, a directory replaced), so polling is the floor
    /// that bounds how stale a reader can be. Default 2 s.
    pub poll_interval: Duration,
    /// When set, a file naming another migration is an error and is never applied: it protects
    /// against a proxy pointed at the wrong file.
    pub expected_migration: Option<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(2),
            expected_migration: None,
        }
    }
}

/// What the watcher has applied and what went wrong on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchState {
    /// The flag file in force; `None` until a valid file was seen (phase `planned`, generation 0).
    pub applied: Option<Arc<FlagFile>>,
    /// Read failures: empty, unparsable, checksum mismatch, wrong migration, unreadable, or a
    /// disappeared file. A failure that persists across retries counts once.
    pub errors: u64,
    /// The most recent failure, kept after recovery so reports can show what happened.
    pub last_error: Option<String>,
    /// Whether the latest read attempt failed (and `last_error` describes it).
    pub failing: bool,
    /// Valid files that were not applied because their generation was lower than (or equal to,
    /// with different contents) the applied one. Each such document counts once.
    pub ignored: u64,
    /// Why the last ignored file was ignored, e.g. "ignored generation 3 lower than applied 5".
    pub last_warning: Option<String>,
    /// Why file-system notifications are unavailable; the watcher then relies on polling alone.
    pub notify_error: Option<String>,
}

impl WatchState {
    /// The applied generation; 0 when none was applied.
    pub fn generation(&self) -> u64 {
        self.applied.as_ref().map_or(0, |f| f.generation)
    }

    /// The applied phase; `planned` when none was applied.
    pub fn phase(&self) -> &str {
        match &self.applied {
            Some(f) => &f.phase,
            None => &Catalog::builtin().first().name,
        }
    }

    /// The routing to use now: the applied file's, or `planned` routing when none was applied.
    pub fn routing(&self) -> FlagRouting {
        self.applied
            .as_ref()
            .map_or_else(FlagRouting::planned, |f| f.routing)
    }
}

/// Why the watcher thread wakes up.
enum Wake {
    /// Something happened in the directory.
    Changed,
    /// [`FlagWatcher::check_now`] was called.
    CheckNow,
    /// The watcher is being dropped.
    Stop,
}

/// Follows a flag file and publishes the routing in force.
///
/// It watches the file's parent directory (a watch on the file itself dies when the file is
/// renamed over or when a Kubernetes `..data` symlink is swapped) and also re-reads every
/// [`WatchOptions::poll_interval`]. On every event or tick it re-opens the file by path, following
/// symlinks, reads it whole and verifies it. A valid file with a higher generation than the
/// applied one is applied; anything else keeps the last good routing (see [`WatchState`]).
/// Dropping the watcher stops and joins its thread.
pub struct FlagWatcher {
    path: PathBuf,
    wake: Sender<Wake>,
    stop: Arc<AtomicBool>,
    state: watch::Receiver<WatchState>,
    thread: Option<JoinHandle<()>>,
}

impl FlagWatcher {
    /// Reads the file once (so [`current`](Self::current) is meaningful on return), then follows
    /// it on a dedicated thread. A missing file or directory is not an error: it is polled for.
    /// Fails only if `path` has no file name or the thread cannot be started.
    pub fn start(path: PathBuf, options: WatchOptions) -> Result<FlagWatcher, FlagError> {
        if path.file_name().is_none() {
            return Err(FlagError::Io(format!("{} does not name a file", path.display())));
        }
        let (wake_tx, wake_rx) = mpsc::channel();
        let (state_tx, state_rx) = watch::channel(WatchState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            path: path.clone(),
            poll_interval: options.poll_interval.max(MIN_POLL_INTERVAL),
            dir: DirWatch::new(parent_dir(&path), wake_tx.clone()),
            rules: Rules::new(options.expected_migration),
            publish: state_tx,
            wake: wake_rx,
            stop: Arc::clone(&stop),
        };
        worker.check();
        let thread = std::thread::Builder::new()
            .name("cachemig-flags".into())
            .spawn(move || worker.run())
            .map_err(|e| FlagError::Io(format!("cannot start the flag watcher thread: {e}")))?;
        Ok(FlagWatcher {
            path,
            wake: wake_tx,
            stop,
            state: state_rx,
            thread: Some(thread),
        })
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A receiver that is notified whenever the state changes (not on every re-read). It starts
    /// out marked as changed, so a loop of `changed().await` then `borrow_and_update()` handles
    /// the current state first and every later change after it.
    pub fn subscribe(&self) -> watch::Receiver<WatchState> {
        let mut receiver = self.state.clone();
        receiver.mark_changed();
        receiver
    }

    /// The state right now.
    pub fn current(&self) -> WatchState {
        self.state.borrow().clone()
    }

    /// The applied generation; 0 when none was applied. This is what a proxy reports back.
    pub fn applied_generation(&self) -> u64 {
        self.state.borrow().generation()
    }

    /// Asks the watcher thread to re-read the file now. Returns at once; the result shows up in
    /// [`current`](Self::current) and [`subscribe`](Self::subscribe).
    pub fn check_now(&self) {
        // The thread only stops when this watcher is dropped, so the send cannot fail here.
        let _ = self.wake.send(Wake::CheckNow);
    }
}

impl Drop for FlagWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

/// The state owned by the watcher thread.
struct Worker {
    path: PathBuf,
    poll_interval: Duration,
    dir: DirWatch,
    rules: Rules,
    publish: watch::Sender<WatchState>,
    wake: Receiver<Wake>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        loop {
            match self.wake.recv_timeout(self.poll_interval) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Changed | Wake::CheckNow) | Err(RecvTimeoutError::Timeout) => {}
            }
            if self.stop.load(Ordering::Acquire) || self.drain() {
                return;
            }
            self.check();
        }
    }

    /// Swallows wake-ups that queued up meanwhile: a burst of events needs one read, which happens
    /// after all of them. Returns true if a stop request was among them.
    fn drain(&self) -> bool {
        while let Ok(wake) = self.wake.try_recv() {
            if matches!(wake, Wake::Stop) {
                return true;
            }
        }
        false
    }

    fn check(&mut self) {
        // Arm (or re-arm) the directory watch before reading, so a change made right after the
        // read still produces an event.
        self.dir.ensure_armed();
        let outcome = read(&self.path);
        self.rules.observe(outcome, &self.path);
        self.rules.state.notify_error = self.dir.error.clone();
        let next = self.rules.state.clone();
        // Subscribers wake on changes only, not on every poll.
        self.publish.send_if_modified(|state| {
            let changed = *state != next;
            *state = next;
            changed
        });
    }
}

/// The apply rule, kept apart from threads and files so it can be tested directly.
struct Rules {
    expected_migration: Option<String>,
    state: WatchState,
    /// The message of the ongoing failure, so a failure that persists counts once.
    failure: Option<String>,
    /// The checksum of the last ignored document, so a file that stays in place counts once.
    ignored_checksum: Option<String>,
}

impl Rules {
    fn new(expected_migration: Option<String>) -> Rules {
        Rules {
            expected_migration,
            state: WatchState::default(),
            failure: None,
            ignored_checksum: None,
        }
    }

    fn observe(&mut self, outcome: Result<Option<FlagFile>, FlagError>, path: &Path) {
        match outcome {
            Err(e) => self.fail(format!("{}: {e}", path.display())),
            Ok(None) => self.missing(path),
            Ok(Some(flag)) => self.offer(flag, path),
        }
    }

    /// No file: fine before anything was applied (phase `planned`); afterwards the last routing
    /// stays in force, because a file that vanished is an accident, not a decision.
    fn missing(&mut self, path: &Path) {
        match &self.state.applied {
            None => self.recover(),
            Some(applied) => {
                let generation = applied.generation;
                self.fail(format!(
                    "{}: flag file disappeared; keeping generation {generation}",
                    path.display()
                ));
            }
        }
    }

    fn offer(&mut self, flag: FlagFile, path: &Path) {
        if let Some(expected) = &self.expected_migration
            && flag.migration != *expected
        {
            let message = format!(
                "{}: flag file is for migration {:?}, expected {expected:?}; not applied",
                path.display(),
                flag.migration
            );
            return self.fail(message);
        }
        let Some(applied) = self.state.applied.clone() else {
            return self.apply(flag);
        };
        if flag.generation > applied.generation {
            self.apply(flag);
        } else if flag.generation < applied.generation {
            let message = format!(
                "ignored generation {} lower than applied {}",
                flag.generation, applied.generation
            );
            self.ignore(flag, message);
        } else if flag.checksum != applied.checksum {
            // Two different decisions under one generation: the CLI never does this, so keep the
            // first and say so rather than flip-flopping.
            let message = format!(
                "ignored a different document with generation {}, equal to the applied one",
                flag.generation
            );
            self.ignore(flag, message);
        } else {
            self.recover();
        }
    }

    fn apply(&mut self, flag: FlagFile) {
        info!(generation = flag.generation, phase = %flag.phase, "applied flag file");
        self.state.applied = Some(Arc::new(flag));
        self.ignored_checksum = None;
        self.recover();
    }

    fn ignore(&mut self, flag: FlagFile, message: String) {
        self.recover();
        if self.ignored_checksum.as_deref() != Some(flag.checksum.as_str()) {
            warn!("{message}");
            self.state.ignored += 1;
            self.state.last_warning = Some(message);
            self.ignored_checksum = Some(flag.checksum);
        }
    }

    fn fail(&mut self, message: String) {
        if self.failure.as_deref() != Some(message.as_str()) {
            warn!("{message}; keeping generation {}", self.state.generation());
            self.state.errors += 1;
        }
        self.state.last_error = Some(message.clone());
        self.state.failing = true;
        self.failure = Some(message);
    }

    fn recover(&mut self) {
        if self.failure.take().is_some() {
            info!("flag file readable again");
        }
        self.state.failing = false;
    }
}

/// Identifies a directory, so a directory deleted and recreated (which silently ends a watch on
/// it) is noticed and watched again.
type DirIdentity = (u64, u64);

fn dir_identity(dir: &Path) -> Option<DirIdentity> {
    let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0))
    }
}

/// The notify watch on the flag file's directory, (re)armed whenever the directory appears.
struct DirWatch {
    dir: PathBuf,
    wake: Sender<Wake>,
    watcher: Option<RecommendedWatcher>,
    armed_on: Option<DirIdentity>,
    /// Why notifications are unavailable, if they are.
    error: Option<String>,
    warned_missing: bool,
}

impl DirWatch {
    fn new(dir: PathBuf, wake: Sender<Wake>) -> DirWatch {
        DirWatch {
            dir,
            wake,
            watcher: None,
            armed_on: None,
            error: None,
            warned_missing: false,
        }
    }

    fn ensure_armed(&mut self) {
        let current = dir_identity(&self.dir);
        if current.is_some() && current == self.armed_on {
            return;
        }
        self.watcher = None;
        self.armed_on = None;
        let Some(identity) = current else {
            if !self.warned_missing {
                warn!(dir = %self.dir.display(), "flag file directory does not exist; polling until it does");
                self.warned_missing = true;
            }
            return;
        };
        self.warned_missing = false;
        match self.arm() {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                self.armed_on = Some(identity);
                self.error = None;
            }
            Err(e) => {
                let message = format!("cannot watch {}: {e}; polling only", self.dir.display());
                if self.error.as_deref() != Some(message.as_str()) {
                    warn!("{message}");
                }
                self.error = Some(message);
            }
        }
    }

    fn arm(&self) -> notify::Result<RecommendedWatcher> {
        let wake = self.wake.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            if worth_a_read(&event) {
                // Fails only while the watcher thread is exiting.
                let _ = wake.send(Wake::Changed);
            }
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

/// Everything except a read-only access may have changed what the path resolves to. Read-only
/// accesses must be ignored: the watcher's own open of the file would otherwise wake it again,
/// forever. An error from notify is worth a read too: an event may have been lost.
fn worth_a_read(event: &notify::Result<Event>) -> bool {
    match event {
        Err(_) => true,
        Ok(event) => match event.kind {
            EventKind::Access(kind) => kind == AccessKind::Close(AccessMode::Write),
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests;
