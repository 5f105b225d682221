// Statistics for the canary judge (issue 14): the sequential error-rate test,
// the latency rank test, the sample-ratio-mismatch check and the critical
// error-rate guard. Pure functions and small value classes: no I/O, no clock,
// no exceptions (a degenerate input gives NaN or "no evidence", as documented
// per function). Every method names its source; the unit test checks each
// against tables computed by scipy (tests/unit/rollout/stats_reference.py).
//
// "Always valid" below means: the probability that the test EVER rejects a
// true null, however often and whenever it is looked at, is <= alpha. That is
// what a judge that looks every `interval` for a whole rollout needs; a
// fixed-horizon p-value recomputed at each look does not have it.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

namespace canaryd::rollout::stats {

// ---------------------------------------------------------------------------
// Fisher's noncentral hypergeometric distribution.

// log P(X = x) where X is the number of canary errors in a 2x2 table with n1
// canary requests, n2 control requests and m errors in all, when the canary's
// error odds are psi = exp(log_psi) times control's:
//   P(x) = C(n1,x) C(n2,m-x) psi^x / sum_y C(n1,y) C(n2,m-y) psi^y,
//   support max(0, m-n2) .. min(n1, m); -inf outside it (and for m > n1+n2).
// scipy.stats.nchypergeom_fisher(M=n1+n2, n=n1, N=m, odds=psi); log_psi = 0 is
// the central hypergeometric, scipy.stats.hypergeom(M=n1+n2, n=n1, N=m).
// Method: Liao & Rosen (2001), "Fast and stable algorithms for computing and
// sampling from the noncentral hypergeometric distribution", The American
// Statistician 55(4):366-369: terms built by the ratio recursion
//   f(y+1)/f(y) = psi (n1-y)(m-y) / ((y+1)(n2-m+y+1))
// outward from the mode (the distribution is log-concave), stopping once a term
// is below 1e-20 of the sum. Exact up to rounding; O(|x-mode| + sd) work.
double log_fnch_pmf(std::uint64_t x, std::uint64_t n1, std::uint64_t n2, std::uint64_t m, double log_psi);

// ---------------------------------------------------------------------------
// Sequential test of the canary's error rate against control's.

// H0: in every batch the canary's error odds are <= control's (odds ratio
// psi <= 1); H1: the canary is worse. Always valid at any alpha.
//
// Method: each batch j (requests and errors of both arms since the previous
// look) is conditioned on its margins (arm sizes n1, n2 and total errors m_j),
// as in Fisher's exact test (Fisher 1935, "The logic of inductive inference",
// JRSS 98(1):39-82). Given the margins, the canary's errors x_j follow Fisher's
// noncentral hypergeometric with the batch's odds ratio psi, whatever the
// common error rate is; so a provider-wide incident that raises both arms
// alike is no evidence. For a fixed psi_k > 1 the product of the conditional
// likelihood ratios  prod_j f(x_j; psi_k) / f(x_j; 1)  is a nonnegative
// martingale with mean 1 under psi = 1, and a supermartingale under psi < 1
// (the ratio is increasing in x and the family has a monotone likelihood
// ratio, so x is stochastically smaller). The mixture over a fixed grid
//   E_t = (1/K) sum_k prod_{j<=t} LR_j(psi_k),  psi_k log-spaced in [1.1, 50], K = 24
// is then a nonnegative supermartingale with E_0 = 1, and by Ville's inequality
// (Ville 1939, "Etude critique de la notion de collectif"; see Ramdas, Grunwald,
// Vovk & Shafer 2023, "Game-theoretic statistics and safe anytime-valid
// inference", Statistical Science 38(4):576-601, section 3)
//   P_H0(sup_t E_t >= 1/alpha) <= alpha.
// The grid mixture is the discrete form of Robbins' method of mixtures (Robbins
// 1970, "Statistical methods related to the law of the iterated logarithm",
// Ann. Math. Statist. 41(5):1397-1409); uniform weights, the grid top 50
// covering an error rate ~5% against ~0.1%.
//
// The null is exact whatever the error rates do within or across batches: if
// requests are split at random and the arm has no effect, the canary's
// requests are a uniformly random subset of the batch's, so given the batch's
// errors x_j is hypergeometric. (The unit is the request: errors correlated
// within a sticky key, e.g. one user retrying a failing prompt, are counted as
// independent evidence.)
//
// Batches with no errors or an empty arm carry no information and change
// nothing. Cost per look, no heap: for a support (min(n1,m) - max(0,m-n2) + 1)
// up to kExactSupport, the terms' logs by the ratio recursion of Liao & Rosen
// (see log_fnch_pmf) and, per psi, a sum outward from the mode: O(support +
// K sd), ~0.1 ms at the widest. Wider supports (both arms and the error count
// in the thousands within one look) stay exact: the sums are anchored at the
// mode by lgamma and walked (sd <= 64) or, for sd > 64, taken as a trapezoidal
// sum with step sd/4, which is exponentially accurate for such a smooth,
// log-concave bell (see stats.cpp): O(K) lgamma calls, ~0.2 ms however large
// the batch. lgamma rounding leaves ~1e-9 absolute error in log LR for a batch
// of a million requests. (A normal approximation of the noncentral
// hypergeometric was tried and rejected: for x a few sd out it overstates the
// likelihood ratio by 10x and more, and E_H0[LR] is far above 1: ~1e97 for
// 5000 errors among 5000 canary and 45000 control requests.)
class ErrorRateTest {
 public:
  static constexpr std::size_t kGridSize = 24;
  static constexpr double kMinOdds = 1.1;
  static constexpr double kMaxOdds = 50;
  static constexpr std::uint64_t kExactSupport = 4096;

