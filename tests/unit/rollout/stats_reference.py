#!/usr/bin/python3
"""Reference tables for tests/unit/rollout/stats_test.cpp, computed with scipy.

    /usr/bin/python3 tests/unit/rollout/stats_reference.py > tests/unit/rollout/stats_reference.inc

The generated .inc is committed; the unit test does not need Python. Needs
Debian 12's python3-scipy (1.10.1) and python3-numpy. On a machine with
libboost1.81-dev, `apt-get install python3-scipy` is refused (it pulls
python3-pythran -> libboost-dev 1.74, which conflicts); scipy does not need
pythran at run time, so unpack it beside the system instead:
    apt-get install -y python3-numpy python3-decorator liblbfgsb0 libblas3 liblapack3 libgfortran5
    cd /tmp && apt-get download python3-scipy && dpkg-deb -x python3-scipy_*.deb scipy-root
    PYTHONPATH=/tmp/scipy-root/usr/lib/python3/dist-packages /usr/bin/python3 <this script> > ...

Each table is checked here against an independent computation (exact
rational arithmetic, numerical quadrature, a direct formula) before it is
written; a disagreement stops the script. Floats are written with repr(),
which round-trips exactly.
"""

import math
import sys
from fractions import Fraction

import numpy as np
import scipy
import scipy.integrate
import scipy.special as sp
import scipy.stats as st

M64 = (1 << 64) - 1


def fmt(v):
    v = float(v)
    if math.isnan(v):
        return "kNaN"
    if math.isinf(v):
        return "kInf" if v > 0 else "-kInf"
    return repr(v)


def note(*a):
    print(*a, file=sys.stderr)


# --- the deterministic sample generator shared with the C++ test ------------
# splitmix64 (Steele, Lea & Flood 2014); every operation below is exact or a
# correctly rounded IEEE operation, so C++ gets the same doubles.
def splitmix64(seed):
    state = seed & M64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def sample(seed, count, scale, quantum):
    """Skewed positive values ("latencies"): scale * (0.2 + 3 u1^2 + u2),
    floored to a multiple of 1/quantum when quantum > 0 (ties)."""
    g = splitmix64(seed)
    out = []
    for _ in range(count):
        u1 = ((next(g) >> 11) + 0.5) / 9007199254740992.0
        u2 = ((next(g) >> 11) + 0.5) / 9007199254740992.0
        v = scale * (0.2 + 3.0 * u1 * u1 + u2)
        if quantum > 0:
            v = math.floor(v * quantum) / quantum
        out.append(v)
    return out


# --- 1. Fisher's noncentral hypergeometric ----------------------------------
def exact_logpmf(x, n1, n2, m, psi):
    """Exact rational arithmetic on the binary value of psi."""
    p = Fraction(psi)
    num, den = p.numerator, p.denominator
    lo, hi = max(0, m - n2), min(n1, m)
    terms = {y: math.comb(n1, y) * math.comb(n2, m - y) * num**y * den ** (hi - y) for y in range(lo, hi + 1)}
    return math.log(terms[x]) - math.log(sum(terms.values()))


def scipy_logpmf(x, n1, n2, m, log_psi):
    if log_psi == 0.0:
        return float(st.hypergeom(n1 + n2, n1, m).logpmf(x))
    return float(st.nchypergeom_fisher(M=n1 + n2, n=n1, N=m, odds=math.exp(log_psi)).logpmf(x))


fnch_rows = []
worst = 0.0
for (n1, n2, m) in [(1, 1, 1), (5, 15, 6), (7, 3, 9), (20, 180, 3), (30, 270, 12), (50, 50, 40), (100, 900, 60),
                    (300, 2700, 80)]:
    for log_psi in [0.0, -1.2, math.log(1.1), 1.0, math.log(50.0), 5.0]:
        lo, hi = max(0, m - n2), min(n1, m)
        for x in range(lo, hi + 1):
            ref = scipy_logpmf(x, n1, n2, m, log_psi)
            ex = exact_logpmf(x, n1, n2, m, math.exp(log_psi))
            worst = max(worst, abs(ref - ex))
            fnch_rows.append((x, n1, n2, m, log_psi, ref))
assert worst < 1e-10, worst
note(f"fnch: {len(fnch_rows)} rows, scipy vs exact rational: max |dlog| {worst:.2e}")

