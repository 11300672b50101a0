"""The report folder of a backtest: ``report.md``, ``verdicts.csv``, ``summary.json`` and
one PNG per key (top keys by alarms when there are many).

The settings section gives the ``STREAMAE_*`` lines and the Helm ``values.yaml`` snippet
of the chosen false-alarm rate, plus every setting of the run that differs from the
default (the figures hold only with those).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamae.backtest import deploy, plots
from streamae.backtest.engine import Backtest, Figures
from streamae.settings import Settings

log = logging.getLogger(__name__)


def write_report(out: Path, result: Backtest, settings: Settings, chosen: Figures | None,
                 max_plots: int = 12) -> list[Path]:
    """Write the folder; returns the PNGs written (none without matplotlib)."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = _pngs(out, result, max_plots)
    write_verdicts(out / "verdicts.csv", result)
    (out / "summary.json").write_text(json.dumps(summary(result, chosen), indent=1) + "\n")
    (out / "report.md").write_text(markdown(result, settings, chosen, pngs))
    log.info("event=backtest_report out=%s keys=%d pngs=%d", out, len(result.keys), len(pngs))
    return pngs


def _pngs(out: Path, result: Backtest, max_plots: int) -> list[Path]:
    if not plots.available():
        return []
    ranked = sorted(result.keys, key=lambda v: (-v.alarms, -len(v.incidents), v.key))
    return [plots.plot_key(out / plots.file_name(v.key), result.recording, v)
            for v in ranked[:max_plots]]


def write_verdicts(path: Path, result: Backtest) -> None:
    """One line per row of the recording: its key's newest verdict, and the label."""
    labels = result.recording.labels
    lines = []
    for v in result.keys:
        for i, row in enumerate(v.rows):
            lines.append((int(row), v.key, int(result.recording.ts_ms[row]),
                          _num(v.scores[i]), _num(v.thresholds[i]), int(v.flags[i]),
                          int(i >= v.first), "" if labels is None else int(labels[row])))
    lines.sort()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "key", "ts_ms", "score", "threshold", "anomaly",
                         "evaluated", "label"])
        writer.writerows(lines)


def _num(value: float) -> str:
    return "" if value != value else repr(float(value))  # NaN -> empty; every digit kept


def figures_dict(f: Figures) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": f.rate, "threshold": f.threshold, "alarms": f.alarms,
                           "incidents": f.incidents, "days": f.days,
                           "alarms_per_day": f.per_day(f.alarms),
                           "incidents_per_day": f.per_day(f.incidents)}
    if f.confusion is not None and f.quality is not None:
        c = f.confusion
        out.update(precision=c.precision, recall=c.recall, f1=c.f1, far_percent=c.far,
                   mar_percent=c.mar, event=asdict(f.quality))
    return out


def summary(result: Backtest, chosen: Figures | None) -> dict[str, Any]:
    return {"source": result.recording.source, "rows": len(result.recording),
            "first_row": result.first_row, "samples": len(result.replayed.scores),
            "warmup_samples": result.replayed.warm, "dead_letters": len(result.replayed.dead),
            "figures": figures_dict(result.figures),
            "keys": {v.key: {"alarms": v.alarms, "incidents": len(v.incidents)}
                     for v in result.keys},
            "sweep": [figures_dict(f) for f in result.sweep],
            "chosen": None if chosen is None else figures_dict(chosen)}