  ErrorRateTest();

  // One look's new data. errors above requests are clamped to requests (the
  // window's counters are read without a lock and may disagree by a request).
  void add_batch(std::uint64_t canary_requests, std::uint64_t canary_errors, std::uint64_t control_requests,
                 std::uint64_t control_errors);

  // log E_t; 0 before any informative batch.
  double log_e_value() const { return log_e_; }
  // E_t >= 1/alpha.
  bool rejects(double alpha) const;
  void reset();

  // Mantel-Haenszel estimate of the common odds ratio over the batches seen,
  // sum_j (a_j d_j / N_j) / sum_j (b_j c_j / N_j) with a, b the canary's errors
  // and successes and c, d control's (Mantel & Haenszel 1959, "Statistical
  // aspects of the analysis of data from retrospective studies of disease",
  // JNCI 22(4):719-748). For display: O(1) per batch, close to the conditional
  // MLE. NaN before any informative batch, +inf when no batch has a control
  // error or canary success.
  double odds_ratio_estimate() const;

  // Batches that carried information (m > 0, both arms nonempty, support > 1).
  std::uint64_t informative_batches() const { return batches_; }

  // psi_k = kMinOdds * (kMaxOdds / kMinOdds)^(k / (K-1)).
  static const std::array<double, kGridSize>& grid();
  // sum_j log LR_j(psi_k) per grid point.
  const std::array<double, kGridSize>& log_likelihood_ratios() const { return log_lr_; }

