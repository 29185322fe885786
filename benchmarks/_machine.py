# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""What machine a benchmark ran on (the benchmarks are run as scripts, so this sits beside them)."""

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
