"""Draw the dashboard's key panels to a PNG, from a Prometheus range query or from a capture of one.

    .venv/bin/python dashboards/render.py --prometheus http://127.0.0.1:9090 --since 15m
    .venv/bin/python dashboards/render.py --from capture.json --out dashboards/asyncphp.png

The queries are the dashboard's own: the panels of asyncphp.json found by title, with ``$job``,
``$instance``, ``$source`` and ``$__rate_interval`` filled in. ``--save FILE`` keeps what was
fetched, to draw it again without Prometheus. tests/integration/test_dashboard.py captures its
run the same way (``ASYNCPHP_DASHBOARD_CAPTURE=FILE``): dashboards/asyncphp.png is drawn from it.

Fetching needs only the standard library; drawing needs matplotlib, an optional extra
(``pip install 'asyncphp[plot]'``), imported only when drawing.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "asyncphp.json"
KEY_PANELS = (
    "Throughput by outcome",
    "Job duration percentiles",
    "In flight and queued, per host",
    "Stream lag",
    "Retries",
    "Dead letters",
)
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
DURATION = re.compile(r"^(\d+)([smhd])$")


def panels(dashboard: Path = DASHBOARD) -> dict[str, dict[str, Any]]:
    """The dashboard's panels by title."""
    found: dict[str, dict[str, Any]] = {p["title"]: p for p in json.loads(dashboard.read_text())["panels"]}
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's variables replaced, longest names first ($__rate_interval before $__range)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("$" + name, variables[name]).replace("${" + name + "}", variables[name])
    return expr


def legend(form: str, labels: dict[str, str]) -> str:
    return LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), form).strip() or str(labels)


def api(base: str, path: str, params: dict[str, str], timeout: float = 10.0) -> Any:
    """A Prometheus HTTP API answer's ``data``; its error in full if it refuses."""
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"prometheus refused {params}: {exc.read().decode(errors='replace')}") from exc
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus refused {params}: {body}")
    return body["data"]


def capture(
    base: str,
    start: float,
    end: float,
    step: float,
    variables: dict[str, str],
    titles: tuple[str, ...] = KEY_PANELS,
    dashboard: Path = DASHBOARD,
) -> dict[str, Any]:
    """Each panel's targets as range queries over [start, end]: JSON-ready."""
    by_title = panels(dashboard)
    result: dict[str, Any] = {"start": start, "end": end, "step": step, "variables": variables, "panels": []}
    for title in titles:
        panel = by_title[title]
        series = []
        for target in panel["targets"]:
            expr = substitute(target["expr"], variables)
            params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
            for item in api(base, "/api/v1/query_range", params)["result"]:
                series.append(
                    {
                        "name": legend(target.get("legendFormat", ""), item["metric"]),
                        "labels": item["metric"],
                        "values": [[float(t), float(v)] for t, v in item["values"]],
                    }
                )
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        result["panels"].append({"title": title, "unit": unit, "series": series})
    return result


def draw(data: dict[str, Any], out: Path, title: str = "asyncphp") -> None:
    """The captured panels as a grid of line charts, time on x, seconds from the start."""
    import matplotlib  # the optional extra: only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = data["panels"]
    columns = 2
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(13, 3.2 * rows), squeeze=False, sharex=True)
    start = float(data["start"])
    for ax, panel in zip(axes.flat, shown, strict=False):
        for series in sorted(panel["series"], key=lambda s: s["name"]):
            xs = [t - start for t, _ in series["values"]]
            ys = [v for _, v in series["values"]]
            dashed = series["name"].startswith("max_in_flight")
            ax.plot(xs, ys, label=series["name"], linewidth=1.4, linestyle="--" if dashed else "-")
        unit = {"ops": "per second", "s": "seconds", "none": "", "percentunit": "ratio"}.get(
            panel["unit"], ""
        )
        ax.set_title(panel["title"], fontsize=11, loc="left")
        ax.set_ylabel(unit, fontsize=9)
        if panel["unit"] == "s":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=8, loc="best", frameon=False)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    phases = data.get("phases", [])  # [time, what] marked by the run that captured it
    for ax in axes.flat[: len(shown)]:
        for number, (at, _) in enumerate(phases, 1):
            ax.axvline(at - start, color="grey", linewidth=0.8, linestyle=":")
            ax.annotate(
                str(number), (at - start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                textcoords="offset points", fontsize=8, color="grey",
            )  # fmt: skip
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds from the start")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start))
    fig.suptitle(
        f"{title} · {stamp} · step {data['step']:g} s, rate over {data['variables']['__rate_interval']}"
    )
    if phases:
        fig.text(
            0.5, 0.005, "   ".join(f"{n} {what}" for n, (_, what) in enumerate(phases, 1)),
            ha="center", va="bottom", fontsize=9, color="dimgrey",
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0.025 if phases else 0, 1, 1))
    fig.savefig(out, dpi=90)
    plt.close(fig)


def seconds(text: str) -> float:
    match = DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 90s, 15m, 2h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prometheus", metavar="URL", help="query this Prometheus, e.g. http://127.0.0.1:9090"
    )
    source.add_argument("--from", dest="capture", type=Path, metavar="FILE", help="draw a saved capture")
    parser.add_argument("--since", type=seconds, default=seconds("15m"), help="how far back (default 15m)")
    parser.add_argument("--step", type=float, default=0.0, help="seconds between points (default: range/300)")
    parser.add_argument("--rate-interval", default="1m", help="$__rate_interval (default 1m)")
    parser.add_argument("--job", default="asyncphp")
    parser.add_argument("--instance", default=".*", help="regex of instances (default all)")
    parser.add_argument("--source", default=".*", help="regex of channels and streams (default all)")
    parser.add_argument("--save", type=Path, metavar="FILE", help="also write what was fetched as JSON")
    parser.add_argument("--out", type=Path, default=HERE / "asyncphp.png")
    args = parser.parse_args(argv)
    if args.capture:
        data = json.loads(args.capture.read_text())
    else:
        end = time.time()
        start = end - args.since
        step = args.step or max(1.0, round(args.since / 300))
        variables = {
            "job": args.job, "instance": args.instance, "source": args.source,
            "__rate_interval": args.rate_interval, "__range": f"{int(args.since)}s",
        }  # fmt: skip
        data = capture(args.prometheus, start, end, step, variables)
        if args.save:
            args.save.write_text(json.dumps(data) + "\n")
    try:
        draw(data, args.out)
    except ModuleNotFoundError as exc:
        print(f"render: {exc}: install the plot extra (pip install 'asyncphp[plot]')", file=sys.stderr)
        return 1
    print(f"render: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
