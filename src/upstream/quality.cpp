#include "upstream/quality.hpp"

#include <charconv>
#include <optional>

#include "common/json_scan.hpp"

namespace canaryd::upstream {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool is_string(std::string_view v) { return v.size() >= 2 && v.front() == '"'; }

// Whether a JSON string literal (quotes included) holds anything but the
// whitespace trim() removes, read without decoding it: a plain character or an
// escape other than \n \r \t says yes. nullopt when it cannot tell cheaply
// (a \u escape, or a literal not closed where it ends): decode it then.
std::optional<bool> literal_has_text(std::string_view literal) {
  if (literal.size() < 2 || literal.back() != '"') return std::nullopt;
  for (std::size_t i = 1; i + 1 < literal.size(); ++i) {
    const char c = literal[i];
    if (c == ' ') continue;
    if (c != '\\') return true;
    if (i + 2 >= literal.size()) return std::nullopt;
    const char e = literal[++i];
    if (e == 'n' || e == 'r' || e == 't') continue;
    if (e == 'u') return std::nullopt;
    return true;  // \" \\ \/ \b \f: a character trim() keeps
  }
  return false;
}

// The elements of a JSON array that json_scan already validated (as part of
// the object it came from): split at the top-level commas.
template <class F>
void for_each_element(std::string_view array, F&& f) {
  array = trim(array);
  if (array.size() < 2 || array.front() != '[') return;
  int depth = 0;
  bool in_string = false;
  std::size_t start = 1;
  for (std::size_t i = 1; i + 1 < array.size(); ++i) {
    const char c = array[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      ++depth;
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && depth == 0) {
      if (auto e = trim(array.substr(start, i - start)); !e.empty()) f(e);
      start = i + 1;
    }
  }
  if (auto e = trim(array.substr(start, array.size() - 1 - start)); !e.empty()) f(e);
}

template <std::size_t N>
bool scan(std::string_view doc, json::Lookup<N>& lk) {
  doc = trim(doc);
  return !doc.empty() && doc.front() == '{' && json::scan_object(doc, lk).empty();
}

std::string_view value(std::string_view doc, const std::optional<json::Span>& span) {
  return span ? span->of(doc) : std::string_view();
}

std::size_t index_of(std::string_view literal, std::size_t fallback) {
  std::size_t v = 0;
  auto [p, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), v);
  return ec == std::errc() && p == literal.data() + literal.size() ? v : fallback;
}

// "json_object" / "json_schema" in {"type": ...}.
bool json_format(std::string_view format) {
  json::Lookup<1> lk{{"type"}};
  if (!scan(format, lk)) return false;
  const auto t = value(format, lk.values[0]);
  return t == "\"json_object\"" || t == "\"json_schema\"";
}

}  // namespace

AnswerApi answer_api(std::string_view path) {
  if (path == "/v1/chat/completions") return AnswerApi::chat;
  if (path == "/v1/completions") return AnswerApi::completions;
  if (path == "/v1/responses") return AnswerApi::responses;
  return AnswerApi::none;
}

bool expects_json(AnswerApi api, std::string_view body) {
  if (api == AnswerApi::none) return false;
  json::Lookup<2> top{{"response_format", "text"}};
  if (!scan(body, top)) return false;
  return expects_json(api, value(body, top.values[0]), value(body, top.values[1]));
}

bool expects_json(AnswerApi api, std::string_view response_format, std::string_view text) {
  if (api == AnswerApi::none) return false;
  if (api == AnswerApi::responses) {
    json::Lookup<1> fmt{{"format"}};
    return scan(text, fmt) && json_format(value(text, fmt.values[0]));
  }
  return json_format(response_format);
}

bool is_json_object(std::string_view text) {
  text = trim(text);
  return !text.empty() && text.front() == '{' && json::scan_object(text, nullptr, nullptr, 0).empty();
}

QualityScanner::QualityScanner(AnswerApi api, bool json_expected)
    : api_(api), json_expected_(json_expected && api != AnswerApi::none) {}

void QualityScanner::finish(std::string_view reason) {
  if (!is_string(reason)) return;  // null: not finished yet
  finished_ = true;
  if (reason == "\"length\"") {
    truncated_ = true;
  } else if (reason == "\"content_filter\"") {
    filtered_ = true;
  } else {
    other_finish_ = true;
  }
}

