"""The results of a batch-segmentation run: every row as JSON (``results.json``) and as CSV,
one row per image (``table.csv``) and one per object (``objects.csv``, areas in pixels)."""

from __future__ import annotations

import csv
import io

RESULTS_FILE = "results.json"
TABLE_FILE = "table.csv"
OBJECTS_FILE = "objects.csv"
COLUMNS = ["image", "status", "reason", "objects", "mean_area", "median_area", "labels"]


def render_tables(rows: list[dict]) -> dict[str, str]:
    """``{file name: CSV text}`` for the image table and the object table."""
    table, objects = io.StringIO(), io.StringIO()
    writer = csv.DictWriter(table, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    out = csv.writer(objects)
    out.writerow(["image", "object", "area"])
    for r in rows:
        out.writerows((r["image"], i + 1, a) for i, a in enumerate(r.get("areas") or []))
    return {TABLE_FILE: table.getvalue(), OBJECTS_FILE: objects.getvalue()}
