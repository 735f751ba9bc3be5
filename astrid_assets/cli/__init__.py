"""The ``astrid`` command and the clients it drives.

* :mod:`~astrid_assets.cli.commands` — one small function and parser per subcommand (``demo``, ``label``,
  ``import-labels``, ``candidates``, ``curate``, ``train``, ``rerun``, ``rollback``, ``trigger``), and :func:`main`;
* :mod:`~astrid_assets.cli.doctor` — ``astrid doctor [--migrate]``: is every configured backend usable?
* ``astrid review [--host H] [--port P]`` and ``astrid person NAME`` — the scanning page
  (:mod:`astrid_assets.review.cli`);
* :mod:`~astrid_assets.cli.trigger` — launching a night or a window on a running deployment through its
  webserver's GraphQL API (needs only ``dagster-graphql``).

The console script ``astrid`` is :func:`main`; ``python -m astrid_assets.cli`` runs it too.
"""

from astrid_assets.cli.commands import main

__all__ = ["main"]