void QualityScanner::add_text(std::string_view literal, std::size_t choice) {
  if (!is_string(literal)) return;
  const bool need_text = json_expected_ && choice == 0 && !text_overflow_;
  if (has_text_ && !need_text) return;  // nothing more to learn from it
  if (literal.size() <= 2) return;
  if (!need_text) {
    // Only "is there any text": read the literal as it is, without decoding it.
    if (const auto has = literal_has_text(literal)) {
      has_text_ = *has;
      return;
    }
  }
  auto decoded = json::decode_string(literal);
  if (!decoded) return;
  if (!trim(*decoded).empty()) has_text_ = true;
  if (need_text) {
    if (text_.size() + decoded->size() > kMaxText) {
      text_overflow_ = true;
      text_.clear();
      text_.shrink_to_fit();
    } else {
      text_ += *decoded;
    }
  }
}

void QualityScanner::add_arguments(std::size_t slot, std::string_view literal) {
  if (slot >= kMaxToolCalls || !is_string(literal)) return;
  ToolCall& c = calls_[slot];
  if (c.overflow) return;
  auto decoded = json::decode_string(literal);
  if (!decoded) return;
  if (c.arguments.size() + decoded->size() > kMaxArguments) {
    c.overflow = true;
    c.arguments.clear();
    c.arguments.shrink_to_fit();
    return;
  }
  c.arguments += *decoded;
}

void QualityScanner::tool_calls(std::string_view array, std::size_t choice, bool streamed) {
  std::size_t position = 0;
  for_each_element(array, [&](std::string_view call) {
    json::Lookup<2> lk{{"index", "function"}};
    const std::size_t i = position++;
    if (!scan(call, lk)) return;
    // A stream names the call by "index" across its chunks; a whole message
    // lists each call once. Each choice has kSlotsPerChoice slots; calls
    // beyond them count (the answer is not empty) but are not checked.
    std::size_t slot = streamed ? index_of(value(call, lk.values[0]), i) : i;
    slot = slot >= kSlotsPerChoice ? kMaxToolCalls : slot + choice * kSlotsPerChoice;
    const auto fn = value(call, lk.values[1]);
    json::Lookup<1> args{{"arguments"}};
    if (slot < kMaxToolCalls && !calls_[slot].used) {
      calls_[slot].used = true;
      ++tool_call_count_;
    } else if (slot >= kMaxToolCalls && !streamed) {
      ++tool_call_count_;
    }
    if (scan(fn, args)) add_arguments(slot, value(fn, args.values[0]));
  });
}

void QualityScanner::message(std::string_view msg, std::size_t index, bool streamed) {
  json::Lookup<4> lk{{"content", "tool_calls", "function_call", "refusal"}};
  if (!scan(msg, lk)) return;
  add_text(value(msg, lk.values[0]), index);
  if (lk.values[1]) tool_calls(value(msg, lk.values[1]), index, streamed);
  if (lk.values[2]) {
    // The legacy single function call: one tool call in its own slot.
    const auto fc = value(msg, lk.values[2]);
    const std::size_t slot = kMaxToolCalls - 1 - std::min(index, kMaxToolCalls - 1);
    if (!calls_[slot].used) {
      calls_[slot].used = true;
      ++tool_call_count_;
    }
    json::Lookup<1> args{{"arguments"}};
    if (scan(fc, args)) add_arguments(slot, value(fc, args.values[0]));
  }
  if (const auto r = value(msg, lk.values[3]); is_string(r) && r.size() > 2) refusal_ = true;
}

void QualityScanner::choice(std::string_view c, bool streamed) {
  json::Lookup<5> lk{{"index", "message", "delta", "text", "finish_reason"}};
  if (!scan(c, lk)) return;
  const std::size_t index = std::min(index_of(value(c, lk.values[0]), 0), kMaxChoices);
  if (api_ == AnswerApi::completions) {
    add_text(value(c, lk.values[3]), index);
  } else {
    const auto m = value(c, lk.values[streamed ? 2 : 1]);
    if (!m.empty()) message(m, index, streamed);
  }
  finish(value(c, lk.values[4]));
}

// The Responses API's response object: status, incomplete_details and output
// items (messages with output_text parts, function calls).
void QualityScanner::responses_object(std::string_view r) {
  json::Lookup<4> lk{{"status", "incomplete_details", "output", "usage"}};
  if (!scan(r, lk)) return;
  if (lk.values[3]) usage_ = parse_usage_object(value(r, lk.values[3]));
  const auto status = value(r, lk.values[0]);
  if (status != "\"completed\"" && status != "\"incomplete\"") return;
  finished_ = true;
  if (status == "\"incomplete\"") {
    const auto details = value(r, lk.values[1]);
    json::Lookup<1> reason{{"reason"}};
    const auto why = scan(details, reason) ? value(details, reason.values[0]) : std::string_view();
    if (why == "\"max_output_tokens\"") {
      truncated_ = true;
    } else if (why == "\"content_filter\"") {
      filtered_ = true;
    } else {
      other_finish_ = true;
    }
  } else {
    other_finish_ = true;
  }
  std::size_t calls = 0;
  for_each_element(value(r, lk.values[2]), [&](std::string_view item) {
    json::Lookup<3> it{{"type", "content", "arguments"}};
    if (!scan(item, it)) return;
    const auto type = value(item, it.values[0]);
    if (type == "\"function_call\"") {
      const std::size_t slot = calls++;
      if (slot < kMaxToolCalls) calls_[slot].used = true;
      ++tool_call_count_;
      add_arguments(slot, value(item, it.values[2]));
    } else if (type == "\"message\"") {
      for_each_element(value(item, it.values[1]), [&](std::string_view part) {
        json::Lookup<3> p{{"type", "text", "refusal"}};
        if (!scan(part, p)) return;
        if (value(part, p.values[0]) == "\"output_text\"") add_text(value(part, p.values[1]), 0);
        if (const auto rf = value(part, p.values[2]); is_string(rf) && rf.size() > 2) refusal_ = true;
      });
    }
  });
}

