"""Real/bogus vetting of difference-image candidates with a compact U-Net (PyTorch).

Modules
-------
* :mod:`~astrid_assets.ml.dataset` — stamp normalisation, transient masks, night splits, content digest,
  a stored dataset's splits;
* :mod:`~astrid_assets.ml.unet` — the U-Net, the real/bogus probability derived from its mask, weight files;
* :mod:`~astrid_assets.ml.metrics` — ROC AUC, precision/recall/F1, dice, confusion counts (numpy), and the
  operating threshold (:func:`~astrid_assets.ml.metrics.operating_threshold`, the one place it is chosen);
* :mod:`~astrid_assets.ml.champions` — champion and challenger aliases per instrument, the promotion rule,
  the operating point of a trained model, scoring with each frame's champion;
* :mod:`~astrid_assets.ml.injection_set` — examples from injected fakes and the untouched frames' detections;
* :mod:`~astrid_assets.ml.config` — the training parameters and their defaults (the one place they are defined);
* :mod:`~astrid_assets.ml.training` — training with resume/early stopping;
* :mod:`~astrid_assets.ml.evaluation` — the training loss, metrics on a labelled set and batched prediction;
* :mod:`~astrid_assets.ml.checkpoints` — training checkpoints: contents, resuming, copies in the object store;
* :mod:`~astrid_assets.ml.distributed` — training on several processes or GPUs (DDP launched by ``torchrun``);
* :mod:`~astrid_assets.ml.manifest` — the reproducibility manifest of a training run;
* :mod:`~astrid_assets.ml.rerun` — rebuilding a recorded model version from its manifest;
* :mod:`~astrid_assets.ml.tracking` — the MLflow record of a training run, written through the API handed to it.

Nothing here imports Dagster or MLflow, directly or through other modules
(``astrid_assets_tests/ml/test_ml_imports.py`` holds it to that): the Dagster layer logs what these
functions return (and what ``train(..., on_epoch=...)`` hands to its callback), through
:mod:`~astrid_assets.ml.tracking`, and records the registry's decisions through
:mod:`astrid_assets.resources.mlflow_registry`.
"""
