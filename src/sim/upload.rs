//! Receiving an uploaded file: a streamed `multipart/form-data` body whose part `file` is
//! hashed (SHA-256, SHA-1, MD5) and scanned for the EICAR test string chunk by chunk, so
//! that a 650 MiB upload never sits in memory. Only small files are kept (for downloads).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::HeaderMap;
use futures_util::StreamExt as _;
use memchr::memmem;
use sha2::Digest as _;

use super::json::hex;

/// The EICAR anti-virus test string: any file containing it is "malware".
pub(crate) const EICAR: &[u8] =
    br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Contents up to this size are kept, so that premium keys can download them again.
pub(crate) const KEEP_CONTENT_MAX: u64 = 1024 * 1024;

/// Past this many bytes an oversized upload is no longer drained (the connection is cut):
/// draining lets an honest client read the 413 instead of a broken pipe.
const DRAIN_MAX: u64 = 1024 * 1024 * 1024;

/// A file that arrived whole.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Lower-case hex SHA-1.
    pub sha1: String,
    /// Lower-case hex MD5.
    pub md5: String,
    /// Bytes in the file.
    pub size: u64,
    /// Whether the EICAR string occurs anywhere in it.
    pub eicar: bool,
    /// The content, when at most [`KEEP_CONTENT_MAX`] bytes.
    pub content: Option<bytes::Bytes>,
    /// The file name of the part, when given.
    pub name: Option<String>,
    /// VirusTotal's `type_description`, guessed from the first bytes.
    pub type_description: &'static str,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The request body is over the limit: answered 413 with an HTML page.
    #[error("payload too large")]
    TooLarge,
    /// Not a multipart body with a `file` part, or the body broke off.
    #[error("{0}")]
    BadRequest(String),
}

/// Finds a pattern in a stream of chunks, including occurrences split across chunks.
pub(crate) struct StreamFinder {
    finder: memmem::Finder<'static>,
    /// The last `len - 1` bytes seen, to catch a match straddling two chunks.
    tail: Vec<u8>,
    found: bool,
}

impl StreamFinder {
    /// A finder for `pattern` (not empty).
    pub fn new(pattern: &'static [u8]) -> StreamFinder {
        StreamFinder {
            finder: memmem::Finder::new(pattern),
            tail: Vec::with_capacity(pattern.len() * 2),
            found: false,
        }
    }

    /// Scans the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.found || chunk.is_empty() {
            return;
        }
        let keep = self.finder.needle().len() - 1;
        // Straddling matches: the carried tail plus the start of this chunk.
        let head = &chunk[..chunk.len().min(keep)];
        self.tail.extend_from_slice(head);
        if self.finder.find(&self.tail).is_some() || self.finder.find(chunk).is_some() {
            self.found = true;
            return;
        }
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else if self.tail.len() > keep {
            // The tail already holds this (short) chunk: trim it to the last `keep` bytes.
            let cut = self.tail.len() - keep;
            self.tail.drain(..cut);
        }
    }

    /// Whether the pattern occurred in what was fed.
    pub fn found(&self) -> bool {
        self.found
    }
}

fn guess_type(first: &[u8]) -> &'static str {
    if first.starts_with(b"MZ") {
        "Win32 EXE"
    } else if first.starts_with(b"\x7fELF") {
        "ELF"
    } else if first.starts_with(b"%PDF") {
        "PDF"
    } else if first.starts_with(b"PK\x03\x04") {
        "ZIP"
    } else if !first.is_empty()
        && first
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "Text"
    } else {
        "unknown"
    }
}

/// Reads a multipart upload, hashing its `file` part as it streams. `limit` bounds the whole
/// request body (VirusTotal counts the payload, not just the file).
pub(crate) async fn receive(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Received, UploadError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| UploadError::BadRequest("expected a multipart/form-data body".into()))?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return Err(UploadError::TooLarge);
    }

    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let broken =
        |e: multer::Error| UploadError::BadRequest(format!("malformed multipart body: {e}"));

    let mut too_large = declared.is_some_and(|n| n > limit);
    let mut received = None;
    while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
        let is_file = field.name() == Some("file") && received.is_none();
        let name = field.file_name().map(str::to_owned);
        let mut sha256 = sha2::Sha256::new();
        let mut sha1 = sha1::Sha1::new();
        let mut md5 = md5::Md5::new();
        let mut eicar = StreamFinder::new(EICAR);
        let mut size = 0u64;
        let mut content = Vec::new();
        let mut first = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(broken)? {
            let total = seen.load(Ordering::Relaxed);
            if total > DRAIN_MAX {
                return Err(UploadError::TooLarge);
            }
            too_large |= total > limit;
            if !is_file || too_large {
                continue; // drain
            }
            sha256.update(&chunk);
            sha1.update(&chunk);
            md5.update(&chunk);
            eicar.feed(&chunk);
            if first.len() < 512 {
                first.extend_from_slice(&chunk[..chunk.len().min(512 - first.len())]);
            }
            size += chunk.len() as u64;
            if size <= KEEP_CONTENT_MAX {
                content.extend_from_slice(&chunk);
            } else if !content.is_empty() {
                content = Vec::new();
            }
        }
        if is_file && !too_large {
            received = Some(Received {
                sha256: hex(&sha256.finalize()),
                sha1: hex(&sha1.finalize()),
                md5: hex(&md5.finalize()),
                size,
                eicar: eicar.found(),
                content: (size <= KEEP_CONTENT_MAX).then(|| bytes::Bytes::from(content)),
                name,
                type_description: guess_type(&first),
            });
        }
    }
    if too_large || seen.load(Ordering::Relaxed) > limit {
        return Err(UploadError::TooLarge);
    }
    received.ok_or_else(|| {
        UploadError::BadRequest("the multipart body has no part named \"file\"".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eicar_is_found_across_every_chunk_boundary() {
        let mut data = b"some leading bytes ".to_vec();
        data.extend_from_slice(EICAR);
        data.extend_from_slice(b" trailing");
        for split in 0..data.len() {
            let mut f = StreamFinder::new(EICAR);
            f.feed(&data[..split]);
            f.feed(&data[split..]);
            assert!(f.found(), "missed with a split at {split}");
        }
    }

    #[test]
    fn eicar_is_found_when_fed_byte_by_byte() {
        let mut f = StreamFinder::new(EICAR);
        for b in b"xx".iter().chain(EICAR) {
            f.feed(std::slice::from_ref(b));
        }
        assert!(f.found());
    }

    #[test]
    fn an_almost_eicar_stream_is_clean() {
        let mut f = StreamFinder::new(EICAR);
        let almost = &EICAR[..EICAR.len() - 1];
        for _ in 0..3 {
            f.feed(almost);
        }
        assert!(!f.found());
    }

    #[test]
    fn file_types_are_guessed_from_magic_bytes() {
        assert_eq!(guess_type(b"MZ\x90\x00"), "Win32 EXE");
        assert_eq!(guess_type(EICAR), "Text");
        assert_eq!(guess_type(&[0, 1, 2]), "unknown");
    }
}
