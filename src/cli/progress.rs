//! Progress on stderr: a spinner naming the current step when stderr is a terminal, plain
//! lines otherwise (logs, CI), nothing with `--quiet` or `-o json|yaml`. No colours are used anywhere, so
//! `NO_COLOR`/`--no-color` need no special case; `TERM=dumb` gets plain lines, as it cannot redraw a line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::settings::{Settings, env_var};

pub enum Progress {
    Silent,
    Lines,
    Spinner(ProgressBar),
}

impl Progress {
    pub fn new(s: &Settings) -> Progress {
        if s.quiet || !s.text() {
            return Progress::Silent;
        }
        let dumb = env_var("TERM").is_some_and(|t| t == "dumb");
        if !std::io::stderr().is_terminal() || dumb {
            return Progress::Lines;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress::Spinner(bar)
    }

    /// Shows `msg` as the current step.
    pub fn step(&self, msg: &str) {
        match self {
            Progress::Silent => {}
            Progress::Lines => eprintln!("{msg}"),
            Progress::Spinner(bar) => bar.set_message(msg.to_string()),
        }
    }

    /// Removes the spinner before the result is printed.
    pub fn done(&self) {
        if let Progress::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}
