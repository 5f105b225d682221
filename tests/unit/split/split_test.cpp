#include "split/split.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace canaryd::split {
namespace {

// "prefix" + std::to_string(i) trips a GCC 12 -Wrestrict false positive (PR 105329).
std::string numbered(std::string prefix, int i) {
  prefix += std::to_string(i);
  return prefix;
}

// A case-insensitive header multimap keeping each name's lines in order, as
// the server's Beast-backed lookup behaves.
class FakeHeaders final : public HeaderLookup {
 public:
  FakeHeaders() = default;
  FakeHeaders(std::initializer_list<std::pair<const std::string, std::string>> init) {
    for (const auto& [k, v] : init) add(k, v);
  }
  void add(const std::string& name, const std::string& value) { map_[lower(name)].push_back(value); }
  std::optional<std::string_view> get(std::string_view name) const override {
    auto it = map_.find(lower(std::string(name)));
    if (it == map_.end()) return std::nullopt;
    return std::string_view(it->second.front());
  }
  std::vector<std::string_view> get_all(std::string_view name) const override {
    std::vector<std::string_view> out;
    if (auto it = map_.find(lower(std::string(name))); it != map_.end()) {
      for (const auto& v : it->second) out.emplace_back(v);
    }
    return out;
  }

 private:
  static std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  std::map<std::string, std::vector<std::string>> map_;
};

// Expected values computed with:
//   python3 -c 'import hashlib;print(int.from_bytes(hashlib.sha256(b"salt:key").digest()[:8],"big")%10000)'
// i.e. for each (salt, key): int.from_bytes(sha256((salt+":"+key).encode()).digest()[:8], "big") % 10000
TEST(Bucket, MatchesPythonReferenceVectors) {
  struct Vector {
    std::string salt;
    std::string key;
    std::uint32_t expected;
  };
  const std::vector<Vector> vectors = {
      {"salt", "key", 3155},
      {"migration-2026-11", "user-1", 5805},
      {"migration-2026-11", "user-2", 9096},
      {"migration-2026-11", "", 387},                 // empty key
      {"", "alice", 1535},                            // empty salt
      {"", "", 4368},                                 // both empty: hashes ":"
      {"migration-2026-11", "Nguyễn Văn A 👋", 9343},  // UTF-8 bytes, 20 of them
      {"s", std::string(1000, 'x'), 2075},            // long key
      {"migration-2026-11", "10.1.2.3", 2479},
      {"exp2", "user-1", 7271},  // another salt reshuffles
      {"migration-2026-11", "2001:db8::1", 4172},
  };
  for (const auto& v : vectors) {
    EXPECT_EQ(bucket(v.salt, v.key), v.expected) << "salt=" << v.salt << " key.size=" << v.key.size();
  }
}

TEST(Bucket, AlwaysBelowBucketCount) {
  for (int i = 0; i < 1000; ++i) EXPECT_LT(bucket("s", std::to_string(i)), kBuckets);
}

TEST(Bucket, SplitterUsesItsSalt) {
  Splitter s(parse_sources({"client_ip"}), {}, "migration-2026-11");
  EXPECT_EQ(s.bucket_of("user-1"), 5805u);
  EXPECT_EQ(s.hash_arm("user-1", 5806), Arm::canary);
  EXPECT_EQ(s.hash_arm("user-1", 5805), Arm::control);
}

TEST(Threshold, FromWeight) {
  EXPECT_EQ(weight_to_threshold(0.5), 50u);
  EXPECT_EQ(weight_to_threshold(10), 1000u);
  EXPECT_EQ(weight_to_threshold(100), 10000u);
  EXPECT_EQ(weight_to_threshold(0), 0u);
  EXPECT_EQ(weight_to_threshold(12.34), 1234u);
  EXPECT_EQ(weight_to_threshold(0.01), 1u);
  EXPECT_EQ(weight_to_threshold(33.33), 3333u);
  EXPECT_EQ(weight_to_threshold(-5), 0u);
  EXPECT_EQ(weight_to_threshold(150), 10000u);
  EXPECT_EQ(weight_to_threshold(std::nan("")), 0u);
}

TEST(HashArm, BucketBelowThresholdIsCanary) {
  EXPECT_EQ(hash_arm(0, 0), Arm::control);
  EXPECT_EQ(hash_arm(0, 1), Arm::canary);
  EXPECT_EQ(hash_arm(9999, 10000), Arm::canary);
  EXPECT_EQ(hash_arm(1000, 1000), Arm::control);
}

TEST(Share, WithinPointThreeOfWeightOver100kUsers) {
  std::vector<std::uint32_t> buckets;
  buckets.reserve(100000);
  for (int i = 0; i < 100000; ++i) buckets.push_back(bucket("migration-2026-11", numbered("user-", i)));
  for (double weight : {0.5, 10.0, 25.0, 50.0}) {
    auto threshold = weight_to_threshold(weight);
    int canary = 0;
    for (auto b : buckets) canary += hash_arm(b, threshold) == Arm::canary;
    double share = canary / 1000.0;  // percent of 100k
    EXPECT_NEAR(share, weight, 0.3) << "weight " << weight;
  }
}

TEST(Share, MonotoneRampNeverMovesCanaryToControl) {
  const double ramp[] = {10, 25, 50, 100};
  std::vector<Arm> previous(20000, Arm::control);
  for (double weight : ramp) {
    auto threshold = weight_to_threshold(weight);
    int moved_in = 0;
    for (int i = 0; i < 20000; ++i) {
      Arm now = hash_arm(bucket("ramp", numbered("u", i)), threshold);
      ASSERT_FALSE(previous[i] == Arm::canary && now == Arm::control) << "user u" << i << " at weight " << weight;
      moved_in += previous[i] == Arm::control && now == Arm::canary;
      previous[i] = now;
    }
    EXPECT_GT(moved_in, 0);
  }
  for (auto a : previous) EXPECT_EQ(a, Arm::canary);
}

TEST(Override, Parsing) {
  EXPECT_EQ(parse_override("canary"), Arm::canary);
  EXPECT_EQ(parse_override("CANARY"), Arm::canary);
  EXPECT_EQ(parse_override("Control"), Arm::control);
  EXPECT_EQ(parse_override("control"), Arm::control);
  EXPECT_EQ(parse_override(std::nullopt), std::nullopt);
  EXPECT_EQ(parse_override(""), std::nullopt);
  EXPECT_EQ(parse_override("canary "), std::nullopt);
  EXPECT_EQ(parse_override("canaryx"), std::nullopt);
  EXPECT_EQ(parse_override("1"), std::nullopt);
  EXPECT_EQ(parse_override("yes"), std::nullopt);
}

TEST(Cidr, V4Contains) {
  auto set = CidrSet::parse({"10.0.0.0/8", "192.168.1.7", "172.16.0.0/12"});
  EXPECT_FALSE(set.empty());
  EXPECT_TRUE(set.contains("10.0.0.1"));
  EXPECT_TRUE(set.contains("10.255.255.255"));
  EXPECT_FALSE(set.contains("11.0.0.1"));
  EXPECT_TRUE(set.contains("192.168.1.7"));
  EXPECT_FALSE(set.contains("192.168.1.8"));
  EXPECT_TRUE(set.contains("172.31.255.1"));
  EXPECT_FALSE(set.contains("172.32.0.1"));
  EXPECT_TRUE(set.contains("::ffff:10.1.2.3"));  // v4-mapped from a dual-stack socket
  EXPECT_FALSE(set.contains("::ffff:11.1.2.3"));
  EXPECT_FALSE(set.contains("not-an-ip"));
  EXPECT_FALSE(set.contains(""));
  EXPECT_FALSE(set.contains("::1"));
}

TEST(Cidr, V6Contains) {
  auto set = CidrSet::parse({"2001:db8::/32", "::1/128", "fd00::/8"});
  EXPECT_TRUE(set.contains("2001:db8::1"));
  EXPECT_TRUE(set.contains("2001:DB8:ffff::1"));
  EXPECT_FALSE(set.contains("2001:db9::1"));
  EXPECT_TRUE(set.contains("::1"));
  EXPECT_TRUE(set.contains("[::1]"));
  EXPECT_TRUE(set.contains("fdab::5"));
  EXPECT_FALSE(set.contains("fe80::1%eth0"));
  EXPECT_FALSE(set.contains("10.0.0.1"));
}

TEST(Cidr, OddPrefixesAndEdgeCases) {
  auto set = CidrSet::parse({"100.64.0.0/10", "0.0.0.0/0"});
  EXPECT_TRUE(set.contains("1.2.3.4"));  // /0 matches every IPv4
  EXPECT_FALSE(set.contains("2001:db8::1"));
  auto cgnat = CidrSet::parse({"100.64.0.0/10"});
  EXPECT_TRUE(cgnat.contains("100.127.255.255"));
  EXPECT_FALSE(cgnat.contains("100.128.0.0"));
  auto mapped = CidrSet::parse({"::ffff:10.0.0.0/104"});
  EXPECT_TRUE(mapped.contains("10.9.9.9"));
  EXPECT_TRUE(CidrSet::parse({}).empty());
  EXPECT_FALSE(CidrSet::parse({}).contains("10.0.0.1"));
}

TEST(Cidr, InvalidEntriesThrowNamingTheEntry) {
  for (std::string bad :
       {"10.0.0.0/33", "::/129", "10.0.0/8", "banana", "10.0.0.0/", "10.0.0.0/x", "", "[::1]/128", "1.2.3.4:80"}) {
    try {
      CidrSet::parse({"10.0.0.0/8", bad});
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("\"" + bad + "\""), std::string::npos) << e.what();
    }
  }
}

