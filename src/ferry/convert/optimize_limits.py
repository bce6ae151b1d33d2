"""`ferry optimize`'s gate defaults, in a module without onnx so the CLI reads them
cheaply (the command's `--help` shows them; the gate in ferry.convert.optimize uses them).
"""

from __future__ import annotations

# `--max-slowdown`: how much slower (percent, at any measured batch size) a candidate may
# be than its source. Not 0: the two models are timed in turns (0.3 s medians each, see
# paired_latency_ms), yet on a shared machine the load still moves them by up to 10 %; a gate
# that refuses by chance would be switched off with --force. The regressions it is for
# are 2x (int8 on a model of tiny weights, fp16 on CPU).
DEFAULT_MAX_SLOWDOWN_PERCENT = 20.0
