"""Per-RPC latency percentiles, throughput and error counts: a table for people, one JSON line for machines."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np

OK = "OK"


@dataclasses.dataclass(kw_only=True)
class RpcStats:
    """What one RPC method did: latency of each call, status codes, and (streams) the status of each item."""

    latencies_s: list[float] = dataclasses.field(default_factory=list)
    codes: Counter[str] = dataclasses.field(default_factory=Counter)
    items: Counter[str] = dataclasses.field(default_factory=Counter)
    error_samples: dict[str, str] = dataclasses.field(default_factory=dict)  # code -> the first message seen

    def record(self, code: str, latency_s: float, details: str = "") -> None:
        self.codes[code] += 1
        if code == OK:
            self.latencies_s.append(latency_s)
        else:
            self.error_samples.setdefault(code, details[:200])

    def summary(self, duration_s: float) -> dict[str, object]:
        ok = self.codes[OK]
        lat = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        summary: dict[str, object] = {
            "calls": sum(self.codes.values()),
            "ok": ok,
            "ok_per_s": round(ok / duration_s, 2),
            "p50_ms": round(p50, 1),
            "p90_ms": round(p90, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(float(np.max(lat)), 1),
            "errors": {code: n for code, n in sorted(self.codes.items()) if code != OK},
            "error_samples": dict(sorted(self.error_samples.items())),
        }
        if self.items:
            summary["items"] = dict(sorted(self.items.items()))
            summary["items_indexed_per_s"] = round(self.items["INDEXED"] / duration_s, 2)
        return summary


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadReport:
    mode: str
    target: str
    clients: int
    duration_s: float
    rpcs: Mapping[str, dict[str, object]]
    front_rss_mb: Sequence[float] = ()  # sampled once a second, when the front is ours (all fronts, all workers)
    fronts: Mapping[str, Mapping[str, dict[str, object]]] = dataclasses.field(default_factory=dict)  # per front

    def per_front_lines(self) -> list[str]:
        lines = []
        for target, rpcs in self.fronts.items():
            parts = []
            for name, s in rpcs.items():
                errors = ", ".join(f"{c} {n}" for c, n in s["errors"].items()) or "no errors"  # type: ignore[attr-defined]
                items = f", {s['items_indexed_per_s']} indexed/s" if "items" in s else ""
                parts.append(f"{name} {s['ok']} ok ({s['ok_per_s']}/s{items}, p99 {s['p99_ms']} ms; {errors})")
            lines.append(f"  front {target}: " + "; ".join(parts))
        return lines

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {
            "mode": self.mode,
            "target": self.target,
            "clients": self.clients,
            "duration_s": round(self.duration_s, 1),
            "rpcs": self.rpcs,
            "errors": self.errors(),
        }
        if self.fronts:
            result["fronts"] = self.fronts
        if self.front_rss_mb:
            rss = self.front_rss_mb
            result["front_rss_mb"] = {"first": rss[0], "max": max(rss), "last": rss[-1], "samples": len(rss)}
        return result

    def errors(self) -> dict[str, int]:
        """Error counts by status code over every RPC."""
        total: Counter[str] = Counter()
        for rpc in self.rpcs.values():
            total.update(cast(Mapping[str, int], rpc["errors"]))
        return dict(sorted(total.items()))

    def table(self) -> str:
        lines = [
            f"load ({self.mode}): {self.clients} clients for {self.duration_s:.0f} s against {self.target}",
            f"{'rpc':<16}{'calls':>8}{'ok/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}  errors",
        ]
        for name, s in self.rpcs.items():
            errors = ", ".join(f"{code} {n}" for code, n in s["errors"].items()) or "-"  # type: ignore[attr-defined]
            lines.append(
                f"{name:<16}{s['calls']:>8}{s['ok_per_s']:>9}{s['p50_ms']:>9}{s['p90_ms']:>9}{s['p99_ms']:>9}"
                f"{s['max_ms']:>9}  {errors}"
            )
            if "items" in s:
                items = ", ".join(f"{k} {v}" for k, v in s["items"].items())  # type: ignore[attr-defined]
                lines.append(f"{'  items':<16}{items}  ({s['items_indexed_per_s']} indexed/s)")
        if self.fronts:
            lines.append(f"per front ({len(self.fronts)}):")
            lines += self.per_front_lines()
        if self.front_rss_mb:
            rss = self.front_rss_mb
            lines.append(f"front RSS MB: first {rss[0]:.0f}, max {max(rss):.0f}, last {rss[-1]:.0f}")
        return "\n".join(lines)

    def json_line(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)
