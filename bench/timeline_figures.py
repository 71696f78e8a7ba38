"""The keypoint timeline's figures on synthetic trajectories (see smartcloset.pose.simulate).

.venv/bin/python bench/timeline_figures.py
"""

from __future__ import annotations

import logging

from smartcloset.pose.filter import OneEuroParams
from smartcloset.pose.simulate import interpolation_error, live_error, one_euro_figures

log = logging.getLogger("timeline_figures")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("live render error, RMS px (squat swing 120 px @ 0.8 Hz; pose irregular, render 40 FPS):")
    log.info("  %-28s %10s %10s", "pose rate / pose latency", "hold last", "timeline")
    for hz, lat in ((25, 60), (25, 100), (15, 80), (40, 30)):
        log.info(
            "  %-28s %10.1f %10.1f",
            f"{hz} FPS / {lat} ms",
            live_error(hz, 40, lat, "hold"),
            live_error(hz, 40, lat, "timeline"),
        )
    interp, nearest = interpolation_error(25)
    log.info("interpolation between 25 FPS results, RMS px: %.2f (nearest result: %.2f)", interp, nearest)
    log.info("One-Euro, 3 px noise at ~30 FPS: jitter ratio (smoothed/raw) and max lag at 0.5 frame heights/s:")
    for mc, beta in ((0.5, 16.0), (1.0, 4.0), (1.0, 16.0), (0.5, 4.0)):
        ratio, lag = one_euro_figures(OneEuroParams(mc, beta))
        log.info(
            "  min_cutoff %.1f beta %4.1f: jitter x%.2f (%.1fx less), lag %.1f px%s",
            mc,
            beta,
            ratio,
            1 / ratio,
            lag,
            "  <- default" if (mc, beta) == (0.5, 16.0) else "",
        )


if __name__ == "__main__":
    main()