TEST(CanonicalIp, NormalisesForms) {
  EXPECT_EQ(canonical_ip("::ffff:1.2.3.4"), "1.2.3.4");
  EXPECT_EQ(canonical_ip("2001:DB8:0:0::1"), "2001:db8::1");
  EXPECT_EQ(canonical_ip("[::1]:8080"), "::1");
  EXPECT_EQ(canonical_ip(" 1.2.3.4:5678 "), "1.2.3.4");
  EXPECT_EQ(canonical_ip("fe80::1%eth0"), "fe80::1");
  EXPECT_EQ(canonical_ip("unknown"), std::nullopt);
  EXPECT_EQ(canonical_ip("1.2.3.256"), std::nullopt);
}

TEST(Sources, Parse) {
  auto sources = parse_sources({"header:X-User-ID", "body:user", "client_ip"});
  ASSERT_EQ(sources.size(), 3u);
  EXPECT_EQ(sources[0].kind, KeySource::Kind::header);
  EXPECT_EQ(sources[0].header_name, "X-User-ID");
  EXPECT_EQ(sources[1].kind, KeySource::Kind::body_user);
  EXPECT_EQ(sources[2].kind, KeySource::Kind::client_ip);
  for (std::string bad : {"header:", "header:X User", "body:email", "cookie:x", "client-ip", ""}) {
    try {
      parse_sources({"client_ip", bad});
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("\"" + bad + "\""), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_sources({}), std::invalid_argument);
}

class ClientIpTest : public ::testing::Test {
 protected:
  Splitter splitter_{parse_sources({"client_ip"}), CidrSet::parse({"10.0.0.0/8", "fd00::/8"}), "s"};
};

TEST_F(ClientIpTest, UntrustedPeerIgnoresXff) {
  FakeHeaders h{{"X-Forwarded-For", "1.1.1.1"}};
  EXPECT_EQ(splitter_.client_ip(h, "203.0.113.9"), "203.0.113.9");
}

TEST_F(ClientIpTest, TrustedPeerWithoutXffIsThePeer) {
  FakeHeaders h;
  EXPECT_EQ(splitter_.client_ip(h, "10.0.0.5"), "10.0.0.5");
}

TEST_F(ClientIpTest, TrustedPeerTakesRightmostUntrusted) {
  // The client forged "6.6.6.6"; our LB chain appended the real address then its own hops.
  FakeHeaders h{{"x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1,10.2.2.2"}};
  EXPECT_EQ(splitter_.client_ip(h, "10.0.0.5"), "198.51.100.7");
}

TEST_F(ClientIpTest, AllTrustedTakesLeftmost) {
  FakeHeaders h{{"X-Forwarded-For", "10.9.9.9, 10.1.1.1"}};
  EXPECT_EQ(splitter_.client_ip(h, "10.0.0.5"), "10.9.9.9");
}

TEST_F(ClientIpTest, UnparsableEntryEndsTheWalkWithNoAddress) {
  // "unknown" sits where the client's address should be: whatever is to its
  // left was written by someone we cannot vouch for, so nothing is usable.
  FakeHeaders h{{"X-Forwarded-For", "198.51.100.7, unknown, 10.1.1.1"}};
  EXPECT_EQ(splitter_.client_ip(h, "10.0.0.5"), "");
  FakeHeaders rightmost{{"X-Forwarded-For", "198.51.100.7, garbage"}};
  EXPECT_EQ(splitter_.client_ip(rightmost, "10.0.0.5"), "");
  // Right of the unparsable entry, an untrusted address is still found first.
  FakeHeaders left_garbage{{"X-Forwarded-For", "unknown, 198.51.100.7, 10.1.1.1"}};
  EXPECT_EQ(splitter_.client_ip(left_garbage, "10.0.0.5"), "198.51.100.7");
  // Empty list elements are not entries (RFC 9110 list syntax).
  FakeHeaders empties{{"X-Forwarded-For", "198.51.100.7, , 10.1.1.1,"}};
  EXPECT_EQ(splitter_.client_ip(empties, "10.0.0.5"), "198.51.100.7");
}

TEST_F(ClientIpTest, SeveralXffLinesAreOneListInOrder) {
  // The client sent its own line claiming 10.7.7.7 (a trusted-looking hop);
  // our proxy appended a second line with the address it saw. Reading only the
  // first line would take the forged value.
  FakeHeaders h;
  h.add("X-Forwarded-For", "6.6.6.6, 10.7.7.7");
  h.add("X-Forwarded-For", "198.51.100.7");
  EXPECT_EQ(splitter_.client_ip(h, "10.0.0.5"), "198.51.100.7");
  // Lines joined in order: the last line's entries are the rightmost.
  FakeHeaders trusted_tail;
  trusted_tail.add("X-Forwarded-For", "203.0.113.4");
  trusted_tail.add("X-Forwarded-For", "10.1.1.1, 10.2.2.2");
  EXPECT_EQ(splitter_.client_ip(trusted_tail, "10.0.0.5"), "203.0.113.4");
  // An unparsable entry in a later line stops the walk there too.
  FakeHeaders bad_tail;
  bad_tail.add("X-Forwarded-For", "203.0.113.4");
  bad_tail.add("X-Forwarded-For", "unknown");
  EXPECT_EQ(splitter_.client_ip(bad_tail, "10.0.0.5"), "");
  // All trusted across lines: the leftmost of the first line.
  FakeHeaders all_trusted;
  all_trusted.add("X-Forwarded-For", "10.9.9.9");
  all_trusted.add("X-Forwarded-For", "10.1.1.1");
  EXPECT_EQ(splitter_.client_ip(all_trusted, "10.0.0.5"), "10.9.9.9");
}

TEST_F(ClientIpTest, V6AndMappedAndPorts) {
  FakeHeaders h{{"X-Forwarded-For", "[2001:db8::7]:4711, fd00::1"}};
  EXPECT_EQ(splitter_.client_ip(h, "::ffff:10.0.0.5"), "2001:db8::7");
  FakeHeaders none;
  EXPECT_EQ(splitter_.client_ip(none, "::ffff:198.51.100.1"), "198.51.100.1");
  EXPECT_EQ(splitter_.client_ip(none, "not-an-address"), "not-an-address");
}

TEST(StickyKey, SourceOrderFirstPresentWins) {
  Splitter s(parse_sources({"header:X-User-ID", "body:user", "client_ip"}), {}, "salt");
  FakeHeaders with_header{{"x-user-id", "u-header"}};
  auto k = s.sticky_key(with_header, "u-body", "1.2.3.4");
  EXPECT_EQ(k.value, "u-header");
  EXPECT_EQ(k.source, KeySource::Kind::header);
  EXPECT_FALSE(k.random);

  FakeHeaders none;
  k = s.sticky_key(none, "u-body", "1.2.3.4");
  EXPECT_EQ(k.value, "u-body");
  EXPECT_EQ(k.source, KeySource::Kind::body_user);

  k = s.sticky_key(none, std::nullopt, "1.2.3.4");
  EXPECT_EQ(k.value, "1.2.3.4");
  EXPECT_EQ(k.source, KeySource::Kind::client_ip);
}

TEST(StickyKey, EmptyValuesCountAsAbsent) {
  Splitter s(parse_sources({"header:X-User-ID", "body:user", "client_ip"}), {}, "salt");
  FakeHeaders empty_header{{"X-User-ID", ""}};
  auto k = s.sticky_key(empty_header, "", "2001:db8::1");
  EXPECT_EQ(k.value, "2001:db8::1");
  EXPECT_EQ(k.source, KeySource::Kind::client_ip);
}

TEST(StickyKey, OrderIsTheConfiguredOrder) {
  Splitter s(parse_sources({"body:user", "header:X-Team"}), {}, "salt");
  FakeHeaders h{{"X-Team", "t1"}};
  EXPECT_EQ(s.sticky_key(h, "u1", "1.2.3.4").value, "u1");
  EXPECT_EQ(s.sticky_key(h, std::nullopt, "1.2.3.4").value, "t1");
}

TEST(StickyKey, RandomWhenNothingPresent) {
  Splitter s(parse_sources({"header:X-User-ID", "body:user"}), {}, "salt");
  FakeHeaders none;
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    auto k = s.sticky_key(none, std::nullopt, "1.2.3.4");
    EXPECT_TRUE(k.random);
    ASSERT_EQ(k.value.size(), 32u);
    EXPECT_EQ(k.value.find_first_not_of("0123456789abcdef"), std::string::npos) << k.value;
    seen.insert(k.value);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(StickyKey, ClientIpAbsentWithoutPeer) {
  Splitter s(parse_sources({"client_ip"}), {}, "salt");
  FakeHeaders none;
  EXPECT_TRUE(s.sticky_key(none, std::nullopt, "").random);
}

TEST(StickyKey, ClientIpFollowsTrustedXff) {
  Splitter s(parse_sources({"client_ip"}), CidrSet::parse({"10.0.0.0/8"}), "salt");
  FakeHeaders h{{"X-Forwarded-For", "198.51.100.7"}};
  EXPECT_EQ(s.sticky_key(h, std::nullopt, "10.0.0.1").value, "198.51.100.7");
}

TEST(StickyKey, UnusableXffFallsToTheNextSource) {
  Splitter s(parse_sources({"client_ip", "body:user"}), CidrSet::parse({"10.0.0.0/8"}), "salt");
  FakeHeaders h{{"X-Forwarded-For", "198.51.100.7, unknown"}};
  auto k = s.sticky_key(h, "u-body", "10.0.0.1");
  EXPECT_EQ(k.value, "u-body");
  EXPECT_EQ(k.source, KeySource::Kind::body_user);
  // The last source: a random key (counted by the server), never the proxy's address.
  k = s.sticky_key(h, std::nullopt, "10.0.0.1");
  EXPECT_TRUE(k.random);
  EXPECT_NE(k.value, "10.0.0.1");
  EXPECT_NE(k.value, "198.51.100.7");
}

TEST(Decide, OverrideWins) {
  auto d = decide(Arm::canary, false, Arm::control, Arm::control);
  EXPECT_EQ(d.arm, Arm::canary);
  EXPECT_TRUE(d.forced);
  EXPECT_FALSE(d.pinned);
  d = decide(Arm::control, false, Arm::canary, Arm::canary);
  EXPECT_EQ(d.arm, Arm::control);
  EXPECT_TRUE(d.forced);
}

TEST(Decide, OverrideBeatsRollback) {
  auto d = decide(Arm::canary, true, Arm::control, std::nullopt);
  EXPECT_EQ(d.arm, Arm::canary);
  EXPECT_TRUE(d.forced);
}

TEST(Decide, RollbackBeatsPinAndHash) {
  auto d = decide(std::nullopt, true, Arm::canary, Arm::canary);
  EXPECT_EQ(d.arm, Arm::control);
  EXPECT_FALSE(d.forced);
  EXPECT_FALSE(d.pinned);
}

TEST(Decide, HashWithoutPin) {
  EXPECT_EQ(decide(std::nullopt, false, Arm::canary, std::nullopt).arm, Arm::canary);
  EXPECT_EQ(decide(std::nullopt, false, Arm::control, std::nullopt).arm, Arm::control);
  EXPECT_FALSE(decide(std::nullopt, false, Arm::canary, std::nullopt).pinned);
}

TEST(Decide, CanaryPinKeepsUserOnCanaryWhenWeightLowered) {
  auto d = decide(std::nullopt, false, Arm::control, Arm::canary);
  EXPECT_EQ(d.arm, Arm::canary);
  EXPECT_TRUE(d.pinned);
  EXPECT_FALSE(d.forced);
}

TEST(Decide, ControlPinDoesNotHoldBackARaisedWeight) {
  auto d = decide(std::nullopt, false, Arm::canary, Arm::control);
  EXPECT_EQ(d.arm, Arm::canary);
  EXPECT_FALSE(d.pinned);
  d = decide(std::nullopt, false, Arm::control, Arm::control);
  EXPECT_EQ(d.arm, Arm::control);
  EXPECT_FALSE(d.pinned);
  d = decide(std::nullopt, false, Arm::canary, Arm::canary);
  EXPECT_EQ(d.arm, Arm::canary);
  EXPECT_FALSE(d.pinned);
}

// key_hash: the bucket of bucket(), and a user hash from the digest's next 8 bytes.
TEST(KeyHash, SameBucketAndAnIndependentUserHash) {
  for (const char* key : {"alice", "bob", "", "user-42"}) {
    const KeyHash h = key_hash("salt", key);
    EXPECT_EQ(h.bucket, bucket("salt", key)) << key;
  }
  EXPECT_NE(key_hash("salt", "alice").user, key_hash("salt", "bob").user);
  EXPECT_NE(key_hash("salt", "alice").user, key_hash("other", "alice").user);
  // bytes 8..15 of SHA-256("salt:alice")
  Splitter s(parse_sources({"client_ip"}), {}, "salt");
  EXPECT_EQ(s.key_hash("alice").user, key_hash("salt", "alice").user);
  // Among users with bucket < 1000, the user hash's low bits are still even.
  int odd = 0, n = 0;
  for (int i = 0; i < 20000; ++i) {
    const KeyHash h = key_hash("x", "u" + std::to_string(i));
    if (h.bucket >= 1000) continue;
    ++n;
    odd += static_cast<int>(h.user & 1);
  }
  EXPECT_NEAR(static_cast<double>(odd) / n, 0.5, 0.05);
}

}  // namespace
}  // namespace canaryd::split
