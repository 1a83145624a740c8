//! The progress bar of long commands (pack, backup): on stderr, drawn only
//! on a terminal and only once the work has run a second, so short runs
//! and pipes print nothing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar appears only once the work has run this long.
const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    terminal: bool,
    shown: bool,
}

impl Progress {
    /// A hidden bar drawn with indicatif's `template` once due.
    pub fn new(template: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// The bar to update, drawn from now on if it is due.
    pub fn bar(&mut self) -> &ProgressBar {
        if !self.shown && self.terminal && self.started.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        &self.bar
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
