//! Progress bars for long commands (restore, snapshot, gc), drawn on stderr only when it is a
//! terminal: piped or redirected output gets none. No colours (so `NO_COLOR` has nothing to
//! turn off). A bar appears only after a task has run for a moment, so quick commands print
//! nothing extra.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Draw tasks that last longer than this.
const SHOW_AFTER: Duration = Duration::from_millis(300);

struct Bars {
    bar: Mutex<Option<(ProgressBar, std::time::Instant)>>,
}

impl saferoot_snapshots::progress::Sink for Bars {
    fn begin(&self, what: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden())
                .with_style(
                    ProgressStyle::with_template("{msg}: [{bar:30}] {pos}/{len} ({eta} left)")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(
                ProgressStyle::with_template("{msg}: {spinner} {pos} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_owned());
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((bar, std::time::Instant::now()));
    }

    fn advance(&self, n: u64) {
        let g = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bar, started)) = g.as_ref() {
            bar.inc(n);
            if bar.is_hidden() && started.elapsed() > SHOW_AFTER {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(120));
            }
        }
    }

    fn end(&self) {
        if let Some((bar, _)) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Show progress bars from now on, if stderr is a terminal.
pub fn install() {
    if std::io::stderr().is_terminal() {
        saferoot_snapshots::progress::install(Box::new(Bars {
            bar: Mutex::new(None),
        }));
    }
}