# --- 2. the sequential error-rate test --------------------------------------
K = 24
step = math.log(50.0 / 1.1) / (K - 1)
grid_log = [math.log(1.1) + step * k for k in range(K)]
grid = [math.exp(v) for v in grid_log]


def log_lr_scipy(x, n1, n2, m):
    h = st.hypergeom(n1 + n2, n1, m).logpmf(x)
    return [float(st.nchypergeom_fisher(M=n1 + n2, n=n1, N=m, odds=p).logpmf(x) - h) for p in grid]


def log_lr_gammaln(x, n1, n2, m):
    """log f(x; psi) - log f(x; 1) over the whole support with scipy.special
    (gammaln, logsumexp): independent of BiasedUrn, whose tails scipy truncates
    at a relative 1e-12 (logpmf -inf far from the mode)."""
    lo, hi = max(0, m - n2), min(n1, m)
    y = np.arange(lo, hi + 1, dtype=float)
    lc = -(sp.gammaln(y + 1) + sp.gammaln(n1 - y + 1) + sp.gammaln(m - y + 1) + sp.gammaln(n2 - m + y + 1))
    base = sp.logsumexp(lc)
    return [float(x * lp - sp.logsumexp(lc + y * lp) + base) for lp in grid_log]


lr_rows = []
small_tables = [(1, 20, 180, 1), (0, 20, 180, 2), (2, 20, 180, 2), (3, 25, 175, 4), (0, 100, 900, 40),
                (10, 100, 900, 40), (40, 200, 1800, 60), (5, 5, 5, 6), (3, 4, 1, 4), (1, 1, 1000, 1)]
for (x, n1, n2, m) in small_tables:
    ref = log_lr_scipy(x, n1, n2, m)
    ex = [exact_logpmf(x, n1, n2, m, p) - exact_logpmf(x, n1, n2, m, 1.0) for p in grid]
    d = max(abs(a - b) for a, b in zip(ref, ex))
    assert d < 1e-10, (x, n1, n2, m, d)
    lr_rows.append((x, n1, n2, m, ref, "small"))
# Supports above 4096 (the C++ takes its lgamma-anchored paths): the gammaln
# reference, checked against scipy.stats where scipy's value is finite.
large_tables = [(520, 5000, 45000, 5000), (700, 5000, 45000, 5000), (4600, 5000, 5000, 9000),
                (2150, 20000, 180000, 20000), (20300, 200000, 200000, 40000), (10400, 100000, 900000, 100000)]
for (x, n1, n2, m) in large_tables:
    ref = log_lr_gammaln(x, n1, n2, m)
    sc = log_lr_scipy(x, n1, n2, m)
    for a, b in zip(ref, sc):
        if math.isfinite(b) and b > -600:
            assert abs(a - b) < 1e-6 * max(1.0, abs(a)), (x, n1, n2, m, a, b)
    lr_rows.append((x, n1, n2, m, ref, "large"))
note(f"log LR: {len(small_tables)} small tables (scipy = exact rational to 1e-10), {len(large_tables)} large")

# A sequence of batches (canary_requests, canary_errors, control_requests,
# control_errors): empty arms, zero errors and a one-point support change nothing.
sequence = [(20, 0, 180, 2), (20, 1, 180, 0), (0, 0, 200, 3), (25, 0, 175, 0), (18, 2, 182, 1), (22, 0, 178, 4),
            (20, 20, 180, 180), (30, 3, 170, 1), (19, 1, 181, 0), (21, 2, 179, 2)]
seq_lr = np.zeros(K)
mh_num = mh_den = 0.0
for (n1, x, n2, c) in sequence:
    m = x + c
    if n1 == 0 or n2 == 0 or m == 0 or m == n1 + n2:
        continue
    seq_lr += np.array(log_lr_scipy(x, n1, n2, m))
    total = n1 + n2
    mh_num += x * (n2 - c) / total
    mh_den += (n1 - x) * c / total
seq_log_e = float(sp.logsumexp(seq_lr) - math.log(K))
seq_mh = mh_num / mh_den

