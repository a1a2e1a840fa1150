//! Which names in a watched directory are never triaged: partial downloads and editor or
//! office temporaries (they are renamed or deleted once complete), hidden files, and whatever
//! the configuration adds.

use std::path::{Component, Path};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Names that only ever hold incomplete content: the finished file appears under another name
/// (browsers, `rsync --partial`, office lock files). Matched case-insensitively because
/// Windows tools write `.TMP` as readily as `.tmp`.
const TEMPORARY_NAMES: [&str; 4] = ["*.part", "*.tmp", "*.crdownload", "~$*"];

/// Decides whether a path under a watched directory is skipped.
///
/// A path is skipped when any of its components is skipped, so a hidden or temporary directory
/// hides everything inside it. A component is skipped when it starts with a dot, matches one of
/// the temporary names, or matches a configured glob; configured globs are also tried against
/// the whole relative path, so `archive/**` works as well as `*.log`.
#[derive(Debug, Clone)]
pub struct Ignore {
    /// The temporary names, case-insensitive.
    temporary: GlobSet,
    /// The configured globs, case-sensitive as written.
    configured: GlobSet,
}

impl Ignore {
    /// Builds the rules; fails on a glob that does not parse, naming it.
    pub fn new(globs: &[String]) -> anyhow::Result<Ignore> {
        let mut temporary = GlobSetBuilder::new();
        for pattern in TEMPORARY_NAMES {
            temporary.add(GlobBuilder::new(pattern).case_insensitive(true).build()?);
        }
        let mut configured = GlobSetBuilder::new();
        for pattern in globs {
            // Against the whole relative path `*` must stop at `/`, as in a shell: `a*/x`
            // means `ab/x`, not `a/b/x`.
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!("invalid ignore glob {pattern:?} in [watch] ignore"))?;
            configured.add(glob);
        }
        Ok(Ignore {
            temporary: temporary.build()?,
            configured: configured.build()?,
        })
    }

    /// Whether `path` is skipped. Give it relative to the watched directory (a bare file name
    /// works too): the components of the watched directory itself must not count, or a drop
    /// directory under `~/.cache` would skip everything.
    pub fn is_ignored(&self, path: &Path) -> bool {
        let mut names = path.components().filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        });
        let by_name = names.any(|name| {
            name.as_encoded_bytes().first() == Some(&b'.')
                || self.temporary.is_match(name)
                || self.configured.is_match(name)
        });
        by_name || self.configured.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(globs: &[&str]) -> Ignore {
        Ignore::new(&globs.iter().map(|g| g.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn temporary_names_are_skipped_in_any_case() {
        let rules = ignore(&[]);
        for name in [
            "a.part",
            "a.tmp",
            "report.pdf.crdownload",
            "~$budget.xlsx",
            "B.TMP",
            "x.Part",
        ] {
            assert!(rules.is_ignored(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn ordinary_names_are_kept() {
        let rules = ignore(&[]);
        for name in [
            "a.exe",
            "part",
            "tmp",
            "a.part.exe",
            "sub/dir/file.bin",
            "a~$b",
            "x.",
        ] {
            assert!(!rules.is_ignored(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn dot_files_and_everything_in_dot_directories_are_skipped() {
        let rules = ignore(&[]);
        assert!(rules.is_ignored(Path::new(".hidden")));
        assert!(rules.is_ignored(Path::new(".git/objects/ab/cdef")));
        assert!(rules.is_ignored(Path::new("sub/.cache/file")));
        assert!(rules.is_ignored(Path::new("downloads.tmp/file.exe")));
    }

    #[test]
    fn parent_and_current_dir_components_are_not_dot_files() {
        let rules = ignore(&[]);
        assert!(!rules.is_ignored(Path::new("./a.exe")));
        assert!(!rules.is_ignored(Path::new("../drop/a.exe")));
    }

    #[test]
    fn configured_globs_match_names_and_relative_paths() {
        let rules = ignore(&["*.log", "archive/**", "Thumbs.db"]);
        assert!(rules.is_ignored(Path::new("x.log")));
        assert!(rules.is_ignored(Path::new("deep/er/x.log")));
        assert!(rules.is_ignored(Path::new("archive/2024/x.bin")));
        assert!(rules.is_ignored(Path::new("sub/Thumbs.db")));
        assert!(!rules.is_ignored(Path::new("x.log.exe")));
        assert!(!rules.is_ignored(Path::new("thumbs.db")));
        assert!(!rules.is_ignored(Path::new("sub/archive.bin")));
    }

    #[test]
    fn an_invalid_glob_is_an_error_naming_it() {
        let err = Ignore::new(&["a[".to_string()]).unwrap_err();
        assert!(format!("{err:#}").contains("a["), "{err:#}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_matched() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let rules = ignore(&[]);
        assert!(rules.is_ignored(Path::new(OsStr::from_bytes(b"caf\xe9.part"))));
        assert!(!rules.is_ignored(Path::new(OsStr::from_bytes(b"caf\xe9.exe"))));
        assert!(rules.is_ignored(Path::new(OsStr::from_bytes(b".caf\xe9"))));
    }
}
