#include "common/log.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "canaryd/clock.hpp"

namespace canaryd::log {
namespace {

// Every logger shares spdlog's one thread pool (queue), so none may block on
// it: a blocking one would wait behind the others' lines (see init()).
constexpr auto kOverflow = spdlog::async_overflow_policy::overrun_oldest;
// The pool preallocates every slot (an async_msg of ~400 bytes): 8,192 held
// 3.3 MB of an idle process's RSS. Access lines do not come here (AccessLog's
// batch writer has its own 2 MiB bound): only start-up lines, warnings and
// shadow comparisons, which a stdout that keeps up drains long before this
// many wait (issue 15, idle RSS).
constexpr std::size_t kQueueSlots = 1024;

std::shared_ptr<spdlog::logger> g_app;
std::shared_ptr<spdlog::logger> g_access;

std::shared_ptr<spdlog::logger> app() {
  if (!g_app) init("info");
  return g_app;
}

void emit(spdlog::level::level_enum level, std::string_view msg, const nlohmann::json& fields) {
  auto lg = app();
  if (!lg->should_log(level)) return;
  nlohmann::json j = nlohmann::json::object();
  j["time"] = rfc3339(SystemClock::instance().wall());
  j["level"] = spdlog::level::to_string_view(level).data();
  j["msg"] = msg;
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) j[k] = v;
  }
  lg->log(level, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace

void init(std::string_view level) {
  if (!g_app) {
    spdlog::init_thread_pool(kQueueSlots, 1);
    auto sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    // Lines are written on the I/O threads (warnings, shadow comparisons), so a full
    // queue drops its oldest line rather than wait: with stdout into a pipe
    // nobody reads, a blocking queue stalls every request once it fills.
    // Drops are counted (ai_proxy_log_dropped_total, from the pool's counter).
    g_app = std::make_shared<spdlog::async_logger>("canaryd", sink, spdlog::thread_pool(), kOverflow);
    g_app->set_pattern("%v");
    g_access = std::make_shared<spdlog::async_logger>("access", sink, spdlog::thread_pool(), kOverflow);
    g_access->set_pattern("%v");
    g_app->flush_on(spdlog::level::warn);
    spdlog::flush_every(std::chrono::seconds(1));
  }
  set_level(level);
}

void set_level(std::string_view level) {
  auto lv = spdlog::level::from_str(std::string(level));
  if (g_app) g_app->set_level(lv);
  if (g_access) g_access->set_level(lv == spdlog::level::off ? lv : std::min(lv, spdlog::level::info));
}

std::shared_ptr<spdlog::logger> access_logger() {
  app();
  return g_access;
}

std::shared_ptr<spdlog::logger> file_logger(const std::string& name, const std::string& path) {
  app();
  // Create it owner-only before spdlog opens it for appending.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  ::close(fd);
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, false);
    auto lg = std::make_shared<spdlog::async_logger>(name, sink, spdlog::thread_pool(), kOverflow);
    lg->set_pattern("%v");
    lg->set_level(spdlog::level::info);
    lg->flush_on(spdlog::level::info);  // on the logger's thread: each line is on disk soon after
    return lg;
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot open " + path + ": " + e.what());
  }
}

void debug(std::string_view msg, const nlohmann::json& f) { emit(spdlog::level::debug, msg, f); }
void info(std::string_view msg, const nlohmann::json& f) { emit(spdlog::level::info, msg, f); }
void warn(std::string_view msg, const nlohmann::json& f) { emit(spdlog::level::warn, msg, f); }
void error(std::string_view msg, const nlohmann::json& f) { emit(spdlog::level::err, msg, f); }
void flush() {
  if (g_app) g_app->flush();
  if (g_access) g_access->flush();
}

void at(LogLevel level, std::string_view msg, const nlohmann::json& fields) {
  switch (level) {
    case LogLevel::debug: debug(msg, fields); break;
    case LogLevel::info: info(msg, fields); break;
    case LogLevel::warn: warn(msg, fields); break;
    case LogLevel::error: error(msg, fields); break;
  }
}

}  // namespace canaryd::log
