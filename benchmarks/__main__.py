"""python -m benchmarks: run the scenarios and print a table (or --json)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from benchmarks import scenarios
from benchmarks.scenarios import Options

Figures = dict[str, dict[str, float]]


def _span(figure: dict[str, float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(figure['median'])} ({fmt.format(figure['min'])}–{fmt.format(figure['max'])})"


def table(facts: dict[str, str], results: dict[str, Figures], options: Options) -> str:
    out = ["asyncphp benchmark", *(f"  {k:<13} {v}" for k, v in facts.items())]
    out.append(f"  each figure: median (min–max) of {options.runs} run(s)\n")
    capacity = results.get("capacity")
    best = 0.0
    if capacity:
        out.append("1. pool capacity, nginx + wrk (one FastCGI connection per request)")
        for key, figure in capacity.items():
            out.append(f"     concurrency {key[1:]:>3}: {_span(figure)} req/s")
            best = max(best, figure["median"])
    burst = results.get("burst")
    if burst:
        out.append(f"2. asyncphp burst, {options.burst:,} messages published in pipelines of 1,000")
        out.append(f"     {_span(burst['rate'])} msg/s, all {options.burst:,} run")
        if best:
            out.append(f"     ratio to the best nginx + wrk figure: {burst['rate']['median'] / best:.2f}×")
        out.append(f"     daemon CPU: {_span(burst['cpu_us_per_message'], '{:.1f}')} µs per message")
        out.append(
            f"     daemon RSS: {burst['rss_before_mb']['median']:.1f} MB before, "
            f"{burst['rss_after_mb']['median']:.1f} MB after"
        )
    durable = results.get("durable")
    if durable:
        out.append(
            "2b. the same burst in the durable mode (XADD to a stream, XREADGROUP, XACK on each result)"
        )
        out.append(f"     {_span(durable['rate'])} msg/s, all {options.burst:,} run")
        if best:
            out.append(f"     ratio to the best nginx + wrk figure: {durable['rate']['median'] / best:.2f}×")
        out.append(f"     daemon CPU: {_span(durable['cpu_us_per_message'], '{:.1f}')} µs per message")
    latency = results.get("latency")
    if latency:
        out.append(
            f"3. publish → worker start at {options.rate:g} msg/s for {options.latency_seconds:g} s (ms)"
        )
        out.append(f"     {'':<26}{'p50':>20}{'p90':>20}{'p99':>20}{'max':>20}")
        for who, label in (("floor", "bare redis-py subscriber"), ("asyncphp", "asyncphp → worker start")):
            cells = "".join(
                f"{_span(latency[f'{who}_{q}'], '{:.3f}'):>20}" for q in ("p50", "p90", "p99", "max")
            )
            out.append(f"     {label:<26}{cells}")
        gap = "".join(
            f"{latency[f'asyncphp_{q}']['median'] - latency[f'floor_{q}']['median']:>+20.3f}"
            for q in ("p50", "p90", "p99", "max")
        )
        out.append(f"     {'asyncphp − floor':<26}{gap}")
    soak = results.get("soak")
    if soak:
        out.append(f"4. soak, {options.soak:,} messages kept under the queue limit")
        out.append(
            f"     {_span(soak['seconds'], '{:.1f}')} s; daemon CPU "
            f"{_span(soak['cpu_us_per_message'], '{:.1f}')} µs per message; "
            f"RSS {soak['rss_start_mb']['median']:.1f} MB at start, "
            f"{soak['rss_warm_mb']['median']:.1f} MB warm, {soak['rss_end_mb']['median']:.1f} MB at the end"
        )
    for key, label in (
        ("seed", "pm = ondemand (shipped)"),
        ("seed_static", "pm = static"),
        ("seed_dynamic", "pm = dynamic"),
    ):
        seed = results.get(key)
        if seed:
            if key == "seed":
                out.append("5. seed: 10 messages at once, the sleeping worker (1 s), max_children 5")
            out.append(
                f"     {label:<24} {_span(seed['seconds'], '{:.2f}')} s until all ten finished; "
                f"peak children {seed['children']['median']:.0f}; "
                f"children RSS {seed['children_rss_mb']['median']:.0f} MB"
            )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--burst", type=int, default=20_000, help="messages in the burst (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="paced rate for latency (default %(default)s/s)"
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument(
        "--soak", type=int, nargs="?", const=1_000_000, default=0, help="run the soak (1,000,000)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=["capacity", "burst", "durable", "latency", "soak", "seed"]
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    args = parser.parse_args(argv)
    options = Options(args.runs, args.burst, args.rate, args.latency_seconds, args.wrk_seconds, args.soak)
    if args.quick:
        options = Options(
            runs=1, burst=300, rate=100, latency_seconds=1, wrk_seconds=1, soak=args.soak and 2_000
        )
    wanted = set(
        args.only or ["capacity", "burst", "durable", "latency", "seed"] + (["soak"] if options.soak else [])
    )

    results: dict[str, Figures] = {}
    plan = {
        "capacity": lambda: scenarios.pool_capacity(options),
        "burst": lambda: scenarios.burst(options),
        "durable": lambda: scenarios.burst(options, durable=True),
        "latency": lambda: scenarios.latency(options),
        "soak": lambda: scenarios.soak(options),
        "seed": lambda: scenarios.seed(options),
        "seed_static": lambda: scenarios.seed(options, {"pm": "static"}),
        "seed_dynamic": lambda: scenarios.seed(
            options,
            {
                "pm": "dynamic",
                "pm.start_servers": "2",
                "pm.min_spare_servers": "1",
                "pm.max_spare_servers": "3",
            },
        ),
    }
    for name, run in plan.items():
        if name.split("_")[0] in wanted:
            print(f"running {name} …", file=sys.stderr, flush=True)
            results[name] = scenarios.repeat(1 if name == "soak" else options.runs, run)
    facts = scenarios.machine()
    if args.json:
        print(json.dumps({"machine": facts, "options": vars(options), "results": results}, indent=2))
    else:
        print(table(facts, results, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
