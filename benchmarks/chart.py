"""The bench's picture: events/s per workload, raw psycopg2 and flash_wal, and the
commit-to-callback latency distribution, written next to the JSON figures.

matplotlib is a bench-only dependency (``make bench`` installs it); without it the
chart is skipped with a note, the figures stand.
"""

from typing import Any, Dict, Optional

WORKLOADS = ("W1", "W2", "W3")


def write(figures: Dict[str, Any], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (make bench installs it)")
        return None
    workloads = [name for name in WORKLOADS if f"{name}_ratio" in figures]
    latencies = [(label, figures[key]) for label, key in (
        ("idle stream", "latency_all_ms"), ("while a backlog drains", "backlog_latency_all_ms")) if key in figures]
    if not workloads and not latencies:
        return None
    panels = (1 if workloads else 0) + (1 if latencies else 0)
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2))
    axes = list(axes) if panels > 1 else [axes]
    if workloads:
        throughput = axes.pop(0)
        positions = range(len(workloads))
        raw = [figures[f"{name}_raw_events_per_second"] / 1000 for name in workloads]
        flash = [figures[f"{name}_flash_events_per_second"] / 1000 for name in workloads]
        throughput.bar([p - 0.2 for p in positions], raw, 0.4, label="raw psycopg2 (decode=False)", color="#999999")
        bars = throughput.bar([p + 0.2 for p in positions], flash, 0.4, label="flash_wal, typed", color="#3366aa")
        for bar, name in zip(bars, workloads):
            throughput.annotate(f"{figures[f'{name}_ratio']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=9)
        throughput.set_xticks(list(positions))
        throughput.set_xticklabels(workloads)
        throughput.set_ylabel("thousand events/s (median of rounds)")
        throughput.set_title("Draining a backlog: start() to last event")
        throughput.legend(fontsize=8, loc="lower left")
    if latencies:
        distribution = axes.pop(0)
        for label, values in latencies:
            ordered = sorted(values)
            share = [100 * (i + 1) / len(ordered) for i in range(len(ordered))]
            distribution.plot(ordered, share, label=label)
        distribution.set_xscale("log")
        distribution.set_xlabel("commit to callback, ms (log)")
        distribution.set_ylabel("% of transactions at or below")
        distribution.set_title(f"Latency at {figures.get('sizes', {}).get('rate', 500):g} tx/s")
        distribution.axvline(10, color="#cc3333", linestyle=":", linewidth=1)
        distribution.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
