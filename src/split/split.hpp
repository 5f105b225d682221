// The sticky split (SPEC §4): which user a request belongs to, which bucket that
// user hashes to, and which arm serves it once overrides, rollbacks and pins are
// taken into account. Pure logic, no I/O: the server supplies the headers, the
// peer address and the pin it read from the store, and this decides.
//
// The bucket formula is public (docs/split.md) so that an analyst can recompute
// every user's arm in SQL or Python; changing it is a SPEC change.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "canaryd/arm.hpp"

namespace canaryd::split {

constexpr std::uint32_t kBuckets = 10000;

// u64 big-endian of the first 8 bytes of SHA-256(salt + ":" + key), mod 10000.
std::uint32_t bucket(std::string_view salt, std::string_view key);

// bucket() and, from the next 8 bytes of the same SHA-256, a 64-bit hash of
// the user independent of the bucket: the judge's sample-ratio check samples
// users by it (a sample chosen by the bucket would not be split like the
// users). One digest for both.
struct KeyHash {
  std::uint32_t bucket = 0;
  std::uint64_t user = 0;
};
KeyHash key_hash(std::string_view salt, std::string_view key);

// Weight percent (at most two decimals) -> threshold in [0, 10000]:
// llround(weight * 100), clamped; NaN -> 0.
std::uint32_t weight_to_threshold(double weight_percent);

inline Arm hash_arm(std::uint32_t bucket, std::uint32_t threshold) {
  return bucket < threshold ? Arm::canary : Arm::control;
}

// "canary" / "control" (exact, case-insensitive ASCII) -> arm; anything else -> nullopt.
std::optional<Arm> parse_override(std::optional<std::string_view> value);

// A set of CIDR blocks (IPv4 and IPv6). IPv4 is kept as IPv4-mapped IPv6, so
// "10.0.0.0/8" also matches a peer seen as "::ffff:10.1.2.3" on a dual-stack socket.
class CidrSet {
 public:
  // Entries are "addr/prefix" or a bare address (a single host). Throws
  // std::invalid_argument naming the bad entry. Host bits beyond the prefix are ignored.
  static CidrSet parse(const std::vector<std::string>& cidrs);

  // False for anything that is not an address (never throws).
  bool contains(std::string_view ip) const;
  bool empty() const { return blocks_.empty(); }

  struct Block {
    std::uint8_t addr[16];
    unsigned prefix;  // 0..128, in IPv6 bits
  };

 private:
  std::vector<Block> blocks_;
};

// Parses an IPv4 or IPv6 literal (brackets and an IPv6 zone id allowed) and
// prints it canonically; IPv4-mapped IPv6 prints as dotted IPv4. nullopt when
// `text` is not an address. Used so one client hashes the same however it
// reached us.
std::optional<std::string> canonical_ip(std::string_view text);

struct KeySource {
  enum class Kind { header, body_user, client_ip };
  Kind kind;
  std::string header_name;  // only for Kind::header
};

// "header:X-User-ID", "body:user", "client_ip". Throws std::invalid_argument
// naming the bad entry (also for an empty list).
std::vector<KeySource> parse_sources(const std::vector<std::string>& specs);

// The server's view of the request headers, so this library needs no Beast.
class HeaderLookup {
 public:
  virtual ~HeaderLookup() = default;
  // Case-insensitive name; the first value when repeated; nullopt when absent.
  virtual std::optional<std::string_view> get(std::string_view name) const = 0;
  // Every field line of `name`, in the order received (empty when absent). For
  // list headers such as X-Forwarded-For, whose lines together are one list
  // (RFC 9110 §5.3): reading only the first line would let a client's own line
  // stand in for the one a trusted proxy appended.
  virtual std::vector<std::string_view> get_all(std::string_view name) const = 0;
};

struct StickyKey {
  std::string value;
  KeySource::Kind source;
  bool random = false;  // no source was present: the user is not sticky
};

class Splitter {
 public:
  Splitter(std::vector<KeySource> sources, CidrSet trusted_proxies, std::string salt);

  // The client's address: the peer, or, when the peer is a trusted proxy, the
  // first X-Forwarded-For entry from the right that is not trusted (all trusted:
  // the leftmost). Several X-Forwarded-For lines are one list, joined in order.
  // Empty list elements are ignored; an entry that is not an address (e.g.
  // "unknown") ends the walk with "" (no usable client address): everything
  // to its left was written by someone we cannot vouch for, and the hops to
  // its right are our own proxies, not the user. Canonical text
  // (canonical_ip); a peer that does not parse is returned as given.
  std::string client_ip(const HeaderLookup& headers, std::string_view peer_ip) const;

  // The first present source (an empty value, or no usable client_ip, counts
  // as absent); none present -> a random 128-bit hex key with random = true.
  StickyKey sticky_key(const HeaderLookup& headers, std::optional<std::string_view> body_user,
                       std::string_view peer_ip) const;

  std::uint32_t bucket_of(std::string_view key) const { return bucket(salt_, key); }
  KeyHash key_hash(std::string_view key) const { return split::key_hash(salt_, key); }
  Arm hash_arm(std::string_view key, std::uint32_t threshold) const {
    return split::hash_arm(bucket_of(key), threshold);
  }

  const std::vector<KeySource>& sources() const { return sources_; }
  const std::string& salt() const { return salt_; }

 private:
  std::vector<KeySource> sources_;
  CidrSet trusted_;
  std::string salt_;
};

// The outcome of decide(); `pinned` is true only when the pin changed the
// outcome (the hash alone would have said control).
struct Decision {
  Arm arm;
  bool forced = false;
  bool pinned = false;
};

// The pure decision. Order: an override wins (forced); a rollback (state
// aborted or threshold 0) sends everyone to control without consulting pins;
// otherwise the hash arm, upgraded to canary by a canary pin. Pins are
// upgrade-only: a pin keeps a user on the canary when the weight is lowered by
// hand, while raising the weight still moves users control -> canary, as the
// monotone ramps of SPEC §4 require.
Decision decide(std::optional<Arm> override_arm, bool rolled_back, Arm hash, std::optional<Arm> pin);
// The same order in the two steps the proxy takes, because the pin lookup
// between them is I/O and depends on the hash arm: first the override and the
// rollback (a decision, or nullopt when the hash decides), then the hash arm
// with the pin read for it. decide() is exactly these two in a row.
std::optional<Decision> decide_before_hash(std::optional<Arm> override_arm, bool rolled_back);
Decision decide_by_hash(Arm hash, std::optional<Arm> pin);

}  // namespace canaryd::split
