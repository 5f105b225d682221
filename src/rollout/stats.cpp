#include "rollout/stats.hpp"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include <boost/math/special_functions/beta.hpp>
#include <boost/math/special_functions/erf.hpp>
#include <boost/math/special_functions/gamma.hpp>

namespace canaryd::rollout::stats {

namespace {

// Boost.Math reports errors by exception by default; the judge runs on an I/O
// thread and must not throw. Inputs are validated before each call, so these
// only turn an "impossible" evaluation error into a NaN/inf result.
namespace bmp = boost::math::policies;
using NoThrow = bmp::policy<bmp::domain_error<bmp::ignore_error>, bmp::pole_error<bmp::ignore_error>,
                            bmp::overflow_error<bmp::ignore_error>, bmp::underflow_error<bmp::ignore_error>,
                            bmp::evaluation_error<bmp::ignore_error>, bmp::rounding_error<bmp::ignore_error>>;
// lgamma in double precision (boost promotes to long double by default): a few
// ulp, and 3x faster, which the strided sums below need.
using NoThrowDouble = bmp::normalise<NoThrow, bmp::promote_double<false>>::type;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A term below exp(-46) ~ 1e-20 of the largest is dropped. The terms are
// log-concave, so past that point each ratio is below the mean ratio of the
// walk so far and the dropped tail is < 1e-20 * support / 46 of the sum.
constexpr double kLogCutoff = -46.0;
constexpr double kCutoff = 1e-20;

struct Support {
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  bool valid = false;
};

Support support_of(std::uint64_t n1, std::uint64_t n2, std::uint64_t m) {
  Support s;
  if (m > n1 + n2) return s;
  s.lo = m > n2 ? m - n2 : 0;
  s.hi = std::min(n1, m);
  s.valid = true;
  return s;
}

// f(y+1)/f(y) of the central hypergeometric (multiply by psi for Fisher's).
// n2 + y + 1 >= m on the support, so the last factor does not wrap.
double central_ratio(std::uint64_t y, std::uint64_t n1, std::uint64_t n2, std::uint64_t m) {
  return (static_cast<double>(n1 - y) * static_cast<double>(m - y)) /
         (static_cast<double>(y + 1) * static_cast<double>(n2 + y + 1 - m));
}

// The large-sample mean of Fisher's noncentral hypergeometric: the root in
// [lo, hi] of mu (n2 - m + mu) = psi (n1 - mu)(m - mu) (Cornfield 1956), i.e.
// (1 - psi) mu^2 + (n2 - m + psi (n1 + m)) mu - psi n1 m = 0.
double cornfield_mean(double n1, double n2, double m, double psi, double lo, double hi) {
  const double a = 1 - psi;
  const double b = n2 - m + psi * (n1 + m);
  const double c = -psi * n1 * m;
  double mu;
  if (std::abs(a) < 1e-12 * std::abs(b)) {
    mu = -c / b;
  } else {
    const double disc = std::max(0.0, b * b - 4 * a * c);
    const double q = -0.5 * (b + std::copysign(std::sqrt(disc), b));
    const double r1 = q / a;
    const double r2 = q != 0 ? c / q : r1;
    // The other root lies outside [lo, hi]; pick the one closer to the interval.
    auto dist = [&](double r) { return r < lo ? lo - r : (r > hi ? r - hi : 0.0); };
    mu = dist(r1) <= dist(r2) ? r1 : r2;
  }
  return std::clamp(mu, lo, hi);
}

double log_sum_exp(std::span<const double> v) {
  double mx = -kInf;
  for (double e : v) mx = std::max(mx, e);
  if (!std::isfinite(mx)) return mx;
  double s = 0;
  for (double e : v) s += std::exp(e - mx);
  return mx + std::log(s);
}

// Running product of ratios kept as mantissa * exp(log_scale) so that a walk
// across thousands of steps neither underflows nor overflows.
struct ScaledProduct {
  double value = 1;
  double log_scale = 0;
  void mul(double r) {
    value *= r;
    if (value < 1e-250 || value > 1e250) {
      log_scale += std::log(value);
      value = 1;
    }
  }
  double log() const { return log_scale + std::log(value); }
};

// The mode of a unimodal pmf given by its successive ratios f(y+1)/f(y):
// from a start near it, step to where the ratio crosses 1.
template <class Ratio>
std::uint64_t walk_to_mode(const Ratio& ratio, std::uint64_t mode, const Support& s) {
  while (mode < s.hi && ratio(mode) >= 1) ++mode;
  while (mode > s.lo && ratio(mode - 1) < 1) --mode;
  return mode;
}

// sum_y f(y) / f(mode), summed outward from the mode by the ratio recursion
// until the terms are below kCutoff of the sum (Liao & Rosen 2001).
template <class Ratio>
double sum_from_mode(const Ratio& ratio, std::uint64_t mode, const Support& s) {
  double sum = 1;
  double t = 1;
  for (std::uint64_t y = mode; y < s.hi; ++y) {
    t *= ratio(y);
    sum += t;
    if (t < kCutoff * sum) break;
  }
  t = 1;
  for (std::uint64_t y = mode; y > s.lo; --y) {
    t /= ratio(y - 1);
    sum += t;
    if (t < kCutoff * sum) break;
  }
  return sum;
}

}  // namespace

// ---------------------------------------------------------------------------

double log_fnch_pmf(std::uint64_t x, std::uint64_t n1, std::uint64_t n2, std::uint64_t m, double log_psi) {
  const Support s = support_of(n1, n2, m);
  if (!s.valid || x < s.lo || x > s.hi || std::isnan(log_psi)) return -kInf;
  if (s.lo == s.hi) return 0;
  const double psi = std::exp(log_psi);
  auto ratio = [&](std::uint64_t y) { return psi * central_ratio(y, n1, n2, m); };

  // Mode: start at the large-sample mean and step to where the ratio crosses 1.
  std::uint64_t mode;
  if (!(psi > 0)) {
    mode = s.lo;
  } else if (!std::isfinite(psi)) {
    mode = s.hi;
  } else {
    const double mu = cornfield_mean(static_cast<double>(n1), static_cast<double>(n2), static_cast<double>(m), psi,
                                     static_cast<double>(s.lo), static_cast<double>(s.hi));
    mode = static_cast<std::uint64_t>(std::floor(mu));
    mode = std::clamp(mode, s.lo, s.hi);
    mode = walk_to_mode(ratio, mode, s);
  }

  const double sum = sum_from_mode(ratio, mode, s);

  // f(x) / f(mode), walked with rescaling (x may be far in a tail).
  ScaledProduct px;
  if (x > mode) {
    for (std::uint64_t y = mode; y < x; ++y) px.mul(ratio(y));
  } else {
    for (std::uint64_t y = mode; y > x; --y) px.mul(1 / ratio(y - 1));
  }
  return px.log() - std::log(sum);
}

// ---------------------------------------------------------------------------

namespace {

// log of the (unnormalised) term c_y psi^y, c_y = C(n1,y) C(n2,m-y) without
// the constant n1! n2! (it cancels in every ratio); y may be fractional (the
// analytic continuation, for the strided sum below).
double log_term(double y, double n1, double n2, double m, double log_psi) {
  const NoThrowDouble pol;
  return y * log_psi - (boost::math::lgamma(y + 1, pol) + boost::math::lgamma(n1 - y + 1, pol) +
                        boost::math::lgamma(m - y + 1, pol) + boost::math::lgamma(n2 - m + y + 1, pol));
}

// log sum_y c_y psi^y (same scale as log_term) for a batch whose support is too
// wide for the table in log_likelihood_ratios. Both ways below are exact up to
// rounding and a relative 1e-20:
//  - sd <= 64: the Liao-Rosen walk from the mode by the ratio recursion,
//    anchored at the mode by lgamma (O(sd) steps);
//  - sd > 64: the terms are samples of a smooth, log-concave, bell-shaped
//    function whose distance to the support's ends is >= sd^2 (the variance is
//    below each of mu, n1-mu, m-mu, n2-m+mu), so the sum over the integers and
//    the trapezoidal sum with step h = sd/4 both equal its integral up to
//    ~exp(-2 pi^2 (sd/h)^2) ~ 1e-137 relative (Poisson summation; Trefethen &
//    Weideman 2014, "The exponentially convergent trapezoidal rule", SIAM
//    Review 56(3):385-458, section 5): ~80 lgamma evaluations per psi however
//    large the batch.
// lgamma of arguments ~N has an absolute error ~1e-16 N log N, so a batch of a
// million requests is exact to ~1e-9 in log LR.
double log_normaliser_large(std::uint64_t n1, std::uint64_t n2, std::uint64_t m, double log_psi) {
  const Support s = support_of(n1, n2, m);
  const double dn1 = static_cast<double>(n1);
  const double dn2 = static_cast<double>(n2);
  const double dm = static_cast<double>(m);
  const double lo = static_cast<double>(s.lo);
  const double hi = static_cast<double>(s.hi);
  const double psi = std::exp(log_psi);
  const double mu = cornfield_mean(dn1, dn2, dm, psi, lo, hi);
  const double mc = std::clamp(mu, lo + 0.5, hi - 0.5);
  const double var = 1 / (1 / mc + 1 / (dn1 - mc) + 1 / (dm - mc) + 1 / (dn2 - dm + mc));
  const double sd = std::sqrt(var);

  if (!(sd > 64)) {
    auto ratio = [&](std::uint64_t y) { return psi * central_ratio(y, n1, n2, m); };
    const auto mode = walk_to_mode(ratio, std::clamp(static_cast<std::uint64_t>(std::floor(mu)), s.lo, s.hi), s);
    const double sum = sum_from_mode(ratio, mode, s);
    return log_term(static_cast<double>(mode), dn1, dn2, dm, log_psi) + std::log(sum);
  }

  const double h = sd / 4;
  const double top = log_term(mu, dn1, dn2, dm, log_psi);
  double sum = 1;
  for (int dir : {1, -1}) {
    for (int k = 1;; ++k) {
      const double y = mu + dir * k * h;
      if (y < lo || y > hi) break;  // unreachable: the ends are >= sd^2 away
      const double e = log_term(y, dn1, dn2, dm, log_psi) - top;
      if (e < kLogCutoff) break;
      sum += std::exp(e);
    }
  }
  return top + std::log(h * sum);
}

}  // namespace

void log_likelihood_ratios(std::uint64_t x, std::uint64_t n1, std::uint64_t n2, std::uint64_t m,
                           std::span<const double> log_psis, std::span<double> out) {
  const std::size_t k_count = std::min(log_psis.size(), out.size());
  const Support s = support_of(n1, n2, m);
  if (!s.valid || x < s.lo || x > s.hi) {
    std::fill_n(out.begin(), k_count, kNaN);
    return;
  }
  if (s.lo == s.hi) {  // a single possible table: no information
    std::fill_n(out.begin(), k_count, 0.0);
    return;
  }
  const std::uint64_t size = s.hi - s.lo + 1;

  if (size > ErrorRateTest::kExactSupport) {
    const double base = log_normaliser_large(n1, n2, m, 0.0);
    const double dx = static_cast<double>(x);
    for (std::size_t k = 0; k < k_count; ++k) {
      out[k] = dx * log_psis[k] - log_normaliser_large(n1, n2, m, log_psis[k]) + base;
    }
    return;
  }

  // Exact: l[i] = log(c_{lo+i} / c_lo) with c_y = C(n1,y) C(n2,m-y), filled by
  // the ratio recursion; then log sum_y c_y psi^y for each psi from its mode
  // outward. l[x-lo] cancels in the ratio.
  std::array<double, ErrorRateTest::kExactSupport> l;  // NOLINT: filled below
  l[0] = 0;
  for (std::uint64_t i = 1; i < size; ++i) l[i] = l[i - 1] + std::log(central_ratio(s.lo + i - 1, n1, n2, m));
  const auto n = static_cast<std::size_t>(size);

  auto log_norm = [&](double lpsi) {
    // First i with l[i+1] - l[i] + lpsi < 0 (the increments decrease: log-concave).
    std::size_t a = 0, b = n - 1;
    while (a < b) {
      const std::size_t mid = a + (b - a) / 2;
      if (l[mid + 1] - l[mid] + lpsi < 0) {
        b = mid;
      } else {
        a = mid + 1;
      }
    }
    const std::size_t mode = a;
    const double top = l[mode] + static_cast<double>(mode) * lpsi;
    double sum = 1;
    for (std::size_t i = mode + 1; i < n; ++i) {
      const double e = l[i] + static_cast<double>(i) * lpsi - top;
      if (e < kLogCutoff) break;
      sum += std::exp(e);
    }
    for (std::size_t i = mode; i-- > 0;) {
      const double e = l[i] + static_cast<double>(i) * lpsi - top;
      if (e < kLogCutoff) break;
      sum += std::exp(e);
    }
    return top + std::log(sum);
  };

  const double base = log_norm(0.0);
  const double xi = static_cast<double>(x - s.lo);
  for (std::size_t k = 0; k < k_count; ++k) {
    const double lpsi = log_psis[k];
    out[k] = xi * lpsi - log_norm(lpsi) + base;
  }
}

// ---------------------------------------------------------------------------

namespace {

struct Grid {
  std::array<double, ErrorRateTest::kGridSize> psi;
  std::array<double, ErrorRateTest::kGridSize> log_psi;
  Grid() {
    const double step =
        std::log(ErrorRateTest::kMaxOdds / ErrorRateTest::kMinOdds) / static_cast<double>(ErrorRateTest::kGridSize - 1);
    for (std::size_t k = 0; k < ErrorRateTest::kGridSize; ++k) {
      log_psi[k] = std::log(ErrorRateTest::kMinOdds) + step * static_cast<double>(k);
      psi[k] = std::exp(log_psi[k]);
    }
  }
};

const Grid& grid_values() {
  static const Grid grid;
  return grid;
}

}  // namespace

ErrorRateTest::ErrorRateTest() { grid_values(); }

const std::array<double, ErrorRateTest::kGridSize>& ErrorRateTest::grid() { return grid_values().psi; }

void ErrorRateTest::add_batch(std::uint64_t canary_requests, std::uint64_t canary_errors,
                              std::uint64_t control_requests, std::uint64_t control_errors) {
  const std::uint64_t n1 = canary_requests;
  const std::uint64_t n2 = control_requests;
  const std::uint64_t x = std::min(canary_errors, n1);
  const std::uint64_t m = x + std::min(control_errors, n2);
  if (n1 == 0 || n2 == 0 || m == 0 || m == n1 + n2) return;

  std::array<double, kGridSize> lr;
  stats::log_likelihood_ratios(x, n1, n2, m, grid_values().log_psi, lr);  // the free function
  for (std::size_t k = 0; k < kGridSize; ++k) log_lr_[k] += lr[k];
  log_e_ = log_sum_exp(log_lr_) - std::log(static_cast<double>(kGridSize));

  const double total = static_cast<double>(n1 + n2);
  const double a = static_cast<double>(x);
  const double b = static_cast<double>(n1 - x);
  const double c = static_cast<double>(m - x);
  const double d = static_cast<double>(n2 - (m - x));
  mh_numerator_ += a * d / total;
  mh_denominator_ += b * c / total;
  ++batches_;
}

bool ErrorRateTest::rejects(double alpha) const { return alpha > 0 && log_e_ >= -std::log(alpha); }

void ErrorRateTest::reset() { *this = ErrorRateTest(); }

double ErrorRateTest::odds_ratio_estimate() const {
  if (batches_ == 0) return kNaN;
  if (mh_denominator_ == 0) return mh_numerator_ > 0 ? kInf : kNaN;
  return mh_numerator_ / mh_denominator_;
}

OddsRatioMonitor::OddsRatioMonitor(double null_odds_ratio) {
  log_psi0_ = null_odds_ratio >= 1 ? std::log(null_odds_ratio) : 0.0;
  const auto& g = grid_values().log_psi;
  for (std::size_t k = 0; k < kGridSize; ++k) log_psis_[k] = log_psi0_ + g[k];
  log_psis_[kGridSize] = log_psi0_;
  log_s_.fill(-kInf);
}

void OddsRatioMonitor::look(std::uint64_t canary_total, std::uint64_t canary_events, std::uint64_t control_total,
                            std::uint64_t control_events) {
  ++looks_;
  const double t = static_cast<double>(looks_);
  const double log_pi = -std::log(t) - std::log1p(t);  // pi_t = 1 / (t (t+1))

  const std::uint64_t n1 = canary_total;
  const std::uint64_t n2 = control_total;
  const std::uint64_t x = std::min(canary_events, n1);
  const std::uint64_t m = x + std::min(control_events, n2);
  std::array<double, kGridSize + 1> lr{};  // zeros: an uninformative batch
  if (n1 > 0 && n2 > 0 && m > 0 && m < n1 + n2) {
    log_likelihood_ratios(x, n1, n2, m, log_psis_, lr);
    const double base = lr[kGridSize];  // log f(x; psi0) - log f(x; 1)
    for (std::size_t k = 0; k < kGridSize; ++k) lr[k] -= base;
    const double total = static_cast<double>(n1 + n2);
    mh_numerator_ += static_cast<double>(x) * static_cast<double>(n2 - (m - x)) / total;
    mh_denominator_ += static_cast<double>(n1 - x) * static_cast<double>(m - x) / total;
    ++batches_;
  }
  std::array<double, kGridSize + 1> terms;
  for (std::size_t k = 0; k < kGridSize; ++k) {
    // log(S + pi) = logaddexp(log S, log pi)
    const double a = log_s_[k];
    const double b = log_pi;
    const double hi = std::max(a, b);
    const double sum = hi + std::log1p(std::exp(std::min(a, b) - hi));
    log_s_[k] = lr[k] + sum;
    terms[k] = log_s_[k] - std::log(static_cast<double>(kGridSize));
  }
  terms[kGridSize] = -std::log1p(t);  // the starts not reached yet: sum_{s>t} pi_s = 1/(t+1)
  log_e_ = log_sum_exp(terms);
}

double OddsRatioMonitor::odds_ratio_estimate() const {
  if (batches_ == 0) return kNaN;
  if (mh_denominator_ == 0) return mh_numerator_ > 0 ? kInf : kNaN;
  return mh_numerator_ / mh_denominator_;
}

void OddsRatioMonitor::reset() { *this = OddsRatioMonitor(std::exp(log_psi0_)); }

// ---------------------------------------------------------------------------

namespace {

// Upper tail of the standard normal as scipy.special.ndtr(-z) (cephes):
// erf near 0, erfc in the tails.
double normal_sf(double z) {
  const double a = -z * std::numbers::sqrt2 / 2;  // ndtr's argument times 1/sqrt(2)
  const double t = std::abs(a);
  double y;
  if (t < std::numbers::sqrt2 / 2) {
    y = 0.5 + 0.5 * std::erf(a);
  } else {
    y = 0.5 * std::erfc(t);
    if (a > 0) y = 1.0 - y;
  }
  return y;
}

// Mann-Whitney on samples already sorted ascending.
MannWhitney mann_whitney_sorted(std::span<const double> xs, std::span<const double> ys) {
  MannWhitney r;
  const std::uint64_t n1 = xs.size();
  const std::uint64_t n2 = ys.size();
  if (n1 == 0 || n2 == 0) {
    r.u = kNaN;
    r.z = kNaN;
    r.p = kNaN;
    return r;
  }
  // Merge the two sorted samples, giving each run of equal values its average
  // rank; sums kept as integers (twice the ranks) so U is exact.
  std::uint64_t twice_r1 = 0;
  unsigned __int128 tie_term = 0;
  std::size_t i = 0, j = 0;
  std::uint64_t ranked = 0;
  while (i < n1 || j < n2) {
    const double v = (j >= n2 || (i < n1 && xs[i] <= ys[j])) ? xs[i] : ys[j];
    std::uint64_t cx = 0, cy = 0;
    while (i < n1 && xs[i] == v) ++i, ++cx;
    while (j < n2 && ys[j] == v) ++j, ++cy;
    const std::uint64_t c = cx + cy;
    twice_r1 += cx * (2 * ranked + c + 1);
    const unsigned __int128 c128 = c;
    tie_term += c128 * c128 * c128 - c128;
    ranked += c;
  }
  const std::uint64_t n = n1 + n2;
  r.u = static_cast<double>(twice_r1 - n1 * (n1 + 1)) / 2;
  // The same operations as scipy's _get_mwu_z, in the same order.
  const double mu = static_cast<double>(n1 * n2) / 2;
  const double s =
      std::sqrt(static_cast<double>(n1 * n2) / 12 *
                (static_cast<double>(n + 1) - static_cast<double>(tie_term) / static_cast<double>(n * (n - 1))));
  double numerator = r.u - mu;
  numerator -= 0.5;
  r.z = numerator / s;
  r.p = normal_sf(r.z);
  return r;
}

std::vector<double> sorted_copy(std::span<const double> v) {
  std::vector<double> out(v.begin(), v.end());
  std::sort(out.begin(), out.end());
  return out;
}

// Order-preserving map of doubles (not NaN) onto unsigned integers.
std::uint64_t order_key(double d) {
  const auto b = std::bit_cast<std::uint64_t>(d);
  return (b >> 63) ? ~b : (b | (std::uint64_t{1} << 63));
}

double from_order_key(std::uint64_t k) {
  const std::uint64_t b = (k >> 63) ? (k & ~(std::uint64_t{1} << 63)) : ~k;
  return std::bit_cast<double>(b);
}

// #{(i, j): fl(x_i - y_j) <= t}. fl(x - y) is nondecreasing in x and
// nonincreasing in y, so for sorted samples the qualifying j of row i form a
// suffix whose start only moves right as i grows.
std::uint64_t count_at_most(std::span<const double> xs, std::span<const double> ys, double t) {
  std::uint64_t count = 0;
  std::size_t j = 0;
  for (double xv : xs) {
    while (j < ys.size() && xv - ys[j] > t) ++j;
    count += ys.size() - j;
  }
  return count;
}

// The smallest difference above t (+inf if none): in row i it is at the last
// j whose difference exceeds t.
double smallest_above(std::span<const double> xs, std::span<const double> ys, double t) {
  double best = kInf;
  std::size_t j = 0;
  for (double xv : xs) {
    while (j < ys.size() && xv - ys[j] > t) ++j;
    if (j > 0) best = std::min(best, xv - ys[j - 1]);
  }
  return best;
}

}  // namespace

MannWhitney mann_whitney_greater(std::span<const double> x, std::span<const double> y) {
  const auto xs = sorted_copy(x);
  const auto ys = sorted_copy(y);
  return mann_whitney_sorted(xs, ys);
}

double kth_pairwise_difference(std::span<const double> xs, std::span<const double> ys, std::uint64_t k) {
  const std::uint64_t total = static_cast<std::uint64_t>(xs.size()) * ys.size();
  if (k == 0 || k > total) return kNaN;
  // Smallest value t (over the ordered bit patterns) with count(t) >= k: it is
  // one of the differences, as the count only changes at a difference.
  std::uint64_t lo = order_key(xs.front() - ys.back());
  std::uint64_t hi = order_key(xs.back() - ys.front());
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    if (count_at_most(xs, ys, from_order_key(mid)) >= k) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return from_order_key(lo);
}

namespace {

double hodges_lehmann_sorted(std::span<const double> xs, std::span<const double> ys) {
  const std::uint64_t total = static_cast<std::uint64_t>(xs.size()) * ys.size();
  if (total == 0) return kNaN;
  if (total % 2 == 1) return kth_pairwise_difference(xs, ys, (total + 1) / 2);
  const double a = kth_pairwise_difference(xs, ys, total / 2);
  const double b = count_at_most(xs, ys, a) >= total / 2 + 1 ? a : smallest_above(xs, ys, a);
  return (a + b) / 2;  // numpy.median: mean of the two middle values
}

}  // namespace

double hodges_lehmann_shift(std::span<const double> x, std::span<const double> y) {
  const auto xs = sorted_copy(x);
  const auto ys = sorted_copy(y);
  return hodges_lehmann_sorted(xs, ys);
}

LatencyComparison compare_latency(std::span<const double> canary, std::span<const double> control, double max_increase,
                                  double confidence) {
  LatencyComparison r;
  r.canary_samples = canary.size();
  r.control_samples = control.size();
  if (canary.empty() || control.empty() || !(max_increase > -1) || !(confidence > 0 && confidence < 1)) {
    r.u = r.z = r.p = r.ratio = r.ratio_lower = r.ratio_upper = kNaN;
    return r;
  }
  auto log_sorted = [](std::span<const double> v) {
    std::vector<double> out(v.size());
    std::transform(v.begin(), v.end(), out.begin(), [](double s) { return std::log(std::max(s, 1e-9)); });
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto lx = log_sorted(canary);
  const auto ly = log_sorted(control);

  // Subtracting a constant keeps the order, so the shifted copy is sorted.
  const double shift = std::log1p(max_increase);
  std::vector<double> shifted(lx.size());
  std::transform(lx.begin(), lx.end(), shifted.begin(), [&](double v) { return v - shift; });
  const MannWhitney mw = mann_whitney_sorted(shifted, ly);
  r.u = mw.u;
  r.z = mw.z;
  r.p = mw.p;

  r.ratio = std::exp(hodges_lehmann_sorted(lx, ly));

  const std::uint64_t n1 = lx.size();
  const std::uint64_t n2 = ly.size();
  const std::uint64_t total = n1 * n2;
  const double zq = std::numbers::sqrt2 * boost::math::erfc_inv(1 - confidence, NoThrow());  // z_{(1-conf)/2}
  const double c = std::floor(static_cast<double>(total) / 2 -
                              zq * std::sqrt(static_cast<double>(total) * static_cast<double>(n1 + n2 + 1) / 12) + 0.5);
  if (c < 1) {
    r.ratio_lower = 0;
    r.ratio_upper = kInf;
  } else {
    const auto ci = static_cast<std::uint64_t>(c);
    r.ratio_lower = std::exp(kth_pairwise_difference(lx, ly, ci));
    r.ratio_upper = std::exp(kth_pairwise_difference(lx, ly, total + 1 - ci));
  }
  return r;
}

namespace {

// U of xs against ys (both sorted) and its tie-corrected null variance, as in
// mann_whitney_sorted.
void u_and_variance(std::span<const double> xs, std::span<const double> ys, double& u, double& var) {
  const std::uint64_t n1 = xs.size();
  const std::uint64_t n2 = ys.size();
  std::uint64_t twice_r1 = 0;
  unsigned __int128 tie_term = 0;
  std::size_t i = 0, j = 0;
  std::uint64_t ranked = 0;
  while (i < n1 || j < n2) {
    const double v = (j >= n2 || (i < n1 && xs[i] <= ys[j])) ? xs[i] : ys[j];
    std::uint64_t cx = 0, cy = 0;
    while (i < n1 && xs[i] == v) ++i, ++cx;
    while (j < n2 && ys[j] == v) ++j, ++cy;
    const std::uint64_t c = cx + cy;
    twice_r1 += cx * (2 * ranked + c + 1);
    const unsigned __int128 c128 = c;
    tie_term += c128 * c128 * c128 - c128;
    ranked += c;
  }
  const std::uint64_t n = n1 + n2;
  u = static_cast<double>(twice_r1 - n1 * (n1 + 1)) / 2;
  var = static_cast<double>(n1 * n2) / 12 *
        (static_cast<double>(n + 1) - static_cast<double>(tie_term) / static_cast<double>(n * (n - 1)));
}

}  // namespace

StratifiedLatencyComparison compare_latency_stratified(std::span<const LatencyStratum> strata, double max_increase,
                                                       double confidence, std::size_t display_samples, bool estimate,
                                                       double tolerance_seconds) {
  StratifiedLatencyComparison r;
  r.z = r.p = r.ratio = r.ratio_lower = r.ratio_upper = kNaN;
  if (!(max_increase > -1) || !(confidence > 0 && confidence < 1)) return r;
  const double shift = std::log1p(max_increase);
  auto log_of = [](double s) { return std::log(std::max(s, 1e-9)); };
  std::vector<double> pooled_x;
  std::vector<double> pooled_y;
  std::vector<double> xs;
  std::vector<double> ys;
  double numerator = 0;
  double variance = 0;
  for (const auto& st : strata) {
    if (st.canary.empty() || st.control.empty()) continue;
    xs.resize(st.canary.size());
    ys.resize(st.control.size());
    std::transform(st.canary.begin(), st.canary.end(), xs.begin(), [&](double v) {
      return tolerance_seconds > 0 ? std::log(std::max(v - tolerance_seconds, 1e-12)) - shift : log_of(v) - shift;
    });
    std::transform(st.control.begin(), st.control.end(), ys.begin(), log_of);
    std::sort(xs.begin(), xs.end());
    std::sort(ys.begin(), ys.end());
    double u = 0;
    double v = 0;
    u_and_variance(xs, ys, u, v);
    if (!(v > 0)) continue;
    const double m = static_cast<double>(xs.size());
    const double n = static_cast<double>(ys.size());
    const double w = 1 / (m + n + 1);
    numerator += w * (u - m * n / 2);
    variance += w * w * v;
    ++r.strata;
    r.canary_samples += xs.size();
    r.control_samples += ys.size();
    if (estimate) {
      pooled_x.insert(pooled_x.end(), st.canary.begin(), st.canary.end());
      pooled_y.insert(pooled_y.end(), st.control.begin(), st.control.end());
    }
  }
  if (r.strata == 0) return r;
  r.z = numerator / std::sqrt(variance);
  r.p = normal_sf(r.z);
  if (!estimate) return r;
  auto thin = [&](std::vector<double>& v) {
    if (display_samples == 0 || v.size() <= display_samples) return;
    std::sort(v.begin(), v.end());
    std::vector<double> out(display_samples);
    const double n = static_cast<double>(v.size());
    for (std::size_t i = 0; i < display_samples; ++i) {
      out[i] = v[static_cast<std::size_t>((static_cast<double>(i) + 0.5) * n / static_cast<double>(display_samples))];
    }
    v.swap(out);
  };
  thin(pooled_x);
  thin(pooled_y);
  const LatencyComparison pooled = compare_latency(pooled_x, pooled_y, max_increase, confidence);
  r.ratio = pooled.ratio;
  r.ratio_lower = pooled.ratio_lower;
  r.ratio_upper = pooled.ratio_upper;
  return r;
}

// ---------------------------------------------------------------------------

ChiSquare chi_square_gof(std::span<const double> observed, std::span<const double> expected_probabilities) {
  ChiSquare r;
  const std::size_t k = observed.size();
  double total = 0;
  double psum = 0;
  bool ok = k >= 2 && expected_probabilities.size() == k;
  for (std::size_t i = 0; ok && i < k; ++i) {
    ok = observed[i] >= 0 && expected_probabilities[i] >= 0;
    total += observed[i];
    psum += expected_probabilities[i];
  }
  if (!ok || !(total > 0) || !(psum > 0)) {
    r.statistic = r.dof = r.p = kNaN;
    return r;
  }
  double stat = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const double p = psum == 1 ? expected_probabilities[i] : expected_probabilities[i] / psum;
    const double e = p * total;
    if (e == 0) {
      if (observed[i] > 0) stat = kInf;
      continue;
    }
    stat += (observed[i] - e) * (observed[i] - e) / e;
  }
  r.statistic = stat;
  r.dof = static_cast<double>(k - 1);
  r.p = std::isinf(stat) ? 0.0 : boost::math::gamma_q(r.dof / 2, stat / 2, NoThrow());
  return r;
}

ChiSquare sample_ratio_mismatch(std::uint64_t canary, std::uint64_t control, double canary_weight) {
  const std::array<double, 2> observed{static_cast<double>(canary), static_cast<double>(control)};
  const std::array<double, 2> expected{canary_weight, 1 - canary_weight};
  return chi_square_gof(observed, expected);
}

double srm_log_e(std::uint64_t canary, std::uint64_t control, double weight, double concentration) {
  if (!(weight > 0 && weight < 1) || !(concentration > 0) || !std::isfinite(concentration)) return kNaN;
  if (canary == 0 && control == 0) return 0;
  const NoThrowDouble pol;
  auto lbeta = [&](double a, double b) {
    return boost::math::lgamma(a, pol) + boost::math::lgamma(b, pol) - boost::math::lgamma(a + b, pol);
  };
  const double a = concentration * weight;
  const double b = concentration * (1 - weight);
  const double x = static_cast<double>(canary);
  const double y = static_cast<double>(control);
  return lbeta(x + a, y + b) - lbeta(a, b) - x * std::log(weight) - y * std::log1p(-weight);
}

// ---------------------------------------------------------------------------

namespace {

// Continued fraction of the incomplete beta, I_x(a,b) = x^a (1-x)^b / (a B(a,b))
// * betacf(a,b,x), by the modified Lentz method (Numerical Recipes 3rd ed.
// section 6.4, Betacf). Converges fast for x < (a+1)/(a+b+2), in
// O(sqrt(max(a,b))) iterations.
double beta_continued_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEps = 1e-16;
  const double qab = a + b;
  const double qap = a + 1;
  const double qam = a - 1;
  double c = 1;
  double d = 1 - qab * x / qap;
  if (std::abs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  const int max_iter = 200 + static_cast<int>(10 * std::sqrt(std::max(a, b)));
  for (int m = 1; m <= max_iter; ++m) {
    const double dm = m;
    const double m2 = 2 * dm;
    double aa = dm * (b - dm) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::abs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + dm) * (qab + dm) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::abs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::abs(del - 1) < kEps) break;
  }
  return h;
}

}  // namespace

