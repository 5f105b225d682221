// ParkedTable (server/parked.hpp) on real loopback sockets: a parked wait's
// operation lives in its entry (no heap allocation that would pin a page of
// a freed burst), the wait ends when the peer writes or the socket is
// cancelled, blocks come and go with the count, and a table whose sockets
// still wait can be torn down before its io_context (ASan/UBSan builds run
// this too).
#include "server/parked.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <optional>
#include <utility>
#include <vector>

namespace canaryd::server {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// A connected pair on loopback: `server` is what the table parks, `client`
// the peer the test writes from.
struct Pair {
  tcp::socket server;
  tcp::socket client;
};

Pair connected(net::io_context& ioc, tcp::acceptor& acceptor) {
  tcp::socket client(ioc);
  client.connect(acceptor.local_endpoint());
  tcp::socket server = acceptor.accept();
  return Pair{std::move(server), std::move(client)};
}

struct Wait {
  ParkedConnection* entry;
  std::vector<std::pair<ParkedConnection*, boost::system::error_code>>* done;
  using allocator_type = ParkedOpAllocator<void>;
  allocator_type get_allocator() const noexcept { return allocator_type(entry); }
  void operator()(const boost::system::error_code& ec) const {
    // Asio frees the operation before it calls the handler: the entry's bytes are free again.
    EXPECT_FALSE(entry->op_in_use);
    done->emplace_back(entry, ec);
  }
};

class ParkedTableTest : public ::testing::Test {
 protected:
  net::io_context ioc;
  tcp::acceptor acceptor{ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
};

TEST_F(ParkedTableTest, TheWaitLivesInItsEntryAndEndsWhenThePeerWrites) {
  ParkedTable table;
  std::vector<std::pair<ParkedConnection*, boost::system::error_code>> done;
  Pair pair = connected(ioc, acceptor);
  const auto now = std::chrono::steady_clock::now();
  ParkedConnection* p = table.add(std::move(pair.server), "127.0.0.1", now, std::chrono::seconds(5));
  EXPECT_EQ(p->peer_ip, "127.0.0.1");
  EXPECT_EQ(p->idle_since, now);
  EXPECT_EQ(p->idle_limit, std::chrono::seconds(5));
  p->socket->async_wait(tcp::socket::wait_read, Wait{p, &done});
  // The operation took the entry's bytes, not the heap's: if it outgrew
  // ParkedConnection::kOpBytes (another Boost), this names it.
  EXPECT_TRUE(p->op_in_use) << "the wait operation did not fit in ParkedConnection::kOpBytes";
  ioc.poll();
  EXPECT_TRUE(done.empty()) << "nothing was written: the wait must still be pending";
  net::write(pair.client, net::buffer("GET", 3));
  ioc.run_for(std::chrono::seconds(5));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].first, p);
  EXPECT_FALSE(done[0].second) << done[0].second.message();
  table.remove(p);
  EXPECT_EQ(table.size(), 0u);
}

TEST_F(ParkedTableTest, ACancelledWaitEndsWithOperationAborted) {
  ParkedTable table;
  std::vector<std::pair<ParkedConnection*, boost::system::error_code>> done;
  Pair pair = connected(ioc, acceptor);
  ParkedConnection* p = table.add(std::move(pair.server), "::1", {}, std::chrono::seconds(5));
  p->socket->async_wait(tcp::socket::wait_read, Wait{p, &done});
  p->socket->cancel();
  ioc.run_for(std::chrono::seconds(5));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].second, net::error::operation_aborted);
  table.remove(p);
}

TEST_F(ParkedTableTest, BlocksGrowWithTheCountAndAllButOneGoWhenNoneIsParked) {
  ParkedTable table;
  std::vector<Pair> pairs;
  std::vector<ParkedConnection*> entries;
  const std::size_t n = 2 * ParkedTable::kSlotsPerBlock + 3;
  for (std::size_t i = 0; i < n; ++i) {
    pairs.push_back(connected(ioc, acceptor));
    entries.push_back(table.add(std::move(pairs.back().server), "127.0.0.1", {}, std::chrono::seconds(1)));
  }
  EXPECT_EQ(table.size(), n);
  EXPECT_EQ(table.blocks(), 3u);
  std::size_t seen = 0;
  table.for_each([&](ParkedConnection& p) {
    EXPECT_TRUE(p.socket && p.socket->is_open());
    ++seen;
  });
  EXPECT_EQ(seen, n);
  // Out of order: the intrusive list must stay whole.
  for (std::size_t i = 0; i < n; i += 2) table.remove(entries[i]);
  seen = 0;
  table.for_each([&](ParkedConnection&) { ++seen; });
  EXPECT_EQ(seen, n / 2);
  EXPECT_EQ(table.blocks(), 3u) << "blocks stay while any entry is parked";
  for (std::size_t i = 1; i < n; i += 2) table.remove(entries[i]);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.blocks(), 1u);
  // The kept block is whole again: a full block's worth fits without a new one.
  for (std::size_t i = 0; i < ParkedTable::kSlotsPerBlock; ++i) {
    pairs.push_back(connected(ioc, acceptor));
    table.add(std::move(pairs.back().server), "127.0.0.1", {}, std::chrono::seconds(1));
  }
  EXPECT_EQ(table.blocks(), 1u);
}

TEST(ParkedTableTeardown, PendingWaitsAreFreedIntoTheirEntriesWhenTheIoContextGoes) {
  // The Worker's order: the table outlives the io_context; close_all() first.
  std::vector<std::pair<ParkedConnection*, boost::system::error_code>> done;
  ParkedTable table;
  std::optional<tcp::socket> client;
  {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket c(ioc);
    c.connect(acceptor.local_endpoint());
    ParkedConnection* p = table.add(acceptor.accept(), "127.0.0.1", {}, std::chrono::seconds(5));
    p->socket->async_wait(tcp::socket::wait_read, Wait{p, &done});
    ASSERT_TRUE(p->op_in_use);
    table.close_all();
    EXPECT_FALSE(p->socket.has_value());
    EXPECT_TRUE(p->op_in_use) << "the cancelled wait is queued, not yet destroyed";
    c.close();
    acceptor.close();
    // ~io_context destroys the queued wait: its memory goes back into p.
  }
  EXPECT_TRUE(done.empty()) << "a wait destroyed with its io_context is not run";
  std::size_t left = 0;
  table.for_each([&](ParkedConnection& p) {
    EXPECT_FALSE(p.op_in_use);
    ++left;
  });
  EXPECT_EQ(left, 1u);
}

}  // namespace
}  // namespace canaryd::server
