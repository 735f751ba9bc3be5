"""The one error every archive-backed survey source raises: :class:`SurveyError`."""

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from astroquery.exceptions import InvalidQueryError, LoginError, RemoteServiceError


class SurveyError(RuntimeError):
    """An archive could not be queried or a file could not be fetched.

    The message names the survey, the night, the field and the position (degrees), so that a
    failed Dagster run says which request failed.  An archive that answers but has nothing for
    the night is *not* an error: the sources return an empty list then.
    """

    def __init__(self, survey: str, night: str, field: str, ra: float, dec: float, reason: str) -> None:
        self.survey = survey
        self.night = night
        self.field = field
        self.ra = ra
        self.dec = dec
        self.reason = reason
        super().__init__(
            f"{survey}: fetch failed for night {night}, field {field} "
            f"at RA {ra:.5f} deg, Dec {dec:+.5f} deg: {reason}"
        )


#: What an unreachable, failing or garbled archive raises through ``requests``/``astroquery``:
#: HTTP errors, timeouts and connection errors (``requests.RequestException``), MAST's
#: long-poll limit (``TimeoutError``), MAST's "status: ERROR" answers, a refused MAST token,
#: a query the archive's column list rejects (``InvalidQueryError``), and an undecodable
#: JSON/HTML answer or a survey name the archive does not serve (``ValueError``).
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    TimeoutError,
    RemoteServiceError,
    LoginError,
    InvalidQueryError,
    ValueError,
)


@contextmanager
def archive_errors(survey: str, night: str, field: str, ra: float, dec: float) -> Iterator[None]:
    """Turn any of :data:`ARCHIVE_ERRORS` raised inside the block into a :class:`SurveyError`.

    The original exception is chained (``raise ... from``).  Its text is the reason; it holds
    URLs and status codes, never credentials (a MAST token travels only as a session cookie).
    """
    try:
        yield
    except SurveyError:
        raise
    except ARCHIVE_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise SurveyError(survey, night, field, ra, dec, reason) from exc
