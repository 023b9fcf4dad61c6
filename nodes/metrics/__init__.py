"""Evaluation metrics (CLIP score, CLIP directional similarity, FID/KID) and evaluation helpers
(prompt lists, noise-schedule plots, labelled image grids).

Plain functions over tensors and paths that return dataclasses; the engine's node wrappers live
elsewhere. Heavy imports (torch, transformers, scipy) happen in the submodules.
"""
