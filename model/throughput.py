"""Speed of training between two log lines: tokens/s, time spent waiting for data, ETA, MFU.

Only training steps count: time spent evaluating or checkpointing is left out, so tokens/s says
how fast the model trains and the ETA how long the remaining steps take.
"""

from __future__ import annotations

import torch

# bf16 dense peak FLOP/s per GPU from the vendors' datasheets (no sparsity), by device-name substring.
GPU_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
}
# A nominal CPU core: 2 FMA units x 16 float32 lanes x 2 FLOP x ~1.6 GHz sustained under AVX-512.
CPU_PEAK_FLOPS_PER_CORE = 100e9


def assumed_peak_flops(device: torch.device) -> float | None:
    """The peak FLOP/s of one worker's device, or None for a GPU not in the table. On CPU, the cores
    this worker computes on: torch's threads (Ray sets them from the CPUs it reserves, at least one)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in GPU_PEAK_FLOPS.items() if key in name), None)
    return CPU_PEAK_FLOPS_PER_CORE * torch.get_num_threads()


class Throughput:
    """Accumulates steps between log lines; ``take`` returns the interval's figures and starts anew."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.tokens = 0
        self.seconds = 0.0
        self.data_wait = 0.0

    def add_step(self, tokens: int, seconds: float, data_wait: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds
        self.data_wait += data_wait

    def take(self, step: int) -> dict[str, float]:
        figures = {
            "tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
            "data_wait_fraction": self.data_wait / self.seconds if self.seconds else 0.0,
            "eta_s": (self.total_steps - step) * self.seconds / self.steps if self.steps else 0.0,
        }
        self._reset()
        return figures


def progress_line(
    step: int, total_steps: int, loss: float, learning_rate: float, figures: dict[str, float], mfu: float | None
) -> str:
    return (
        f"step {step:>{len(str(total_steps))}}/{total_steps} | loss {loss:.4f} | lr {learning_rate:.2e} | "
        f"{figures['tokens_per_s']:,.0f} tok/s" + (f" | MFU {100 * mfu:.1f}%" if mfu is not None else "")
        + f" | data wait {100 * figures['data_wait_fraction']:.1f}% | ETA {format_duration(figures['eta_s'])}"
    )


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
