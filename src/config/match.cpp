#include "config/match.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace canaryd::config {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// A string both patterns match, built along the way (for the error message):
// reachability in the product of the two patterns' automata, memoised on
// (i, j). A '*' is a state with a self-loop, so either star may stop (move
// on) at any point, or eat one character the other side produces.
struct Intersect {
  std::string_view a, b;
  std::vector<signed char> memo;  // -1 unknown, 0 no, 1 yes
  Intersect(std::string_view x, std::string_view y) : a(x), b(y), memo((x.size() + 1) * (y.size() + 1), -1) {}

  bool run(std::size_t i, std::size_t j, std::string* witness) {
    signed char& m = memo[i * (b.size() + 1) + j];
    if (m == 0) return false;
    bool ok = false;
    const std::size_t before = witness ? witness->size() : 0;
    if (i == a.size() && j == b.size()) {
      ok = true;
    } else if (i < a.size() && a[i] == '*' && run(i + 1, j, witness)) {
      ok = true;
    } else if (j < b.size() && b[j] == '*' && run(i, j + 1, witness)) {
      ok = true;
    } else if (i < a.size() && a[i] == '*' && j < b.size() && b[j] != '*') {
      // a's star eats the character b produces here.
      if (witness) witness->push_back(b[j] == '?' ? 'x' : b[j]);
      ok = run(i, j + 1, witness);
    } else if (j < b.size() && b[j] == '*' && i < a.size()) {
      if (witness) witness->push_back(a[i] == '?' ? 'x' : a[i]);
      ok = run(i + 1, j, witness);
    } else if (i < a.size() && j < b.size() && (a[i] == '?' || b[j] == '?' || a[i] == b[j])) {
      if (witness) witness->push_back(a[i] != '?' ? a[i] : (b[j] != '?' ? b[j] : 'x'));
      ok = run(i + 1, j + 1, witness);
    }
    if (!ok && witness) witness->resize(before);
    m = ok ? 1 : 0;
    return ok;
  }
};

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

}  // namespace

bool is_glob(std::string_view pattern) { return pattern.find_first_of("*?") != std::string_view::npos; }

bool glob_match(std::string_view p, std::string_view t) {
  // Iterative with one backtrack point: linear in practice, no recursion on
  // the request path.
  std::size_t i = 0, j = 0, star = std::string_view::npos, mark = 0;
  while (j < t.size()) {
    if (i < p.size() && (p[i] == '?' || p[i] == t[j])) {
      ++i;
      ++j;
    } else if (i < p.size() && p[i] == '*') {
      star = i++;
      mark = j;
    } else if (star != std::string_view::npos) {
      i = star + 1;
      j = ++mark;
    } else {
      return false;
    }
  }
  while (i < p.size() && p[i] == '*') ++i;
  return i == p.size();
}

bool globs_intersect(std::string_view a, std::string_view b) { return Intersect(a, b).run(0, 0, nullptr); }

bool matches(const ExperimentMatch& m, const MatchInput& in) {
  if (m.any) return true;
  if (!m.models.empty() &&
      std::none_of(m.models.begin(), m.models.end(), [&](const std::string& g) { return glob_match(g, in.model); })) {
    return false;
  }
  if (!m.routes.empty() && std::find(m.routes.begin(), m.routes.end(), in.route) == m.routes.end()) return false;
  if (!m.header.empty()) {
    std::optional<std::string_view> v = in.header ? in.header(m.header) : std::nullopt;
    if (!v || *v != m.header_value) return false;
  }
  return true;
}

std::optional<std::size_t> select(const Config& config, const MatchInput& in) {
  std::optional<std::size_t> any;
  for (std::size_t i = 0; i < config.experiments.size(); ++i) {
    const ExperimentMatch& m = config.experiments[i].match;
    if (m.any) {
      any = i;
    } else if (matches(m, in)) {
      return i;
    }
  }
  return any;
}

std::string overlap(const ExperimentMatch& a, const ExperimentMatch& b) {
  if (a.any || b.any) return "any request";
  std::string model;
  if (a.models.empty() && b.models.empty()) {
    model = "any model";
  } else if (a.models.empty() || b.models.empty()) {
    model = "model " + quoted((a.models.empty() ? b.models : a.models).front());
  } else {
    for (const auto& x : a.models) {
      for (const auto& y : b.models) {
        std::string w;
        if (Intersect(x, y).run(0, 0, &w)) {
          model = "model " + quoted(w);
          if (x != w || y != w) model += " (" + quoted(x) + " and " + quoted(y) + ")";
          break;
        }
      }
      if (!model.empty()) break;
    }
    if (model.empty()) return "";
  }
  std::string route;
  if (a.routes.empty() && b.routes.empty()) {
    route = "any route";
  } else if (a.routes.empty() || b.routes.empty()) {
    route = (a.routes.empty() ? b.routes : a.routes).front();
  } else {
    for (const auto& r : a.routes) {
      if (std::find(b.routes.begin(), b.routes.end(), r) != b.routes.end()) {
        route = r;
        break;
      }
    }
    if (route.empty()) return "";
  }
  std::string header;
  if (!a.header.empty() && !b.header.empty() && iequals(a.header, b.header)) {
    if (a.header_value != b.header_value) return "";
    header = ", header " + a.header + ": " + a.header_value;
  } else if (!a.header.empty() || !b.header.empty()) {
    // Different headers (or one side none): a request may carry both.
    if (!a.header.empty()) header += ", header " + a.header + ": " + a.header_value;
    if (!b.header.empty()) header += ", header " + b.header + ": " + b.header_value;
  }
  return model + " on " + route + header;
}

}  // namespace canaryd::config
