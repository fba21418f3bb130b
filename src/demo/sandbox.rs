//! The sandbox directory and its lifetime: created at the start, removed at the end unless
//! `--keep`, `--dir` or a failure (whose logs are kept), and torn down on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::servers::Children;

/// The directory and the processes running in it.
pub struct Sandbox {
    /// Where the servers, proxies, plan and state live.
    pub dir: PathBuf,
    /// Whether the demo created `dir` as a temporary directory (and so may remove it).
    temporary: bool,
    /// The child processes.
    pub children: Children,
}

impl Sandbox {
    /// `dir` (absent or empty), or a new temporary directory.
    pub fn create(dir: Option<&Path>) -> anyhow::Result<Sandbox> {
        let (dir, temporary) = match dir {
            Some(d) => {
                if d.exists()
                    && std::fs::read_dir(d)
                        .map(|mut e| e.next().is_some())
                        .unwrap_or(true)
                {
                    bail!(
                        "--dir {}: the directory is not empty; give an empty or new one",
                        d.display()
                    );
                }
                (d.to_path_buf(), false)
            }
            None => {
                let unique = format!(
                    "cachemig-demo-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                (std::env::temp_dir().join(unique), true)
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Absolute, so the plan, the proxies and the messages name it the same way.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        Ok(Sandbox {
            dir,
            temporary,
            children: Children::default(),
        })
    }

    /// Stops every process; removes the directory when it is temporary and `keep_files` is off.
    pub fn tear_down(&self, keep_files: bool) {
        self.children.stop_all();
        if self.temporary && !keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// On Ctrl-C or SIGTERM: stop every process, remove the directory unless `keep`, exit 130.
    pub fn stop_on_signal(&self, keep: bool) -> anyhow::Result<()> {
        let children = self.children.clone();
        let (dir, remove) = (self.dir.clone(), self.temporary && !keep);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered now, not when the thread first polls: a Ctrl-C right after this returns
        // must not kill the demo with its children still running.
        let (mut int, mut term) = {
            let _guard = runtime.enter();
            let on = |kind| tokio::signal::unix::signal(kind).context("installing a signal handler");
            (
                on(tokio::signal::unix::SignalKind::interrupt())?,
                on(tokio::signal::unix::SignalKind::terminate())?,
            )
        };
        std::thread::spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            eprintln!("\ninterrupted: stopping the sandbox's servers and proxies");
            children.stop_all();
            if remove {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                eprintln!("the sandbox's files are in {}", dir.display());
            }
            std::process::exit(130);
        });
        Ok(())
    }
}
