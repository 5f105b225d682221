#include "shadow/compare.hpp"

#include "metrics/metrics.hpp"

#include <nlohmann/json.hpp>

namespace canaryd::shadow {
namespace {

using nlohmann::json;

const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string text_of(const json* j) { return j && j->is_string() ? j->get<std::string>() : std::string(); }

bool parses(const std::string& text) {
  // Empty arguments ("") are what a tool without parameters may stream: treat as {}.
  return text.empty() || !json::parse(text, nullptr, false).is_discarded();
}

void add_tool(AnswerSummary& out, const json* function) {
  out.tool_names.push_back(text_of(member(*function, "name")));
  const json* args = member(*function, "arguments");
  if (args && args->is_string() && !parses(args->get<std::string>())) out.tool_arguments_valid = false;
}

// One parsed answer object of any of the three APIs.
void summarize_value(const json& doc, AnswerSummary& out) {
  if (const json* choices = member(doc, "choices"); choices && choices->is_array() && !choices->empty()) {
    const json& c0 = (*choices)[0];
    out.finish_reason = text_of(member(c0, "finish_reason"));
    if (const json* text = member(c0, "text"); text && text->is_string())
      out.content_chars += text->get_ref<const std::string&>().size();
    if (const json* msg = member(c0, "message"); msg && msg->is_object()) {
      if (const json* content = member(*msg, "content"); content && content->is_string()) {
        out.content_chars += content->get_ref<const std::string&>().size();
      }
      if (const json* calls = member(*msg, "tool_calls"); calls && calls->is_array()) {
        for (const json& call : *calls) {
          if (const json* fn = member(call, "function"); fn && fn->is_object()) add_tool(out, fn);
        }
      }
      if (const json* fn = member(*msg, "function_call"); fn && fn->is_object()) add_tool(out, fn);
    }
    return;
  }
  if (const json* output = member(doc, "output"); output && output->is_array()) {
    // Responses API: the status stands for the finish reason.
    out.finish_reason = text_of(member(doc, "status"));
    for (const json& item : *output) {
      const std::string type = text_of(member(item, "type"));
      if (type == "function_call") {
        add_tool(out, &item);
      } else if (const json* content = member(item, "content"); type == "message" && content && content->is_array()) {
        for (const json& part : *content) {
          if (const json* t = member(part, "text"); t && t->is_string())
            out.content_chars += t->get_ref<const std::string&>().size();
        }
      }
    }
  }
}

}  // namespace

void summarize_body(std::string_view body, AnswerSummary& out) {
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded()) {
    out.json_valid = false;
    return;
  }
  summarize_value(doc, out);
  if (!out.usage) out.usage = upstream::parse_usage(body);
}

StreamSummarizer::StreamSummarizer() = default;
StreamSummarizer::~StreamSummarizer() = default;
StreamSummarizer::StreamSummarizer(StreamSummarizer&&) noexcept = default;
StreamSummarizer& StreamSummarizer::operator=(StreamSummarizer&&) noexcept = default;

void StreamSummarizer::event(std::string_view data) {
  json ev = json::parse(data, nullptr, false);
  if (ev.is_discarded()) {
    json_valid_ = false;
    return;
  }
  if (const json* response = member(ev, "response"); response && response->is_object()) {
    // Responses API: the terminal event carries the whole answer.
    const std::string type = text_of(member(ev, "type"));
    if (type == "response.completed" || type == "response.incomplete" || type == "response.failed") {
      completed_.emplace();
      summarize_value(*response, *completed_);
    }
    return;
  }
  const json* choices = member(ev, "choices");
  if (!choices || !choices->is_array() || choices->empty()) return;
  const json& c0 = (*choices)[0];
  if (std::string reason = text_of(member(c0, "finish_reason")); !reason.empty()) finish_reason_ = reason;
  if (const json* text = member(c0, "text"); text && text->is_string())
    content_chars_ += text->get_ref<const std::string&>().size();
  const json* delta = member(c0, "delta");
  if (!delta || !delta->is_object()) return;
  if (const json* content = member(*delta, "content"); content && content->is_string()) {
    content_chars_ += content->get_ref<const std::string&>().size();
  }
  if (const json* calls = member(*delta, "tool_calls"); calls && calls->is_array()) {
    for (const json& call : *calls) {
      const json* index = member(call, "index");
      std::size_t i = index && index->is_number_unsigned() ? index->get<std::size_t>() : tools_.size();
      if (i > 128) continue;  // bounded: no answer makes that many calls
      if (i >= tools_.size()) tools_.resize(i + 1);
      if (const json* fn = member(call, "function"); fn && fn->is_object()) {
        tools_[i].name += text_of(member(*fn, "name"));
        tools_[i].arguments += text_of(member(*fn, "arguments"));
      }
    }
  }
}

