#include "responses.hpp"

#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <ctime>

#include <nlohmann/json.hpp>

namespace mock {
namespace {

constexpr std::string_view kContent = "This is a mock response from mock-upstream.";
// Stream deltas; concatenated they spell kContent when chunks == 8.
constexpr std::array<std::string_view, 8> kWords = {"This",           " is", " a", " mock", " response", " from",
                                                    " mock-upstream", "."};
// Exactly representable in float32, so the float and base64 encodings agree.
constexpr std::array<float, 8> kEmbedding = {0.125f, -0.25f, 0.5f, 0.0625f, -0.75f, 0.375f, 1.0f, -0.5f};

std::string json_str(std::string_view s) { return nlohmann::json(std::string(s)).dump(); }

struct StatusText {
  std::string_view message, type, code;
};

StatusText status_text(int status) {
  switch (status) {
    case 400: return {"Invalid request", "invalid_request_error", "invalid_request"};
    case 401: return {"Incorrect API key provided", "invalid_request_error", "invalid_api_key"};
    case 403: return {"You are not allowed to access this resource", "invalid_request_error", "permission_denied"};
    case 404:
      return {"The model does not exist or you do not have access to it", "invalid_request_error", "model_not_found"};
    case 408: return {"Request timed out", "invalid_request_error", "timeout"};
    case 413: return {"Request too large", "invalid_request_error", "request_too_large"};
    case 429: return {"Rate limit reached", "requests", "rate_limit_exceeded"};
    case 500: return {"The server had an error while processing your request", "server_error", "server_error"};
    case 502: return {"Bad gateway", "server_error", "bad_gateway"};
    case 503:
      return {"The engine is currently overloaded, please try again later", "server_error", "service_unavailable"};
    case 504: return {"Gateway timeout", "server_error", "gateway_timeout"};
    default:
      return status >= 500 ? StatusText{"mock server error", "server_error", "mock_status"}
                           : StatusText{"mock client error", "invalid_request_error", "mock_status"};
  }
}

std::string_view word(int i) { return kWords[static_cast<std::size_t>(i) % kWords.size()]; }

}  // namespace

std::int64_t realtime_us() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

Responses::Responses(const Options& opts)
    : prompt_tokens_(opts.prompt_tokens), completion_tokens_(opts.completion_tokens) {
  if (!opts.name.empty()) name_field_ = R"(,"mock_name":)" + json_str(opts.name);

  usage_tail_ = R"({"prompt_tokens":)" + std::to_string(prompt_tokens_) + R"(,"completion_tokens":)" +
                std::to_string(completion_tokens_) + R"(,"total_tokens":)" +
                std::to_string(prompt_tokens_ + completion_tokens_) + "}";
  chat_tail_ = R"(,"choices":[{"index":0,"message":{"role":"assistant","content":)" + json_str(kContent) +
               R"(,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":)" + usage_tail_ +
               R"(,"system_fingerprint":"fp_mock")" + name_field_ + "}";
  completion_tail_ = R"(,"choices":[{"text":)" + json_str(kContent) +
                     R"(,"index":0,"logprobs":null,"finish_reason":"stop"}],"usage":)" + usage_tail_ + name_field_ +
                     "}";

  std::string floats = "[";
  for (std::size_t i = 0; i < kEmbedding.size(); ++i) {
    if (i) floats += ",";
    floats += nlohmann::json(kEmbedding[i]).dump();
  }
  embedding_floats_ = floats + "]";
  unsigned char raw[sizeof(kEmbedding)];
  std::memcpy(raw, kEmbedding.data(), sizeof raw);  // little-endian hosts, as OpenAI's encoding
  unsigned char b64[4 * ((sizeof raw + 2) / 3) + 1];
  int n = EVP_EncodeBlock(b64, raw, sizeof raw);
  embedding_base64_ = json_str(std::string_view(reinterpret_cast<const char*>(b64), static_cast<std::size_t>(n)));