 private:
  std::array<double, kGridSize> log_lr_{};
  double log_e_ = 0;
  double mh_numerator_ = 0;
  double mh_denominator_ = 0;
  std::uint64_t batches_ = 0;
};

// log LR(psi) = log f(x; psi) - log f(x; 1) of one 2x2 table (the quantity
// ErrorRateTest accumulates, by the methods described there); written into
// out[k] for log_psis[k]; NaN for x outside the support, 0 for a one-point
// support. Exposed for tests and the simulator.
void log_likelihood_ratios(std::uint64_t x, std::uint64_t n1, std::uint64_t n2, std::uint64_t m,
                           std::span<const double> log_psis, std::span<double> out);

// The judge's form of the test above, for a whole rollout: H0 "in every batch
// the canary's odds are <= psi0 times control's" (psi0 = 1 for errors; 1 + the
// allowed increase for a quality signal), always valid at any alpha, and quick
// to notice a canary that turns bad late.
//
// ErrorRateTest's product of likelihood ratios has one flaw for a judge that
// runs for an hour: a long healthy stretch pushes every prod_j LR_j(psi_k)
// far below 1, so a canary that degrades at minute 40 must first win that
// deficit back (at 10 000 healthy requests, hundreds of errors). The monitor
// therefore also mixes over the look s at which the canary may have turned
// bad (Lorden 1971, "Procedures for reacting to a change in distribution",
// Ann. Math. Statist. 42(6):1897-1908, and Shiryaev-Roberts, take the
// alternative to start at an unknown time; here the start is mixed with
// weights that sum to 1 so the result stays an e-process):
//   E_t = sum_{s<=t} pi_s (1/K) sum_k prod_{j=s..t} LR_j(psi0 g_k)  +  sum_{s>t} pi_s,
//   pi_s = 1 / (s (s+1))  (sum 1),  g_k the ErrorRateTest grid (1.1 .. 50).
// Each term is a nonnegative supermartingale under H0 that equals pi_s until
// its start (the conditional LR against psi0 has mean <= 1 for any psi <= psi0
// by the monotone likelihood ratio of Fisher's noncentral hypergeometric), so
// E_t is one with E_0 = 1 and Ville's inequality gives
// P_H0(sup_t E_t >= 1/alpha) <= alpha (Ramdas et al. 2023, section 3). The price
// of the mixture is log(s (s+1)) nats of evidence for a change at look s
// (log 2 at the first look, 9.6 at look 120 = 20 minutes at 10 s), against the
// unbounded deficit of a plain product. O(K) per look on top of the batch's
// likelihood ratios (log_likelihood_ratios), recursion in logs:
//   S_k(t) = LR_t(psi0 g_k) (S_k(t-1) + pi_t),   E_t = (1/K) sum_k S_k(t) + 1/(t+1).
class OddsRatioMonitor {
 public:
  static constexpr std::size_t kGridSize = ErrorRateTest::kGridSize;

  // psi0 >= 1 (the null's largest odds ratio); NaN or below 1 is taken as 1.
  explicit OddsRatioMonitor(double null_odds_ratio = 1);

  // One look: the counts since the previous look (all zero is fine: the look
  // still counts for pi). Counts above their totals are clamped.
  void look(std::uint64_t canary_total, std::uint64_t canary_events, std::uint64_t control_total,
            std::uint64_t control_events);

  double log_e_value() const { return log_e_; }
  bool rejects(double alpha) const { return alpha > 0 && log_e_ >= -std::log(alpha); }
  std::uint64_t looks() const { return looks_; }
  std::uint64_t informative_batches() const { return batches_; }
  double null_odds_ratio() const { return std::exp(log_psi0_); }
  // Mantel-Haenszel common odds ratio over every batch seen (as ErrorRateTest).
  double odds_ratio_estimate() const;
  void reset();

