"""The scanning page: people vet candidates in a browser (``astrid review``), and their labels teach the model.

* :mod:`~astrid_assets.review.app` — the web application (FastAPI, Jinja templates, plain CSS and a small
  script for the keyboard; no build step): :func:`create_app`;
* :mod:`~astrid_assets.review.auth` — passwords (scrypt), the trusted-proxy header, CSRF tokens;
* :mod:`~astrid_assets.review.records` — what the page reads and writes in AstrID's database;
* :mod:`~astrid_assets.review.queue` — the queue's order: what teaches the model most first;
* :mod:`~astrid_assets.review.consensus` — several people's labels as one (majority or Dawid–Skene),
  what ``training_datasets`` reads;
* :mod:`~astrid_assets.review.stamps` — stamps as PNG with zscale or asinh, cached;
* :mod:`~astrid_assets.review.plots` — light-curve and completeness SVGs;
* :mod:`~astrid_assets.review.overview` — injection completeness and the backends' health;
* :mod:`~astrid_assets.review.cli` — ``astrid review`` and ``astrid person``.

Importing this package imports none of them (the consensus is used without the web stack).
"""
