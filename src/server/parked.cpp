#include "server/parked.hpp"

#include <new>

namespace canaryd::server {

ParkedTable::~ParkedTable() {
  for_each([](ParkedConnection& p) { p.~ParkedConnection(); });
}

void ParkedTable::add_block() {
  blocks_.push_back(std::make_unique<Slot[]>(kSlotsPerBlock));
  free_block(blocks_.back().get());
}

void ParkedTable::free_block(Slot* block) {
  for (std::size_t i = kSlotsPerBlock; i-- > 0;) {
    block[i].next_free = free_;
    free_ = &block[i];
  }
}

ParkedConnection* ParkedTable::add(boost::asio::ip::tcp::socket socket, std::string peer_ip,
                                   std::chrono::steady_clock::time_point idle_since,
                                   std::chrono::milliseconds idle_limit) {
  if (free_ == nullptr) add_block();
  Slot* slot = free_;
  free_ = slot->next_free;
  auto* p = new (slot->bytes) ParkedConnection{};
  p->socket.emplace(std::move(socket));
  p->peer_ip = std::move(peer_ip);
  p->idle_since = idle_since;
  p->idle_limit = idle_limit;
  p->next = head_;
  if (head_ != nullptr) head_->prev = p;
  head_ = p;
  ++size_;
  return p;
}

void ParkedTable::remove(ParkedConnection* p) {
  if (p->prev != nullptr) p->prev->next = p->next;
  if (p->next != nullptr) p->next->prev = p->prev;
  if (head_ == p) head_ = p->next;
  p->~ParkedConnection();
  auto* slot = reinterpret_cast<Slot*>(p);
  slot->next_free = free_;
  free_ = slot;
  if (--size_ == 0 && blocks_.size() > 1) {
    // None parked: keep one block for the next, give the rest back.
    blocks_.resize(1);
    free_ = nullptr;
    free_block(blocks_[0].get());
  }
}

void ParkedTable::close_all() {
  for_each([](ParkedConnection& p) { p.socket.reset(); });
}

}  // namespace canaryd::server