# --- 3. rank tests ----------------------------------------------------------
def mwu_ref(x, y):
    res = st.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
    # z as scipy's _get_mwu_z computes it (scipy returns only U and p).
    n1, n2 = len(x), len(y)
    n = n1 + n2
    ranks = st.rankdata(np.concatenate([x, y]))
    _, t = np.unique(ranks, return_counts=True)
    tie = int((t.astype(np.int64) ** 3 - t).sum())
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = float((res.statistic - n1 * n2 / 2 - 0.5) / s)
    assert float(st.norm.sf(z)) == float(res.pvalue) or (math.isnan(z) and math.isnan(res.pvalue))
    # How far the plausible wrong variants land (printed, for the report).
    if s > 0:
        no_tie = float(st.norm.sf((res.statistic - n1 * n2 / 2 - 0.5) / np.sqrt(n1 * n2 * (n + 1) / 12)))
        no_cc = float(st.norm.sf((res.statistic - n1 * n2 / 2) / s))
        note(f"  mwu n=({n1},{n2}) p={res.pvalue:.6g}  without tie correction {no_tie:.6g}"
             f"  without continuity {no_cc:.6g}")
    return float(res.statistic), z, float(res.pvalue)


mw_cases = [
    ([1, 2, 2, 3, 3, 3, 4, 5, 5, 6], [1, 1, 2, 2, 3, 4, 4, 4, 7]),
    ([0.31, 0.12, 0.95, 0.44, 0.58], [0.2, 0.05, 0.33, 0.41]),
    ([2.0, 2.0, 2.0], [2.0, 2.0]),
    ([1, 1, 2], [3, 4, 4, 5]),
    ([5.0], [4.0]),
    ([10 + i for i in range(40)], [float(i) for i in range(45)]),
    (sample(11, 300, 1.0, 100), sample(12, 500, 1.0, 100)),
    (sample(13, 300, 1.2, 10), sample(14, 700, 1.0, 10)),
]
mw_rows = [(x, y) + mwu_ref(np.array(x, float), np.array(y, float)) for (x, y) in mw_cases]


def hl_ref(x, y):
    return float(np.median(np.subtract.outer(np.array(x, float), np.array(y, float))))


hl_cases = [([1.0, 2.0, 3.0], [0.5, 1.5]), ([1.0, 2.0, 3.0], [0.5, 1.5, 9.0]), ([4.0, 4.0, 4.0], [1.0, 1.0]),
            ([0.3, -1.2, 2.2, 0.9], [0.1, 0.1, 0.7]), ([2.5], [0.5]), ([0.1, 0.2], [0.3, 0.4, 0.5, 0.6])]
hl_rows = [(x, y, hl_ref(x, y)) for (x, y) in hl_cases]
# Generated on both sides: (seed_x, n_x, scale_x, seed_y, n_y, scale_y, quantum).
hl_generated = [(21, 4096, 1.0, 22, 4096, 1.0, 0), (23, 1001, 1.3, 24, 777, 1.0, 1000), (25, 4096, 1.0, 26, 4095, 1.1, 100)]
hl_gen_rows = []
for (sx, nx, kx, sy, ny, ky, q) in hl_generated:
    hl_gen_rows.append((sx, nx, kx, sy, ny, ky, q, hl_ref(sample(sx, nx, kx, q), sample(sy, ny, ky, q))))


def latency_ref(canary, control, inc, conf):
    lx = np.array([math.log(max(v, 1e-9)) for v in canary])
    ly = np.array([math.log(max(v, 1e-9)) for v in control])
    shifted = np.array([v - math.log1p(inc) for v in lx])
    u, z, p = mwu_ref(shifted, ly)
    d = np.subtract.outer(lx, ly).ravel()
    ratio = math.exp(float(np.median(d)))
    n1, n2 = len(lx), len(ly)
    total = n1 * n2
    zq = float(st.norm.isf((1 - conf) / 2))
    c = math.floor(total / 2 - zq * math.sqrt(total * (n1 + n2 + 1) / 12) + 0.5)
    if c < 1:
        lower, upper = 0.0, math.inf
    else:
        d.sort()
        lower, upper = math.exp(float(d[c - 1])), math.exp(float(d[total - c]))
    return u, z, p, ratio, lower, upper


# (seed_c, n_c, scale_c, seed_k, n_k, scale_k, quantum, max_increase, confidence)
latency_cases = [(31, 200, 1.0, 32, 1800, 1.0, 1000, 0.25, 0.95), (33, 200, 1.5, 34, 1800, 1.0, 1000, 0.25, 0.95),
                 (35, 2000, 1.1, 36, 4000, 1.0, 0, 0.0, 0.99), (37, 3, 1.0, 38, 4, 1.0, 1000, 0.25, 0.95),
                 (39, 400, 1.1, 40, 1600, 1.0, 100, 0.25, 0.9)]
