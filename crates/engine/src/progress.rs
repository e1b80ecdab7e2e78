//! Progress callbacks, so the CLI can draw bars and the functions can stay quiet.

/// Called from many tasks at once; implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    fn images_total(&self, _n: u64) {}
    fn image_done(&self, _image: &str, _outcome: &str) {}
    fn bytes(&self, _n: u64) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
