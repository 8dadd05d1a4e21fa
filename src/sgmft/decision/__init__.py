"""The decision layer: what is fitted on held-out predictions after the network trains, between
`sgmft.training` (which calls it) and `sgmft.models` (whose buffers it fills).

- `probes`: the unimodal logistic-regression probes (C and scaling chosen out of fold), and
  `logistic`, the streamed L-BFGS solver they use.
- `mixture`: the fallback mixture of the fused head, the probes and the class prior.
- `temperature`: the calibration temperature that holds on every (large enough) fold.
- `offsets`: per-label decision offsets for balanced decisions.

The prediction sets are calibrated after all of it, on posts none of it saw
(`sgmft.training.run.conformal_posts`).
"""