latency_rows = []
for case in latency_cases:
    sc, nc, kc, sk, nk, kk, q, inc, conf = case
    latency_rows.append(case + latency_ref(sample(sc, nc, kc, q), sample(sk, nk, kk, q), inc, conf))

# --- 4. chi-square goodness of fit -------------------------------------------
chi_cases = [([1150, 8850], [0.1, 0.9]), ([1000, 9000], [0.1, 0.9]), ([1030, 8970], [0.1, 0.9]),
             ([260, 740], [0.25, 0.75]), ([2000, 8000], [0.1, 0.9]), ([5, 3, 8, 4], [0.25, 0.25, 0.25, 0.25]),
             ([30, 14, 34, 45, 57, 20], [0.1, 0.1, 0.2, 0.2, 0.3, 0.1]), ([12, 15], [0.5, 0.5]),
             ([51, 49], [0.5, 0.5])]
chi_rows = []
for (obs, probs) in chi_cases:
    f_obs = np.array(obs, float)
    res = st.chisquare(f_obs, f_exp=np.array(probs) * f_obs.sum())
    direct = float(((f_obs - np.array(probs) * f_obs.sum()) ** 2 / (np.array(probs) * f_obs.sum())).sum())
    assert math.isclose(direct, res.statistic, rel_tol=1e-13)
    assert math.isclose(float(sp.gammaincc((len(obs) - 1) / 2, res.statistic / 2)), res.pvalue, rel_tol=1e-12) \
        or res.pvalue == 0
    chi_rows.append((obs, probs, float(res.statistic), len(obs) - 1, float(res.pvalue)))

# --- 5. binomial bound e-value -----------------------------------------------
def binom_log_e_closed(n, x, p0):
    a, b = x + 1, n - x + 1
    upper = sp.betainc(b, a, 1 - p0)  # = 1 - I_p0(a, b)
    if upper <= 1e-290:
        return None
    return float(sp.betaln(a, b) + math.log(upper) - x * math.log(p0) - (n - x) * math.log1p(-p0) - math.log1p(-p0))


def binom_log_e_quad(n, x, p0):
    def expo(p):
        fail = x * (math.log(p) - math.log(p0)) if x else 0.0
        return fail + ((n - x) * (math.log1p(-p) - math.log1p(-p0)) if n - x else 0.0)
    peak = max(p0, x / n)
    shift = expo(peak)
    width = math.sqrt(max(peak * (1 - peak), 1e-12) / n)
    pts = [q for q in (peak, peak - 5 * width, peak + 5 * width) if p0 < q < 1]
    val, _ = scipy.integrate.quad(lambda p: math.exp(expo(p) - shift), p0, 1, points=pts or None,
                                  epsabs=0, epsrel=1e-13, limit=500)
    return math.log(val) + shift - math.log1p(-p0)


binom_cases = [(10, 0, 0.2), (10, 5, 0.2), (50, 25, 0.2), (100, 20, 0.2), (100, 60, 0.2), (1000, 150, 0.2),
               (1000, 300, 0.2), (20, 20, 0.2), (37, 15, 0.05), (5000, 52, 0.01), (200, 1, 0.5),
               (100000, 1000, 0.2), (100000, 30000, 0.2), (1000000, 200500, 0.2), (3, 1, 0.3)]
binom_rows = []
for (n, x, p0) in binom_cases:
    closed = binom_log_e_closed(n, x, p0)
    quad = binom_log_e_quad(n, x, p0)
    if closed is not None:
        assert abs(closed - quad) < 1e-8 * max(1.0, abs(closed)), (n, x, p0, closed, quad)
    ref = closed if closed is not None else quad
    binom_rows.append((n, x, p0, ref, "closed" if closed is not None else "quad"))
note(f"binomial: {len(binom_rows)} rows ({sum(r[4] == 'quad' for r in binom_rows)} by quadrature only)")

# --- 6. OddsRatioMonitor: the start-time mixture ----------------------------
def log_lr_against(x, n1, n2, m, log_psis, log_psi0):
    """log f(x; psi) - log f(x; psi0) by gammaln over the whole support."""
    lo, hi = max(0, m - n2), min(n1, m)
    y = np.arange(lo, hi + 1, dtype=float)
    lc = -(sp.gammaln(y + 1) + sp.gammaln(n1 - y + 1) + sp.gammaln(m - y + 1) + sp.gammaln(n2 - m + y + 1))
    base = x * log_psi0 - sp.logsumexp(lc + y * log_psi0)
    return np.array([x * lp - sp.logsumexp(lc + y * lp) - base for lp in log_psis])


