"""loom-shapes: the small default model embedded in Latent Loom.

Synthetic data (`data`), a geometric judge (`judge`), model definitions and export (`models`),
training (`train`, `run_gpu`). Everything is generated and trained locally; nothing is downloaded.
"""
