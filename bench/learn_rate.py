"""How fast the trainer's models learn, with their lifetime and rolling quality metrics.

Times `TrainingState.learn` (score first for progressive validation, then learn) over
synthetic samples (`tests.support.synthetic_samples`, half abandonment, half next stage) in
CPU time, for a rolling window of `--windows` sizes in the same run, so the window's cost
shows as a ratio. Enough samples to fill the window, so the oldest leaves it on every learn.

    python -m bench.learn_rate --samples 40000 --runs 5 --windows 100 5000
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

from models.journeymap import load_journey_map
from models.labels import Sample
from models.training import new_training_state
from tests.support import synthetic_samples


def rate(samples: list[Sample], window: int) -> tuple[float, int]:
    """Samples learned per CPU second, and the pickled state's size after them."""
    state = new_training_state(list(load_journey_map("retail").stages), quality_window=window)
    started = time.process_time()
    for sample in samples:
        state.learn(sample)
    elapsed = time.process_time() - started
    return len(samples) / elapsed, len(pickle.dumps(state))


def main(args: argparse.Namespace) -> None:
    samples = synthetic_samples(args.samples, seed=3)
    rates: dict[int, list[float]] = {w: [] for w in args.windows}
    sizes: dict[int, int] = {}
    for run in range(args.runs):
        for window in args.windows:
            found, sizes[window] = rate(samples, window)
            rates[window].append(found)
            print(f"run {run + 1}: window {window}: {found:,.0f} samples/s", flush=True)
    reference = statistics.median(rates[args.windows[0]])
    for window in args.windows:
        median = statistics.median(rates[window])
        print(f"median: window {window}: {median:,.0f} samples/s "
              f"({median / reference:.2f}x window {args.windows[0]}), "
              f"state {sizes[window] / 1024:,.0f} KiB pickled")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--windows", type=int, nargs="+", default=[100, 5000])
    main(parser.parse_args())
