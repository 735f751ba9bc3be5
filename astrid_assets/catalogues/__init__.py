"""Catalogue context of transient objects through astroquery: the nearest Gaia DR3 source
(:mod:`~astrid_assets.catalogues.gaia`), a Pan-STARRS1 star–galaxy score
(:mod:`~astrid_assets.catalogues.panstarrs`), known solar-system objects at the epoch
(:mod:`~astrid_assets.catalogues.skybot`), put together per field and night with a cache and
graceful degradation by :mod:`~astrid_assets.catalogues.context`."""

from astrid_assets.catalogues.context import CatalogueOptions, context_rows

__all__ = ["CatalogueOptions", "context_rows"]