  nlohmann::json models = {{"object", "list"}, {"data", nlohmann::json::array()}};
  for (const char* id :
       {"gpt-4.1", "gpt-4o-mini", "gemini-2.5-flash", "deepseek-v3.2", "claude-sonnet-4.5", "text-embedding-3-small"}) {
    models["data"].push_back({{"id", id}, {"object", "model"}, {"created", 1700000000}, {"owned_by", "mock"}});
  }
  if (!opts.name.empty()) models["mock_name"] = opts.name;
  models_ = models.dump();

  mock_failure_ = error("mock failure", "server_error", "mock_error");
  malformed_ = R"({"id":"chatcmpl-mock","object":"chat.completion","choices":[{"message":{"role":)";
}

std::string Responses::error(std::string_view message, std::string_view type, std::string_view code) const {
  return R"({"error":{"message":)" + json_str(message) + R"(,"type":)" + json_str(type) + R"(,"param":null,"code":)" +
         json_str(code) + "}" + name_field_ + "}";
}

std::string Responses::error_for_status(int status) const {
  auto t = status_text(status);
  return error(t.message, t.type, t.code);
}

std::string Responses::chat(std::string_view model_json, std::string_view id, std::int64_t created) const {
  std::string out;
  out.reserve(128 + model_json.size() + chat_tail_.size());
  out += R"({"id":")";
  out += id;
  out += R"(","object":"chat.completion","created":)";
  out += std::to_string(created);
  out += R"(,"model":)";
  out += model_json;
  out += chat_tail_;
  return out;
}

