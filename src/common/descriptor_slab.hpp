// Where Asio's epoll reactor keeps its per-socket state (asio_impl.cpp).
//
// The reactor allocates one descriptor_state (~170 bytes) the first time a
// socket is registered while its free list is empty, and keeps it for reuse
// until the io_context is destroyed: the pool only ever grows to the most
// sockets open at once. Allocated one at a time with plain new, during a
// burst those states land between the burst's coroutine frames and buffers;
// once the burst's memory is freed, every state still pins the 4 KiB page it
// sits on, and malloc_trim cannot give that page back. 1,000 idle keep-alive
// connections after a burst measured 2.4 MB of resident heap for 1 MB in use,
// ~700 pages held by descriptor states alone (bench/idle_conns.sh; the heap
// walk is described in docs/benchmarks.md). asio_impl.cpp specialises Asio's
// object_pool_access for descriptor_state so they come from this slab
// instead: blocks of kSlotsPerBlock, packed, freed when no state is left.
#pragma once

#include <cstddef>

namespace canaryd::common {

struct DescriptorSlabStats {
  std::size_t live = 0;    // states handed to a reactor and not yet destroyed
  std::size_t blocks = 0;  // slab blocks held
};

DescriptorSlabStats descriptor_slab_stats();

namespace detail {
inline constexpr std::size_t kSlotsPerBlock = 64;
void* descriptor_slab_allocate(std::size_t size, std::size_t align);
void descriptor_slab_free(void* p) noexcept;
}  // namespace detail

}  // namespace canaryd::common
