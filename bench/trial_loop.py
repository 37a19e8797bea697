"""Benchmark: the trial's training loop against a bare PyTorch loop, side by side in one run.

Both loops train the same model (same initial weights), on the same pre-materialised windows of ``sample:sp500``,
with the same batch size, optimizer, gradient clipping and thread count, and both run one validation forward pass
per epoch. The trial loop adds what a trial really does: scheduling, metric scoring against the target's units,
best-weight bookkeeping and formatting a Katib line per epoch. Both loops are burnt in once, then runs alternate
(trial, bare, bare, trial, trial, bare, ...: each goes first every other time) so machine noise and order effects
hit both alike; medians are reported.

    python bench/trial_loop.py              # LSTM and GRU, 3 repeats of 4 epochs
    python bench/trial_loop.py --quick      # a smaller run, for the test suite
    python bench/trial_loop.py --clock=cpu  # CPU seconds of this process: steadier on a machine others load

``--clock=cpu`` times with ``time.process_time`` instead of the wall clock: with ``--threads=1`` it counts the work
each loop does and not the time other processes hold the cores, so the ratio holds on a shared machine.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hpo_lib import data, models, train
from hpo_lib.katib import contract

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def bare_epochs(model: nn.Module, ds: data.Dataset, cfg: train.TrainConfig, clock: Callable[[], float]) -> float:
    """Seconds for ``cfg.epochs`` epochs of the plainest correct loop over the same tensors."""
    x = torch.from_numpy(ds.x["train"])
    y = torch.from_numpy(ds.y_scaled["train"].astype(np.float32))
    x_val = torch.from_numpy(ds.x["val"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = clock()
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = nn.functional.mse_loss(model(x[idx])[:, 0], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(x_val)
    return clock() - start


def trial_epochs(model: nn.Module, ds: data.Dataset, cfg: train.TrainConfig, clock: Callable[[], float]) -> float:
    sink = io.StringIO()
    start = clock()
    train.fit(model, ds, cfg, reporter=lambda r: print(contract.format_metrics_line(r), file=sink))
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in seconds")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed run (default 4, quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating runs per loop (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="wall seconds, or this process's CPU "
                        "seconds (steadier on a loaded machine with --threads=1)")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    epochs = args.epochs or (1 if args.quick else 4)
    repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)

    prices = data.load_prices("sample:sp500")
    if args.quick:
        prices = {k: v.iloc[-1500:] for k, v in prices.items()}
    seq_len, hidden = (20, 32) if args.quick else (60, 64)
    ds = data.prepare(prices, window=seq_len)
    cfg = train.TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, patience=epochs + 1, device="cpu")

    print(f"# trial loop vs bare PyTorch | {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__} | {len(ds.x['train'])} train windows of {seq_len}x{ds.n_features}, "
          f"batch {cfg.batch_size}, {epochs} epochs x {repeats} repeats, {args.clock} clock")
    print(f"{'model':<6} {'trial s/epoch':>14} {'bare s/epoch':>13} {'ratio':>7}")
    ratios = {}
    for name in ("lstm", "gru"):
        def fresh() -> nn.Module:
            torch.manual_seed(0)
            return models.build_model(name, n_features=ds.n_features, window=seq_len, n_outputs=1,
                                      params={"hidden_size": hidden, "num_layers": 2, "dropout": 0.1})

        burn_in = train.TrainConfig(epochs=1, device="cpu")
        trial_epochs(fresh(), ds, burn_in, clock)  # burn-in of both loops: allocator, thread pool, first calls
        bare_epochs(fresh(), ds, burn_in, clock)
        trial_times, bare_times = [], []
        for k in range(repeats):
            for loop in (("trial", "bare") if k % 2 == 0 else ("bare", "trial")):
                if loop == "trial":
                    trial_times.append(trial_epochs(fresh(), ds, cfg, clock) / epochs)
                else:
                    bare_times.append(bare_epochs(fresh(), ds, cfg, clock) / epochs)
        t, b = statistics.median(trial_times), statistics.median(bare_times)
        ratios[name] = t / b
        print(f"{name:<6} {t:>14.3f} {b:>13.3f} {t / b:>7.3f}")
    print("headline: trial loop / bare PyTorch loop = "
          + ", ".join(f"{k.upper()} {v:.3f}x" for k, v in ratios.items()) + " (goal <= 1.10)")


if __name__ == "__main__":
    main()
