"""Human labels on candidates: recording, importing and listing them, and the simulated curator.

Labels are ``real``, ``bogus`` or ``unsure``. Every label is kept (the newest per candidate is
the one that counts), and a batch is written all-or-nothing: an unknown candidate or label
rejects the whole batch with a message naming what was wrong, and nothing is written. They are
stored in the ``validations`` table (:data:`astrid_assets.io.schema.validations`, migrated with Alembic),
the name the asset graph and the design give them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from astrid_assets.io import migrate
from astrid_assets.io.schema import LABELS, candidate_detections, expert_reviews, validations
from astrid_assets.io.tables import engine_for


class LabelError(ValueError):
    """A label that cannot be recorded; nothing of its batch was written."""


def record_labels(url: str, labels: pd.DataFrame) -> int:
    """Write labels (columns candidate_id, label, labeller, optional note); returns how many."""
    migrate.upgrade(url)
    labels = labels.assign(label=labels.label.str.strip().str.lower())
    unknown_labels = sorted(set(labels.label) - set(LABELS))
    if unknown_labels:
        raise LabelError(f"unknown label(s) {unknown_labels}: use one of {', '.join(LABELS)}")
    if labels.labeller.isna().any() or (labels.labeller.str.strip() == "").any():
        raise LabelError("every label needs a labeller (--by NAME)")
    ids = sorted(set(labels.candidate_id))
    engine = engine_for(url)
    with engine.begin() as connection:
        if not engine.dialect.has_table(connection, candidate_detections.name):
            raise LabelError("no candidates have been detected yet; nothing can be labelled")
        nights = dict(connection.execute(
            select(candidate_detections.c.candidate_id, candidate_detections.c.night)
            .where(candidate_detections.c.candidate_id.in_(ids))).all())
        missing = [candidate for candidate in ids if candidate not in nights]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise LabelError(f"unknown candidate(s): {shown}; nothing was written")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [{"candidate_id": row.candidate_id, "night": nights[row.candidate_id], "label": row.label,
                 "labeller": row.labeller.strip(), "labelled_at": now,
                 "note": None if pd.isna(getattr(row, "note", None)) else row.note}
                for row in labels.itertuples()]
        connection.execute(validations.insert(), rows)
    return len(rows)


def read_csv_labels(path: str, labeller: str | None) -> pd.DataFrame:
    """A CSV with columns candidate_id, label and optionally labeller, note."""
    table = pd.read_csv(path, dtype=str)
    missing = {"candidate_id", "label"} - set(table.columns)
    if missing:
        raise LabelError(f"{path}: missing column(s) {sorted(missing)}")
    if labeller:
        table["labeller"] = table.get("labeller", pd.Series(index=table.index, dtype=str)).fillna(labeller)
    if "labeller" not in table.columns:
        raise LabelError(f"{path}: no labeller column; pass --by NAME")
    return table


def latest_labels(url: str, nights: list[str] | None = None) -> pd.DataFrame:
    """The newest label of each labelled candidate (optionally of some nights)."""
    migrate.upgrade(url)
    newest = select(func.max(validations.c.validation_id)).group_by(validations.c.candidate_id)
    statement = select(validations).where(validations.c.validation_id.in_(newest))
    if nights is not None:
        statement = statement.where(validations.c.night.in_(nights))
    with engine_for(url).connect() as connection:
        return pd.read_sql(statement, connection)


def count_labels(url: str) -> int:
    """How many labels have ever been recorded (the retraining sensor's cursor moves on this)."""
    migrate.upgrade(url)
    with engine_for(url).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(validations)).scalar_one())


def unlabelled_candidates(url: str, night: str) -> pd.DataFrame:
    """Candidates of ``night`` that nobody has labelled yet, highest ``rule_score`` first."""
    migrate.upgrade(url)
    labelled = select(validations.c.candidate_id)
    statement = (select(candidate_detections).where(candidate_detections.c.night == night)
                 .where(candidate_detections.c.candidate_id.not_in(labelled))
                 .order_by(candidate_detections.c.rule_score.desc()))
    with engine_for(url).connect() as connection:
        return pd.read_sql(statement, connection)


