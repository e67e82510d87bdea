//! The hypervisor heap: `linked_list_allocator` over a virtual range that
//! grows page by page from the frame allocator (docs/memory.md).

use super::{HEAP_BASE, HEAP_MAX, MmError, grow_heap};
use basalt_frames::PAGE_SIZE;
use core::alloc::{GlobalAlloc, Layout};
use linked_list_allocator::Heap;
use spin::Mutex;

/// Initial heap size.
const INITIAL: u64 = 1 << 20;

struct GrowingHeap {
    heap: Mutex<Heap>,
}

#[global_allocator]
static HEAP: GrowingHeap = GrowingHeap {
    heap: Mutex::new(Heap::empty()),
};

/// Maps the first megabyte of heap.
pub(super) fn init() -> Result<(), MmError> {
    if !grow_heap(HEAP_BASE, INITIAL) {
        return Err(MmError::NoBootstrapMemory { needed: INITIAL });
    }
    // SAFETY: [HEAP_BASE, HEAP_BASE + INITIAL) was just mapped read-write and
    // is used by nothing else.
    unsafe {
        HEAP.heap
            .lock()
            .init(HEAP_BASE as *mut u8, INITIAL as usize)
    };
    Ok(())
}

/// Heap bytes mapped so far.
pub fn size() -> usize {
    HEAP.heap.lock().size()
}

// SAFETY: allocation is delegated to linked_list_allocator under a lock; the
// heap only ever grows by mapping fresh pages right at its top.
unsafe impl GlobalAlloc for GrowingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        if let Ok(p) = heap.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        let grow =
            (layout.size() as u64 + layout.align() as u64 + PAGE_SIZE).next_multiple_of(INITIAL);
        let top = heap.top() as u64;
        if top + grow > HEAP_BASE + HEAP_MAX || !grow_heap(top, grow) {
            return core::ptr::null_mut();
        }
        // SAFETY: the pages right above the heap's top were just mapped.
        unsafe { heap.extend(grow as usize) };
        heap.allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.heap.lock().deallocate(p, layout) };
        }
    }
}
