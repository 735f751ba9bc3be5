"""What the scanning page reads from and writes to AstrID's database.

Reads the nightly tables (``candidate_detections``, ``scored_detections``, the frame tables, and
``forced_photometry`` / ``object_detections`` / ``object_context`` where they exist and have rows) and
the tables people write (``validations``, ``people``, ``expert_reviews``, migrated with Alembic when
the page starts). A table that does not exist yet reads as empty: the page leaves its panel out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import and_, func, inspect, select

from astrid_assets.io import migrate
from astrid_assets.io.schema import (
    LABELS,
    ROLES,
    calibrated_frames,
    candidate_detections,
    difference_images,
    expert_reviews,
    people,
    raw_observations,
    scored_detections,
    table_for,
    unet_models,
    validations,
)
from astrid_assets.io.tables import engine_for
from astrid_assets.review.auth import hash_password
from astrid_assets.review.consensus import consensus, votes_of
from astrid_assets.review.queue import teaching_order

__all__ = ["QueueFilters", "ReviewRecords", "as_records"]

TABLES_TTL_S = 30.0  #: how long the list of existing tables is trusted
ORDER_TTL_S = 30.0  #: how long a person's queue order is reused
QUEUE_CANDIDATES = ["candidate_id", "night", "field", "snr", "flags", "rule_score"]


@dataclass(frozen=True)
class QueueFilters:
    """What the queue shows: a window of nights, a field, a probability range and flags."""

    start: str | None = None  #: first night (default: the last night with candidates, less ``nights`` − 1)
    end: str | None = None  #: last night (default: the last night with candidates)
    field: str | None = None
    p_min: float | None = None  #: champion's real probability at least this (unscored candidates drop out)
    p_max: float | None = None
    flags: str = "any"  #: any | unflagged | flagged

    def query(self) -> dict[str, str]:
        """The filters as URL query parameters (those set)."""
        values = {"start": self.start, "end": self.end, "field": self.field, "p_min": self.p_min,
                  "p_max": self.p_max, "flags": None if self.flags == "any" else self.flags}
        return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _clean(value):
    """A value for a template: NaN and pandas' NA as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def as_records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts for templates, NaN as None."""
    return [{key: _clean(value) for key, value in row.items()} for row in table.to_dict("records")]


