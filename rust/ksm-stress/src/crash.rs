//! What a worker was doing when SIGSEGV or SIGBUS killed it: the kernel
//! prints an unhandled segfault only when its ratelimit lets it (a campaign
//! that injects faults fills the log), and the worker's exit status alone
//! says nothing of where. The handler writes one line to stderr (the
//! operation, the faulting address and where it lies) and lets the signal
//! kill the process as before, so the exit status stays the signal's.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static DOING: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static DOING_LEN: AtomicUsize = AtomicUsize::new(0);
static AREA: AtomicUsize = AtomicUsize::new(0);
static AREA_LEN: AtomicUsize = AtomicUsize::new(0);
static SCRATCH: AtomicUsize = AtomicUsize::new(0);
static SCRATCH_LEN: AtomicUsize = AtomicUsize::new(0);

/// Name the operation under way (a static string: the handler reads it).
pub fn doing(what: &'static str) {
    DOING_LEN.store(0, Ordering::Relaxed);
    DOING.store(what.as_ptr().cast_mut(), Ordering::Relaxed);
    DOING_LEN.store(what.len(), Ordering::Relaxed);
}

/// Where the worker's pages and its mremap scratch range lie.
pub fn areas(base: usize, len: usize, scratch: usize, scratch_len: usize) {
    AREA.store(base, Ordering::Relaxed);
    AREA_LEN.store(len, Ordering::Relaxed);
    SCRATCH.store(scratch, Ordering::Relaxed);
    SCRATCH_LEN.store(scratch_len, Ordering::Relaxed);
}

/// Install the handler for SIGSEGV and SIGBUS (once per process; a fork
/// child inherits it).
pub fn install() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is valid; the handler only calls
        // async-signal-safe functions (write, sigaction).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// A line in a fixed buffer: nothing here may allocate.
struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn hex(&mut self, v: usize) {
        let mut digits = [0u8; 18];
        digits[..2].copy_from_slice(b"0x");
        for (i, d) in digits[2..].iter_mut().enumerate() {
            let nibble = (v >> (60 - 4 * i)) & 0xf;
            *d = b"0123456789abcdef"[nibble];
        }
        self.push(&digits);
    }

    fn dec(&mut self, mut v: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let mut line = Line {
        buf: [0; 320],
        len: 0,
    };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    line.push(b"ksm-stress: pid ");
    // SAFETY: getpid has no preconditions.
    line.dec(unsafe { libc::getpid() } as usize);
    line.push(if sig == libc::SIGBUS {
        b": SIGBUS at "
    } else {
        b": SIGSEGV at "
    });
    line.hex(addr);
    line.push(b" (si_code ");
    line.dec(code as usize);
    line.push(b") during ");
    let (p, n) = (
        DOING.load(Ordering::Relaxed),
        DOING_LEN.load(Ordering::Relaxed),
    );
    if p.is_null() || n == 0 {
        line.push(b"(nothing named)");
    } else {
        // SAFETY: DOING and DOING_LEN describe a &'static str (see doing()).
        line.push(unsafe { std::slice::from_raw_parts(p, n) });
    }
    let (base, len) = (
        AREA.load(Ordering::Relaxed),
        AREA_LEN.load(Ordering::Relaxed),
    );
    let scratch = SCRATCH.load(Ordering::Relaxed);
    let scratch_end = scratch + SCRATCH_LEN.load(Ordering::Relaxed);
    if (base..base + len).contains(&addr) {
        line.push(b"; in its pages, page ");
        line.dec((addr - base) / crate::frames::PAGE);
    } else if (scratch..scratch_end).contains(&addr) {
        line.push(b"; in its mremap scratch range");
    } else {
        line.push(b"; outside its pages");
    }
    line.push(b"\n");
    // SAFETY: writes from a live buffer; then the default action, which
    // the faulting instruction meets again on return.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segfault_is_told_and_still_kills() {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only sets up and faults; it never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls only, then a deliberate fault.
            unsafe {
                libc::dup2(fds[1], 2);
                install();
                areas(0x1000, 0x2000, 0x10000, 0x1000);
                doing("a test");
                std::ptr::read_volatile(0x1008 as *const u8);
                libc::_exit(0);
            }
        }
        // SAFETY: closes our copy of the write end; waits for our child.
        let status = unsafe {
            libc::close(fds[1]);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            status
        };
        let mut buf = [0u8; 320];
        // SAFETY: reads into a live buffer of that length.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        let said = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSEGV);
        assert!(
            said.contains(": SIGSEGV at 0x0000000000001008")
                && said.contains("during a test; in its pages, page 0"),
            "{said}"
        );
    }

    #[test]
    fn numbers_are_written_without_allocating() {
        let mut line = Line {
            buf: [0; 320],
            len: 0,
        };
        line.hex(0x7f12_3456_7000);
        line.push(b" ");
        line.dec(0);
        line.push(b" ");
        line.dec(4096);
        assert_eq!(&line.buf[..line.len], b"0x00007f1234567000 0 4096");
    }
}
