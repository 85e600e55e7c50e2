#!/usr/bin/env python3
"""A gpu_burn of our own for machines without one: bf16 matrix multiplies on every GPU with
PyTorch for SECONDS seconds, talking like gpu_burn (progress lines, then "GPU i: OK").

Usage: matmul_load.py [options ignored] SECONDS. bench/device_check.sh puts a `gpu_burn` that
runs this into a GPU_BURN_DIR, so bin/run_gpuburn.sh drives it through the runbook's phases.
Exit status: 0 every GPU computed, 1 a GPU failed (its error printed), 2 usage, 127 no PyTorch
or no CUDA device.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    try:
        seconds = float(argv[-1])
    except (IndexError, ValueError):
        print("usage: matmul_load.py SECONDS", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("matmul_load.py: PyTorch is not installed", file=sys.stderr)
        return 127
    if not torch.cuda.is_available():
        print("matmul_load.py: no CUDA device", file=sys.stderr)
        return 127
    count = torch.cuda.device_count()
    pairs = []
    for index in range(count):
        device = torch.device("cuda", index)
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        pairs.append((device, a, b))
    start = time.monotonic()
    next_line = start
    done = [0] * count
    failed: dict[int, str] = {}
    while time.monotonic() - start < seconds:
        for index, (_device, a, b) in enumerate(pairs):
            if index in failed:
                continue
            try:
                for _ in range(20):
                    torch.mm(a, b)
                done[index] += 20
            except RuntimeError as exc:
                failed[index] = str(exc).splitlines()[0]
        torch.cuda.synchronize()
        if time.monotonic() >= next_line:
            share = min(100.0, (time.monotonic() - start) / seconds * 100)
            tflops = [2 * 8192**3 * n / max(time.monotonic() - start, 1e-9) / 1e12
                      for n in done]
            print(f"{share:.1f}%  proc'd: " + " / ".join(f"{n}" for n in done)
                  + "   (" + " - ".join(f"{t:.0f}" for t in tflops) + " TFLOP/s)", flush=True)
            next_line += 10
    print(f"\nTested {count} GPUs:")
    for index in range(count):
        print(f"\tGPU {index}: " + (f"FAULTY ({failed[index]})" if index in failed else "OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