class ReviewRecords:
    """The database behind one scanning page (``url`` a SQLAlchemy URL)."""

    def __init__(self, url: str, default_nights: int = 7):
        self.url = url
        self.default_nights = default_nights
        self._tables: tuple[float, set[str]] = (0.0, set())
        self._orders: dict = {}
        migrate.upgrade(url)

    @property
    def engine(self):
        return engine_for(self.url)

    def has(self, name: str) -> bool:
        """Whether table ``name`` exists (checked again every :data:`TABLES_TTL_S`)."""
        checked, names = self._tables
        if time.monotonic() - checked > TABLES_TTL_S:
            names = set(inspect(self.engine).get_table_names())
            self._tables = (time.monotonic(), names)
        return name in names

    def _read(self, statement) -> pd.DataFrame:
        with self.engine.connect() as connection:
            return pd.read_sql(statement, connection)

    # --- people ---------------------------------------------------------------------------------

    def add_person(self, name: str, password: str | None, role: str = "labeller") -> None:
        """Add a person, or set an existing one's password and role."""
        name = name.strip()
        if not name or len(name) > 128:
            raise ValueError("a name has 1 to 128 characters")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        hashed = hash_password(password) if password else None
        with self.engine.begin() as connection:
            found = connection.execute(select(people.c.person_id).where(people.c.name == name)).first()
            if found:
                connection.execute(people.update().where(people.c.name == name)
                                   .values(password_hash=hashed, role=role))
            else:
                connection.execute(people.insert().values(name=name, password_hash=hashed, role=role,
                                                          created_at=_now()))

    def person(self, name: str) -> dict | None:
        """``name``, ``role`` and ``password_hash`` of a person, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(people.c.name, people.c.role, people.c.password_hash)
                                     .where(people.c.name == name)).first()
        return dict(row._mapping) if row else None

    # --- the queue ------------------------------------------------------------------------------

    def nights_with_candidates(self) -> list[str]:
        if not self.has("candidate_detections"):
            return []
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(
                select(candidate_detections.c.night).distinct().order_by(candidate_detections.c.night.desc()))]

    def window(self, filters: QueueFilters) -> tuple[str, str] | None:
        """The filters' night window, defaulting to the last :attr:`default_nights` nights with candidates."""
        nights = self.nights_with_candidates()
        if not nights:
            return None
        end = filters.end or nights[0]
        start = filters.start or (nights[: self.default_nights][-1] if not filters.end else end)
        return start, end

    def _candidates(self, start: str, end: str, filters: QueueFilters) -> pd.DataFrame:
        """The window's candidates passing the filters, with their champion scores (two indexed reads joined
        here: ``scored_detections`` is indexed by night only)."""
        columns = [candidate_detections.c[name] for name in QUEUE_CANDIDATES]
        statement = select(*columns).where(and_(candidate_detections.c.night >= start,
                                                candidate_detections.c.night <= end))
        if filters.field:
            statement = statement.where(candidate_detections.c.field == filters.field)
        if filters.flags == "unflagged":
            statement = statement.where(func.coalesce(candidate_detections.c.flags, 0) == 0)
        elif filters.flags == "flagged":
            statement = statement.where(func.coalesce(candidate_detections.c.flags, 0) != 0)
        table = self._read(statement)
        if self.has("scored_detections"):
            scores = self._read(select(scored_detections.c.night, scored_detections.c.candidate_id,
                                       scored_detections.c.real_probability, scored_detections.c.model_version)
                                .where(and_(scored_detections.c.night >= start, scored_detections.c.night <= end)))
            table = table.merge(scores.drop_duplicates(["night", "candidate_id"], keep="last"),
                                on=["night", "candidate_id"], how="left")
        else:
            table = table.assign(real_probability=float("nan"), model_version=None)
        probability = pd.to_numeric(table.real_probability, errors="coerce")
        if filters.p_min is not None:
            table = table[probability >= filters.p_min]
        if filters.p_max is not None:
            table = table[probability <= filters.p_max]
        return table

    def labels_of_window(self, start: str, end: str) -> pd.DataFrame:
        """Every label given to candidates of the window."""
        return self._read(select(validations).where(and_(validations.c.night >= start, validations.c.night <= end)))

    def _order(self, person: str, filters: QueueFilters, window: tuple[str, str]) -> pd.DataFrame:
        """Every candidate of the window in teaching order for ``person`` (other people's votes only), cached
        for :data:`ORDER_TTL_S`: other people's new votes reach the order within that time."""
        key = (person, filters, window)
        cached = self._orders.get(key)
        if cached and time.monotonic() - cached[0] < ORDER_TTL_S:
            return cached[1]
        candidates = self._candidates(*window, filters)
        labels = self.labels_of_window(*window)
        votes = votes_of(labels[labels.labeller != person])
        tally = votes.groupby("candidate_id").real.agg(n_real="sum", n_total="size")
        candidates = candidates.merge(tally, left_on="candidate_id", right_index=True, how="left")
        candidates["n_real"] = candidates.n_real.fillna(0).astype(int)
        candidates["n_bogus"] = candidates.n_total.fillna(0).astype(int) - candidates.n_real
        ordered = teaching_order(candidates.drop(columns="n_total"))
        if len(self._orders) > 256:
            self._orders.clear()
        self._orders[key] = (time.monotonic(), ordered)
        return ordered

    def labelled_by(self, person: str, window: tuple[str, str]) -> set[str]:
        """The candidates of the window that ``person`` has labelled (read fresh: the queue drops them at once)."""
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(
                select(validations.c.candidate_id).where(and_(
                    validations.c.labeller == person, validations.c.night >= window[0],
                    validations.c.night <= window[1])))}

    def queue(self, person: str, filters: QueueFilters, limit: int | None = 50, keep: str | None = None,
              ) -> pd.DataFrame:
        """Candidates of the window that ``person`` has not labelled, in teaching order
        (:mod:`astrid_assets.review.queue`); ``keep`` stays in the queue even when labelled (for next/previous)."""
        window = self.window(filters)
        if window is None:
            return pd.DataFrame(columns=[*QUEUE_CANDIDATES, "real_probability", "model_version", "n_real",
                                         "n_bogus", "uncertainty", "disagreement"])
        ordered = self._order(person, filters, window)
        mine = self.labelled_by(person, window) - {keep}
        ordered = ordered[~ordered.candidate_id.isin(mine)]
        return ordered if limit is None else ordered.head(limit)

    def disagreements(self, filters: QueueFilters, limit: int = 20) -> list[dict]:
        """Candidates of the window whose labellers disagree, with everyone's vote."""
        window = self.window(filters)
        if window is None:
            return []
        votes = votes_of(self.labels_of_window(*window))
        split = votes[votes.groupby("candidate_id").real.transform("nunique") > 1]
        disputed = sorted(split.candidate_id.unique())[:limit]
        split = split[split.candidate_id.isin(disputed)]
        return [{"candidate_id": candidate,
                 "votes": [(who, "real" if real else "bogus") for who, real in zip(group.labeller, group.real,
                                                                                   strict=True)]}
                for candidate, group in split.groupby("candidate_id")]

    # --- one candidate --------------------------------------------------------------------------

    def candidate(self, candidate_id: str) -> dict | None:
        """The candidate's row with its score, or None."""
        statement = select(candidate_detections).where(candidate_detections.c.candidate_id == candidate_id)
        if not self.has("candidate_detections"):
            return None
        rows = self._read(statement)
        if rows.empty:
            return None
        row = as_records(rows.tail(1))[0]
        row.update(real_probability=None, model_version=None, real=None)
        if self.has("scored_detections"):
            score = self._read(select(scored_detections).where(and_(
                scored_detections.c.candidate_id == candidate_id, scored_detections.c.night == row["night"])))
            if len(score):
                row.update({key: value for key, value in as_records(score.tail(1))[0].items()
                            if key in ("real_probability", "model_version", "real")})
        return row

    def labels_of(self, candidate_id: str) -> list[dict]:
        """Every label of the candidate, oldest first."""
        table = self._read(select(validations).where(validations.c.candidate_id == candidate_id)
                           .order_by(validations.c.validation_id))
        return as_records(table)

    def reviews_of(self, candidate_id: str) -> list[dict]:
        table = self._read(select(expert_reviews).where(expert_reviews.c.candidate_id == candidate_id)
                           .order_by(expert_reviews.c.review_id))
        return as_records(table)

    @staticmethod
    def consensus_of(labels: list[dict], reviews: list[dict], method: str = "majority") -> dict | None:
        """The consensus (:mod:`astrid_assets.review.consensus`) of one candidate's ``labels`` and ``reviews``
        (:meth:`labels_of`, :meth:`reviews_of`), or None without votes."""
        combined = consensus(pd.DataFrame(labels, columns=["candidate_id", "labeller", "label", "validation_id"]),
                             pd.DataFrame(reviews, columns=["candidate_id", "confirmed", "review_id"]), method)
        return as_records(combined)[0] if len(combined) else None

    def object_of(self, candidate_id: str) -> dict | None:
        """The candidate's object, light curve and context, where those tables exist and have rows."""
        if not self.has("object_detections"):
            return None
        detections = table_for("object_detections")
        found = self._read(select(detections.c.object_id).where(detections.c.candidate_id == candidate_id))
        if found.empty:
            return None
        object_id = found.object_id.iloc[-1]
        result = {"object_id": object_id, "light_curve": [], "context": None}
        if self.has("forced_photometry"):
            photometry = table_for("forced_photometry")
            points = self._read(select(photometry).where(photometry.c.object_id == object_id)
                                .order_by(photometry.c.mjd_obs))
            result["light_curve"] = as_records(points.drop_duplicates(["frame_id"], keep="last"))
        if self.has("object_context"):
            context = table_for("object_context")
            rows = self._read(select(context).where(context.c.object_id == object_id))
            result["context"] = as_records(rows.tail(1))[0] if len(rows) else None
        return result

    # --- writing --------------------------------------------------------------------------------

    def record_label(self, candidate_id: str, person: str, label: str, model_version: str | None,
                     real_probability: float | None, note: str | None = None) -> None:
        """One label, with what was on screen (model version and probability)."""
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}")
        with self.engine.begin() as connection:
            night = _candidate_night(connection, candidate_id)
            connection.execute(validations.insert().values(
                candidate_id=candidate_id, night=night, label=label, labeller=person, labelled_at=_now(),
                note=note or None, model_version=model_version or None, real_probability=real_probability,
                source="review"))

    def record_review(self, candidate_id: str, person: str, confirmed: bool, importance: int,
                      note: str | None = None) -> None:
        """An expert's verdict and importance rating (1 … 5)."""
        if not 1 <= importance <= 5:
            raise ValueError("importance is 1 to 5")
        with self.engine.begin() as connection:
            night = _candidate_night(connection, candidate_id)
            connection.execute(expert_reviews.insert().values(
                candidate_id=candidate_id, night=night, person=person, confirmed=confirmed, importance=importance,
                reviewed_at=_now(), note=note or None))

    # --- the overview ---------------------------------------------------------------------------

    def night_counts(self, nights: int = 7) -> list[dict]:
        """Per recent night: frames received and calibrated, differences made, candidates and labels."""
        counts: dict[str, dict] = {}
        sources = [("frames", raw_observations, raw_observations.c.status == "ok"),
                   ("calibrated", calibrated_frames, calibrated_frames.c.usable.is_(True)),
                   ("differences", difference_images, difference_images.c.status == "ok"),
                   ("candidates", candidate_detections, None), ("labels", validations, None)]
        with self.engine.connect() as connection:
            for name, table, condition in sources:
                if not self.has(table.name):
                    continue
                statement = select(table.c.night, func.count()).group_by(table.c.night)
                if condition is not None:
                    statement = statement.where(condition)
                for night, count in connection.execute(statement):
                    counts.setdefault(night, {"night": night})[name] = count
        recent = sorted(counts, reverse=True)[:nights]
        return [counts[night] for night in recent]

    def champions(self) -> list[dict]:
        """The latest promoted version of each champion alias, with its metrics (table ``unet_models``)."""
        if not self.has("unet_models"):
            return []
        table = self._read(select(unet_models).where(unet_models.c.promoted.is_(True)))
        if table.empty:
            return []
        table = table.assign(_registry=pd.to_numeric(table.registry_version, errors="coerce"))
        latest = table.sort_values("_registry").drop_duplicates("champion_alias", keep="last")
        keep = ["champion_alias", "model_version", "registry_version", "dataset_version", "test_roc_auc",
                "frozen_roc_auc", "test_f1", "operating_threshold", "test_completeness", "test_bogus_rejection",
                "decision"]
        return as_records(latest[keep])


def _candidate_night(connection, candidate_id: str) -> str:
    """The night of ``candidate_id`` (the partition its label or review is filed under); KeyError if unknown."""
    night = connection.execute(select(candidate_detections.c.night)
                               .where(candidate_detections.c.candidate_id == candidate_id)).scalar()
    if night is None:
        raise KeyError(candidate_id)
    return night
