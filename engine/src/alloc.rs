//! A global allocator that asks for transparent huge pages for large
//! allocations: the system allocator, plus `madvise(MADV_HUGEPAGE)` over the
//! 2 MiB-aligned part of every allocation of at least [`HUGE_PAGE`] bytes.
//!
//! Keyed state lives in hash tables of many MiB (one per key group) that are
//! read and written at random. With 4 KiB pages nearly every access misses
//! the TLB, and under virtualisation a miss is a two-level page walk; with
//! 2 MiB pages a 16 MiB table needs 8 TLB entries. A restore fills fresh
//! tables, whose page faults drop by 512 times as well. Hosts whose
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` (the common
//! default) give huge pages only to regions advised so; with `always` the
//! advice changes nothing, with `never` the kernel ignores it.
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOC: rheon::alloc::HugePageAlloc = rheon::alloc::HugePageAlloc;`
//! (the `rheon` command and the benchmarks do). `RHEON_HUGE_PAGES=0` in the
//! environment turns the advice off, for hosts where the kernel's
//! compaction on a huge-page fault costs more latency than the pages save.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// The transparent huge page size on x86-64 and (with 4 KiB base pages) on
/// aarch64.
pub const HUGE_PAGE: usize = 2 << 20;

/// The system allocator, advising the kernel to back large allocations with
/// transparent huge pages. See the module documentation.
pub struct HugePageAlloc;

/// Whether to advise: unknown (0) until first read from the environment.
static ADVISE: AtomicU8 = AtomicU8::new(0);
const ON: u8 = 1;
const OFF: u8 = 2;

fn advise_enabled() -> bool {
    match ADVISE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            // `std::env` allocates, which an allocator must not do here.
            // SAFETY: the name is a NUL-terminated C string; `getenv` returns
            // null or a pointer to a NUL-terminated value that stays valid
            // while nothing changes the environment, and it is read at once.
            let off = unsafe {
                let value = libc::getenv(c"RHEON_HUGE_PAGES".as_ptr());
                !value.is_null() && *value == b'0' as libc::c_char
            };
            ADVISE.store(if off { OFF } else { ON }, Ordering::Relaxed);
            !off
        }
    }
}

/// Advises huge pages for the whole 2 MiB-aligned pages inside
/// `[ptr, ptr + size)`. Best effort: a kernel without THP refuses, and the
/// memory stays as it was.
fn advise(ptr: *mut u8, size: usize) {
    if ptr.is_null() || size < HUGE_PAGE || !advise_enabled() {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + size) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns and
        // is page aligned; MADV_HUGEPAGE changes how it is backed, never its
        // contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every method delegates to `System`, which upholds `GlobalAlloc`'s
// contract; the added `madvise` never moves, frees or changes memory.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        let ptr = unsafe { System.alloc(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, with the caller's `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        advise(new, new_size);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_allocations_keep_their_contents() {
        let alloc = HugePageAlloc;
        for size in [64, HUGE_PAGE - 1, HUGE_PAGE, 3 * HUGE_PAGE + 4096] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero layout; the memory is written within bounds
            // and freed with the layout it was allocated with.
            unsafe {
                let ptr = alloc.alloc(layout);
                assert!(!ptr.is_null());
                ptr.write_bytes(0xA5, size);
                let grown = alloc.realloc(ptr, layout, size * 2);
                assert!(!grown.is_null());
                assert_eq!(*grown, 0xA5);
                assert_eq!(*grown.add(size - 1), 0xA5);
                alloc.dealloc(grown, Layout::from_size_align(size * 2, 64).unwrap());
                let zeroed = alloc.alloc_zeroed(layout);
                assert!((0..size).step_by(4093).all(|i| *zeroed.add(i) == 0));
                alloc.dealloc(zeroed, layout);
            }
        }
    }

    /// The `VmFlags` of the mapping of this process that holds `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((from, to)) = range.split_once('-') {
                    if let (Ok(from), Ok(to)) = (
                        usize::from_str_radix(from, 16),
                        usize::from_str_radix(to, 16),
                    ) {
                        inside = (from..to).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_owned();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn the_whole_huge_pages_inside_a_large_allocation_are_advised() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists()
            || !advise_enabled()
        {
            return; // a kernel without THP, or RHEON_HUGE_PAGES=0: no advice
        }
        let size = 4 * HUGE_PAGE;
        // SAFETY: an anonymous private mapping of `size` bytes, unmapped
        // below; nothing else uses it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let ptr = base as *mut u8;
        let first_whole = (ptr as usize).next_multiple_of(HUGE_PAGE);
        assert!(!vm_flags(first_whole).contains("hg"), "advised already");
        // Less than a whole aligned huge page: left alone.
        let (short, short_len) = (first_whole + 4096, HUGE_PAGE);
        advise(short as *mut u8, short_len);
        assert!(!vm_flags(short).contains("hg"));
        advise(ptr, size);
        assert!(vm_flags(first_whole).contains("hg"));
        // The unaligned head before the first whole huge page is not advised.
        if first_whole > ptr as usize {
            assert!(!vm_flags(ptr as usize).contains("hg"));
        }
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(base, size) };
    }
}
