//! The `dataflow` binary's allocator: the system's (glibc's malloc), except that large Rust
//! buffers are mapped from the kernel and unmapped when freed.
//!
//! Two kinds of large buffers share the process, and they want opposite treatment:
//! - differential's trace batches, allocated and freed as batches merge. In malloc's heap,
//!   freed batches stay resident and fragmented: the peak RSS with a million active accounts
//!   is a quarter higher than when every one is its own mapping, returned when freed.
//! - librdkafka's fetch buffers (megabytes, one per fetch response), allocated by its fetch
//!   thread and freed by the workers. Mapped afresh, every byte received first costs a page
//!   fault; from the heap, the same pages serve fetch after fetch.
//!
//! glibc has one threshold over which it maps, for the whole process. By default it rises each
//! time a mapped block is freed (so that later ones come from the heap), which suits
//! librdkafka; fixed at its initial 128 KiB, it suits the trace. Rust's allocations come here,
//! librdkafka's go to malloc directly: so Rust buffers of [`MAPPED`] bytes or more are mapped
//! here, as glibc would with a fixed threshold, and glibc keeps its default for the rest.
//! Through Kafka (5 M records, 2 workers) that saves a quarter of the page faults; the memory
//! run is unchanged (docs/performance.md, sixth session).
//!
//! Mappings of [`HUGE`] bytes or more (merged batches) ask for transparent huge pages: one
//! fault for 2 MiB instead of 512. The first touch of a page is what a merge costs most in the
//! kernel; with huge pages the Kafka run takes half the faults and runs 5 – 10 % faster, and
//! the memory run's peak rises by 5 – 10 MB, because a huge page is resident whole from its
//! first touch (docs/performance.md, ninth session). Where the kernel's THP setting is `never`
//! the advice does nothing; where its `defrag` setting makes a fault compact memory for a huge
//! page (the default, for advised ranges), a fragmented host may stall a merge briefly: the
//! kernel falls back to small pages when it cannot find one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Rust allocations of this many bytes or more are mappings of their own: glibc's initial
/// mmap threshold.
pub const MAPPED: usize = 128 * 1024;

/// The allocator: see the module's documentation.
pub struct MapLarge;

const PAGE: usize = 4096;

/// Mappings of this many bytes or more are backed by transparent huge pages.
pub const HUGE: usize = 2 * 1024 * 1024;

/// Whether an allocation of `layout` is a mapping. The same answer for its `dealloc` (Rust
/// passes the layout it was allocated with) and for both sides of a `realloc` (same alignment).
fn mapped(layout: Layout) -> bool {
    layout.size() >= MAPPED && layout.align() <= PAGE
}

/// The length of the mapping of `size` bytes: whole pages, and whole huge pages from [`HUGE`]
/// on, because the kernel aligns an anonymous mapping to huge pages only when its length is a
/// multiple of them (otherwise the huge pages are only the whole aligned ranges inside it).
fn pages(size: usize) -> usize {
    if size >= HUGE {
        size.div_ceil(HUGE) * HUGE
    } else {
        size.div_ceil(PAGE) * PAGE
    }
}

/// Asks for huge pages for the mapping at `p` of `size` bytes, when it is that large.
///
/// # Safety
/// `p` is a mapping of `pages(size)` bytes made by this allocator.
unsafe fn advise_huge(p: *mut libc::c_void, size: usize) {
    if size >= HUGE {
        // SAFETY: advice about a mapping this allocator owns; it changes no contents.
        unsafe { libc::madvise(p, pages(size), libc::MADV_HUGEPAGE) };
    }
}

// SAFETY: every block is either the system allocator's, handled by it, or a private anonymous
// mapping of whole pages (page-aligned, so aligned to anything `mapped` admits), created by
// `mmap` or `mremap` here and unmapped only here; `mapped` tells which from the layout alone.
unsafe impl GlobalAlloc for MapLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !mapped(layout) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                pages(layout.size()),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return ptr::null_mut();
        }
        // SAFETY: `p` is the mapping just made.
        unsafe { advise_huge(p, layout.size()) };
        p.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // SAFETY: as `alloc`; fresh anonymous pages are zeroed by the kernel.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: `p` is a mapping of `pages(layout.size())` bytes made by this allocator.
            unsafe { libc::munmap(p.cast(), pages(layout.size())) };
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout`'s alignment is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new)) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            (true, true) if pages(layout.size()) == pages(new_size) => p,
            (true, true) => {
                // SAFETY: `p` is a mapping of `pages(layout.size())` bytes made here; the kernel
                // moves or resizes it, keeping its contents.
                let q = unsafe {
                    libc::mremap(
                        p.cast(),
                        pages(layout.size()),
                        pages(new_size),
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if q == libc::MAP_FAILED {
                    return ptr::null_mut();
                }
                // SAFETY: `q` is the mapping just moved or resized.
                unsafe { advise_huge(q, new_size) };
                q.cast()
            }
            // Across the threshold: a new block, the contents copied, the old block freed.
            _ => {
                // SAFETY: `new` is a valid layout of non-zero size (the caller's contract).
                let q = unsafe { self.alloc(new) };
                if !q.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `MapLarge`, writes a pattern, grows and shrinks across the thresholds
    /// (mapped, huge) and within each side, and checks the contents survive every step.
    #[test]
    fn contents_survive_reallocation_across_the_threshold() {
        let a = MapLarge;
        let sizes = [
            64,
            MAPPED - 1,
            MAPPED,
            3 * MAPPED + 5,
            10 * MAPPED,
            HUGE + 5,
            HUGE + 4096,
            3 * HUGE,
            HUGE - 1,
            MAPPED + 1,
            100,
        ];
        // SAFETY: every block is used within its size and freed with its layout.
        unsafe {
            let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
            let mut p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..layout.size() {
                *p.add(i) = (i % 251) as u8;
            }
            for &size in &sizes[1..] {
                let kept = layout.size().min(size);
                p = a.realloc(p, layout, size);
                assert!(!p.is_null(), "realloc to {size}");
                layout = Layout::from_size_align(size, 8).unwrap();
                for i in 0..kept {
                    assert_eq!(
                        *p.add(i),
                        (i % 251) as u8,
                        "byte {i} after realloc to {size}"
                    );
                }
                for i in kept..size {
                    *p.add(i) = (i % 251) as u8;
                }
            }
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn large_zeroed_blocks_are_zero_and_page_aligned() {
        let a = MapLarge;
        let layout = Layout::from_size_align(2 * MAPPED + 3, 64).unwrap();
        // SAFETY: read within its size, freed with its layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % PAGE, 0);
            assert!((0..layout.size()).all(|i| *p.add(i) == 0));
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn over_aligned_blocks_stay_with_the_system_allocator() {
        assert!(!mapped(Layout::from_size_align(MAPPED, 2 * PAGE).unwrap()));
        assert!(mapped(Layout::from_size_align(MAPPED, PAGE).unwrap()));
        assert!(!mapped(Layout::from_size_align(MAPPED - 1, 8).unwrap()));
    }
}
