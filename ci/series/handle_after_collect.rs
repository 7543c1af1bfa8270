// SPDX-License-Identifier: GPL-2.0-only

//! A negative example, built by ci/series/negative-example.sh and expected to fail with E0502:
//! a handle to a stable node must not be usable after `Trees::collect()`, which frees the nodes
//! that left the trees.

use crate::{
    pages::KernelPages,
    trees::Trees, //
};

#[expect(dead_code)]
fn handle_used_after_collect(trees: &mut Trees<KernelPages>) -> Option<usize> {
    let node = trees.stable(0)?.first()?;
    trees.collect();
    Some(node.kpfn())
}
