// wire::target::normalize: what path canaryd routes and forwards (issue 19).
#include "http/target.hpp"

#include <gtest/gtest.h>

namespace canaryd::wire::target {
namespace {

std::string path_of(std::string_view target) {
  Target t = normalize(target);
  EXPECT_TRUE(t.ok) << target << ": " << t.reason;
  return t.path;
}

std::string refusal(std::string_view target) {
  Target t = normalize(target);
  EXPECT_FALSE(t.ok) << target << " was accepted as " << t.path;
  return std::string(t.reason);
}

TEST(RemoveDotSegments, Rfc3986Examples) {
  // RFC 3986 §5.2.4's own examples.
  EXPECT_EQ(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
  EXPECT_EQ(remove_dot_segments("mid/content=5/../6"), "mid/6");
  // §5.4.2 abnormal examples, applied to the merged paths.
  EXPECT_EQ(remove_dot_segments("/../g"), "/g");
  EXPECT_EQ(remove_dot_segments("/../../g"), "/g");
  EXPECT_EQ(remove_dot_segments("/a/b/c/g."), "/a/b/c/g.");
  EXPECT_EQ(remove_dot_segments("/a/b/c/.g"), "/a/b/c/.g");
  EXPECT_EQ(remove_dot_segments("/a/b/c/g.."), "/a/b/c/g..");
  EXPECT_EQ(remove_dot_segments("/a/b/c/./../g"), "/a/b/g");
  EXPECT_EQ(remove_dot_segments("/a/b/c/./g/."), "/a/b/c/g/");
  EXPECT_EQ(remove_dot_segments("/a/b/c/g/./h"), "/a/b/c/g/h");
  EXPECT_EQ(remove_dot_segments("/a/b/c/g/../h"), "/a/b/c/h");
  EXPECT_EQ(remove_dot_segments("/.."), "/");
  EXPECT_EQ(remove_dot_segments("/."), "/");
}

TEST(Normalize, PlainTargetsAreUnchanged) {
  EXPECT_EQ(path_of("/v1/chat/completions"), "/v1/chat/completions");
  Target t = normalize("/v1/models?limit=2&after=/../x");
  EXPECT_EQ(t.path, "/v1/models");
  EXPECT_EQ(t.query, "?limit=2&after=/../x");  // the query is not a path: as sent
  EXPECT_EQ(path_of("*"), "*");
}

TEST(Normalize, DotSegmentsAreRemoved) {
  EXPECT_EQ(path_of("/v1/../../internal/admin"), "/internal/admin");
  EXPECT_EQ(path_of("/v1/x/../chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(path_of("/v1/./chat/./completions"), "/v1/chat/completions");
  EXPECT_EQ(path_of("/v1/.."), "/");
}

TEST(Normalize, EncodedUnreservedCharactersAreDecodedFirst) {
  EXPECT_EQ(path_of("/v1/%2e%2e/%2E%2E/internal"), "/internal");
  EXPECT_EQ(path_of("/v1/.%2e/x"), "/x");
  EXPECT_EQ(path_of("/v1/%63hat/completions"), "/v1/chat/completions");
  EXPECT_EQ(path_of("/v1/files/a%7Eb"), "/v1/files/a~b");
  // Reserved and other bytes stay encoded, hex upper-cased.
  EXPECT_EQ(path_of("/v1/files/a%20b%3a"), "/v1/files/a%20b%3A");
}

TEST(Normalize, SlashesAreMerged) {
  EXPECT_EQ(path_of("/v1//chat///completions"), "/v1/chat/completions");
  EXPECT_EQ(path_of("//v1/models"), "/v1/models");
  EXPECT_EQ(path_of("/v1//../x"), "/x");  // merged before the dot-segments
}

TEST(Normalize, UnsafeEncodingsAreRefused) {
  EXPECT_NE(refusal("/v1/chat%2Fcompletions").find("%2F"), std::string::npos);
  EXPECT_NE(refusal("/v1/chat%2fcompletions").find("%2F"), std::string::npos);
  EXPECT_NE(refusal("/v1/a%5Cb").find("'\\'"), std::string::npos);
  EXPECT_NE(refusal("/v1/a\\b").find("'\\'"), std::string::npos);
  EXPECT_NE(refusal("/v1/a%00b").find("NUL"), std::string::npos);
  EXPECT_NE(refusal("/v1/a%zzb").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("/v1/a%4").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("/v1/a%").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("/v1/a#frag").find("fragment"), std::string::npos);
  EXPECT_FALSE(refusal("v1/models").empty());
}

}  // namespace
}  // namespace canaryd::wire::target
