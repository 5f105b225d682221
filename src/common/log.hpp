// Application logging: JSON lines on stdout through spdlog's async logger, so
// an I/O thread never waits on the terminal. The queue (1,024 lines, shared by
// every logger here) drops its oldest line when full instead of blocking; the
// drops are ai_proxy_log_dropped_total. Never pass a secret or a prompt.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "canaryd/error.hpp"

namespace spdlog {
class logger;
}

namespace canaryd::log {

// level: trace|debug|info|warn|error|off. Safe to call again (reload, tests).
void init(std::string_view level);
void set_level(std::string_view level);
std::shared_ptr<spdlog::logger> access_logger();
// An async logger appending raw lines to `path` (created 0600: it may hold
// prompts), on the same non-blocking queue. Throws std::runtime_error naming the path when it cannot be opened.
std::shared_ptr<spdlog::logger> file_logger(const std::string& name, const std::string& path);

void debug(std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
void info(std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
void warn(std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
void error(std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
// At the level the error table gives (canaryd/error.hpp ErrorInfo::log_level).
void at(LogLevel level, std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
void flush();

}  // namespace canaryd::log
