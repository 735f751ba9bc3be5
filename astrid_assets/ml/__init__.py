"""Real/bogus vetting of difference-image candidates with a compact U-Net (PyTorch).

Modules
-------
* :mod:`~astrid_assets.ml.dataset` — stamp normalisation, transient masks, night splits, content digest;
* :mod:`~astrid_assets.ml.unet` — the U-Net, the real/bogus probability derived from its mask, weight files;
* :mod:`~astrid_assets.ml.metrics` — ROC AUC, precision/recall/F1, dice, confusion counts (numpy);
* :mod:`~astrid_assets.ml.training` — configuration, training with checkpoints/resume/early stopping,
  evaluation and batched prediction;
* :mod:`~astrid_assets.ml.manifest` — the reproducibility manifest of a training run.

Nothing here imports Dagster or MLflow: the Dagster layer logs what these functions return
(and what ``train(..., on_epoch=...)`` hands to its callback).
"""
