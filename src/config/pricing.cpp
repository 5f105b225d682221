#include "canaryd/config.hpp"

namespace canaryd::config {

double cost_usd(const std::map<std::string, Price>& pricing, std::string_view model, std::uint64_t prompt_tokens,
                std::uint64_t completion_tokens) {
  auto it = pricing.find(std::string(model));
  return it == pricing.end() ? 0.0 : it->second.cost(prompt_tokens, completion_tokens);
}

}  // namespace canaryd::config
