#!/usr/bin/env python3
"""bench/sim_plot.py - turn the JSON of bench/sim.sh into a PNG and Markdown tables.

    sim_plot.py DIR --png OUT.png --md REPORT.md

DIR holds main-<trace>-<seed>.json, replicas<N>-<trace>-1.json,
noewma-<trace>-1.json and off<B>-<trace>-<seed>.json (each is the output of
`thaw simulate --json`), and details-<trace>-<seed>-<policy>.csv and
details24-<trace>-<seed>-thaw.csv (`--details`: where each request's startup
went; details24/details32 are Thaw with --thaw-off 24/32) for the tail
breakdown. The tables replace whatever lies between the
`<!-- sim:begin -->` and `<!-- sim:end -->` lines of REPORT.md; the rest of the
file (setup, discussion) is left alone. A missing REPORT.md is created with the
markers only.
"""
import argparse
import csv
import glob
import json
import os
import re
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRACES = ["azure-conv", "azure-code", "azure-fn"]
POLICIES = ["random", "rr", "openwhisk", "shepherd", "sllm", "thaw"]
OFFS = (1, 2, 4, 8, 16, 24, 32, 56)


def load(pattern):
    runs = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def by_policy(run):
    return {p["policy"]: p for p in run["policies"]}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x):
    if x != x:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def main_table(d, trace, runs):
    lines = [
        f"**{trace}** ({runs[0]['requests']} requests over {runs[0]['duration_s']:.0f} s, "
        f"{len(runs)} seeds; medians over seeds, P99 range in brackets)",
        "",
        "| policy | startup P50 (s) | startup P99 (s) | e2e P50 (s) | e2e P99 (s) | cold starts "
        "| warm % | GPU-h held | GPU-h busy | migrations | preemptions | est. MdAPE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pol in POLICIES:
        rs = [by_policy(r)[pol] for r in runs if pol in by_policy(r)]
        if not rs:
            continue
        p99 = [x["startup_p99_s"] for x in rs]
        lines.append(
            f"| {pol} | {fmt_s(med([x['startup_p50_s'] for x in rs]))} "
            f"| {fmt_s(med(p99))} [{fmt_s(min(p99))}-{fmt_s(max(p99))}] "
            f"| {fmt_s(med([x['e2e_p50_s'] for x in rs]))} "
            f"| {fmt_s(med([x['e2e_p99_s'] for x in rs]))} "
            f"| {med([x['cold_starts'] for x in rs]):.0f} "
            f"| {med([100.0 * x['warm'] / max(1, x['completed']) for x in rs]):.1f} "
            f"| {med([x['gpu_s'] / 3600 for x in rs]):.1f} "
            f"| {med([x['busy_gpu_s'] / 3600 for x in rs]):.1f} "
            f"| {med([x['migrations'] for x in rs]):.0f} "
            f"| {med([x['preemptions'] for x in rs]):.0f} "
            f"| {100 * med([x['est_mdape'] for x in rs]):.1f}% |"
        )
    return lines


def ratios(runs, a, b="thaw"):
    out = []
    for r in runs:
        p = by_policy(r)
        if a in p and b in p and p[b]["startup_p99_s"] > 0:
            out.append(p[a]["startup_p99_s"] / p[b]["startup_p99_s"])
    return out


def target_table(d, key="main"):
    lines = [
        "| trace | random P99 / thaw P99: median [min-max] | target ≥ 4× | "
        "sllm P99 / thaw P99: median [min-max] | target ≥ 1.3× | thaw est. MdAPE | target ≤ 15% |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TRACES:
        runs = d[key].get(t, [])
        if not runs:
            continue
        rr = ratios(runs, "random")
        rs = ratios(runs, "sllm")
        err = med([by_policy(r)["thaw"]["est_mdape"] for r in runs])
        seeds_r = sum(x >= 4 for x in rr)
        seeds_s = sum(x >= 1.3 for x in rs)
        lines.append(
            f"| {t} | {med(rr):.2f}× [{min(rr):.2f}-{max(rr):.2f}] "
            f"| {'met' if med(rr) >= 4 else 'NOT met'} ({seeds_r}/{len(rr)} seeds) "
            f"| {med(rs):.2f}× [{min(rs):.2f}-{max(rs):.2f}] "
            f"| {'met' if med(rs) >= 1.3 else 'NOT met'} ({seeds_s}/{len(rs)} seeds) "
            f"| {100 * err:.1f}% | {'met' if err <= 0.15 else 'NOT met'} |"
        )
    return lines


def sensitivity_table(d):
    lines = [
        "| trace | SSD replicas | random P99 | sllm P99 | thaw P99 | random/thaw | sllm/thaw |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TRACES:
        for rep, runs in (("1", d["rep1"].get(t)), ("2 (default)", d["main1"].get(t)),
                          ("8 (all hosts)", d["rep8"].get(t))):
            if not runs:
                continue
            p = by_policy(runs[0])
            th = p["thaw"]["startup_p99_s"]
            lines.append(
                f"| {t} | {rep} | {fmt_s(p['random']['startup_p99_s'])} "
                f"| {fmt_s(p['sllm']['startup_p99_s'])} | {fmt_s(th)} "
                f"| {p['random']['startup_p99_s'] / th:.2f}× | {p['sllm']['startup_p99_s'] / th:.2f}× |"
            )
    return lines


def ewma_table(d):
    lines = [
        "| trace | policy | est. MdAPE, EWMA on | est. bias, EWMA on | est. MdAPE, EWMA off "
        "| est. bias, EWMA off | loads compared |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TRACES:
        on = d["main1"].get(t)
        off = d["noewma"].get(t)
        if not on or not off:
            continue
        pon, poff = by_policy(on[0]), by_policy(off[0])
        for pol in POLICIES:
            lines.append(
                f"| {t} | {pol} | {100 * pon[pol]['est_mdape']:.1f}% "
                f"| {100 * pon[pol]['est_bias']:+.1f}% | {100 * poff[pol]['est_mdape']:.1f}% "
                f"| {100 * poff[pol]['est_bias']:+.1f}% | {pon[pol]['est_n']} |"
            )
    return lines


def ablation_table(d):
    names = {1: "without histogram keep-alive/pre-warm", 2: "without cost-aware eviction (LRU)",
             4: "without queue-before-scale-out", 8: "without reload-weighted eviction value",
             16: "without wait-and-stage", 24: "without parts 4 and 5",
             32: "without eviction-cost placement",
             56: "without parts 4, 5 and 6 (the policy before them)"}
    lines = [
        "| trace | thaw variant | startup P99 (median over seeds) | sllm P99 / variant P99 (median) "
        "| GPU-h held |",
        "|---|---|---|---|---|",
    ]
    for t in TRACES:
        runs = d["main"].get(t, [])
        if not runs:
            continue
        lines.append(
            f"| {t} | full | {fmt_s(med([by_policy(r)['thaw']['startup_p99_s'] for r in runs]))} "
            f"| {med(ratios(runs, 'sllm')):.2f}× "
            f"| {med([by_policy(r)['thaw']['gpu_s'] / 3600 for r in runs]):.1f} |"
        )
        for off in OFFS:
            ab = d["off"].get((off, t), [])
            if not ab:
                continue
            lines.append(
                f"| {t} | {names[off]} "
                f"| {fmt_s(med([by_policy(r)['thaw']['startup_p99_s'] for r in ab]))} "
                f"| {med(ratios(ab, 'sllm')):.2f}× "
                f"| {med([by_policy(r)['thaw']['gpu_s'] / 3600 for r in ab]):.1f} |"
            )
    return lines


def tail_rows(paths):
    """Pool the requests at or above each run's P95 and P99 startup. Requests
    that waited for nothing (startup 0) are no tail: on azure-fn, where 98%
    are warm, the P95 is 0 and its row counts only those that waited."""
    tails = {0.95: [], 0.99: []}
    p99s = []
    for path in paths:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        st = sorted(float(r["startup_s"]) for r in rows)
        for q in tails:
            cut = st[max(0, int(q * len(st) + 0.999999) - 1)]
            tails[q] += [r for r in rows if float(r["startup_s"]) >= cut and
                         float(r["startup_s"]) > 0]
        p99s.append(st[max(0, int(0.99 * len(st) + 0.999999) - 1)])
    return tails, p99s


def tail_table(a_dir):
    lines = [
        "| trace | policy | tail | requests (5 seeds) | 70B / 34B / ≤13B | load tier SSD / remote / DRAM "
        "| time: load / GPU wait / model queue | no DRAM copy anywhere | device sharing (median) "
        "| reload after eviction ≤10 min before | its placement evicted, free GPUs elsewhere |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    variants = (("random", "details-{t}-*-random.csv"), ("sllm", "details-{t}-*-sllm.csv"),
                ("thaw before (off 24)", "details24-{t}-*-thaw.csv"),
                ("thaw without part 6 (off 32)", "details32-{t}-*-thaw.csv"),
                ("thaw", "details-{t}-*-thaw.csv"))
    for t in TRACES:
        for name, pat in variants:
            paths = sorted(glob.glob(os.path.join(a_dir, pat.format(t=t))))
            if not paths:
                continue
            tails, _ = tail_rows(paths)
            for q, rows in tails.items():
                n = len(rows)
                if not n:
                    continue

                def pct(k):
                    return f"{100.0 * k / n:.0f}%"

                size = [sum(r["params_b"] == b for r in rows) for b in ("70", "34")]
                small = n - sum(size)
                loaded = [r for r in rows if float(r["load_s"]) > 0]
                tier = [sum(r["tier"] == x for r in loaded) for x in ("ssd", "remote", "dram")]
                load = sum(float(r["load_s"]) for r in rows)
                gpu = sum(float(r["gpu_wait_s"]) for r in rows)
                pend = sum(float(r["pending_s"]) for r in rows)
                tot = max(1e-9, sum(float(r["startup_s"]) for r in rows))
                nodram = sum(int(r["dram_hosts"]) == 0 for r in loaded)
                share = med([float(r["contention"]) for r in loaded])
                # Reloads of a model whose idle instance was evicted for
                # another model shortly before, and placements that evicted
                # an idle instance although some host had free GPUs.
                back = sum(r.get("gone_why") == "evicted" and 0 <= float(r["gone_s"]) < 600
                           for r in loaded)
                needless = sum(int(r.get("evicted", 0)) > 0 and int(r.get("free_hosts", 0)) > 0
                               for r in loaded)
                lines.append(
                    f"| {t} | {name} | ≥P{int(q * 100)}{' (> 0 s)' if t == 'azure-fn' and q < 0.99 else ''} | {n} | {pct(size[0])} / {pct(size[1])} / "
                    f"{pct(small)} | {pct(tier[0])} / {pct(tier[1])} / {pct(tier[2])} "
                    f"| {100 * load / tot:.0f}% / {100 * gpu / tot:.0f}% / {100 * pend / tot:.0f}% "
                    f"| {pct(nodram)} | {share:.2f} | {pct(back)} | {pct(needless)} |"
                )
    return lines


def plot(d, png):
    fig, axes = plt.subplots(2, len(TRACES), figsize=(5.2 * len(TRACES), 7.5))
    colors = ["#9e9e9e", "#bdbdbd", "#8d6e63", "#ffb74d", "#64b5f6", "#1565c0"]
    for col, t in enumerate(TRACES):
        runs = d["main"].get(t, [])
        for row, (key, title) in enumerate((("startup", "startup latency"),
                                            ("e2e", "end-to-end latency"))):
            ax = axes[row][col]
            if not runs:
                ax.set_visible(False)
                continue
            xs = range(len(POLICIES))
            p99 = [[by_policy(r)[p][f"{key}_p99_s"] for r in runs] for p in POLICIES]
            p50 = [[by_policy(r)[p][f"{key}_p50_s"] for r in runs] for p in POLICIES]
            m99 = [med(v) for v in p99]
            err = [[m - min(v) for m, v in zip(m99, p99)], [max(v) - m for m, v in zip(m99, p99)]]
            ax.bar(xs, m99, color=colors, yerr=err, capsize=3, label="P99 (median, min-max seeds)")
            if key == "startup":
                # Most requests find a warm instance (P50 = 0), so mark the mean.
                mean = [med([by_policy(r)[p]["startup_mean_s"] for r in runs]) for p in POLICIES]
                ax.plot(xs, mean, "kD", ms=5, label="mean")
            else:
                ax.plot(xs, [med(v) for v in p50], "kD", ms=5, label="P50")
            ax.set_yscale("log")
            ax.set_xticks(list(xs))
            ax.set_xticklabels(POLICIES, rotation=30)
            ax.set_title(f"{t}: {title}")
            ax.set_ylabel("seconds (log)")
            ax.grid(axis="y", alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    cfg = d["main"][TRACES[0]][0]
    c = cfg["cluster"]
    fig.suptitle(
        f"thaw simulate: {c['hosts']}x{c['gpus_per_host']} GPUs ({c['gpu_gb']:.0f} GB), "
        f"{cfg['models']} models 7B-70B, SSD {c['ssd_gbps']:.0f} GB/s, PCIe {c['pcie_gbps']:.0f} GB/s, "
        f"NIC {c['nic_gbit']:.0f} Gb/s, store {c['store_gbit']:.0f} Gb/s, "
        f"{cfg['replicas']} SSD replicas",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--png", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args()

    d = {"main": {}, "main1": {}, "rep1": {}, "rep8": {}, "noewma": {}, "off": {},
         "heldout": {}}
    for t in TRACES:
        d["main"][t] = load(os.path.join(a.dir, f"main-{t}-*.json"))
        d["heldout"][t] = load(os.path.join(a.dir, f"heldout-{t}-*.json"))
        d["main1"][t] = load(os.path.join(a.dir, f"main-{t}-1.json"))
        d["rep1"][t] = load(os.path.join(a.dir, f"replicas1-{t}-1.json"))
        d["rep8"][t] = load(os.path.join(a.dir, f"replicas8-{t}-1.json"))
        d["noewma"][t] = load(os.path.join(a.dir, f"noewma-{t}-1.json"))
        for off in OFFS:
            d["off"][(off, t)] = load(os.path.join(a.dir, f"off{off}-{t}-*.json"))
    if not any(d["main"].values()):
        raise SystemExit(f"sim_plot.py: no main-*.json in {a.dir}")

    plot(d, a.png)

    timing = ""
    tpath = os.path.join(a.dir, "timing.txt")
    if os.path.exists(tpath):
        with open(tpath) as f:
            timing = f.read().strip()
    body = ["<!-- sim:begin -->", "<!-- generated by bench/sim_plot.py from bench/sim.sh; "
            "do not edit by hand -->", ""]
    body += ["### Targets", ""] + target_table(d) + [""]
    if any(d["heldout"].values()):
        seeds = sorted({r["seed"] for runs in d["heldout"].values() for r in runs})
        body += [f"### Targets on held-out seeds {seeds[0]}-{seeds[-1]}", "",
                 "Seeds never looked at while Thaw's policy was designed (its parts were "
                 "chosen on the seeds above).", ""]
        body += target_table(d, "heldout") + [""]
    tail = tail_table(a.dir)
    if len(tail) > 2:
        body += ["### What makes up the startup tail (requests pooled over seeds)", ""]
        body += tail + [""]
    body += ["### Results per trace", ""]
    for t in TRACES:
        if d["main"][t]:
            body += main_table(d, t, d["main"][t]) + [""]
    body += ["### Sensitivity: initial SSD replicas (seed 1)", ""] + sensitivity_table(d) + [""]
    body += ["### Estimator error with and without EWMA (seed 1)", ""] + ewma_table(d) + [""]
    body += ["### Ablation of the Thaw policy", ""] + ablation_table(d) + [""]
    if timing:
        body += [f"Run time: {timing}.", ""]
    body += ["<!-- sim:end -->"]
    gen = "\n".join(body)

    if os.path.exists(a.md):
        with open(a.md) as f:
            text = f.read()
        pat = re.compile(r"<!-- sim:begin -->.*?<!-- sim:end -->", re.S)
        text = pat.sub(lambda _: gen, text) if pat.search(text) else text + "\n" + gen + "\n"
    else:
        text = "# thaw simulate\n\n" + gen + "\n"
    with open(a.md, "w") as f:
        f.write(text)
    print(f"wrote {a.png} and {a.md}")


if __name__ == "__main__":
    main()
