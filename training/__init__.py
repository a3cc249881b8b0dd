"""Training, generation, evaluation and Hub code of reasonapp; `python -m training --help`."""

# The environment of every `python -m training` process (set in training/__main__.py before torch loads, and given to
# `bench`'s workload processes). THP_MEM_ALLOC_ENABLE: torch reads it once, at its first allocation, and from then on
# allocates each tensor of 2 MB or more page-aligned and marked MADV_HUGEPAGE (transparent huge pages). Measured on R-Gen training at
# the defaults (README, "Memory of a training process"): peak RSS 3.06-3.21 -> 2.31-2.35 GB and 67-82 -> 98 tokens/s.
PROCESS_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}
