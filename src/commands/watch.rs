//! `status --watch`: a fresh report every interval until Ctrl-C.
//!
//! On a terminal each frame is drawn in place: the whole frame is composed first and written in
//! one go over the previous one (cursor home, every line cleared to its end, the rest of the
//! screen cleared after it), so the operator never sees a blank screen or half a frame. Anywhere
//! else (a pipe, a log) frames follow each other, each under a rule with its time and number, or
//! one JSON report per line with `--format json`.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;

use crate::error::{EXIT_OK, Result};
use crate::layout::{self, Screen};

/// Cursor home (the previous frame is overwritten, not cleared first).
const HOME: &str = "\x1b[H";
/// Clears from the cursor to the end of the line.
const CLEAR_LINE: &str = "\x1b[K";
/// Clears from the cursor to the end of the screen.
const CLEAR_BELOW: &str = "\x1b[J";
/// Hides the cursor while frames are drawn.
const HIDE_CURSOR: &str = "\x1b[?25l";
/// Shows it again when the watch stops.
const SHOW_CURSOR: &str = "\x1b[?25h";
/// Clears the whole screen, before the first frame only.
const CLEAR_SCREEN: &str = "\x1b[2J";

/// Runs `frame(width)` every `interval` and shows it until Ctrl-C (exit 0) or stdout closes.
/// The first frame's error is the command's; a later one is shown in its frame and the watch
/// goes on (the target may come back).
pub fn run(interval: Duration, json: bool, mut frame: impl FnMut(usize) -> Result<String>) -> Result<u8> {
    let stop = ctrl_c()?;
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    for n in 1u64.. {
        let width = layout::detect_width();
        let body = match frame(width) {
            Ok(body) => body,
            Err(e) if n == 1 => return Err(e),
            Err(e) => failed_frame(&e, width, json),
        };
        let text = if tty {
            in_place(&body, n, interval, width)
        } else if json {
            format!("{}\n", body.trim_end())
        } else {
            format!("{}\n{body}", rule(n, interval, width))
        };
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            break; // the reader went away (a closed pipe): nothing left to show
        }
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if tty {
        let _ = write!(out, "{SHOW_CURSOR}");
        let _ = out.flush();
    }
    Ok(EXIT_OK)
}

/// A channel that receives once Ctrl-C is pressed (or SIGTERM arrives). Listening replaces the
/// default action (killing the process mid-frame), so the watch stops between frames and
/// restores the cursor.
fn ctrl_c() -> Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before the first frame, so an early Ctrl-C is never the default kill.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(rx)
}

/// A frame that could not be measured: the error, where the report would be.
fn failed_frame(e: &crate::error::Error, width: usize, json: bool) -> String {
    if json {
        return serde_json::json!({ "error": e.to_string() }).to_string();
    }
    let mut s = Screen::new(width);
    s.line(format!("status failed: {e}"));
    s.finish()
}

/// The line above each frame: when it was measured, and how to stop.
fn header(n: u64, interval: Duration, width: usize) -> String {
    let text = format!(
        "{} UTC · frame {n} · every {} · Ctrl-C stops",
        Utc::now().format("%H:%M:%S"),
        humantime::format_duration(interval)
    );
    layout::wrap(&text, width).swap_remove(0)
}

/// The rule between frames in a log: it cannot be mistaken for a line of a report.
fn rule(n: u64, interval: Duration, width: usize) -> String {
    let head = header(n, interval, width.saturating_sub(6));
    let fill = width.saturating_sub(head.chars().count() + 4);
    format!("━━ {head} {}", "━".repeat(fill))
}

/// The escape sequences that draw `body` over the previous frame.
fn in_place(body: &str, n: u64, interval: Duration, width: usize) -> String {
    let mut text = String::new();
    if n == 1 {
        text.push_str(HIDE_CURSOR);
        text.push_str(CLEAR_SCREEN);
    }
    text.push_str(HOME);
    for line in std::iter::once(header(n, interval, width).as_str()).chain(body.lines()) {
        text.push_str(line);
        text.push_str(CLEAR_LINE);
        text.push('\n');
    }
    text.push_str(CLEAR_BELOW);
    text
}
