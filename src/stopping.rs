//! Long reads that end at shutdown. Hashing a file of gigabytes, or reading a million-line IOC
//! list, runs on a blocking thread: no task abort reaches it, and the runtime waits for it
//! before the process exits. So such a read looks at a cancellation token before each block
//! instead, and fails with [`stopped`] once it is cancelled.

use std::io::{self, Read};

use tokio_util::sync::CancellationToken;

/// A reader that fails, with [`stopped`], once `stop` is cancelled.
pub struct StopAt<R> {
    inner: R,
    stop: CancellationToken,
}

impl<R> StopAt<R> {
    /// `inner`, read until `stop` is cancelled.
    pub fn new(inner: R, stop: CancellationToken) -> Self {
        StopAt { inner, stop }
    }
}

impl<R: Read> Read for StopAt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_cancelled() {
            return Err(stopped());
        }
        self.inner.read(buf)
    }
}

/// Why a read stopped part way.
#[derive(Debug, thiserror::Error)]
#[error("stopped at shutdown")]
struct Stopped;

/// The error of a read that stopped at shutdown.
pub fn stopped() -> io::Error {
    io::Error::other(Stopped)
}

/// Whether `e` is a read that stopped at shutdown (not a failure of the file).
pub fn is_stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_on_until_the_token_is_cancelled() {
        let stop = CancellationToken::new();
        let mut reader = StopAt::new(&b"abcdef"[..], stop.clone());
        let mut buf = [0u8; 3];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        stop.cancel();
        let e = reader.read(&mut buf).unwrap_err();
        assert!(is_stopped(&e), "{e}");
        assert!(!is_stopped(&io::Error::other("disk on fire")));
    }
}