# (psi0, batches); an all-zero batch is a look without data.
monitor_cases = [
    (1.0, [(20, 1, 180, 0), (0, 0, 0, 0), (25, 2, 175, 1), (22, 0, 178, 1), (20, 3, 180, 0), (18, 2, 182, 1)]),
    (1.5, [(100, 5, 900, 10), (110, 9, 890, 8), (0, 0, 50, 1), (120, 12, 880, 9), (90, 10, 910, 6),
           (100, 11, 900, 7), (95, 9, 905, 10)]),
    # A healthy stretch, then a canary at 10x: the mixture over starts recovers.
    (1.0, [(50, 0, 450, 2)] * 12 + [(50, 5, 450, 2)] * 4),
]
monitor_rows = []
for (psi0, batches) in monitor_cases:
    lpsi0 = math.log(psi0)
    lps = [lpsi0 + g for g in grid_log]
    per_batch = []
    for (n1, x, n2, c) in batches:
        m = x + c
        if n1 == 0 or n2 == 0 or m == 0 or m == n1 + n2:
            per_batch.append(np.zeros(K))
        else:
            lr = log_lr_against(x, n1, n2, m, lps, lpsi0)
            # scipy.stats where it is finite, as a check of the gammaln sums.
            h = st.nchypergeom_fisher(M=n1 + n2, n=n1, N=m, odds=psi0).logpmf(x)
            ref = np.array([st.nchypergeom_fisher(M=n1 + n2, n=n1, N=m, odds=math.exp(v)).logpmf(x) - h
                            for v in lps])
            ok = np.isfinite(ref)
            assert np.max(np.abs(ref[ok] - lr[ok])) < 1e-9
            per_batch.append(lr)
    log_es = []
    for t in range(1, len(batches) + 1):
        # Explicit sum over the starts s = 1..t (the C++ uses the recursion).
        terms = []
        for s_ in range(1, t + 1):
            cum = np.sum(per_batch[s_ - 1:t], axis=0)
            terms.extend(cum - math.log(K) - math.log(s_) - math.log(s_ + 1))
        terms.append(-math.log(t + 1))
        log_es.append(float(sp.logsumexp(terms)))
    monitor_rows.append((psi0, batches, log_es))
note(f"monitor: {len(monitor_rows)} sequences, last log E {[round(r[2][-1], 3) for r in monitor_rows]}")

# --- 7. stratified (van Elteren) latency comparison -------------------------
def stratified_ref(strata, inc, conf):
    num, var = 0.0, 0.0
    pooled_c, pooled_k = [], []
    used = 0
    for (canary, control) in strata:
        if not canary or not control:
            continue
        lx = np.array([math.log(max(v, 1e-9)) - math.log1p(inc) for v in canary])
        ly = np.array([math.log(max(v, 1e-9)) for v in control])
        u = float(st.mannwhitneyu(lx, ly, alternative="greater", method="asymptotic").statistic)
        m_, n_ = len(lx), len(ly)
        n = m_ + n_
        _, t = np.unique(st.rankdata(np.concatenate([lx, ly])), return_counts=True)
        tie = int((t.astype(np.int64) ** 3 - t).sum())
        v = m_ * n_ / 12 * ((n + 1) - tie / (n * (n - 1)))
        if not v > 0:
            continue
        w_ = 1.0 / (n + 1)
        num += w_ * (u - m_ * n_ / 2)
        var += w_ * w_ * v
        used += 1
        pooled_c += canary
        pooled_k += control
    z = num / math.sqrt(var)
    _, _, _, ratio, lower, upper = latency_ref(pooled_c, pooled_k, inc, conf)
    return used, z, float(st.norm.sf(z)), ratio, lower, upper


