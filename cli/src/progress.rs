//! Placeholder until the indicatif progress bar lands (replaced by the real module).

pub struct WaitProgress;

impl WaitProgress {
    pub fn new(_label: &str) -> Self {
        WaitProgress
    }
    pub fn set_total(&self, _total: u64) {}
    pub fn update(&self, _done: u64, _message: &str) {}
    pub fn finish(&self, _message: &str) {}
}
