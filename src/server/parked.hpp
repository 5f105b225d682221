// Idle keep-alive connections parked outside any coroutine (issue 15's
// "2 KB per idle connection"). A session idle past Worker::kKeepBuffer hands
// its socket here and ends: what stays per connection is this entry (the
// socket, the peer address, its idle deadline, the storage of its one
// readiness wait) and Asio's reactor state for the descriptor, about 0.5 KB
// where a waiting session held about 3.4 KB (docs/benchmarks.md).
//
// Entries live in blocks of kSlotsPerBlock, and the wait operation Asio
// allocates for each is placed inside its entry (ParkedWait's allocator):
// parked connections are made after a burst has freed its sessions' memory,
// so entries taken one by one from malloc would land in its holes and keep
// every page of it from going back to the system (malloc_trim can only give
// back pages that hold nothing).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace canaryd::server {

struct ParkedConnection {
  // Bytes kept for the readiness wait's operation (Asio's reactive_wait_op
  // with ParkedWait and the socket's executor): with Boost 1.81 it fits in
  // 144 and not in 128. A larger one would fall back to the heap, which
  // parked_test catches.
  static constexpr std::size_t kOpBytes = 144;

  std::optional<boost::asio::ip::tcp::socket> socket;  // reset before the io_context goes (ParkedTable::close_all)
  std::string peer_ip;
  std::chrono::steady_clock::time_point idle_since{};
  std::chrono::milliseconds idle_limit{0};
  bool closing = false;  // closed by the sweep or a drain: its wait ends with no new session
  bool op_in_use = false;
  ParkedConnection* prev = nullptr;
  ParkedConnection* next = nullptr;
  alignas(std::max_align_t) unsigned char op[kOpBytes];
};

// The allocator Asio uses for a parked connection's wait operation: the
// entry's own bytes when they are free and large enough, else the heap.
template <class T>
struct ParkedOpAllocator {
  using value_type = T;
  ParkedConnection* entry;
  explicit ParkedOpAllocator(ParkedConnection* e) noexcept : entry(e) {}
  template <class U>
  ParkedOpAllocator(const ParkedOpAllocator<U>& other) noexcept : entry(other.entry) {}  // NOLINT: rebinding
  T* allocate(std::size_t n) {
    if (!entry->op_in_use && n * sizeof(T) <= sizeof(entry->op) && alignof(T) <= alignof(std::max_align_t)) {
      entry->op_in_use = true;
      return reinterpret_cast<T*>(entry->op);
    }
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (reinterpret_cast<unsigned char*>(p) == entry->op) {
      entry->op_in_use = false;
    } else {
      std::allocator<T>().deallocate(p, n);
    }
  }
  template <class U>
  bool operator==(const ParkedOpAllocator<U>& other) const noexcept {
    return entry == other.entry;
  }
};

// Parked connections of one I/O thread, in blocks; iterated by the idle
// sweep and the drain through an intrusive list. Blocks are kept while any
// entry is parked (at most the peak count of parked connections), and all
// but the first go when none is.
class ParkedTable {
 public:
  static constexpr std::size_t kSlotsPerBlock = 64;

  ParkedTable() = default;
  ParkedTable(const ParkedTable&) = delete;
  ParkedTable& operator=(const ParkedTable&) = delete;
  ~ParkedTable();

  ParkedConnection* add(boost::asio::ip::tcp::socket socket, std::string peer_ip,
                        std::chrono::steady_clock::time_point idle_since, std::chrono::milliseconds idle_limit);
  void remove(ParkedConnection* p);  // destroys the entry (its wait must have ended)
  std::size_t size() const { return size_; }
  std::size_t blocks() const { return blocks_.size(); }
  // Closes every socket still parked (their waits are cancelled, not run):
  // before the io_context that owns them is destroyed, which then destroys
  // the cancelled waits into their entries, so this table must outlive it.
  void close_all();

  template <class F>
  void for_each(F&& f) {
    for (ParkedConnection* p = head_; p != nullptr;) {
      ParkedConnection* next = p->next;  // f may not remove p, but keep the walk safe anyway
      f(*p);
      p = next;
    }
  }

 private:
  union Slot {
    Slot* next_free;
    alignas(ParkedConnection) unsigned char bytes[sizeof(ParkedConnection)];
  };
  std::vector<std::unique_ptr<Slot[]>> blocks_;
  Slot* free_ = nullptr;
  ParkedConnection* head_ = nullptr;
  std::size_t size_ = 0;
  void add_block();
  void free_block(Slot* block);  // every slot of it onto the free list
};

}  // namespace canaryd::server