# Each case: strata as (seed_c, n_c, scale_c, seed_k, n_k, scale_k), then quantum, max_increase, confidence.
strat_cases = [
    ([(51, 10, 1.0, 52, 64, 1.0), (53, 12, 1.0, 54, 64, 1.0), (55, 8, 1.0, 56, 64, 1.0)], 1000, 0.25, 0.95),
    ([(57, 10, 1.5, 58, 64, 1.0), (59, 12, 1.5, 60, 64, 1.0), (61, 0, 1.5, 62, 64, 1.0), (63, 9, 1.5, 64, 0, 1.0)],
     1000, 0.25, 0.95),
    # Time effect: the slow stratum has most canary samples, the fast most control ones.
    ([(65, 30, 2.0, 66, 5, 2.0), (67, 5, 1.0, 68, 30, 1.0)], 100, 0.0, 0.9),
    ([(69, 40, 1.1, 70, 40, 1.0)], 0, 0.0, 0.95),
]
strat_rows = []
for (spec, q, inc, conf) in strat_cases:
    strata = [(sample(a, b, c, q), sample(d, e, f, q)) for (a, b, c, d, e, f) in spec]
    strat_rows.append((spec, q, inc, conf) + stratified_ref(strata, inc, conf))
# One stratum = mann_whitney_greater without the continuity correction.
one = strat_rows[-1]
note(f"stratified: {len(strat_rows)} rows; z {[round(r[5], 4) for r in strat_rows]}")

# --- 8. sequential SRM (Dirichlet-multinomial, two arms) --------------------
def srm_closed(x, y, w, c):
    a, b = c * w, c * (1 - w)
    return float(sp.betaln(x + a, y + b) - sp.betaln(a, b) - x * math.log(w) - y * math.log1p(-w))


def srm_quad(x, y, w, c):
    a, b = c * w, c * (1 - w)
    def f(q):
        return math.exp(st.beta(a, b).logpdf(q) + x * (math.log(q) - math.log(w)) + y * (math.log1p(-q) - math.log1p(-w)))
    peak = (x + a - 1) / (x + y + a + b - 2) if x + y + a + b > 2 else w
    val, _ = scipy.integrate.quad(f, 0, 1, points=[min(max(peak, 1e-9), 1 - 1e-9)], epsabs=0, epsrel=1e-12, limit=500)
    return math.log(val)


srm_cases = [(10, 90, 0.1, 100.0), (150, 850, 0.1, 100.0), (100, 900, 0.1, 100.0), (260, 740, 0.25, 100.0),
             (0, 30, 0.1, 100.0), (520, 480, 0.5, 10.0), (1500, 8500, 0.1, 100.0), (3, 2, 0.3, 1.0)]
srm_rows = []
for (x, y, w_, c) in srm_cases:
    closed = srm_closed(x, y, w_, c)
    quad = srm_quad(x, y, w_, c)
    assert abs(closed - quad) < 1e-7 * max(1.0, abs(closed)), (x, y, w_, c, closed, quad)
    srm_rows.append((x, y, w_, c, closed))
note(f"srm: {len(srm_rows)} rows")

# --- output -------------------------------------------------------------------
def vec(v):
    return "{" + ", ".join(fmt(e) for e in v) + "}"


out = []
w = out.append
w(f"// Generated by tests/unit/rollout/stats_reference.py with scipy {scipy.__version__},")
w(f"// numpy {np.__version__}; do not edit. Included by stats_test.cpp.")
w("")
w("// log_fnch_pmf: x, n1, n2, m, log_psi, scipy logpmf (hypergeom for log_psi = 0).")
w("const std::vector<FnchRow> kFnchRows = {")
for (x, n1, n2, m, lp, ref) in fnch_rows:
    w(f"    {{{x}, {n1}, {n2}, {m}, {fmt(lp)}, {fmt(ref)}}},")
w("};")
w("")
w("// ErrorRateTest grid, psi_k (scipy side: exp(log(1.1) + k log(50/1.1)/23)).")
w(f"const std::vector<double> kGrid = {vec(grid)};")
w("")
w("// log LR(psi_k) of one table: x, n1, n2, m, large support?, 24 values.")
w("const std::vector<LrRow> kLrRows = {")
for (x, n1, n2, m, ref, kind) in lr_rows:
    w(f"    {{{x}, {n1}, {n2}, {m}, {'true' if kind == 'large' else 'false'}, {vec(ref)}}},")
w("};")
w("")
w("// A sequence of batches: canary_requests, canary_errors, control_requests, control_errors.")
w("const std::vector<std::array<std::uint64_t, 4>> kSequence = {")
for b in sequence:
    w(f"    {{{b[0]}, {b[1]}, {b[2]}, {b[3]}}},")
