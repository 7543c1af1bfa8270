//! Measurement points for the ksmcount QEMU plugin
//! (benchmarks/plugin/ksmcount.c), which counts the instructions a guest
//! kernel executes for ksmd. A mark is an instruction the plugin recognises
//! by its bytes when QEMU translates it, `nopl 0x4b534dKK(%rax)`: a no-op
//! on any x86-64 CPU, plugin or not. At each mark the plugin writes the
//! instructions ksmd executed since the previous one; a session mark starts
//! a new numbering. The guest's log (crate::guestlog) says what each mark
//! was.

/// Start a session: its mark is number 1.
pub fn session() {
    mark::<0x01>();
}

/// A measurement point: the next number.
pub fn point() {
    mark::<0x00>();
}

#[cfg(target_arch = "x86_64")]
fn mark<const KIND: u8>() {
    // SAFETY: a nop; it reads and writes nothing. Not `nomem`: the mark
    // must stay where it is among the sysfs reads and writes around it.
    unsafe {
        std::arch::asm!(
            ".byte 0x0f, 0x1f, 0x80, {kind}, 0x4d, 0x53, 0x4b",
            kind = const KIND,
            options(nostack, preserves_flags)
        )
    };
}

#[cfg(not(target_arch = "x86_64"))]
fn mark<const KIND: u8>() {}

/// Whether marks mean anything here (the plugin is x86-64's).
pub const SUPPORTED: bool = cfg!(target_arch = "x86_64");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_harmless_without_the_plugin() {
        session();
        point();
        point();
    }
}
