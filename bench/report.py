#!/usr/bin/env python3
"""Turns bench/run.sh's raw figures ("key value" lines, a key repeated once per
round) into the comparison table: medians per key, every canaryd figure as a
ratio against nginx measured in the same run, and the targets of the benchmark
issue marked met or missed. Prints the table; --markdown FILE also writes it
as markdown with the machine and the date (for docs/benchmarks.md)."""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys


def load(path):
    vals = {}
    for line in open(path):
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        k, v = parts[0], parts[1].strip()
        vals.setdefault(k, []).append(v)
    out = {}
    for k, vs in vals.items():
        try:
            nums = [float(v) for v in vs if v not in ("", "None")]
            out[k] = statistics.median(nums) if nums else None
            if len(nums) > 1:
                out.setdefault("_spread", {})[k] = (min(nums), max(nums))
        except ValueError:
            out[k] = vs[-1]
    return out


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=5).stdout.strip()
        except Exception:
            return ""
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "nproc": sh("nproc"), "cpu": model, "kernel": platform.release(),
        "mem": sh("awk '/MemTotal/{printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
        "nginx": sh("nginx -v 2>&1 | sed 's/.*nginx\\///'"), "wrk": sh("wrk -v 2>&1 | head -1 | cut -d' ' -f2"),
        "git": sh("git -C %s rev-parse --short HEAD" % os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    }


def build_rows(r):
    g = r.get
    rows = []  # (section, figure, direct, nginx, canaryd, ratio, target text, met)

    def sub(a, b):
        return None if a is None or b is None else a - b

    def per_req_cap(key):
        c = g(key + ".cpu_us_per_req")
        return None if not c else 1e6 / c

    # Headline: both access logs on (canaryd's is on by default), then both off.
    # Issue 15's targets: req/s >= 1.0x and CPU per request <= 1.0x nginx's, each
    # with both logs on and with both off.
    for pre, sec in (("log", "throughput, logs on"), ("", "throughput, logs off")):
        for n, label in (("1", "1 thread / 1 worker"), ("2", "2 threads / 2 workers")):
            k = f"sat{n}{pre}"
            ng, cd = g(f"{k}.nginx.rps"), g(f"{k}.canaryd.rps")
            rt = ratio(cd, ng)
            rows.append((sec, f"req/s at 64 conns, {label}", g(f"sat{n}.direct.rps"), ng, cd, rt,
                         ">= 1.0x", None if rt is None else rt >= 1.0))
            ngu, cdu = g(f"{k}.nginx.cpu_us_per_req"), g(f"{k}.canaryd.cpu_us_per_req")
            rc = ratio(cdu, ngu)
            rows.append((sec, f"proxy CPU us per request, {label}", None, ngu, cdu, rc, "<= 1.0x",
                         None if rc is None else rc <= 1.0))
            ngc, cdc = per_req_cap(f"{k}.nginx"), per_req_cap(f"{k}.canaryd")
            rows.append((sec, f"req per proxy CPU-second, {label}", None, ngc, cdc, ratio(cdc, ngc), "", None))
            rows.append((sec, f"proxy CPU busy (cores), {label}", None, g(f"{k}.nginx.cpu_util"),
                         g(f"{k}.canaryd.cpu_util"), None, "", None))

    rows.append(("throughput, logs off", "load side alone: wrk+mock on CPU 0 / mock on its own core",
                 g("sat1.direct.rps"), g("sat1.mock_own_core.rps"), None, None, "", None))
    for p in ("p50", "p99"):
        d = g(f"lat.direct.{p}")
        ng, cd = sub(g(f"lat.nginx.{p}"), d), sub(g(f"lat.canaryd.{p}"), d)
        # Both subtract the same direct figure, so "added p99 <= nginx's" is
        # "p99 through canaryd <= p99 through nginx"; compared that way a
        # direct-run outlier cannot flip the verdict.
        a, b = g(f"lat.canaryd.{p}"), g(f"lat.nginx.{p}")
        met = None if a is None or b is None else a <= b
        rows.append(("latency", f"{p} at 1 conn (us)", d, g(f"lat.nginx.{p}"), g(f"lat.canaryd.{p}"),
                     ratio(g(f"lat.canaryd.{p}"), g(f"lat.nginx.{p}")), "", None))
        rows.append(("latency", f"added {p} at 1 conn (us)", None, ng, cd, ratio(cd, ng),
                     "<= nginx" if p == "p99" else "", met if p == "p99" else None))

    for f, label in (("ttfb_p50_us", "TTFB added p50 (us)"), ("ttfb_p99_us", "TTFB added p99 (us)"),
                     ("event_p50_us", "per-event delay added p50 (us)"),
                     ("event_p99_us", "per-event delay added p99 (us)")):
        d = g(f"stream.direct.{f}")
        ng, cd = sub(g(f"stream.nginx.{f}"), d), sub(g(f"stream.canaryd.{f}"), d)
        target, met = "", None
        if f == "event_p99_us":
            target, met = "<= 1000 us", None if cd is None else cd <= 1000
            if met is not None and ((ng is not None and ng < 0) or cd < 0):
                # The direct run's tail was worse than a proxied one: an
                # outlier, and the difference says nothing. Do not call it met.
                met = "noisy"
        rows.append(("streaming", label, d, ng, cd, ratio(cd, ng), target, met))

    # Streaming saturation (bench/stream.lua): 64 streams at a time of 20 events
    # back to back, both access logs on; direct = wrk + mock on CPU 0, the load
    # side's ceiling for the proxied runs.
    sec = "stream saturation"
    ng, cd = g("ssat.nginx.rps"), g("ssat.canaryd.rps")
    rt = ratio(cd, ng)
    rows.append((sec, "streams/s, 20 events each, 64 at a time (logs on)", g("ssat.direct.rps"), ng, cd, rt,
                 ">= 0.9x", None if rt is None else rt >= 0.9))
    rows.append((sec, "events/s", g("ssat.direct.eps"), g("ssat.nginx.eps"), g("ssat.canaryd.eps"),
                 ratio(g("ssat.canaryd.eps"), g("ssat.nginx.eps")), "", None))
    ngu, cdu = g("ssat.nginx.cpu_us_per_event"), g("ssat.canaryd.cpu_us_per_event")
    rows.append((sec, "proxy CPU us per streamed event", None, ngu, cdu, ratio(cdu, ngu), "", None))
    ngs, cds = g("ssat.nginx.cpu_us_per_req"), g("ssat.canaryd.cpu_us_per_req")
    rows.append((sec, "proxy CPU us per stream", None, ngs, cds, ratio(cds, ngs), "", None))
    rows.append((sec, "proxy CPU busy (cores)", None, g("ssat.nginx.cpu_util"), g("ssat.canaryd.cpu_util"), None,
                 "", None))
    rows.append((sec, "load side alone: wrk+mock on CPU 0 / mock on its own core (streams/s)", g("ssat.direct.rps"),
                 g("ssat.mock_own_core.rps"), None, None, "", None))

    kb = lambda v: None if v is None else v / 1024.0
    ng_idle, cd_idle = g("mem.nginx.idle_kb"), g("mem.canaryd.idle_kb")
    rows.append(("memory", "RSS idle (MB)", None, kb(ng_idle), kb(cd_idle), ratio(cd_idle, ng_idle), "<= 15 MB",
                 None if cd_idle is None else cd_idle <= 15 * 1024))
    rows.append(("memory", "RSS idle, access log on (MB)", None, kb(g("mem.nginx_log.idle_kb")),
                 kb(g("mem.canaryd_log.idle_kb")), ratio(g("mem.canaryd_log.idle_kb"), g("mem.nginx_log.idle_kb")),
                 "", None))
    rows.append(("memory", "PSS idle (MB)", None, kb(g("mem.nginx.idle_pss_kb")), kb(g("mem.canaryd.idle_pss_kb")),
                 ratio(g("mem.canaryd.idle_pss_kb"), g("mem.nginx.idle_pss_kb")), "", None))
    def per(total, n, idle):
        d = sub(total, idle)
        return None if d is None else d / n

    # Idle keep-alive connections: settled (1.5 s after the last answer, judged)
    # and just idle (0.3 s), at 1,000 and 2,000; the marginal cost is the
    # slope between the two counts (fixed pools left out).
    for n, label in ((1000, "1,000"), (2000, "2,000")):
        ng, cd = g(f"mem.nginx.conns{n}_kb"), g(f"mem.canaryd.conns{n}_kb")
        rows.append(("memory", f"RSS with {label} idle keep-alive conns, settled (MB)", None, kb(ng), kb(cd),
                     ratio(cd, ng), "", None))
        ngp, cdp = per(ng, n, ng_idle), per(cd, n, cd_idle)
        judged = n == 1000
        rows.append(("memory", f"per idle conn (KB), {label}, settled", None, ngp, cdp, ratio(cdp, ngp),
                     "<= 2 KB" if judged else "", (None if cdp is None else cdp <= 2) if judged else None))
        ngf, cdf = per(g(f"mem.nginx.conns{n}_fresh_kb"), n, ng_idle), per(g(f"mem.canaryd.conns{n}_fresh_kb"), n,
                                                                           cd_idle)
        rows.append(("memory", f"per idle conn (KB), {label}, just idle (0.3 s)", None, ngf, cdf, ratio(cdf, ngf), "",
                     None))
    ngm = per(sub(g("mem.nginx.conns2000_kb"), g("mem.nginx.conns1000_kb")), 1000, 0)
    cdm = per(sub(g("mem.canaryd.conns2000_kb"), g("mem.canaryd.conns1000_kb")), 1000, 0)
    rows.append(("memory", "per idle conn (KB), marginal (2,000 - 1,000)", None, ngm, cdm, ratio(cdm, ngm), "", None))
    ng, cd = g("mem.nginx.streams_kb"), g("mem.canaryd.streams_kb")
    rows.append(("memory", "RSS with 500 slow streams (MB)", None, kb(ng), kb(cd), ratio(cd, ng), "", None))
    ngp, cdp = per(ng, 500, ng_idle), per(cd, 500, cd_idle)
    rows.append(("memory", "per concurrent stream (KB)", None, ngp, cdp, ratio(cdp, ngp), "<= 32 KB",
                 None if cdp is None else cdp <= 32))
    rows.append(("memory", "slow streams completed (of 500)", None, g("mem.nginx.streams_ok"),
                 g("mem.canaryd.streams_ok"), None, "", None))

    for n, label in (("1", "1 thread"), ("2", "2 threads")):
        rows.append(("access log", f"req/s log on / log off, {label}", None,
                     ratio(g(f"sat{n}log.nginx.rps"), g(f"sat{n}.nginx.rps")),
                     ratio(g(f"sat{n}log.canaryd.rps"), g(f"sat{n}.canaryd.rps")), None, "", None))
        ngl = sub(g(f"sat{n}log.nginx.cpu_us_per_req"), g(f"sat{n}.nginx.cpu_us_per_req"))
        cdl = sub(g(f"sat{n}log.canaryd.cpu_us_per_req"), g(f"sat{n}.canaryd.cpu_us_per_req"))
        rows.append(("access log", f"CPU us per request the log adds, {label}", None, ngl, cdl, ratio(cdl, ngl),
                     "", None))
        dropped = g(f"log.canaryd{n}.dropped")
        rows.append(("access log", f"lines canaryd's log queue dropped, {label} runs", None, None, dropped, None,
                     "0", None if dropped is None else dropped == 0))

    # bench/alloc_count.so preloaded into a separate nginx and canaryd (logs on).
    # Allocations = malloc + calloc + realloc + aligned + operator new calls.
    sec = "allocations"
    for key, label in (("alloc", "heap allocations per request (chat, log on)"),
                       ("allocstream", "heap allocations per stream (20 events)")):
        ng, cd = g(f"{key}.nginx.allocs_per_req"), g(f"{key}.canaryd.allocs_per_req")
        rows.append((sec, label, None, ng, cd, ratio(cd, ng), "", None))
        if key == "alloc":
            rows.append((sec, "  of which operator new", None, g("alloc.nginx.new_per_req"),
                         g("alloc.canaryd.new_per_req"), None, "", None))
            rows.append((sec, "heap bytes asked for per request", None, g("alloc.nginx.bytes_per_req"),
                         g("alloc.canaryd.bytes_per_req"), ratio(g("alloc.canaryd.bytes_per_req"),
                                                                 g("alloc.nginx.bytes_per_req")), "", None))
    ng, cd = g("allocstream.nginx.allocs_per_event"), g("allocstream.canaryd.allocs_per_event")
    rows.append((sec, "heap allocations per streamed event (per stream / events)", None, ng, cd, ratio(cd, ng), "",
                 None))
    rows.append((sec, "heap allocations per second, idle", None, g("alloc.nginx.idle_per_s"),
                 g("alloc.canaryd.idle_per_s"), None, "", None))

    h, rd, mp = g("pins.hash.rps"), g("pins.redis.rps"), g("pins.memory.rps")
    rr = g("pins.round_ratio") or ratio(rd, h)  # median of the per-round ratios
    spread = r.get("_spread", {})

    def rng(key):
        lo_hi = spread.get(key)
        return "" if not lo_hi else f" (rounds {lo_hi[0]:.2f}-{lo_hi[1]:.2f})"
    rows.append(("pins", "req/s hash only (pin_ttl 0)", None, None, h, None, "", None))
    rows.append(("pins", "req/s pin_ttl 1h on Redis", None, None, rd, None, "", None))
    rows.append(("pins", "req/s pin_ttl 1h in memory", None, None, mp, None, "", None))
    rows.append(("pins", "Redis / hash only, median of rounds" + rng("pins.round_ratio"), None, None, rr, None,
                 ">= 0.85x", None if rr is None else rr >= 0.85))
    rows.append(("pins", "in memory / hash only, median of rounds" + rng("pins.round_memratio"), None, None,
                 g("pins.round_memratio"), None, "", None))
    # Issue 16: the same pins on a 3-primary Redis Cluster (one connection per primary, slot routing).
    rc = g("pins.round_cluster_ratio") or ratio(g("pins.cluster.rps"), h)
    rows.append(("pins", "req/s pin_ttl 1h on a 3-primary Redis Cluster", None, None, g("pins.cluster.rps"), None, "",
                 None))
    rows.append(("pins", "Cluster / hash only, median of rounds" + rng("pins.round_cluster_ratio"), None, None, rc,
                 None, ">= 0.85x", None if rc is None else rc >= 0.85))
    for conns, pre in (("64 conns", "pins"), ("1 conn", "pinlat")):
        rows.append(("pins", f"p99 at {conns}, hash only (us)", None, None, g(pre + ".hash.p99"), None, "", None))
        rows.append(("pins", f"p99 at {conns}, Redis pins (us)", None, None, g(pre + ".redis.p99"), None, "", None))
        rows.append(("pins", f"p99 at {conns}, Cluster pins (us)", None, None, g(pre + ".cluster.p99"), None, "",
                     None))
    if r.get("meta.mode", "") and "only pins" in str(r.get("meta.mode")):
        rows = [row for row in rows if row[0] == "pins"]
    return rows


def headline(r):
    """One line with the ratios issue 15 is judged on (each a median over rounds)."""
    g = r.get

    def x(a, b):
        v = ratio(g(a), g(b))
        return "n/a" if v is None else f"{v:.2f}x"
    cpu = "; ".join(f"logs {state} {x(f'sat1{p}.canaryd.cpu_us_per_req', f'sat1{p}.nginx.cpu_us_per_req')} "
                    f"(1 thread), {x(f'sat2{p}.canaryd.cpu_us_per_req', f'sat2{p}.nginx.cpu_us_per_req')} (2 threads)"
                    for state, p in (("on", "log"), ("off", "")))
    return (f"canaryd/nginx CPU us per request: {cpu}. Streams/s {x('ssat.canaryd.rps', 'ssat.nginx.rps')}, "
            f"CPU per streamed event {x('ssat.canaryd.cpu_us_per_event', 'ssat.nginx.cpu_us_per_event')}. "
            f"canaryd heap allocations: {fmt(g('alloc.canaryd.allocs_per_req'))} per request, "
            f"{fmt(g('allocstream.canaryd.allocs_per_event'))} per streamed event.")


def table(rows, md=False):
    hdr = ["", "figure", "direct", "nginx", "canaryd", "canaryd/nginx", "target", "met"]
    body = []
    for sec, fig, d, ng, cd, rt, tgt, met in rows:
        body.append([sec, fig, fmt(d), fmt(ng), fmt(cd), "" if rt is None else f"{rt:.2f}x", tgt,
                     "" if met is None else met if isinstance(met, str) else ("yes" if met else "NO")])
    if md:
        out = ["| " + " | ".join(hdr[1:]) + " |", "|" + "---|" * (len(hdr) - 1)]
        last = None
        for row in body:
            fig = row[1] if row[0] == last else f"**{row[0]}**: {row[1]}"
            last = row[0]
            out.append("| " + " | ".join([fig] + row[2:]) + " |")
        return "\n".join(out)
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *body)]
    lines = ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(hdr))]
    lines.append("  ".join("-" * x for x in w))
    last = None
    for row in body:
        if row[0] != last and last is not None:
            lines.append("")
        shown = [row[0] if row[0] != last else ""] + row[1:]
        last = row[0]
        lines.append("  ".join(str(x).ljust(w[i]) for i, x in enumerate(shown)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    r = load(a.results)
    rows = build_rows(r)
    m = machine()
    errs = {k: v for k, v in r.items() if k.endswith(".errors") and v}
    print()
    print(table(rows))
    print()
    only_pins = "only pins" in str(r.get("meta.mode", ""))
    if not only_pins:
        print(headline(r))
    print(f"mode={r.get('meta.mode')} sched={r.get('meta.sched')} took={fmt(r.get('meta.seconds'))}s "
          f"loadavg before/after={r.get('meta.load_before')}/{r.get('meta.load_after')} "
          f"redis keys after pin runs={fmt(r.get('pins.redis_keys'))} "
          f"cluster keys={fmt(r.get('pins.cluster_keys'))} "
          f"({'/'.join(fmt(v) for k, v in sorted(r.items()) if k.startswith('pins.cluster_keys_'))} per node)")
    crashed = sorted(k.split(".", 1)[1] for k in r if k.startswith("crashed."))
    if crashed:
        print("PROCESSES THAT DIED DURING THE RUN (their figures are missing): " + ", ".join(crashed))
    if errs:
        print("non-2xx or socket errors (median per run): " + ", ".join(f"{k}={fmt(v)}" for k, v in errs.items()))
    missed = [f"{row[0]}: {row[1]} ({row[6]})" for row in rows if row[7] is False]
    noisy = [row[1] for row in rows if row[7] == "noisy"]
    print("targets missed: " + ("; ".join(missed) if missed else "none"))
    if noisy:
        print("not judged (direct baseline had a worse tail than a proxy; run again): " + "; ".join(noisy))
    if a.markdown:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(a.markdown, "w") as f:
            f.write(f"### Run {now} ({r.get('meta.mode')} mode)\n\n")
            f.write(f"Machine: {m['nproc']} x {m['cpu']}, {m['mem']}, Linux {m['kernel']}; nginx {m['nginx']}, "
                    f"wrk {m['wrk']}; canaryd binary built {r.get('meta.canaryd_built')} (repo HEAD {m['git']}). Scheduling: {r.get('meta.sched')}; "
                    f"load average before/after: {r.get('meta.load_before')}/{r.get('meta.load_after')}; "
                    f"took {fmt(r.get('meta.seconds'))} s.\n\n")
            f.write(table(rows, md=True) + "\n")
            if not only_pins:
                f.write("\n" + headline(r) + "\n")
            if crashed:
                f.write("\nDied during the run: " + ", ".join(crashed) + "\n")
            if errs:
                f.write("\nErrors: " + ", ".join(f"{k}={fmt(v)}" for k, v in errs.items()) + "\n")
            f.write("\nTargets missed: " + ("; ".join(missed) if missed else "none") + "\n")
            if noisy:
                f.write("\nNot judged (the direct baseline had a worse tail than a proxy): " + "; ".join(noisy) + "\n")


if __name__ == "__main__":
    sys.exit(main())