w("};")
w(f"constexpr double kSequenceLogE = {fmt(seq_log_e)};")
w(f"constexpr double kSequenceMantelHaenszel = {fmt(seq_mh)};")
w(f"const std::vector<double> kSequenceLogLr = {vec(seq_lr)};")
w("")
w("// mannwhitneyu(x, y, alternative='greater', method='asymptotic'): x, y, U, z, p.")
w("const std::vector<MwRow> kMwRows = {")
for (x, y, u, z, p) in mw_rows:
    w(f"    {{{vec(x)}, {vec(y)}, {fmt(u)}, {fmt(z)}, {fmt(p)}}},")
w("};")
w("")
w("// numpy.median(numpy.subtract.outer(x, y)).")
w("const std::vector<HlRow> kHlRows = {")
for (x, y, ref) in hl_rows:
    w(f"    {{{vec(x)}, {vec(y)}, {fmt(ref)}}},")
w("};")
w("// The same on generated samples: seed, n, scale of x; of y; quantum; median.")
w("const std::vector<HlGeneratedRow> kHlGeneratedRows = {")
for r in hl_gen_rows:
    w(f"    {{{r[0]}, {r[1]}, {fmt(r[2])}, {r[3]}, {r[4]}, {fmt(r[5])}, {fmt(r[6])}, {fmt(r[7])}}},")
w("};")
w("")
w("// compare_latency on generated samples: canary seed, n, scale; control seed, n, scale;")
w("// quantum; max_increase; confidence; U, z, p, ratio, ratio_lower, ratio_upper.")
w("const std::vector<LatencyRow> kLatencyRows = {")
for r in latency_rows:
    w("    {" + ", ".join([str(r[0]), str(r[1]), fmt(r[2]), str(r[3]), str(r[4])] + [fmt(v) for v in r[5:]]) + "},")
w("};")
w("")
w("// scipy.stats.chisquare(f_obs, f_exp=probs*sum(f_obs)): observed, probs, statistic, dof, p.")
w("const std::vector<ChiRow> kChiRows = {")
for (obs, probs, stat, dof, p) in chi_rows:
    w(f"    {{{vec(obs)}, {vec(probs)}, {fmt(stat)}, {dof}, {fmt(p)}}},")
w("};")
w("")
w("// log E of the binomial bound: n, x, p0, log E (closed form with scipy.special")
w("// betaln/betainc, or scipy.integrate.quad where betainc underflows).")
w("const std::vector<BinomRow> kBinomRows = {")
for (n, x, p0, ref, kind) in binom_rows:
    w(f"    {{{n}, {x}, {fmt(p0)}, {fmt(ref)}}},  // {kind}")
w("};")
w("")
w("// OddsRatioMonitor: psi0, batches (canary total, canary events, control total, control")
w("// events), log E after each look (explicit sum over the start looks, gammaln sums).")
w("const std::vector<MonitorRow> kMonitorRows = {")
for (psi0, batches, log_es) in monitor_rows:
    bs = ", ".join(f"{{{a}, {b}, {c}, {d}}}" for (a, b, c, d) in batches)
    w(f"    {{{fmt(psi0)}, {{{bs}}}, {vec(log_es)}}},")
w("};")
w("")
w("// compare_latency_stratified: strata (canary seed, n, scale; control seed, n, scale), quantum,")
w("// max_increase, confidence; strata used, z, p, ratio, ratio_lower, ratio_upper.")
w("const std::vector<StratifiedRow> kStratifiedRows = {")
for r in strat_rows:
    spec = ", ".join("{" + ", ".join([str(a), str(b), fmt(c), str(d), str(e), fmt(f)]) + "}" for (a, b, c, d, e, f) in r[0])
    w(f"    {{{{{spec}}}, {fmt(r[1])}, {fmt(r[2])}, {fmt(r[3])}, {r[4]}, " + ", ".join(fmt(v) for v in r[5:]) + "},")
w("};")
w("")
w("// srm_log_e: canary users, control users, weight, concentration, log E (betaln; checked by quad).")
w("const std::vector<SrmRow> kSrmRows = {")
for (x, y, w_, c, ref) in srm_rows:
    w(f"    {{{x}, {y}, {fmt(w_)}, {fmt(c)}, {fmt(ref)}}},")
w("};")
print("\n".join(out))
