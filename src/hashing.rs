//! Streaming SHA-256 of local files: a file's identity. Files are read in 1 MiB blocks on a
//! blocking thread, never whole into memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::stopping::StopAt;

/// The lower-case hex SHA-256 of the file at `path`. Dropping the future (a stop during a scan,
/// a job released at shutdown) stops the hashing at the next block: the blocking thread would
/// otherwise read on through gigabytes nobody waits for, and the process would wait for it to
/// exit.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let path: PathBuf = path.to_owned();
    let stop = CancellationToken::new();
    let _stop_when_dropped = stop.clone().drop_guard();
    tokio::task::spawn_blocking(move || sha256_until(&path, stop))
        .await
        .map_err(std::io::Error::other)?
}

/// The same, on the calling thread.
pub fn sha256_file_blocking(path: &Path) -> std::io::Result<String> {
    sha256_until(path, CancellationToken::new())
}

/// The digest of the file at `path`, unless `stop` is cancelled first.
fn sha256_until(path: &Path, stop: CancellationToken) -> std::io::Result<String> {
    Ok(sha256_of(&mut std::fs::File::open(path)?, stop)?.0)
}

/// A file opened and hashed: the file, rewound, its SHA-256 and the bytes it had.
#[derive(Debug)]
pub struct HashedFile {
    pub file: std::fs::File,
    pub sha256: String,
    pub len: u64,
}

/// Opens the file at `path` and hashes it. Uploading from that file, not from the path, sends
/// the content that was hashed even if the path is replaced (by a symlink, another file)
/// meanwhile. Dropping the future stops the hashing, as [`sha256_file`]'s.
pub async fn open_and_hash(path: &Path) -> std::io::Result<HashedFile> {
    let path: PathBuf = path.to_owned();
    let stop = CancellationToken::new();
    let _stop_when_dropped = stop.clone().drop_guard();
    tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut file = std::fs::File::open(&path)?;
        let (sha256, len) = sha256_of(&mut file, stop)?;
        file.rewind()?;
        Ok(HashedFile { file, sha256, len })
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The SHA-256 of what is left to read of `file`, and how many bytes that was, unless `stop` is
/// cancelled first.
fn sha256_of(file: &mut std::fs::File, stop: CancellationToken) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    // A MiB at a time; a small file gets a buffer of its own size instead of a zeroed MiB.
    let size = file.metadata().map_or(0, |m| m.len());
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len.saturating_add(1).min(1 << 20)];
    let mut file = StopAt::new(file, stop);
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok((hex(&hasher.finalize()), read))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            sha256_file_blocking(&empty).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let abc = dir.path().join("abc");
        std::fs::write(&abc, b"abc").unwrap();
        assert_eq!(
            sha256_file_blocking(&abc).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A hash given up (its future dropped) ends its blocking thread: the runtime, which waits
    /// for blocking threads when it shuts down, is not held by the rest of a large file.
    #[test]
    fn a_hash_given_up_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        // Sparse: 4 GiB of zeros to read, none on disk; seconds of hashing.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let given_up = runtime.block_on(async {
            let hashing = sha256_file(&big);
            tokio::time::timeout(std::time::Duration::from_millis(100), hashing).await
        });
        assert!(given_up.is_err(), "hashed 4 GiB in 100 ms?");
        let started = std::time::Instant::now();
        drop(runtime);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the runtime waited {:?} for the hash",
            started.elapsed()
        );
    }
}
