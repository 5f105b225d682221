// rollout/fallback.hpp and the error table behind it: how an attempt is
// classified, and which failed canary attempts may go to control.
#include "rollout/fallback.hpp"

#include <gtest/gtest.h>

namespace canaryd::rollout {
namespace {

Error err(ErrorKind k) { return Error{k, "x"}; }

TEST(AttemptClass, ByErrorKindFromTheTable) {
  EXPECT_EQ(metric_status(err(ErrorKind::timeout), 0), MetricStatus::timeout);
  for (ErrorKind k : {ErrorKind::connect_error, ErrorKind::tls_error, ErrorKind::bad_response,
                      ErrorKind::response_too_large, ErrorKind::overloaded}) {
    EXPECT_EQ(metric_status(err(k), 0), MetricStatus::error);
    EXPECT_TRUE(analysis_error(err(k), 0)) << error_name(k);
  }
  EXPECT_EQ(fallback_reason(err(ErrorKind::connect_error), 0), "connect_error");
  EXPECT_EQ(fallback_reason(err(ErrorKind::tls_error), 0), "tls_error");
  EXPECT_EQ(fallback_reason(err(ErrorKind::timeout), 0), "timeout");
  EXPECT_EQ(fallback_reason(err(ErrorKind::bad_response), 0), "5xx");
  EXPECT_EQ(fallback_reason(err(ErrorKind::response_too_large), 0), "");  // too big on control too
  EXPECT_EQ(fallback_reason(err(ErrorKind::overloaded), 0), "");
}

TEST(AttemptClass, ByStatusWhenTheUpstreamAnswered) {
  EXPECT_EQ(metric_status({}, 200), MetricStatus::success);
  EXPECT_EQ(metric_status({}, 404), MetricStatus::error);
  EXPECT_EQ(metric_status({}, 503), MetricStatus::error);
  for (int s : {500, 502, 503, 504, 429, 401, 403}) EXPECT_TRUE(analysis_error({}, s)) << s;
  for (int s : {200, 201, 204, 400, 404, 409, 413, 422}) EXPECT_FALSE(analysis_error({}, s)) << s;  // the client's own
  EXPECT_EQ(fallback_reason({}, 429), "429");
  EXPECT_EQ(fallback_reason({}, 500), "5xx");
  EXPECT_EQ(fallback_reason({}, 503), "5xx");
  EXPECT_EQ(fallback_reason({}, 401), "");
  EXPECT_EQ(fallback_reason({}, 200), "");
}

TEST(MayFallBack, OnlyAFirstUnforcedCanaryAttemptForAListedReason) {
  config::FallbackConfig fb;  // on: connect_error, tls_error, timeout, 5xx, 429
  EXPECT_TRUE(may_fall_back(fb, "5xx", Arm::canary, false, 0));
  EXPECT_FALSE(may_fall_back(fb, "5xx", Arm::canary, false, 1));   // the fallback itself never falls back
  EXPECT_FALSE(may_fall_back(fb, "5xx", Arm::control, false, 0));  // control has no one to fall back to
  EXPECT_FALSE(may_fall_back(fb, "5xx", Arm::canary, true, 0));    // forced by the override header
  EXPECT_FALSE(may_fall_back(fb, "", Arm::canary, false, 0));
  fb.on = {"timeout"};
  EXPECT_FALSE(may_fall_back(fb, "5xx", Arm::canary, false, 0));
  EXPECT_TRUE(may_fall_back(fb, "timeout", Arm::canary, false, 0));
  fb.enabled = false;
  EXPECT_FALSE(may_fall_back(fb, "timeout", Arm::canary, false, 0));
}

TEST(ErrorTable, EveryKindHasOneRow) {
  for (int k = 0; k <= static_cast<int>(ErrorKind::store_unavailable); ++k) {
    const ErrorInfo& e = error_info(static_cast<ErrorKind>(k));
    EXPECT_FALSE(e.name.empty());
    EXPECT_GE(e.http_status, 200);
  }
  EXPECT_EQ(http_status(ErrorKind::timeout), 504);
  EXPECT_EQ(error_info(ErrorKind::timeout).source, ErrorSource::upstream);
  EXPECT_EQ(error_info(ErrorKind::bad_request).source, ErrorSource::downstream);
  EXPECT_EQ(error_info(ErrorKind::store_unavailable).source, ErrorSource::store);
  EXPECT_EQ(openai_error_body(ErrorKind::payload_too_large, "m"),
            R"({"error":{"code":"payload_too_large","message":"m","param":null,"type":"invalid_request_error"}})");
}

}  // namespace
}  // namespace canaryd::rollout
