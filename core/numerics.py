"""The suite's numerics version: bumped whenever a change alters the numbers a seeded run computes, not only
its speed. Checkpoints record it; the study (``scripts/study.py``) retrains a run whose checkpoint has an
older version, so that every run of one study is computed by the same arithmetic.

History:
  1  up to commit b5c665d.
  2  views: blur as depthwise convolutions grouped by radius (was shifted copies accumulated tap by tap);
     loss: covariance term from the N x N Gram matrix when N < d. Both differ from version 1 by float
     rounding only (blur: < 5e-7 before the uint8 rounding, about 1 pixel value in 20,000 moves by 1), which
     training amplifies into run-to-run differences the size of a seed's.
"""
NUMERICS = 2
