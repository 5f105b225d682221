// Compiles Asio, Asio SSL and Beast once for the whole program
// (BOOST_ASIO_SEPARATE_COMPILATION / BOOST_BEAST_SEPARATE_COMPILATION).
#include <boost/asio/detail/config.hpp>

#if defined(BOOST_ASIO_HAS_EPOLL)
#include <algorithm>
#include <boost/asio/detail/epoll_reactor.hpp>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "common/descriptor_slab.hpp"

// The reactor's descriptor states from a slab (descriptor_slab.hpp says why).
// object_pool_access::create / destroy are the only places Asio news and
// deletes a pooled object; these specialisations are seen before Asio's own
// sources below, which are the only code that instantiates them (the
// reactor's pool is private to epoll_reactor.ipp). descriptor_slab_test
// fails if a Boost upgrade stops routing the states here.
namespace boost::asio::detail {
template <>
epoll_reactor::descriptor_state* object_pool_access::create<epoll_reactor::descriptor_state, bool>(bool locking) {
  using State = epoll_reactor::descriptor_state;
  void* p = canaryd::common::detail::descriptor_slab_allocate(sizeof(State), alignof(State));
  try {
    return new (p) State(locking);
  } catch (...) {
    canaryd::common::detail::descriptor_slab_free(p);
    throw;
  }
}

template <>
void object_pool_access::destroy<epoll_reactor::descriptor_state>(epoll_reactor::descriptor_state* o) {
  o->~descriptor_state();
  canaryd::common::detail::descriptor_slab_free(o);
}
}  // namespace boost::asio::detail

namespace canaryd::common {
namespace {

// One slab for every reactor of the process: states are allocated rarely
// (only while a reactor's pool grows) and destroyed only when an io_context
// goes, so one mutex costs nothing on the request path.
struct Slab {
  std::mutex mu;
  std::vector<char*> blocks;
  std::size_t slot = 0;  // bytes per slot (the first size asked for, aligned)
  std::size_t used_in_last = detail::kSlotsPerBlock;
  void* free_list = nullptr;  // freed slots, each holding the next one's address
  std::size_t live = 0;
};

Slab& slab() {
  static Slab* s = new Slab;  // never destroyed: reactors may outlive static destructors
  return *s;
}

}  // namespace

namespace detail {

void* descriptor_slab_allocate(std::size_t size, std::size_t align) {
  Slab& s = slab();
  std::lock_guard lock(s.mu);
  const std::size_t want = std::max({size, sizeof(void*), align});
  const std::size_t slot = (want + align - 1) / align * align;
  if (s.slot == 0) s.slot = slot;
  if (slot != s.slot || align > alignof(std::max_align_t)) throw std::bad_alloc();  // one type only
  ++s.live;
  if (s.free_list) {
    void* p = s.free_list;
    s.free_list = *static_cast<void**>(p);
    return p;
  }
  if (s.used_in_last == kSlotsPerBlock) {
    auto* block = static_cast<char*>(std::malloc(s.slot * kSlotsPerBlock));
    if (!block) {
      --s.live;
      throw std::bad_alloc();
    }
    s.blocks.push_back(block);
    s.used_in_last = 0;
  }
  return s.blocks.back() + s.slot * s.used_in_last++;
}

void descriptor_slab_free(void* p) noexcept {
  Slab& s = slab();
  std::lock_guard lock(s.mu);
  *static_cast<void**>(p) = s.free_list;
  s.free_list = p;
  if (--s.live == 0) {  // every reactor has let go of its states: hand the blocks back
    for (char* b : s.blocks) std::free(b);
    s.blocks.clear();
    s.free_list = nullptr;
    s.used_in_last = kSlotsPerBlock;
  }
}

}  // namespace detail

DescriptorSlabStats descriptor_slab_stats() {
  Slab& s = slab();
  std::lock_guard lock(s.mu);
  return {s.live, s.blocks.size()};
}

}  // namespace canaryd::common
#else
#include "common/descriptor_slab.hpp"
namespace canaryd::common {
DescriptorSlabStats descriptor_slab_stats() { return {}; }
}  // namespace canaryd::common
#endif

#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