void QualityScanner::body(std::string_view doc) {
  if (api_ == AnswerApi::none) return;
  if (api_ == AnswerApi::responses) {
    responses_object(doc);
    return;
  }
  json::Lookup<2> lk{{"choices", "usage"}};
  if (!scan(doc, lk)) return;
  if (lk.values[1]) usage_ = parse_usage_object(value(doc, lk.values[1]));
  for_each_element(value(doc, lk.values[0]), [&](std::string_view c) { choice(c, false); });
}

void QualityScanner::event(std::string_view data) {
  if (api_ == AnswerApi::none || data == "[DONE]") return;
  if (api_ == AnswerApi::responses) {
    // Only the final event carries the whole response (with every output item).
    json::Lookup<2> lk{{"type", "response"}};
    if (!scan(data, lk)) return;
    const auto type = value(data, lk.values[0]);
    if (type == "\"response.completed\"" || type == "\"response.incomplete\"") {
      responses_object(value(data, lk.values[1]));
    }
    return;
  }
  if (nothing_to_learn(data)) return;
  json::Lookup<1> lk{{"choices"}};
  if (!scan(data, lk)) return;
  for_each_element(value(data, lk.values[0]), [&](std::string_view c) { choice(c, true); });
}

// Most events of a stream are one more piece of text. Once text has been seen
// (and no JSON-mode text is collected), such an event can change no signal:
// only a finish_reason that is not null, a tool or function call or a refusal
// can. One pass over its quotes tells, instead of a parse of every level.
bool QualityScanner::nothing_to_learn(std::string_view data) const {
  if (!has_text_ || json_expected_ || api_ == AnswerApi::responses) return false;
  constexpr std::string_view kTool = "tool_calls\"", kFunction = "function_call\"", kRefusal = "refusal\"";
  constexpr std::string_view kFinish = "finish_reason\"";
  for (std::size_t q = 0; q + 1 < data.size(); ++q) {
    // The keys that matter start with f, r or t: most quotes are passed over
    // on that one comparison.
    if (data[q] != '"') continue;
    const char k = data[q + 1];
    if (k != 'f' && k != 'r' && k != 't') continue;
    const std::string_view rest = data.substr(q + 1);
    if (rest.starts_with(kTool) || rest.starts_with(kFunction) || rest.starts_with(kRefusal)) return false;
    if (rest.starts_with(kFinish)) {
      std::size_t i = kFinish.size();
      while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == '\n' || rest[i] == '\r')) ++i;
      if (i >= rest.size() || rest[i] != ':') return false;
      ++i;
      while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == '\n' || rest[i] == '\r')) ++i;
      if (rest.substr(i, 4) != "null") return false;
    }
  }
  return true;
}

QualityFlags QualityScanner::flags() const {
  QualityFlags f;
  if (!finished_) return f;
  f.mark(QualitySignal::truncated, truncated_);
  f.mark(QualitySignal::content_filter, filtered_);
  f.mark(QualitySignal::empty, !has_text_ && tool_call_count_ == 0 && !refusal_);
  if (tool_call_count_ > 0) {
    bool any = false;
    bool bad = false;
    for (const auto& c : calls_) {
      if (!c.used || c.overflow) continue;
      any = true;
      if (!trim(c.arguments).empty() && !is_json_object(c.arguments)) bad = true;
    }
    if (any) f.mark(QualitySignal::tool_call_json, bad);
  }
  // A JSON-mode answer that ended normally with text (a truncated one is the
  // truncated check's; a tool call is not an answer text).
  if (json_expected_ && !truncated_ && !filtered_ && !text_overflow_ && has_text_) {
    f.mark(QualitySignal::response_json, !is_json_object(text_));
  }
  return f;
}

}  // namespace canaryd::upstream