 private:
  double log_psi0_ = 0;
  std::array<double, kGridSize + 1> log_psis_{};  // psi0 g_k, then psi0 itself
  std::array<double, kGridSize> log_s_{};         // log S_k(t)
  double log_e_ = 0;
  std::uint64_t looks_ = 0;
  std::uint64_t batches_ = 0;
  double mh_numerator_ = 0;
  double mh_denominator_ = 0;
};

// ---------------------------------------------------------------------------
// Rank tests for latency.

struct MannWhitney {
  double u = 0;  // U of x: #{x_i > y_j} + #{x_i == y_j} / 2
  double z = 0;
  double p = 0;  // one-sided, H1: x stochastically greater than y
};

// Mann-Whitney U test (Mann & Whitney 1947, Ann. Math. Statist. 18(1):50-60),
// large-sample normal approximation with the tie-corrected variance
//   sigma^2 = n1 n2 / 12 ((n+1) - sum_t (t^3 - t) / (n (n-1)))
// and continuity correction z = (U - n1 n2 / 2 - 0.5) / sigma, p = 1 - Phi(z)
// (Hollander, Wolfe & Chicken 2014, "Nonparametric Statistical Methods" 3rd
// ed., section 4.1). Same numbers as scipy.stats.mannwhitneyu(x, y,
// alternative='greater', method='asymptotic', use_continuity=True). Values must
// not be NaN. O((n1+n2) log(n1+n2)); copies and sorts both samples. NaN U, z
// and p when either sample is empty; all values tied gives z = -inf, p = 1 as
// scipy.
MannWhitney mann_whitney_greater(std::span<const double> x, std::span<const double> y);

// Hodges-Lehmann two-sample shift (Hodges & Lehmann 1963, "Estimates of
// location based on rank tests", Ann. Math. Statist. 34(2):598-611): the median
// of the n1 n2 differences x_i - y_j, the mean of the two middle ones for an
// even count (numpy.median(numpy.subtract.outer(x, y))). NaN when either is
// empty. Method: the k-th smallest difference is found without forming the
// n1 n2 differences, by bisection on the value (over the ordered bit patterns
// of doubles, <= 64 steps) with the O(n1+n2) two-pointer count of differences
// <= t on the sorted samples, the "selection in X + Y" problem of Johnson &
// Mizoguchi (1978, SIAM J. Comput. 7(2):147-153) solved by counting instead of
// their O(n log n) pruning: O((n1+n2) log(n1+n2) + 64 (n1+n2)), exact (it
// returns one of the floating-point differences, as numpy does).
double hodges_lehmann_shift(std::span<const double> x, std::span<const double> y);

// The k-th smallest (1-based) of the n1 n2 floating-point differences x_i - y_j
// of two samples already sorted ascending (finite values), by the bisection
// described above: O(64 (n1+n2)). NaN when k is 0 or > n1 n2.
double kth_pairwise_difference(std::span<const double> x_sorted, std::span<const double> y_sorted, std::uint64_t k);

struct LatencyComparison {
  std::size_t canary_samples = 0;
  std::size_t control_samples = 0;
  double u = 0;  // Mann-Whitney U of the shifted canary log latencies
  double z = 0;
  double p = 0;  // H0: canary <= (1 + max_increase) x control; small p = canary too slow
  // exp(HL(log canary, log control)): the canary/control latency ratio, and its
  // confidence interval (0 / +inf bounds when the samples are too small).
  double ratio = 0;
  double ratio_lower = 0;
  double ratio_upper = 0;
};

// H0: the canary's latency is at most (1 + max_increase) times control's (a
// scale family: log canary <= log control + log(1 + max_increase)), H1: slower.
// Mann-Whitney greater on (log x_i - log1p(max_increase)) against log y_j; the
// ratio is exp of the Hodges-Lehmann shift of the logs; the interval is the
// Lehmann-Moses one (Lehmann 1963, "Nonparametric confidence intervals for a
// shift parameter", Ann. Math. Statist. 34(4):1507-1512; Hollander, Wolfe &
// Chicken 2014, section 4.3, large-sample critical value):
//   C = floor(n1 n2 / 2 - z_{(1-confidence)/2} sqrt(n1 n2 (n1+n2+1) / 12) + 0.5),
//   [D_(C), D_(n1 n2 + 1 - C)] of the ordered log differences, exponentiated;
// unbounded (0, +inf) when C < 1. Latencies are seconds; values below 1e-9
// are raised to 1e-9 (a 0 from a coarse clock). NaN fields when either sample
// is empty.
LatencyComparison compare_latency(std::span<const double> canary, std::span<const double> control, double max_increase,
                                  double confidence);

// One time slice of both arms' latencies (seconds), for the stratified test.
struct LatencyStratum {
  std::span<const double> canary;
  std::span<const double> control;
};

struct StratifiedLatencyComparison {
  std::size_t strata = 0;          // strata with samples on both sides (the others are left out)
  std::size_t canary_samples = 0;  // in those strata
  std::size_t control_samples = 0;
  double z = 0;  // van Elteren's z of the shifted canary log latencies
  double p = 0;  // one-sided, H0: canary <= (1 + max_increase) x control in every stratum
  // exp(HL) and its Lehmann-Moses interval over the pooled samples of those
  // strata (display: compare_latency's ratio fields), each arm thinned to at
  // most `display_samples` evenly spaced order statistics first (the
  // (i + 1/2) n / cap-th of the sorted sample): HL is O(64 n) per quantile and
  // a judge looks every few seconds; the thinned estimate is within a few
  // tenths of a percent of the full one.
  double ratio = 0;
  double ratio_lower = 0;
  double ratio_upper = 0;
};

// compare_latency's hypothesis tested within time slices: the window's slices
// are the strata, so canary and control samples are only ever ranked against
// each other's from the same few seconds. A pooled test compares two mixtures
// over time whose mixing weights differ as soon as the arms' traffic shares
// change within the window (a step from 10 % to 25 % puts most canary samples
// in the window's last minutes, most control samples before): a provider
// slower at one moment then looks like a slow canary. Stratifying removes
// that. Method: van Elteren (1960), "On the combination of independent
// two-sample tests of Wilcoxon", Bull. Int. Statist. Inst. 37:351-361: per
// stratum s with sizes m_s, n_s the Mann-Whitney U_s of (log canary -
// log1p(max_increase)) against log control, its null mean m_s n_s / 2 and
// tie-corrected variance V_s (as mann_whitney_greater), weights
// w_s = 1 / (m_s + n_s + 1), and
//   z = sum_s w_s (U_s - m_s n_s / 2) / sqrt(sum_s w_s^2 V_s),  p = 1 - Phi(z)
// (no continuity correction: with one stratum z is mann_whitney_greater's
// without its -0.5). Strata with an empty side, or whose samples are all tied
// (V_s = 0), are left out. NaN z/p and ratio fields when none is left.
// O(N log N) in all samples.
// `estimate` false leaves the ratio fields NaN (they are shown, never decide;
// canaryd simulate skips them). `tolerance_seconds` t >= 0 widens H0 to
// "canary <= (1 + max_increase) x control + t": the canary values enter as
// log(max(x - t, 1e-12)) - log1p(max_increase), a nondecreasing map of x, so
// the rank test stays valid; with t = 0 it is the test above. A scale bound
// alone is meaningless for calls of a millisecond, where scheduling noise
// between two processes is easily 2x.
StratifiedLatencyComparison compare_latency_stratified(std::span<const LatencyStratum> strata, double max_increase,
                                                       double confidence, std::size_t display_samples = 200,
                                                       bool estimate = true, double tolerance_seconds = 0);

// ---------------------------------------------------------------------------
// Sample-ratio mismatch.

struct ChiSquare {
  double statistic = 0;
  double dof = 0;
  double p = 0;
};

// Pearson's chi-square goodness of fit (Pearson 1900, Philosophical Magazine
// 5th ser. 50(302):157-175), statistic
// sum (o_i - e_i)^2 / e_i with e_i = p_i * sum(o) (p normalised to sum 1),
// dof = k - 1, p = Q(dof/2, statistic/2) (regularised upper incomplete gamma,
// boost::math::gamma_q). scipy.stats.chisquare(f_obs, f_exp=p*sum(f_obs)). A
// category with p_i = 0 adds 0 if empty and makes the statistic +inf if not.
// NaN when the sizes differ, k < 2, there are no observations or a p_i < 0.
ChiSquare chi_square_gof(std::span<const double> observed, std::span<const double> expected_probabilities);

// The SRM check of a two-arm split: chi_square_gof({canary, control},
// {weight, 1 - weight}) (Fabijan et al. 2019, "Diagnosing sample ratio
// mismatch in online controlled experiments", KDD '19).
ChiSquare sample_ratio_mismatch(std::uint64_t canary, std::uint64_t control, double canary_weight);

// Sequential SRM of a two-arm split: log of the Bayes factor of the users seen
// (canary, control) for "each new user is on the canary with probability q,
// q ~ Beta(c w, c (1-w))" against "with probability w":
//   log E = log B(x + c w, y + c (1-w)) - log B(c w, c (1-w)) - x log w - y log(1-w).
// Under H0 (the split assigns each user independently with probability w) E is
// a nonnegative martingale in the users as they arrive, so pausing at
// E >= 1/alpha is always valid however often it is looked at: the two-arm case
// of Lindon & Malek (2022), "Anytime-valid inference for multinomial count
// data", NeurIPS 2022 (the Dirichlet-multinomial test behind Optimizely's and
// Netflix's sequential SRM checks). c = `concentration` sets which mismatch it
// is quickest on (prior sd of q: sqrt(w (1-w) / (c+1)), 0.03 at w = 0.1,
// c = 100). NaN unless 0 < w < 1 and c > 0; 0 for no users.
double srm_log_e(std::uint64_t canary, std::uint64_t control, double weight, double concentration = 100);

// ---------------------------------------------------------------------------
// Critical error-rate guard.

// log of the e-value of n Bernoulli trials with x successes for H0: p <= p0,
//   E = integral_{p0}^{1} (p/p0)^x ((1-p)/(1-p0))^(n-x) dp / (1 - p0)
//     = B(x+1, n-x+1) I_{1-p0}(n-x+1, x+1) / ((1 - p0) p0^x (1-p0)^(n-x)),
// the binomial likelihood ratio mixed over a uniform prior on (p0, 1]. Each
// ratio (p/p0)^X ((1-p)/(1-p0))^(1-X) has expectation <= 1 for any true rate
// <= p0, so E is a nonnegative supermartingale in the trials and Ville's
// inequality makes "reject when E >= 1/alpha" always valid (Ramdas et al. 2023,
// section 3; Robbins 1970). Computed as the ratio I/I' of boost::math::ibetac to
// boost::math::ibeta_derivative, or, when the observed rate is below ~p0 and
// both would underflow, as (p0 (1-p0) / (n-x+1)) times the continued fraction
// of the incomplete beta (Press et al. 2007, "Numerical Recipes" 3rd ed.,
// section 6.4, evaluated by the modified Lentz method). 0 for n = 0; NaN unless
// 0 < p0 < 1 and x <= n.
double binomial_bound_log_e(std::uint64_t n, std::uint64_t x, double p0);

// Always-valid test of H0: error rate <= p0 (the critical_error_rate guard).
class BinomialBoundTest {
 public:
  explicit BinomialBoundTest(double p0) : p0_(p0) {}

  void add(std::uint64_t requests, std::uint64_t errors);  // errors clamped to requests
  double log_e_value() const { return binomial_bound_log_e(requests_, errors_, p0_); }
  bool rejects(double alpha) const;
  void reset() { requests_ = errors_ = 0; }

  double p0() const { return p0_; }
  std::uint64_t requests() const { return requests_; }
  std::uint64_t errors() const { return errors_; }

 private:
  double p0_;
  std::uint64_t requests_ = 0;
  std::uint64_t errors_ = 0;
};

// ---------------------------------------------------------------------------
// Repeated fixed-horizon tests.

// The level for look `look` (1, 2, ...) of a test repeated at every interval:
// alpha * 6 / (pi^2 look^2). The levels sum to alpha over all looks
// (sum 1/k^2 = pi^2/6, Euler's Basel sum), so by the union (Bonferroni)
// bound the chance that any look rejects a true null is <= alpha, with no
// assumption on how the looks depend on each other. 0 for look 0.
double alpha_spent(double alpha, std::uint64_t look);

}  // namespace canaryd::rollout::stats
