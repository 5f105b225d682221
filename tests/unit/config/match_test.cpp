// The experiments' matches (issue 17): globs, the first match, overlaps.
#include "config/match.hpp"

#include <gtest/gtest.h>

namespace canaryd::config {
namespace {

TEST(Glob, Matches) {
  EXPECT_TRUE(glob_match("gpt-4.1", "gpt-4.1"));
  EXPECT_FALSE(glob_match("gpt-4.1", "gpt-4.1-mini"));
  EXPECT_TRUE(glob_match("gpt-4*", "gpt-4.1-mini"));
  EXPECT_TRUE(glob_match("gpt-4*", "gpt-4"));
  EXPECT_TRUE(glob_match("*sonnet*", "claude-sonnet-4.5"));
  EXPECT_TRUE(glob_match("claude-?-x", "claude-3-x"));
  EXPECT_FALSE(glob_match("claude-?-x", "claude--x"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_FALSE(glob_match("", "a"));
  EXPECT_TRUE(glob_match("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXbYbZ"));
  EXPECT_FALSE(glob_match("GPT-4.1", "gpt-4.1")) << "model names are case-sensitive";
}

TEST(Glob, Intersect) {
  EXPECT_TRUE(globs_intersect("gpt-4*", "gpt-4.1"));
  EXPECT_TRUE(globs_intersect("gpt-*", "*-mini"));
  EXPECT_FALSE(globs_intersect("gpt-*", "claude-*"));
  EXPECT_FALSE(globs_intersect("gpt-4.1", "gpt-4.2"));
  EXPECT_TRUE(globs_intersect("a?c", "*c"));
  EXPECT_FALSE(globs_intersect("a?c", "*d"));
  EXPECT_TRUE(globs_intersect("*", "anything"));
  EXPECT_TRUE(globs_intersect("a*", "*b"));
  EXPECT_FALSE(globs_intersect("ab", "a?c"));
}

ExperimentMatch models(std::vector<std::string> m) {
  ExperimentMatch x;
  x.models = std::move(m);
  return x;
}

TEST(Overlap, NamesARequestBothTake) {
  EXPECT_EQ(overlap(models({"gpt-4.1"}), models({"claude-*"})), "");
  EXPECT_EQ(overlap(models({"gpt-4*"}), models({"gpt-4.1"})),
            "model \"gpt-4.1\" (\"gpt-4*\" and \"gpt-4.1\") on any route");
  ExperimentMatch chat = models({"gpt-4.1"});
  chat.routes = {"/v1/chat/completions"};
  ExperimentMatch emb = models({"gpt-4.1"});
  emb.routes = {"/v1/embeddings"};
  EXPECT_EQ(overlap(chat, emb), "") << "disjoint routes";
  ExperimentMatch batch = models({"gpt-4.1"});
  batch.header = "X-Team";
  batch.header_value = "batch";
  ExperimentMatch web = batch;
  web.header_value = "web";
  EXPECT_EQ(overlap(batch, web), "") << "one header, two values";
  EXPECT_EQ(overlap(batch, models({"gpt-4.1"})), "model \"gpt-4.1\" on any route, header X-Team: batch");
  ExperimentMatch other = models({"gpt-4.1"});
  other.header = "x-team";
  other.header_value = "batch";
  EXPECT_NE(overlap(batch, other), "") << "header names are case-insensitive";
}

TEST(Select, FirstMatchThenDefault) {
  Config c;
  ExperimentConfig gpt;
  gpt.name = "gpt";
  gpt.match.models = {"gpt-4.1"};
  ExperimentConfig claude;
  claude.name = "claude";
  claude.match.models = {"claude-*"};
  claude.match.header = "X-Team";
  claude.match.header_value = "batch";
  c.experiments = {gpt, claude};
  auto headers = [](std::string_view name) -> std::optional<std::string_view> {
    if (name == "X-Team") return std::string_view("batch");
    return std::nullopt;
  };
  EXPECT_EQ(select(c, {"gpt-4.1", "/v1/chat/completions", nullptr}), std::optional<std::size_t>(0));
  EXPECT_EQ(select(c, {"claude-sonnet-4.5", "/v1/chat/completions", headers}), std::optional<std::size_t>(1));
  EXPECT_EQ(select(c, {"claude-sonnet-4.5", "/v1/chat/completions", nullptr}), std::nullopt);
  EXPECT_EQ(select(c, {"llama", "/v1/chat/completions", nullptr}), std::nullopt);
  ExperimentConfig def;
  def.name = "default";
  def.match.any = true;
  c.experiments.push_back(def);
  EXPECT_EQ(select(c, {"llama", "/v1/chat/completions", nullptr}), std::optional<std::size_t>(2));
  EXPECT_EQ(select(c, {"gpt-4.1", "/v1/embeddings", nullptr}), std::optional<std::size_t>(0));
}

}  // namespace
}  // namespace canaryd::config
