//! A global allocator for state-heavy processes: the system allocator, plus
//! - `madvise(MADV_HUGEPAGE)` over the 2 MiB-aligned part of every allocation
//!   of at least [`HUGE_PAGE`] bytes;
//! - a cache of freed blocks of at least [`RETAIN_MIN`] bytes, which the next
//!   allocation of the same size and alignment takes back.
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
//! Those tables come and go in a few sizes (hash tables grow by doubling): a
//! copy-on-write checkpoint copies a key group's table and frees it once the
//! snapshot is written, a restore after a failure allocates the tables the
//! failed attempt freed. The system allocator returns such blocks to the
//! kernel, and each new one costs a page fault and the kernel's zeroing of
//! every page: on these virtual machines 0.7-2.5 GB/s, slower than filling
//! the table. The cache keeps them mapped instead, up to a budget.
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOC: rheon::alloc::HugePageAlloc = rheon::alloc::HugePageAlloc;`
//! (the `rheon` command and the benchmarks do). In the environment,
//! `RHEON_HUGE_PAGES=0` turns the advice off, for hosts where the kernel's
//! compaction on a huge-page fault costs more latency than the pages save,
//! and `RHEON_RETAIN_MIB=N` sets the cache's budget to N MiB (0 turns it
//! off; the default is a quarter of the machine's memory).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Freed blocks at least this large are kept for reuse (see the module
/// documentation); smaller ones are the system allocator's business.
pub const RETAIN_MIN: usize = HUGE_PAGE;

/// How many freed blocks the cache holds at most.
const RETAIN_SLOTS: usize = 1024;

/// A freed block: its address and the layout it was allocated with.
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    size: usize,
    align: usize,
}

const EMPTY: Block = Block {
    addr: 0,
    size: 0,
    align: 0,
};

/// The freed large blocks (`addr == 0`: an empty slot) and their total size.
/// A fixed array: an allocator must not allocate for its own bookkeeping.
/// `std::sync::Mutex` is a futex and never allocates.
struct Retained {
    blocks: [Block; RETAIN_SLOTS],
    bytes: usize,
}

static RETAINED: Mutex<Retained> = Mutex::new(Retained {
    blocks: [EMPTY; RETAIN_SLOTS],
    bytes: 0,
});

/// The cache's budget in bytes: unknown (`usize::MAX`) until first read.
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

fn retain_budget() -> usize {
    let budget = BUDGET.load(Ordering::Relaxed);
    if budget != usize::MAX {
        return budget;
    }
    // SAFETY: as in `advise_enabled`: a NUL-terminated name, a value read at
    // once; `sysconf` has no preconditions.
    let budget = unsafe {
        let value = libc::getenv(c"RHEON_RETAIN_MIB".as_ptr());
        let from_env = (!value.is_null())
            .then(|| {
                std::ffi::CStr::from_ptr(value)
                    .to_str()
                    .ok()?
                    .parse::<usize>()
                    .ok()
            })
            .flatten();
        match from_env {
            Some(mib) => mib.saturating_mul(1 << 20),
            None => {
                let pages = libc::sysconf(libc::_SC_PHYS_PAGES).max(0) as usize;
                let page = libc::sysconf(libc::_SC_PAGESIZE).max(0) as usize;
                pages.saturating_mul(page) / 4
            }
        }
    };
    BUDGET.store(budget.min(usize::MAX - 1), Ordering::Relaxed);
    budget
}

fn retained() -> std::sync::MutexGuard<'static, Retained> {
    // Nothing panics while holding the lock; recover the data regardless.
    RETAINED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A retained block of exactly `layout`, if the cache holds one.
fn take_retained(layout: Layout) -> Option<*mut u8> {
    let mut cache = retained();
    let slot = cache
        .blocks
        .iter()
        .position(|b| b.addr != 0 && b.size == layout.size() && b.align == layout.align())?;
    let block = std::mem::replace(&mut cache.blocks[slot], EMPTY);
    cache.bytes -= block.size;
    Some(block.addr as *mut u8)
}

/// Keeps a freed block for reuse; false (the caller frees it) when the
/// budget or the slots are used up.
fn retain(ptr: *mut u8, layout: Layout) -> bool {
    let budget = retain_budget();
    let mut cache = retained();
    if cache.bytes + layout.size() > budget {
        return false;
    }
    let Some(slot) = cache.blocks.iter().position(|b| b.addr == 0) else {
        return false;
    };
    cache.blocks[slot] = Block {
        addr: ptr as usize,
        size: layout.size(),
        align: layout.align(),
    };
    cache.bytes += layout.size();
    true
}

/// Bytes the cache holds now.
pub fn retained_bytes() -> usize {
    retained().bytes
}

/// Returns every retained block to the system allocator (and so, for blocks
/// this large, to the kernel): for a process that ran a large job and goes
/// on with small ones.
pub fn release_retained() {
    let mut cache = retained();
    for block in cache.blocks.iter_mut().filter(|b| b.addr != 0) {
        let block = std::mem::replace(block, EMPTY);
        // SAFETY: a retained block came from `System` with this layout, and
        // the cache was its only holder.
        unsafe {
            let layout = Layout::from_size_align_unchecked(block.size, block.align);
            System.dealloc(block.addr as *mut u8, layout);
        }
    }
    cache.bytes = 0;
}

// SAFETY: every block this allocator hands out comes from `System` with the
// same layout (a retained block was allocated by `System` with exactly the
// layout it is handed out for again, and no one else holds it); every block
// it frees goes back to `System` or into the cache. The added `madvise` never
// moves, frees or changes memory.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= RETAIN_MIN {
            if let Some(ptr) = take_retained(layout) {
                return ptr;
            }
        }
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        let ptr = unsafe { System.alloc(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Not from the cache: the system's zeroed memory is zero pages the
        // kernel maps on first touch, cheaper than clearing a retained block.
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= RETAIN_MIN && retain(ptr, layout) {
            return;
        }
        // SAFETY: `ptr` came from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, with the caller's `new_size`: every block
        // of this allocator is a `System` block of `layout`.
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

    #[test]
    fn a_freed_large_block_is_reused_for_its_layout_only_and_within_the_budget() {
        let alloc = HugePageAlloc;
        // A size no other test asks for.
        let layout = Layout::from_size_align(3 * HUGE_PAGE + 5 * 4096, 64).unwrap();
        if retain_budget() < 2 * layout.size() {
            return; // RHEON_RETAIN_MIB set too low for this test
        }
        // SAFETY: non-zero layouts; every block is freed once with the layout
        // it was allocated with.
        unsafe {
            let first = alloc.alloc(layout);
            first.write_bytes(0x5A, layout.size());
            alloc.dealloc(first, layout);
            // Another alignment or size does not take it...
            let other_align = Layout::from_size_align(layout.size(), 128).unwrap();
            let other_size = Layout::from_size_align(layout.size() + 4096, 64).unwrap();
            let (a, b) = (alloc.alloc(other_align), alloc.alloc(other_size));
            assert!(a != first && b != first);
            // ...the same layout does, with its memory as it was.
            let again = alloc.alloc(layout);
            assert_eq!(again, first);
            assert_eq!(*again.add(layout.size() - 1), 0x5A);
            // A zeroed allocation never comes from the cache.
            alloc.dealloc(again, layout);
            let zeroed = alloc.alloc_zeroed(layout);
            assert!((0..layout.size())
                .step_by(4093)
                .all(|i| *zeroed.add(i) == 0));
            alloc.dealloc(zeroed, layout);
            alloc.dealloc(a, other_align);
            alloc.dealloc(b, other_size);
            // A block beyond the budget goes back to the system (mapped, never
            // touched, so it costs no memory).
            let huge = Layout::from_size_align(retain_budget() + HUGE_PAGE, 64).unwrap();
            let block = alloc.alloc(huge);
            assert!(!block.is_null());
            alloc.dealloc(block, huge);
            assert!(take_retained(huge).is_none());
        }
        release_retained();
        assert!(take_retained(layout).is_none());
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
