// Phase 1: read the JSON body of a split route once, without building a DOM
// of the prompt: the model (required), messages (required on chat), stream, user.
#include "proxy/active.hpp"
#include "upstream/quality.hpp"

namespace canaryd::proxy {

Error ActiveRequest::inspect() {
  auto bad = [](std::string message) { return Error{ErrorKind::bad_request, std::move(message)}; };
  if (r_.req.method() != http::verb::post) {
    return Error{ErrorKind::method_not_allowed, "only POST is allowed on " + r_.path};
  }
  json::Lookup<7> lk{{"model", "stream", "user", "messages", "input", "response_format", "text"}};
  if (std::string why = json::scan_object(body_, lk); !why.empty()) {
    return bad("We could not parse the JSON body of your request: " + why);
  }
  auto model = lk.values[0] ? json::decode_string(lk.values[0]->of(body_)) : std::nullopt;
  if (!model || model->empty()) return bad("you must provide a model parameter");
  in_.model = std::move(*model);
  in_.model_span = lk.values[0];
  if (r_.path == "/v1/chat/completions" && (!lk.values[3] || lk.values[3]->of(body_).front() != '[')) {
    return bad("'messages' is a required property and must be an array");
  }
  if (lk.values[1]) {
    std::string_view s = lk.values[1]->of(body_);
    if (s != "true" && s != "false" && s != "null") return bad("'stream' must be a boolean");
    in_.stream = (s == "true");
  }
  if (lk.values[2]) in_.user = json::decode_string(lk.values[2]->of(body_));
  auto member = [&](std::size_t i) { return lk.values[i] ? lk.values[i]->of(body_) : std::string_view(); };
  in_.json_expected = upstream::expects_json(upstream::answer_api(r_.path), member(5), member(6));
  return {};
}

}  // namespace canaryd::proxy
