"""Benchmark: one LSTM trial on a GPU, and how many trials can share that GPU.

Every run is a real trial process (``python -m hpo_lib.trial --model=lstm --device=cuda ...``), as the engine runs
them. For N = 1, 2, 4, 8 concurrent trial processes on one GPU it reports the per-epoch time (from the trials' own
``train_time_s`` lines), the GPU utilisation sampled by ``nvidia-smi`` while they run (or ``torch.cuda.utilization``
where nvidia-smi is missing), and the aggregate throughput in epochs per second of training time; the headline is
the aggregate at the largest N over that of one trial. Without a CUDA GPU it prints one skip line and exits 0.

    python bench/gpu_throughput.py             # N = 1, 2, 4, 8; 6 epochs of the LSTM on sample:sp500
    python bench/gpu_throughput.py --quick     # N = 1, 2; 2 epochs on a shorter window
    python bench/gpu_throughput.py --device cpu --quick   # the same plumbing on the CPU (no utilisation)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from hpo_lib.katib import contract


def cumulative_train_times(text: str) -> list[float]:
    """``train_time_s`` of every epoch line of a trial's stdout, read as Katib's collector reads it."""
    times = []
    for line in text.splitlines():
        parsed = contract.parse_metrics_line(line, ["epoch", "train_time_s"])
        if parsed and "epoch" in parsed[1]:  # the final line has train_time_s too, but no epoch
            times.append(float(parsed[1]["train_time_s"]))
    return times


class UtilisationSampler:
    """GPU utilisation (percent) and memory used (MiB), sampled every ``interval_s`` in a background thread."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.samples = interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.source = "nvidia-smi" if shutil.which("nvidia-smi") else "torch.cuda.utilization"

    def _read(self) -> tuple[float, float] | None:
        if self.source == "nvidia-smi":
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True)
            try:
                util, memory = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
            except (ValueError, IndexError):
                return None
            return util, memory
        try:
            return float(torch.cuda.utilization(0)), float("nan")  # memory of all processes needs nvidia-smi
        except Exception:  # noqa: BLE001 - needs pynvml; no utilisation figure is better than a wrong one
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, index: int) -> float:
        values = [s[index] for s in self.samples]
        return statistics.mean(values) if values else float("nan")


def run_concurrent(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Start ``n`` trial processes at once; per-epoch times from their stdout, utilisation while they run."""
    argv = [sys.executable, "-m", "hpo_lib.trial", "--model=lstm", f"--data={args.data}", f"--epochs={args.epochs}",
            f"--patience={args.epochs}", f"--device={args.device}", f"--threads={args.threads}",
            f"--hidden-size={args.hidden_size}", "--num-layers=2", f"--batch-size={args.batch_size}",
            "--seq-len=60"]
    with UtilisationSampler() if args.device.startswith("cuda") else _NoSampler() as sampler:
        started = time.perf_counter()
        procs = [subprocess.Popen([*argv, f"--seed={i}", f"--output-dir={workdir / f'n{n}-{i}'}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(n)]
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - started
    if any(p.returncode for p in procs):
        raise SystemExit(f"a trial process failed (exit codes {[p.returncode for p in procs]})")
    epoch_times, rates = [], []
    for text in outputs:
        times = cumulative_train_times(text)  # cumulative seconds after each epoch
        steps = [b - a for a, b in zip([0.0, *times], times)][1:]  # the first epoch carries warm-up: left out
        epoch_times.extend(steps)
        rates.append(len(steps) / sum(steps) if steps else len(times) / times[-1])
    return {"epoch_s": statistics.median(epoch_times), "aggregate": sum(rates), "wall_s": wall,
            "util": sampler.mean(0), "memory": sampler.mean(1)}


class _NoSampler:
    def __enter__(self) -> _NoSampler:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def mean(self, index: int) -> float:
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run, for the test suite")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu, to exercise the plumbing")
    parser.add_argument("--data", default=None, help="data spec (default sample:sp500; quick: from 2012)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 6, quick 2)")
    parser.add_argument("--concurrency", default=None, help="comma-separated N (default 1,2,4,8; quick 1,2)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per trial process")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("# gpu throughput | skipped: no CUDA GPU visible (torch.cuda.is_available() is False)")
        print("headline: skipped, no GPU on this machine")
        return
    args.data = args.data or ("sample:sp500,start=2012-01-01" if args.quick else "sample:sp500")
    args.epochs = args.epochs or (2 if args.quick else 6)
    levels = [int(n) for n in (args.concurrency or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in levels:
            rows[n] = run_concurrent(n, args, Path(tmp))
    print(f"# gpu throughput | {name}, LSTM hidden {args.hidden_size} x 2 layers, batch {args.batch_size}, "
          f"seq 60, {args.data}, {args.epochs} epochs per trial, {args.threads} CPU threads per process")
    print(f"{'N':>3} {'s/epoch (median)':>17} {'GPU util %':>11} {'GPU MiB':>8} {'epochs/s (sum)':>15} "
          f"{'vs N=1':>7} {'wall s':>7}")
    one = rows[levels[0]]["aggregate"]
    for n, r in rows.items():
        print(f"{n:>3} {r['epoch_s']:>17.3f} {r['util']:>11.0f} {r['memory']:>8.0f} {r['aggregate']:>15.2f} "
              f"{r['aggregate'] / one:>7.2f} {r['wall_s']:>7.1f}")
    top, first = levels[-1], rows[levels[0]]
    util = "n/a" if first["util"] != first["util"] else f"{first['util']:.0f}%"  # NaN: nothing was sampled
    print(f"headline: {top} concurrent trials give {rows[top]['aggregate'] / one:.2f}x the epochs/s of one trial on "
          f"one {name} (one trial: {first['epoch_s']:.3f} s/epoch at {util} GPU utilisation)")


if __name__ == "__main__":
    main()
