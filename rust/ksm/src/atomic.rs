//! Replacing a file so that a reader sees the old content or the new one,
//! never half: write `<name>.tmp` beside it, fsync, rename. The journal, the
//! JSON report and the matrix page all go through here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes`. On error the temporary file is removed and
/// `path` is left as it was.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `path` with ".tmp" appended to its file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.md");
        fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(!tmp_path(&path).exists());
    }

    /// The rename fails (a non-empty directory is in the way) or the
    /// temporary file cannot be created: nothing is left behind.
    #[rstest]
    #[case::rename_fails("target", true)]
    #[case::no_directory("missing/target", false)]
    fn failure_removes_the_tmp_file(#[case] name: &str, #[case] in_the_way: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if in_the_way {
            fs::create_dir(&path).unwrap();
            fs::write(path.join("inside"), "x").unwrap();
        }
        assert!(write_atomically(&path, b"new").is_err());
        assert!(!tmp_path(&path).exists());
        if in_the_way {
            assert!(path.join("inside").exists());
        }
    }
}
