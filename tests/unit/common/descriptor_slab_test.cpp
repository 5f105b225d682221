// Asio's epoll reactor takes its per-socket states from our slab
// (common/descriptor_slab.hpp): if a Boost upgrade stops calling the
// specialised object_pool_access, `live` stays 0 and these fail.
#include "common/descriptor_slab.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

namespace {

using canaryd::common::descriptor_slab_stats;
using tcp = boost::asio::ip::tcp;

std::vector<std::unique_ptr<tcp::socket>> open_sockets(boost::asio::io_context& ioc, std::size_t n) {
  std::vector<std::unique_ptr<tcp::socket>> v;
  for (std::size_t i = 0; i < n; ++i) {
    v.push_back(std::make_unique<tcp::socket>(ioc));
    v.back()->open(tcp::v4());  // registers the descriptor with the reactor
  }
  return v;
}

TEST(DescriptorSlab, ReactorStatesComeFromTheSlabInPackedBlocks) {
  const auto before = descriptor_slab_stats();
  constexpr std::size_t kSockets = 150;
  {
    boost::asio::io_context ioc;
    auto sockets = open_sockets(ioc, kSockets);
    const auto open = descriptor_slab_stats();
    // The reactor's own internal descriptors (its interrupter, timerfd) are
    // registered without a pooled state; each socket takes one.
    EXPECT_EQ(open.live, before.live + kSockets);
    const std::size_t per = canaryd::common::detail::kSlotsPerBlock;
    EXPECT_LE(open.blocks, (open.live + per - 1) / per + (before.blocks > 0 ? 1 : 0));

    // Closed sockets hand their state back to the reactor's free list, not to
    // us: the slab still counts them until the io_context goes.
    sockets.clear();
    EXPECT_EQ(descriptor_slab_stats().live, before.live + kSockets);

    // Reopened, they reuse those states: the slab does not grow.
    sockets = open_sockets(ioc, kSockets);
    EXPECT_EQ(descriptor_slab_stats().live, before.live + kSockets);
    EXPECT_EQ(descriptor_slab_stats().blocks, open.blocks);
  }
  const auto after = descriptor_slab_stats();
  EXPECT_EQ(after.live, before.live);
  if (after.live == 0) {
    EXPECT_EQ(after.blocks, 0u);  // all freed: the blocks go back
  }
}

TEST(DescriptorSlab, TwoReactorsShareTheSlabAndEachGivesBackItsOwn) {
  const auto before = descriptor_slab_stats();
  auto a = std::make_unique<boost::asio::io_context>();
  auto b = std::make_unique<boost::asio::io_context>();
  auto sa = open_sockets(*a, 70);
  auto sb = open_sockets(*b, 10);
  EXPECT_EQ(descriptor_slab_stats().live, before.live + 80);
  sa.clear();
  a.reset();
  EXPECT_EQ(descriptor_slab_stats().live, before.live + 10);
  sb.clear();
  b.reset();
  EXPECT_EQ(descriptor_slab_stats().live, before.live);
}

}  // namespace
