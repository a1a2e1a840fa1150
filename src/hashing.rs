//! Streaming SHA-256 of local files: a file's identity. Files are read in 1 MiB blocks on a
//! blocking thread, never whole into memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The lower-case hex SHA-256 of the file at `path`.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || sha256_file_blocking(&path))
        .await
        .map_err(std::io::Error::other)?
}

/// The same, on the calling thread.
pub fn sha256_file_blocking(path: &Path) -> std::io::Result<String> {
    sha256_of(&mut std::fs::File::open(path)?)
}

/// Opens the file at `path` and hashes it: the open file (rewound) and its SHA-256. Uploading
/// from that file, not from the path, sends the content that was hashed even if the path is
/// replaced (by a symlink, another file) meanwhile.
pub async fn open_and_hash(path: &Path) -> std::io::Result<(std::fs::File, String)> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&path)?;
        let sha256 = sha256_of(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok((file, sha256))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The SHA-256 of what is left to read of `file`.
fn sha256_of(file: &mut std::fs::File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    // A MiB at a time; a small file gets a buffer of its own size instead of a zeroed MiB.
    let size = file.metadata().map_or(0, |m| m.len());
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len.saturating_add(1).min(1 << 20)];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
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
}
