//! ksm-matrix: the conformance suite's JSON reports of several kernels (one
//! column each, described by the `<kernel>.run` files ci/matrix.sh writes)
//! as one markdown page, docs/conformance-matrix.md: a row per check, a
//! column per kernel, the skip reasons as numbered footnotes, the sysfs files
//! at boot, and the differences between the kernels as the data shows them.

pub mod column;
pub mod mergeflip;
pub mod render;

use std::path::{Path, PathBuf};

pub use column::{Column, Error, Outcome};
pub use mergeflip::Mergeflip;
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

/// Every column a pair names must be there: a comparison asked for is never
/// dropped in silence.
pub fn check_pairs(columns: &[Column], pairs: &[(String, String)]) -> Result<(), String> {
    for (a, b) in pairs {
        for name in [a, b] {
            if !columns.iter().any(|c| &c.kernel == name) {
                let known: Vec<&str> = columns.iter().map(|c| c.kernel.as_str()).collect();
                return Err(format!(
                    "--pair {a},{b}: no column {name} (columns: {})",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Write `text` to `path` through `path.tmp` and a rename: readers see the
/// old page or the new one, never half of one.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    ksm::atomic::write_atomically(path, text.as_bytes()).map_err(|source| Error::Write {
        path: path.into(),
        source,
    })
}
