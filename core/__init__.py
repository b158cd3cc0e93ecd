"""Shared core of the MAST suite: config, data, checkpoints, records, logging, devices,
distributed."""

import os

# Every stage imports core before torch: MKL's dynamic threading would let it change a call's thread
# count, and with it the rounding, from run to run (docs/reliability.md). torch.set_num_threads
# turns it off too.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")