# -- markdown ---------------------------------------------------------------------------
def markdown(result: Backtest, settings: Settings, chosen: Figures | None,
             pngs: list[Path]) -> str:
    parts = [_header(result, settings), _keys_table(result)]
    if result.figures.confusion is not None:
        parts.append(_quality(result.figures))
    parts += [_sweep_table(result), _settings_section(settings, chosen, result), _plots(pngs)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(result: Backtest, settings: Settings) -> str:
    f, r = result.figures, result.replayed
    days = f"{f.days:.2f} days" if f.days else "no time span (timestamps do not advance)"
    value = "cold" if f.threshold is None else f"{f.threshold:.3f}"
    return (f"# Backtest of `{result.recording.source}`\n\n"
            f"- {len(result.recording)} rows, {len(result.keys)} keys, "
            f"{len(r.scores)} samples ({settings.input.kind} input), {len(r.dead)} would be "
            f"dead letters\n"
            f"- model: {settings.model.kind}, trained on {r.warm} samples"
            f"{' (given checkpoint)' if r.warm == 0 else ''}; rows {result.first_row}+ "
            f"evaluated ({days})\n"
            f"- threshold: {settings.threshold.method}, value {value}\n"
            f"- **{f.alarms} alarms** (flagged readings) and **{f.incidents} incidents**"
            f"{_rates(f)}")


def _rates(f: Figures) -> str:
    if not f.days:
        return ""
    return (f": {f.per_day(f.alarms):.1f} alarms and {f.per_day(f.incidents):.1f} incidents "
            "per day")


def _keys_table(result: Backtest) -> str:
    labelled = result.recording.labels is not None
    head = "| key | readings evaluated | alarms | incidents |" + (
        " labelled readings |" if labelled else "")
    lines = ["## Alarms and incidents per key", "", head,
             "|---|---|---|---|" + ("---|" if labelled else "")]
    for v in sorted(result.keys, key=lambda v: (-v.alarms, v.key)):
        line = f"| {v.key} | {len(v.rows) - v.first} | {v.alarms} | {len(v.incidents)} |"
        if labelled:
            line += f" {int(result.recording.labels[v.rows[v.first:]].sum())} |"
        lines.append(line)
    return "\n".join(lines)


def _quality(f: Figures) -> str:
    c, q = f.confusion, f.quality
    return ("## Against the labels\n\n"
            "| precision | recall | F1 | event F1 | events found | false alarms / 1,000 "
            "normal readings | FAR % | MAR % |\n|---|---|---|---|---|---|---|---|\n"
            f"| {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {q.f1:.3f} | "
            f"{round(q.recall * q.events)}/{q.events} | {q.false_per_1000:.2f} | "
            f"{c.far:.2f} | {c.mar:.2f} |\n\n"
            "Precision, recall, F1, FAR and MAR count readings (SKAB's definitions). Event "
            "F1: recall over labelled runs, precision over alarm runs; a run is found by a "
            "flag on it or within a window length after it, and readings within that reach "
            "are not normal.")


def _sweep_table(result: Backtest) -> str:
    labelled = result.recording.labels is not None
    lines = ["## Sweep over target false-alarm rates", "",
             "Each row re-thresholds the same calibrated scores at score > -log10(rate), "
             "exactly what `STREAMAE_THRESHOLD__METHOD=false_alarm_rate` with that rate "
             "flags.", "",
             "| false-alarm rate | threshold | alarms | alarms / day | incidents | "
             "incidents / day |" + (" event F1 | false alarms / 1,000 |" if labelled else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if labelled else "")]
    for f in result.sweep:
        line = (f"| {f.rate:g} | {f.threshold:.1f} | {f.alarms} | {_day(f, f.alarms)} | "
                f"{f.incidents} | {_day(f, f.incidents)} |")
        if f.quality is not None:
            line += f" {f.quality.f1:.3f} | {f.quality.false_per_1000:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def _day(f: Figures, count: int) -> str:
    value = f.per_day(count)
    return "n/a" if value is None else f"{value:.1f}"


def _settings_section(settings: Settings, chosen: Figures | None, result: Backtest) -> str:
    if chosen is None:
        return ("## Settings\n\nNo rate of the sweep meets the limit on alarms per day: "
                "see the table above.")
    values = deploy.changed(settings, chosen.rate)
    how = ("the configured setting" if chosen.rate is None else
           f"false-alarm rate {chosen.rate:g}: {chosen.alarms} alarms, {chosen.incidents} "
           f"incidents{_rates(chosen)}")
    env = "\n".join(deploy.env_lines(values))
    warm = result.replayed.warm
    note = (f"\n# this backtest trained on {warm} samples (the daemon trains its first model "
            f"on STREAMAE_WARMUP_SIZE={settings.warmup_size})" if warm else "")
    return (f"## Settings to deploy\n\nChosen: {how}.\n\nEnvironment:\n\n```sh\n{env}"
            f"{note}\n```\n\nHelm `values.yaml`:\n\n```yaml\n"
            + "\n".join(deploy.helm_values(values)) + "\n```")


def _plots(pngs: list[Path]) -> str:
    if not pngs:
        return ("## Plots\n\nNo PNGs: matplotlib is not installed. Get them with "
                f"`{plots.INSTALL_HINT}` and run the backtest again.")
    return "## Plots\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in pngs)
