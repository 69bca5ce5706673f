//! A progress bar on stderr for commands that wait (`rollout --wait`, `sweep --wait`), drawn by
//! indicatif, and only when stderr is a terminal: otherwise every call does nothing, so stdout
//! (`--output json`) and redirected stderr stay as they are.
//!
//! Until [`WaitProgress::set_total`] gives a total it is a spinner with the label, the time
//! waited and the latest message; then a bar of `done/total` with the same.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// How often the spinner and the time waited are redrawn between updates.
const TICK: Duration = Duration::from_millis(120);
const SPINNER: &str = "{spinner:.cyan} {prefix:.bold} {elapsed_precise} {wide_msg}";
const BAR: &str = "{spinner:.cyan} {prefix:.bold} {elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}";

/// A progress bar on stderr while a command waits; a no-op when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct WaitProgress {
    bar: ProgressBar,
}

impl WaitProgress {
    /// A spinner labelled `label` on stderr when stderr is a terminal; else nothing is drawn.
    pub fn new(label: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let p = Self::drawn_to(label, ProgressDrawTarget::stderr());
            p.bar.enable_steady_tick(TICK);
            p
        } else {
            Self::hidden()
        }
    }

    /// One that draws nothing, wherever stderr goes.
    pub fn hidden() -> Self {
        WaitProgress {
            bar: ProgressBar::hidden(),
        }
    }

    fn drawn_to(label: &str, target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(None, target)
            .with_style(style(SPINNER))
            .with_prefix(label.to_string())
            // dropped unfinished (an error ends the wait): no bar is left behind
            .with_finish(ProgressFinish::AndClear);
        WaitProgress { bar }
    }

    /// True when the bar is drawn (stderr is a terminal): what a caller may skip otherwise, such
    /// as the calls that find out what to show.
    pub fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// How many steps there are in all: from now on a bar of `done/total`. 0 keeps the spinner.
    pub fn set_total(&self, total: u64) {
        if total == 0 || self.bar.length() == Some(total) {
            return;
        }
        if self.bar.length().is_none() {
            self.bar.set_style(style(BAR));
        }
        self.bar.set_length(total);
    }

    /// Steps done so far, and what is going on.
    pub fn update(&self, done: u64, message: &str) {
        self.bar.set_position(done);
        // drawn on one line: control characters (newlines) become spaces
        self.bar.set_message(crate::table::one_line(message));
    }

    /// The end: the bar stays where it was, with `message` after it (a rollout that stopped at
    /// wave 4 of 11 is not shown full); an empty `message` removes the bar.
    pub fn finish(&self, message: &str) {
        if message.is_empty() {
            self.bar.finish_and_clear();
        } else {
            self.bar.abandon_with_message(crate::table::one_line(message));
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("the progress templates are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A terminal that keeps what is written to it (80 columns).
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        /// The last line drawn (indicatif writes a wide message's padding apart).
        fn last(&self) -> String {
            let written = self.0.lock().unwrap();
            written
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default()
        }
        fn written(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().push(String::new());
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn on(screen: &Screen, label: &str) -> WaitProgress {
        WaitProgress::drawn_to(label, ProgressDrawTarget::term_like(Box::new(screen.clone())))
    }

    #[test]
    fn a_spinner_until_a_total_then_a_bar() {
        let screen = Screen::default();
        let p = on(&screen, "rollout");
        assert!(p.is_shown());
        p.update(0, "RUNNING, 118 targets");
        let line = screen.last();
        assert!(
            line.contains("rollout") && line.contains("RUNNING, 118 targets"),
            "{line}"
        );
        assert!(!line.contains('['), "no bar before a total: {line}");
        p.set_total(11);
        p.update(3, "RUNNING, wave 2:\nok");
        let line = screen.last();
        assert!(line.contains("] 3/11 RUNNING, wave 2: ok"), "{line}");
        // a long message is cut at the terminal's width: the bar stays one line
        p.update(4, &"x".repeat(200));
        let line = screen.last();
        assert!(line.contains("] 4/11 xxx") && line.chars().count() <= 80, "{line}");
        p.finish("SUCCEEDED");
        let line = screen.last();
        assert!(line.contains("4/11 SUCCEEDED"), "{line}");
        assert!(p.bar.is_finished());
    }

    #[test]
    fn finishing_without_a_message_or_dropping_clears_the_bar() {
        let screen = Screen::default();
        let p = on(&screen, "sweep");
        p.update(0, "RUNNING, in List Running Instances");
        p.finish("");
        assert_eq!(
            screen.written().last().map(String::as_str),
            Some(""),
            "{:?}",
            screen.written()
        );
        let screen = Screen::default();
        let p = on(&screen, "sweep");
        p.update(0, "RUNNING");
        drop(p);
        assert_eq!(
            screen.written().last().map(String::as_str),
            Some(""),
            "{:?}",
            screen.written()
        );
    }

    #[test]
    fn hidden_draws_nothing_and_takes_every_call() {
        let p = WaitProgress::hidden();
        assert!(!p.is_shown());
        p.set_total(5);
        p.update(2, "x");
        p.finish("done");
        // off a terminal (CI, a redirect) `new` draws nothing either
        let q = WaitProgress::new("sweep");
        if !std::io::stderr().is_terminal() {
            assert!(!q.is_shown());
        }
        q.finish("");
    }
}
