"""reasonapp: a workbench for two-stage reasoning-infused classification.

Henrichsen & Krebs, "Reasoning-infused classification" (arXiv 2507.00214): an LLM fine-tuned to
write reasonings (R-Gen) augments a classification set, and a classifier learns text -> reasoning
-> label (Q->RA) instead of text -> label (Q->A).
"""

__version__ = "0.1.0"
