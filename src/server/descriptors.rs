//! File descriptors: how many the process may hold, and one kept spare so that a full table
//! turns waiting clients away at once instead of leaving them in the listen queue.

use std::fs::File;
use std::task::Poll;

use tokio::net::TcpListener;

/// Descriptors kept back from every budget for files, Redis, logs and the listener.
pub(crate) const RESERVED: usize = 256;

/// The soft limit on open files (Linux's `/proc/self/limits`); `None` when unknown.
pub(crate) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// One open descriptor held in reserve.
#[derive(Debug)]
pub(crate) struct Spare(Option<File>);

impl Spare {
    pub(crate) fn new() -> Spare {
        Spare(File::open("/dev/null").ok())
    }

    /// Called when accept fails for want of descriptors: frees the spare, accepts the waiting
    /// connection and closes it at once (its client sees a reset and can retry elsewhere),
    /// then takes the spare back. Returns whether a connection was shed.
    pub(crate) async fn shed(&mut self, listener: &TcpListener) -> bool {
        self.0 = None;
        let shed = std::future::poll_fn(|cx| match listener.poll_accept(cx) {
            Poll::Ready(Ok(_)) => Poll::Ready(true),
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(false),
        })
        .await;
        self.0 = File::open("/dev/null").ok();
        shed
    }
}

impl Default for Spare {
    fn default() -> Self {
        Spare::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files(text), Some(20000));
        assert_eq!(
            parse_open_files("Max open files            unlimited            unlimited   files"),
            Some(usize::MAX)
        );
        assert!(open_files_limit().is_some());
    }
}
