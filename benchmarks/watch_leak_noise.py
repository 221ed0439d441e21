"""How often the leak rule's trend finder reads pure Gaussian noise as a trend, by window length.

`crisisctl.watch.trend.recent_trend` (min_samples 3, min_r2 0.8: the fastest setting) is run
on `--trials` windows of independent Gaussian noise for each window length; the share that
reads as a trend is the false-alarm rate per evaluation of one series. Also the share of
windows (flat noise, then two samples rising 20σ each) found as a trend two intervals in.
Pure arithmetic: no server, no clock; deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random

from crisisctl.watch.trend import recent_trend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40_000)
    parser.add_argument("--lengths", default="5,8,12,20,40,180")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print("points  noise read as a trend  rise of 20σ/interval found after 2 intervals")
    for n in (int(x) for x in args.lengths.split(",")):
        false = sum(
            recent_trend(
                [(10.0 * i, rng.gauss(0.0, 1.0)) for i in range(n)], min_samples=3, min_r2=0.8
            )
            is not None
            for _ in range(args.trials)
        )
        found = 0
        power_trials = max(1, args.trials // 20)
        for _ in range(power_trials):
            values = [rng.gauss(0.0, 1.0) for _ in range(n - 2)]
            values += [20.0 * k + rng.gauss(0.0, 1.0) for k in (1, 2)]
            window = [(10.0 * i, v) for i, v in enumerate(values)]
            found += recent_trend(window, min_samples=3, min_r2=0.8) is not None
        print(
            f"{n:6d}  {false:6d} of {args.trials} ({false / args.trials:.1e})"
            f"  {found / power_trials:6.1%} of {power_trials}"
        )


if __name__ == "__main__":
    main()
