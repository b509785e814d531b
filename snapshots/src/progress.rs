//! Progress of long operations (restore, snapshot, gc), for a person at a terminal.
//!
//! The library only reports; the program decides whether to show anything. The command line
//! installs a [`Sink`] that draws a bar on a terminal's stderr; the daemon and tests install
//! none, and then reporting costs an atomic load.

use std::sync::OnceLock;

/// Where progress goes.
pub trait Sink: Send + Sync {
    /// A task starts: `what` it is, and how many steps it has, if known.
    fn begin(&self, what: &str, total: Option<u64>);
    /// `n` more steps are done.
    fn advance(&self, n: u64);
    /// The task is over (done or failed): clear what was drawn.
    fn end(&self);
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Send progress to `sink` from now on (once per process; later calls are ignored).
pub fn install(sink: Box<dyn Sink>) {
    let _ = SINK.set(sink);
}

/// A task in progress; ends when dropped.
pub struct Task(());

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(s) = SINK.get() {
            s.end();
        }
    }
}

/// Start a task.
pub fn task(what: &str, total: Option<u64>) -> Task {
    if let Some(s) = SINK.get() {
        s.begin(what, total);
    }
    Task(())
}

/// Report `n` more steps of the current task done.
pub fn advance(n: u64) {
    if let Some(s) = SINK.get() {
        s.advance(n);
    }
}