double binomial_bound_log_e(std::uint64_t n, std::uint64_t x, double p0) {
  if (!(p0 > 0 && p0 < 1) || x > n) return kNaN;
  if (n == 0) return 0;
  const double a = static_cast<double>(x) + 1;
  const double b = static_cast<double>(n - x) + 1;
  const double log_one_minus_p0 = std::log1p(-p0);
  if (p0 > (a + 1) / (a + b + 2)) {
    // Observed rate below ~p0: E = p0 (1-p0) / b * betacf(b, a, 1-p0) / (1-p0).
    const double ratio = p0 * (1 - p0) / b * beta_continued_fraction(b, a, 1 - p0);
    return std::log(ratio) - log_one_minus_p0;
  }
  const double upper = boost::math::ibetac(a, b, p0, NoThrow());
  const double density = boost::math::ibeta_derivative(a, b, p0, NoThrow());
  double log_density;
  if (density >= DBL_MIN && std::isfinite(density)) {
    log_density = std::log(density);
  } else {
    // Far above p0 the density at p0 underflows; take its log directly.
    const double log_beta =
        boost::math::lgamma(a, NoThrow()) + boost::math::lgamma(b, NoThrow()) - boost::math::lgamma(a + b, NoThrow());
    log_density = static_cast<double>(x) * std::log(p0) + static_cast<double>(n - x) * log_one_minus_p0 - log_beta;
  }
  return std::log(upper) - log_density - log_one_minus_p0;
}

void BinomialBoundTest::add(std::uint64_t requests, std::uint64_t errors) {
  requests_ += requests;
  errors_ += std::min(errors, requests);
}

bool BinomialBoundTest::rejects(double alpha) const { return alpha > 0 && log_e_value() >= -std::log(alpha); }

// ---------------------------------------------------------------------------

double alpha_spent(double alpha, std::uint64_t look) {
  if (look == 0) return 0;
  const double k = static_cast<double>(look);
  return alpha * 6 / (std::numbers::pi * std::numbers::pi * k * k);
}

}  // namespace canaryd::rollout::stats
