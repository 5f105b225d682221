// canaryd: wiring only — flags, config, logging, signals, start and stop.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admin/history.hpp"
#include "admin/report.hpp"
#include "canaryd/config.hpp"
#include "common/access_log.hpp"
#include "common/log.hpp"
#include "config/reload.hpp"
#include "ctl/ctl.hpp"
#include "metrics/metrics.hpp"
#include "rollout/controller.hpp"
#include "server/app.hpp"
#include "server/server.hpp"
#include "shadow/shadow.hpp"
#include "simulate/simulate.hpp"
#include "store/rollout_sync.hpp"
#include "store/store.hpp"
#include "store/stores.hpp"

#ifndef CANARYD_VERSION
#define CANARYD_VERSION "dev"
#endif

namespace {

namespace net = boost::asio;
using namespace canaryd;

constexpr const char* kUsage = R"(usage: canaryd [-c FILE] [--check-config] [--log-level LEVEL] [--version]
       canaryd ctl [--url URL] [--token TOKEN] [--experiment NAME] status|list|pause|resume|promote|abort|retry|weight N|report
       canaryd simulate --config FILE --scenario FILE [--runs N] [--seed S] [--threads N] [--json]

  -c, --config FILE   config file (default: $CANARYD_CONFIG, else config/canaryd.yaml)
  --check-config      validate FILE, print the resolved config (secrets redacted), exit 0 or 1
  --log-level LEVEL   trace|debug|info|warn|error|off (overrides log.level)
  --version           print the version
)";

struct Flags {
  std::string config;
  bool check = false;
  std::optional<std::string> log_level;
};

