"""The files a soak run leaves in its output folder: summary.json, samples.csv and rss.png
(drawn by ``picture.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY, SAMPLES, PLOT = "summary.json", "samples.csv", "rss.png"


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    path = folder / SUMMARY
    tmp = folder / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
