//! ksm-matrix: the conformance suite's JSON reports of several kernels (one
//! column each, described by the `<kernel>.run` files ci/matrix.sh writes)
//! as one markdown page, docs/conformance-matrix.md: a row per check, a
//! column per kernel, the skip reasons as numbered footnotes, the sysfs files
//! at boot, and the differences between the kernels as the data shows them.

pub mod column;
pub mod render;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use column::{Column, Error, Outcome};
pub use render::{Options, render};

/// Read every run file (and its report), in the order given.
pub fn load(runs: &[PathBuf]) -> Result<Vec<Column>, Error> {
    let mut columns: Vec<Column> = Vec::new();
    for path in runs {
        let column = Column::load(path)?;
        if columns.iter().any(|c| c.kernel == column.kernel) {
            return Err(Error::Invalid {
                path: path.clone(),
                msg: format!("a second column named {}", column.kernel),
            });
        }
        columns.push(column);
    }
    Ok(columns)
}

/// Write `text` to `path` through `path.tmp` and a rename: readers see the
/// old page or the new one, never half of one.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let err = |source| Error::Write {
        path: path.into(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
