//! Terminal progress bars (indicatif), drawn only when stderr is a terminal.

use std::time::Duration;

use ecr_vault_engine::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Bars {
    _multi: MultiProgress,
    images: ProgressBar,
    bytes: ProgressBar,
}

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::new();
        let images = multi.add(ProgressBar::new(0));
        images.set_style(
            ProgressStyle::with_template("images {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let bytes = multi.add(ProgressBar::new_spinner());
        bytes.set_style(
            ProgressStyle::with_template("{spinner} {bytes} copied ({bytes_per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bytes.enable_steady_tick(Duration::from_millis(200));
        Bars {
            _multi: multi,
            images,
            bytes,
        }
    }
}

impl Progress for Bars {
    fn images_total(&self, n: u64) {
        self.images.set_length(n);
    }
    fn image_done(&self, image: &str, outcome: &str) {
        self.images.inc(1);
        self.images.set_message(format!("{outcome} {image}"));
    }
    fn bytes(&self, n: u64) {
        self.bytes.inc(n);
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.images.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}

/// Progress bars on an interactive terminal with text output; nothing otherwise.
pub fn for_output(output: crate::args::Output) -> std::sync::Arc<dyn Progress> {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() && output == crate::args::Output::Text {
        std::sync::Arc::new(Bars::new())
    } else {
        std::sync::Arc::new(ecr_vault_engine::NoProgress)
    }
}