std::string Responses::chat_tool_call(std::string_view model_json, std::string_view id, std::int64_t created,
                                      std::string_view tool_name) const {
  return std::string(R"({"id":")") + std::string(id) + R"(","object":"chat.completion","created":)" +
         std::to_string(created) + R"(,"model":)" + std::string(model_json) +
         R"(,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_)" +
         std::string(id) + R"(","type":"function","function":{"name":)" + json_str(tool_name) +
         R"(,"arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":)" + usage_tail_ +
         R"(,"system_fingerprint":"fp_mock")" + name_field_ + "}";
}

std::string Responses::completion(std::string_view model_json, std::string_view id, std::int64_t created) const {
  return std::string(R"({"id":")") + std::string(id) + R"(","object":"text_completion","created":)" +
         std::to_string(created) + R"(,"model":)" + std::string(model_json) + completion_tail_;
}

std::string Responses::embeddings(std::string_view model_json, int inputs, bool base64) const {
  const std::string& vec = base64 ? embedding_base64_ : embedding_floats_;
  std::string out = R"({"object":"list","data":[)";
  for (int i = 0; i < inputs; ++i) {
    if (i) out += ",";
    out += R"({"object":"embedding","index":)" + std::to_string(i) + R"(,"embedding":)" + vec + "}";
  }
  out += R"(],"model":)" + std::string(model_json) + R"(,"usage":{"prompt_tokens":)" + std::to_string(prompt_tokens_) +
         R"(,"total_tokens":)" + std::to_string(prompt_tokens_) + "}" + name_field_ + "}";
  return out;
}

std::string Responses::usage_chat() const { return usage_tail_; }

std::string Responses::responses_object(const StreamPlan& p, bool completed) const {
  std::string out = R"({"id":")" + p.id + R"(","object":"response","created_at":)" + std::to_string(p.created) +
                    R"(,"status":")" + (completed ? "completed" : "in_progress") + R"(","model":)" + p.model_json +
                    R"(,"output":)";
  if (completed) {
    out += R"([{"type":"message","id":"msg_)" + p.id +
           R"(","status":"completed","role":"assistant","content":[{"type":"output_text","text":)" +
           json_str(kContent) + R"(,"annotations":[]}]}],"output_text":)" + json_str(kContent) +
           R"(,"usage":{"input_tokens":)" + std::to_string(prompt_tokens_) + R"(,"output_tokens":)" +
           std::to_string(completion_tokens_) + R"(,"total_tokens":)" +
           std::to_string(prompt_tokens_ + completion_tokens_) + "}";
  } else {
    out += R"([],"usage":null)";
  }
  return out + name_field_ + "}";
}

std::string Responses::response(std::string_view model_json, std::string_view id, std::int64_t created) const {
  StreamPlan p;
  p.model_json = model_json;
  p.id = id;
  p.created = created;
  return responses_object(p, true);
}

int Responses::stream_event_count(const StreamPlan& p) {
  if (p.endpoint == Endpoint::responses) return p.chunks + 2;  // created, deltas, completed
  return p.chunks + (p.include_usage ? 1 : 0) + 1;             // deltas, [usage], [DONE]
}

std::string Responses::stream_event(const StreamPlan& p, int i, std::int64_t now_us) const {
  const std::string ts = R"(,"mock_ts_us":)" + std::to_string(now_us);
  if (p.malformed && i < stream_event_count(p) - 1) {
    return "data: {\"id\":\"" + p.id + "\",\"object\":\"chat.completion.chunk\",\"choices\":[{\n\n";
  }

  if (p.endpoint == Endpoint::responses) {
    std::string type, body;
    if (i == 0) {
      type = "response.created";
      body = R"({"type":"response.created","response":)" + responses_object(p, false);
    } else if (i <= p.chunks) {
      type = "response.output_text.delta";
      body = R"({"type":"response.output_text.delta","item_id":"msg_)" + p.id +
             R"(","output_index":0,"content_index":0,"delta":)" + json_str(word(i - 1));
    } else {
      type = "response.completed";
      body = R"({"type":"response.completed","response":)" + responses_object(p, true);
    }
    return "event: " + type + "\ndata: " + body + ts + "}\n\n";
  }

  if (i >= stream_event_count(p) - 1) return "data: [DONE]\n\n";

  const bool chat = p.endpoint == Endpoint::chat;
  std::string out = R"(data: {"id":")" + p.id + R"(","object":")" +
                    (chat ? "chat.completion.chunk" : "text_completion") + R"(","created":)" +
                    std::to_string(p.created) + R"(,"model":)" + p.model_json + R"(,"choices":)";
  if (i >= p.chunks) {  // the include_usage chunk
    out += R"([],"usage":)" + usage_chat();
  } else {
    const bool last = i == p.chunks - 1;
    if (!chat) {
      out += R"([{"text":)" + json_str(word(i)) + R"(,"index":0,"logprobs":null,"finish_reason":)" +
             (last ? R"("stop")" : "null") + "}]";
    } else if (!p.tool_name.empty()) {
      // Arguments arrive in pieces as with OpenAI; joined they are "{}".
      std::string args = p.chunks == 1 ? "{}" : i == 0 ? "{" : last ? "}" : "";
      out += R"([{"index":0,"delta":{)";
      if (i == 0) {
        out += R"("role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_)" + p.id +
               R"(","type":"function","function":{"name":)" + json_str(p.tool_name) + R"(,"arguments":)" +
               json_str(args) + "}}]";
      } else {
        out += R"("tool_calls":[{"index":0,"function":{"arguments":)" + json_str(args) + "}}]";
      }
      out += R"(},"logprobs":null,"finish_reason":)" + std::string(last ? R"("tool_calls")" : "null") + "}]";
    } else {
      out += R"([{"index":0,"delta":{)" + std::string(i == 0 ? R"("role":"assistant",)" : "") + R"("content":)" +
             json_str(word(i)) + R"(},"logprobs":null,"finish_reason":)" + (last ? R"("stop")" : "null") + "}]";
    }
  }
  return out + R"(,"system_fingerprint":"fp_mock")" + name_field_ + ts + "}\n\n";
}

}  // namespace mock
