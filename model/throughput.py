"""Speed of training between two log lines: tokens/s, time spent waiting for data, ETA, MFU.

Only training steps count: time spent evaluating or checkpointing is left out, so tokens/s says
how fast the model trains and the ETA how long the remaining steps take.
"""

from __future__ import annotations

import torch

# Dense peak FLOP/s per GPU from the vendors' datasheets (no sparsity): bfloat16, TF32 and plain
# float32 (CUDA cores), by device-name substring, the first match winning: "H100 PCIe" and
# "H100 NVL" are slower parts than the SXM "H100", and an "L4" is not an "L40" or an "L40S".
GPU_PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    ("H100 NVL", {"bf16": 835e12, "tf32": 418e12, "fp32": 60.0e12}),
    ("H100", {"bf16": 989e12, "tf32": 495e12, "fp32": 66.9e12}),  # SXM
    ("H200", {"bf16": 989e12, "tf32": 495e12, "fp32": 66.9e12}),
    ("A100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("L40", {"bf16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    ("L4", {"bf16": 121e12, "tf32": 60.0e12, "fp32": 30.3e12}),
]
# A nominal CPU core: 2 FMA units x 16 float32 lanes x 2 FLOP x ~1.6 GHz sustained under AVX-512.
CPU_PEAK_FLOPS_PER_CORE = 100e9


def assumed_peak_flops(device: torch.device, dtype: torch.dtype, tf32: bool) -> float | None:
    """The peak FLOP/s of one worker's device at the precision its matmuls run in (bfloat16, or
    float32 as TF32 where ``tf32`` allows it), or None for a GPU not in the table. On CPU, the cores
    this worker computes on: torch's threads (Ray sets them from the CPUs it reserves, at least one)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        kind = "bf16" if dtype == torch.bfloat16 else "tf32" if tf32 else "fp32"
        return next((peaks[kind] for key, peaks in GPU_PEAK_FLOPS if key in name), None)
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
