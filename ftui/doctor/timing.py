"""Wall and CPU seconds per doctor phase, for the report and `ftui check --timings`."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch


class PhaseTimer:
    """Adds up wall-clock and process CPU seconds (all threads of this process) per named phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def exclude(self, outer: str, inner: str) -> None:
        """Take a phase nested inside another out of the outer one's totals (each second counted once)."""
        for table in (self.wall, self.cpu):
            table[outer] = max(0.0, table.get(outer, 0.0) - table.get(inner, 0.0))


def timings_table(wall: dict[str, float], cpu: dict[str, float], images: int) -> str:
    """A per-phase table (wall s, CPU s) with totals, the thread counts and the machine's load."""
    lines = [f"{'phase':<10} {'wall s':>8} {'CPU s':>8}"]
    for name, seconds in wall.items():
        lines.append(f"{name:<10} {seconds:8.1f} {cpu.get(name, 0.0):8.1f}")
    total_wall, total_cpu = sum(wall.values()), sum(cpu.values())
    lines.append(f"{'total':<10} {total_wall:8.1f} {total_cpu:8.1f}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    lines.append(f"{images} images, {images / max(total_wall, 1e-9):.0f} images/s; torch threads "
                 f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load}")
    return "\n".join(lines) + "\n"