// The daemon's wiring, top to bottom in the order its objects must be built
// and torn down (the stores outlive the server, the shadow outlives the I/O
// threads, the control loop runs the timers and signals last). Longer than a
// screen on purpose: split into functions, that order would be scattered
// across their parameters.
int run(const Flags& flags) {
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = std::make_shared<const config::Config>(config::load_file(flags.config));
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  if (flags.check) {
    std::cout << config::to_yaml_redacted(*cfg);
    return 0;
  }
  log::init(flags.log_level.value_or(cfg->log.level));

  int threads = cfg->server.threads > 0 ? cfg->server.threads
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  server::App app;
  std::shared_ptr<const server::Runtime> rt;
  try {
    rt = std::make_shared<const server::Runtime>(cfg);
  } catch (const std::exception& e) {
    std::cerr << flags.config << ": " << e.what() << "\n";
    return 1;
  }
  app.publish(rt);
  metrics::Metrics metrics(*cfg);
  app.metrics = &metrics;
  log::AccessLog access(log::access_logger());
  app.access_log = &access;
  // One rollout, report and history per experiment (issue 17), in
  // config.experiments' order; a reload never changes that list.
  struct ExperimentParts {
    std::unique_ptr<rollout::RolloutController> rollout;
    std::unique_ptr<admin::Report> report;
    std::unique_ptr<admin::History> history;
  };
  std::vector<ExperimentParts> experiments;
  for (std::size_t i = 0; i < cfg->experiments.size(); ++i) {
    const config::ExperimentConfig& x = cfg->experiments[i];
    ExperimentParts parts;
    parts.rollout = std::make_unique<rollout::RolloutController>(x, &metrics, SystemClock::instance(), i);
    parts.report = std::make_unique<admin::Report>(
        SystemClock::instance(), std::chrono::duration_cast<std::chrono::nanoseconds>(x.rollout.analysis.window));
    parts.history = std::make_unique<admin::History>(SystemClock::instance());
    app.experiments.push_back({x.name, parts.rollout.get(), parts.report.get(), parts.history.get()});
    experiments.push_back(std::move(parts));
  }
  // Declared before the server: a shadow call still running on a worker when
  // the workers are joined is destroyed with them, before this goes away.
  shadow::Shadow shadow(SystemClock::instance(), &metrics, &access);
  try {
    shadow.configure(cfg->shadow);
  } catch (const std::exception& e) {
    std::cerr << flags.config << ": shadow.bodies_file: " << e.what() << "\n";
    return 1;
  }
  app.shadow = &shadow;

  // The stores outlive the server: the workers are joined (in ~Server) before
  // any store they use goes away.
  store::Stores stores;
  try {
    stores = store::make_stores(*cfg, static_cast<std::size_t>(threads), &metrics, SystemClock::instance());
  } catch (const std::exception& e) {
    std::cerr << flags.config << ": " << e.what() << "\n";
    return 1;
  }
  net::io_context control(1);
  server::Server srv(app, control, threads);
  try {
    srv.listen(cfg->server);
  } catch (const std::exception& e) {
    log::error(e.what());
    log::flush();
    return 1;
  }
  for (std::size_t i = 0; i < srv.workers().size(); ++i)
    srv.workers()[i]->context().store = stores.for_thread(i, srv.workers()[i]->ioc());
  app.stores = &stores;

  // With Redis each experiment's rollout state is shared; the syncs run on the control thread.
  std::vector<std::shared_ptr<store::RolloutSync>> rollout_syncs;
  if (cfg->redis) {
    try {
      // With Sentinel or Cluster they follow the same topology watcher as the I/O threads' clients.
      for (auto& x : experiments) {
        rollout_syncs.push_back(store::RolloutSync::create(
            control.get_executor(), *cfg, *x.rollout, [&metrics](std::string_view op) { metrics.add_redis_error(op); },
            stores.topology()));
      }
    } catch (const std::exception& e) {
      std::cerr << flags.config << ": " << e.what() << "\n";
      return 1;
    }
    for (auto& sync : rollout_syncs) sync->start();
    // A restarted replica serves the stored state from its first request, not
    // the config's first step; if Redis does not answer in time the canary
    // gets no traffic until it does.
    auto all_loaded = [&] {
      return std::all_of(rollout_syncs.begin(), rollout_syncs.end(), [](const auto& s) { return s->loaded(); });
    };
    const auto deadline = std::chrono::steady_clock::now() + store::RolloutSync::kStartupWait;
    while (!all_loaded() && std::chrono::steady_clock::now() < deadline) {
      control.run_one_for(std::chrono::milliseconds(50));
    }
    if (control.stopped()) control.restart();
    if (!all_loaded()) log::warn("shared rollout state not read yet: no canary traffic until Redis answers");
  }

  if (cfg->server.client_keys_value.empty() && cfg->server.listen_host != "127.0.0.1" &&
      cfg->server.listen_host != "::1" && cfg->server.listen_host != "localhost") {
    log::warn("NO CLIENT KEYS: anyone who can reach " + cfg->server.listen +
              " can spend your provider keys. Set server.client_keys_env.");
  }
  for (const auto& [name, up] : cfg->upstreams) {
    if (up.tls && !up.tls_verify) log::warn("TLS verification is OFF for upstream '" + name + "' (tls_verify: false)");
  }

  srv.start();
  app.ready.store(true);
  nlohmann::json listed = nlohmann::json::array();
  for (const auto& x : cfg->experiments) {
    listed.push_back({{"name", x.name}, {"control", x.split.control}, {"canary", x.split.canary}});
  }
  log::info("canaryd listening", {{"version", CANARYD_VERSION},
                                  {"address", cfg->server.listen_host},
                                  {"port", srv.port()},
                                  {"threads", threads},
                                  {"control", cfg->split.control},
                                  {"canary", cfg->split.canary},
                                  {"experiments", listed},
                                  {"store", stores.kind()}});

  // Analysis ticks on the control thread, one timer per experiment (each at
  // its own analysis.interval).
  std::vector<std::unique_ptr<net::steady_timer>> ticks;
  std::function<void(std::size_t)> arm_tick = [&](std::size_t i) {
    const auto& now = *app.current()->config;
    ticks[i]->expires_after(now.experiments.at(i).rollout.analysis.interval);
    ticks[i]->async_wait([&, i](const boost::system::error_code& ec) {
      if (ec) return;
      experiments[i].rollout->tick();
      arm_tick(i);
    });
  };
  for (std::size_t i = 0; i < experiments.size(); ++i) {
    ticks.push_back(std::make_unique<net::steady_timer>(control));
    arm_tick(i);
  }
  // The status page's 15-minute history (GET /admin/history), sampled on the control thread too.
  net::steady_timer history_tick(control);
  std::function<void()> arm_history = [&] {
    history_tick.expires_after(admin::History::kDefaultInterval);
    history_tick.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      for (auto& x : experiments) {
        auto status = x.rollout->status();
        x.history->sample(status, x.report->build(status.value("arms", nlohmann::json())));
      }
      arm_history();
    });
  };
  arm_history();

  int exit_code = 0;
  net::signal_set signals(control, SIGTERM, SIGINT, SIGHUP);
  bool stopping = false;
  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        try {
          auto next = std::make_shared<const config::Config>(config::load_file(flags.config));
          // The metrics' label sets are fixed at start-up: a reload that would
          // need new ones is refused whole (names the key, asks for a restart).
          if (std::string conflict = metrics.reload_conflict(*next); !conflict.empty()) {
            throw std::runtime_error(conflict);
          }
          if (std::string conflict = config::reload_refusal(*cfg, *next); !conflict.empty()) {
            throw std::runtime_error(conflict);
          }
          auto next_rt = std::make_shared<const server::Runtime>(next);
          if (auto keys = config::restart_only_changes(*cfg, *next); !keys.empty()) {
            std::string list;
            for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
            log::warn("config reload: these keys apply only after a restart; running with their old values",
                      {{"keys", list}});
          }
          shadow.configure(next->shadow);
          app.publish(next_rt);
          metrics.set_pricing(next->pricing);
          for (std::size_t i = 0; i < experiments.size(); ++i)
            experiments[i].rollout->reconfigure(next->experiments[i]);
          if (!flags.log_level) log::set_level(next->log.level);
          log::info("config reloaded", {{"file", flags.config}});
        } catch (const std::exception& e) {
          log::error("config reload rejected; the running config stays", {{"error", e.what()}});
        }
      } else if (!stopping) {
        stopping = true;
        log::info("shutdown requested", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
        srv.shutdown([&](std::size_t cut) {
          if (cut > 0) log::warn("shutdown grace over: cut in-flight requests", {{"cut", cut}});
          for (auto& t : ticks) t->cancel();
          history_tick.cancel();
          signals.cancel();
          stores.stop();
          for (auto& sync : rollout_syncs) sync->stop();
          control.stop();
        });
      } else {
        log::warn("second signal: cutting every connection now");
        srv.cut_now();
      }
      wait_signal();
    });
  };
  wait_signal();
  control.run();
  srv.finish_accepting();
  // Join the I/O threads before the stores go: a Redis client must not be
  // destroyed while its thread may still run it, nor after its io_context.
  srv.join();
  stores = store::Stores();
  // The I/O threads are stopped: their last access lines go out before the final line.
  for (auto& w : srv.workers()) w->context().flush_access();
  access.drain();
  log::info("canaryd stopped");
  log::flush();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  // A log reader that goes away must not kill the daemon (as nginx): writes to
  // a closed stdout fail instead (sockets already send with MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && std::strcmp(argv[1], "ctl") == 0) return canaryd::ctl::main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "simulate") == 0) return canaryd::simulate::main(argc - 1, argv + 1);
  Flags flags;
  if (const char* env = std::getenv("CANARYD_CONFIG"); env && *env) flags.config = env;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "canaryd: " << name << " needs a value\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-c" || a == "--config") {
      flags.config = value("--config");
    } else if (a.rfind("--config=", 0) == 0) {
      flags.config = a.substr(9);
    } else if (a == "--check-config") {
      flags.check = true;
    } else if (a == "--log-level") {
      flags.log_level = value("--log-level");
    } else if (a == "--version") {
      std::cout << "canaryd " << CANARYD_VERSION << "\n";
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "canaryd: unknown argument '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  if (flags.config.empty()) flags.config = "config/canaryd.yaml";
  if (flags.log_level) {
    static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
    bool ok = false;
    for (auto* l : kLevels) ok |= (*flags.log_level == l);
    if (!ok) {
      std::cerr << "canaryd: --log-level must be one of trace, debug, info, warn, error, off\n";
      return 2;
    }
  }
  return run(flags);
}