void StreamSummarizer::finish(AnswerSummary& out) {
  out.json_valid = out.json_valid && json_valid_;
  if (completed_) {
    out.finish_reason = completed_->finish_reason;
    out.tool_names = completed_->tool_names;
    out.tool_arguments_valid = completed_->tool_arguments_valid;
    out.content_chars = completed_->content_chars;
    return;
  }
  out.finish_reason = finish_reason_;
  out.content_chars = content_chars_;
  for (const auto& t : tools_) {
    out.tool_names.push_back(t.name);
    if (!parses(t.arguments)) out.tool_arguments_valid = false;
  }
}

Comparison compare(const AnswerSummary& control, const AnswerSummary& shadow, double control_cost_usd,
                   double shadow_cost_usd) {
  Comparison c;
  const bool shadow_outage = shadow.status == 0 || shadow.status >= 500 || shadow.status == 429;
  if (!control.failed && !shadow.failed) {
    c.result = ShadowResult::both_succeeded;
  } else if (!control.failed && shadow_outage) {
    c.result = ShadowResult::shadow_failed;
  } else if (control.failed && shadow.failed &&
             (control.status == shadow.status || control.status == 0 || shadow.status == 0)) {
    c.result = ShadowResult::both_failed;
  } else {
    c.result = ShadowResult::status_differs;
  }
  c.status_equal = control.status == shadow.status;
  c.latency_delta_seconds = shadow.latency_seconds - control.latency_seconds;
  if (control.ttfb_seconds && shadow.ttfb_seconds) c.ttfb_delta_seconds = *shadow.ttfb_seconds - *control.ttfb_seconds;
  const upstream::Usage cu = control.usage.value_or(upstream::Usage{});
  const upstream::Usage su = shadow.usage.value_or(upstream::Usage{});
  c.prompt_tokens_delta = static_cast<std::int64_t>(su.prompt) - static_cast<std::int64_t>(cu.prompt);
  c.completion_tokens_delta = static_cast<std::int64_t>(su.completion) - static_cast<std::int64_t>(cu.completion);
  c.control_cost_usd = control_cost_usd;
  c.shadow_cost_usd = shadow_cost_usd;
  c.shadow_json_valid = shadow.status != 0 && shadow.json_valid;
  c.shadow_tool_arguments_valid = shadow.status != 0 && shadow.tool_arguments_valid;
  if (c.result == ShadowResult::both_succeeded) {
    c.finish_reason_equal = control.finish_reason == shadow.finish_reason;
    c.tool_names_equal = control.tool_names == shadow.tool_names;
    if (control.content_chars > 0) {
      c.length_ratio = static_cast<double>(shadow.content_chars) / static_cast<double>(control.content_chars);
    }
  }
  return c;
}

void comparison_json(const Comparison& c, const AnswerSummary& control, const AnswerSummary& shadow, json& out) {
  auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  out["result"] = metrics::Metrics::kShadowResults[static_cast<std::size_t>(c.result)];
  out["control_status"] = control.status;
  out["shadow_status"] = shadow.status;
  if (!shadow.error.empty()) out["shadow_error"] = shadow.error;
  out["latency_delta_ms"] = c.latency_delta_seconds * 1e3;
  out["ttfb_delta_ms"] = c.ttfb_delta_seconds ? json(*c.ttfb_delta_seconds * 1e3) : json(nullptr);
  out["prompt_tokens_delta"] = c.prompt_tokens_delta;
  out["completion_tokens_delta"] = c.completion_tokens_delta;
  out["cost_delta_usd"] = c.shadow_cost_usd - c.control_cost_usd;
  out["finish_reason_equal"] = opt(c.finish_reason_equal);
  out["control_finish_reason"] = control.finish_reason;
  out["shadow_finish_reason"] = shadow.finish_reason;
  out["tool_names_equal"] = opt(c.tool_names_equal);
  out["length_ratio"] = opt(c.length_ratio);
  out["shadow_json_valid"] = c.shadow_json_valid;
  out["shadow_tool_arguments_valid"] = c.shadow_tool_arguments_valid;
}

}  // namespace canaryd::shadow
