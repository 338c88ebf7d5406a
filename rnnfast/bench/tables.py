"""Tables as plain text for the terminal and as Markdown for BENCHMARKS.md."""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence


@dataclass
class Section:
    title: str
    headers: Sequence[str]
    rows: List[Sequence[str]]
    notes: List[str] = field(default_factory=list)
    plot: Optional[str] = None  # file name of the section's PNG, in the output folder


def text(section: Section) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(section.headers, *section.rows)]

    def line(cells):
        # The first column names things (left), the others are numbers (right).
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [section.title, "=" * len(section.title), line(section.headers), line("-" * w for w in widths)]
    out += [line(r) for r in section.rows]
    out += section.notes
    return "\n".join(out)


def markdown(section: Section, level: int = 3, image_prefix: str = "") -> str:
    out = ["#" * level + " " + section.title, ""]
    out.append("| " + " | ".join(section.headers) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(section.headers) - 1)) + "|")
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in section.rows]
    if section.notes:
        out += [""] + section.notes
    if section.plot:
        out += ["", f"![{section.title}]({image_prefix}{section.plot})"]
    return "\n".join(out)


def milliseconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def timing_cell(record: Optional[dict]) -> str:
    """Median in ms with the interquartile range as a percentage of it; or why there is none."""
    if record is None:
        return "-"
    if record["status"] != "ok":
        return record["status"]
    flag = " (!)" if record.get("agrees") is False else ""
    return f"{milliseconds(record['median_s'])} ±{100 * record['iqr_s'] / record['median_s'] / 2:.0f}%{flag}"