def simulated_curation(
    candidates: pd.DataFrame, truth: pd.DataFrame, fraction: float, error_rate: float,
    rng: np.random.Generator, match_arcsec: float = 1.5, min_change_sigma: float = 5.0,
) -> pd.DataFrame:
    """Labels a careful-but-fallible person would give, from the simulated survey's truth.

    A candidate is ``real`` when it lies within ``match_arcsec`` of an injected source whose flux
    changed — a supernova or asteroid present in the frame, or a variable star off its baseline
    by ≥ ``min_change_sigma`` of its Poisson noise — and ``bogus`` otherwise. A random
    ``fraction`` of candidates is labelled, and each label is flipped with probability
    ``error_rate``. ``truth`` holds the frames' truth catalogues with a ``frame_id`` column.
    """
    if candidates.empty:
        return pd.DataFrame(columns=["candidate_id", "label", "labeller", "note"])
    chosen = candidates.sample(frac=fraction, random_state=int(rng.integers(2**31))) if fraction < 1 else candidates
    change = (truth.flux - truth.flux_baseline).abs()
    changed = truth[(truth.kind.isin(["supernova", "asteroid"]) & (truth.flux > 0))
                    | ((truth.kind == "variable") & (change >= min_change_sigma * np.sqrt(truth.flux_baseline)))]
    labels = []
    for frame_id, group in chosen.groupby("frame_id"):
        sources = changed[changed.frame_id == frame_id]
        is_real = np.zeros(len(group), bool)
        if len(sources):
            cos_dec = np.cos(np.radians(group.dec.to_numpy()))[:, None]
            dra = (group.ra.to_numpy()[:, None] - sources.ra.to_numpy()[None, :]) * cos_dec
            ddec = group.dec.to_numpy()[:, None] - sources.dec.to_numpy()[None, :]
            is_real = (np.hypot(dra, ddec) * 3600 <= match_arcsec).any(axis=1)
        flipped = rng.random(len(group)) < error_rate
        labels += [{"candidate_id": cid, "label": "real" if real != flip else "bogus",
                    "labeller": "simulated-curator", "note": "flipped" if flip else None}
                   for cid, real, flip in zip(group.candidate_id, is_real, flipped, strict=True)]
    return pd.DataFrame(labels)


def labelled_candidates(url: str, night_start: str, night_end: str, method: str = "majority") -> pd.DataFrame:
    """Candidates of the night window with a consensus label, for building training datasets.

    The consensus is :func:`astrid_assets.review.consensus.consensus`: each labeller's newest label is
    their vote, ``unsure`` abstains; ``method`` ``majority`` (a tie counts as real) or ``dawid-skene``;
    an expert review settles a candidate. ``label`` is the consensus, ``agreement`` its confidence,
    ``n_labels`` how many votes there are; joined with the candidate's row (stamps, FWHM, frame).
    """
    from astrid_assets.review.consensus import consensus

    migrate.upgrade(url)
    columns = ["candidate_id", "label", "agreement", "n_labels"]
    with engine_for(url).connect() as connection:
        labels = pd.read_sql(select(validations.c.validation_id, validations.c.candidate_id, validations.c.labeller,
                                    validations.c.label)
                             .where((validations.c.night >= night_start) & (validations.c.night <= night_end)),
                             connection)
        reviews = pd.read_sql(select(expert_reviews.c.review_id, expert_reviews.c.candidate_id,
                                     expert_reviews.c.confirmed)
                              .where((expert_reviews.c.night >= night_start) & (expert_reviews.c.night <= night_end)),
                              connection)
        votes = consensus(labels, reviews, method)
        if votes.empty:
            return pd.DataFrame(columns=columns)
        ids = votes.candidate_id.tolist()
        rows = pd.concat([pd.read_sql(select(candidate_detections).where(
            candidate_detections.c.candidate_id.in_(ids[i: i + 500])), connection) for i in range(0, len(ids), 500)])
    return rows.merge(votes[columns], on="candidate_id")
