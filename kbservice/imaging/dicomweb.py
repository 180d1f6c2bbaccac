"""A PACS over DICOMweb (dicomweb-client): QIDO-RS to find studies, WADO-RS to fetch their instances.

Fetched instances are written to files in a folder the caller owns and then go through the same reader
and de-identification as any DICOM file; nothing here stores anything. Every request has a timeout and is
retried with backoff on 5xx answers, timeouts and refused connections; the bytes of one fetch are counted
while they arrive and the fetch is abandoned past `pacs.max_study_mb`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbservice.config import PacsSettings, Settings
from kbservice.errors import ConfigError, ImageReadError, PacsError, UnknownStudyError
from kbservice.types import RequestImage

REFERENCE_PREFIX = "dicomweb:"
# DICOM JSON (PS3.18 F.2) keys of the attributes read from QIDO-RS answers.
_PATIENT_ID = "00100020"
_STUDY_DATE = "00080020"
_MODALITIES = "00080061"
_MODALITY = "00080060"
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_INSTANCES_IN_STUDY = "00201208"
_INSTANCES_IN_SERIES = "00201209"


@dataclass(frozen=True)
class StudyReference:
    """A study, or one series of it, as a row or a request names it: `dicomweb:STUDY_UID[/SERIES_UID]`."""

    study_uid: str
    series_uid: str | None = None

    @classmethod
    def parse(cls, text: str) -> StudyReference:
        body = text.removeprefix(REFERENCE_PREFIX).strip()
        study, _, series = body.partition("/")
        if not study or not all(_is_uid(part) for part in (study, series) if part):
            raise PacsError(
                f"{text!r} is not a study reference: write dicomweb:STUDY_UID or dicomweb:STUDY_UID/SERIES_UID"
            )
        return cls(study, series or None)

    def __str__(self) -> str:
        return f"{REFERENCE_PREFIX}{self.study_uid}" + (f"/{self.series_uid}" if self.series_uid else "")


def is_reference(name: str) -> bool:
    return name.startswith(REFERENCE_PREFIX)


def _is_uid(text: str) -> bool:
    return len(text) <= 64 and all(part.isdigit() for part in text.split("."))


def _value(dataset: dict[str, Any], tag: str) -> Any:
    values = (dataset.get(tag) or {}).get("Value") or []
    return values[0] if len(values) == 1 else (values or None)


class _CountingSession:
    """Wraps a requests Session: the response bytes are counted as they are read (stream or not), so one
    fetch stops at its limit instead of after it."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.limit: int | None = None
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def get(self, url: str, **kwargs: Any) -> Any:
        response = self._session.get(url, **kwargs)
        if self.limit is not None:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and self.read + int(declared) > self.limit:
                response.close()
                raise PacsError(self._over())
            original = response.iter_content

            def counted(chunk_size: int = 1, decode_unicode: bool = False) -> Iterator[bytes]:
                for chunk in original(chunk_size, decode_unicode):
                    self.read += len(chunk)
                    if self.read > self.limit:  # type: ignore[operator]
                        response.close()
                        raise PacsError(self._over())
                    yield chunk

            response.iter_content = counted
        return response

    def _over(self) -> str:
        return f"the PACS sent more than {self.limit:,} bytes for one study or series (pacs.max_study_mb)"


class PacsClient:
    """QIDO-RS and WADO-RS against the configured PACS."""

    def __init__(self, settings: PacsSettings) -> None:
        if not settings.url:
            raise ConfigError("no PACS is configured: set [pacs] url (KB_PACS__URL) to its DICOMweb root")
        import requests
        from dicomweb_client.api import DICOMwebClient
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.settings = settings
        session = requests.Session()
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=settings.retries,
            status=settings.retries,
            backoff_factor=settings.backoff_s,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=("GET", "HEAD"),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if settings.username:
            session.auth = (settings.username, settings.password.get_secret_value() if settings.password else "")
        if settings.bearer_token:
            session.headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        self._session = _CountingSession(session)
        self._client = DICOMwebClient(
            settings.url.rstrip("/"),
            session=self._session,  # type: ignore[arg-type]
            timeout=settings.timeout_s,
        )
        self._client.set_http_retry_params(retry=False)  # the session's adapter retries, with our settings

    def ping(self) -> dict[str, Any]:
        """Whether the PACS answers a QIDO-RS query (one study at most): {url, reachable, studies_seen}."""
        found = self._call(lambda: self._client.search_for_studies(limit=1), what="the study search")
        return {"url": self.settings.url, "reachable": True, "studies_seen": len(found)}

    def find_studies(self, *, patient_id: str | None = None, accession: str | None = None) -> list[dict[str, Any]]:
        """The studies of a patient id or an accession number, each as QIDO-RS describes it (raw JSON
        datasets: the caller decides what of them may be shown), with its series."""
        filters = {"PatientID": patient_id} if patient_id else {"AccessionNumber": accession}
        studies = self._call(lambda: self._client.search_for_studies(search_filters=filters), what="the study search")
        for study in studies:
            uid = _value(study, _STUDY_UID)
            study["series"] = self._call(
                lambda uid=uid: self._client.search_for_series(study_instance_uid=uid), what="the series search"
            )
        return studies

    def fetch(self, reference: StudyReference, folder: Path) -> list[Path]:
        """Every instance of the referenced study or series written as a DICOM file into `folder`, in the
        PACS's order. Refused whole: an unknown study, more than `max_instances`, more than `max_study_mb`,
        an answer that is not DICOM."""
        instances = self._call(
            lambda: self._client.search_for_instances(
                study_instance_uid=reference.study_uid, series_instance_uid=reference.series_uid
            ),
            what=f"the instance search of {reference}",
        )
        if not instances:
            raise UnknownStudyError(f"the PACS knows no instances of {reference}")
        if len(instances) > self.settings.max_instances:
            raise PacsError(
                f"{reference} has {len(instances)} instances, over pacs.max_instances ({self.settings.max_instances})"
            )
        self._session.limit, self._session.read = int(self.settings.max_study_mb * 1024 * 1024), 0
        try:
            if reference.series_uid:
                stream = self._client.iter_series(reference.study_uid, reference.series_uid)
            else:
                stream = self._client.iter_study(reference.study_uid)
            paths = []
            for number, dataset in enumerate(self._translated(stream, what=f"the retrieval of {reference}"), start=1):
                path = folder / f"instance-{number:04d}.dcm"
                self._write(dataset, path, reference)
                paths.append(path)
        finally:
            self._session.limit = None
        if not paths:
            raise UnknownStudyError(f"the PACS returned no instances of {reference}")
        return paths

    def _translated(self, stream: Iterator[Any], *, what: str) -> Iterator[Any]:
        """The datasets of a WADO-RS answer; transport errors named as in `_call`, anything else that stops
        the parse reported as an answer that is not DICOM."""
        import requests

        while True:
            try:
                dataset = next(stream)
            except StopIteration:
                return
            except (PacsError, UnknownStudyError):
                raise
            except requests.RequestException as exc:
                raise self._transport_error(exc, what=what) from exc
            except Exception as exc:
                raise PacsError(f"the PACS's answer to {what} is not DICOM ({type(exc).__name__})") from exc
            yield dataset

    @staticmethod
    def _write(dataset: Any, path: Path, reference: StudyReference) -> None:
        if not hasattr(dataset, "file_meta") or "PixelData" not in dataset:
            raise PacsError(f"an instance of {reference} from the PACS holds no image (no pixel data)")
        dataset.save_as(path, enforce_file_format=True)

    def _call(self, work: Any, *, what: str) -> Any:
        import requests

        try:
            return work()
        except requests.RequestException as exc:
            raise self._transport_error(exc, what=what) from exc

    def _transport_error(self, exc: Exception, *, what: str) -> Exception:
        import requests

        if isinstance(exc, requests.HTTPError):
            status = exc.response.status_code if exc.response is not None else None
            if status == 404:
                return UnknownStudyError(f"the PACS does not know what {what} asked for (HTTP 404)")
            return PacsError(f"the PACS at {self.settings.url} answered {what} with HTTP {status}")
        return PacsError(
            f"the PACS at {self.settings.url} could not be reached for {what} after {self.settings.retries} "
            f"retries ({type(exc).__name__})"
        )


def study_summary(study: dict[str, Any], *, shift_date: Any) -> dict[str, Any]:
    """What `pacs find` shows of a QIDO-RS study: UIDs, modalities, counts and the date shifted as the
    de-identification will shift it (`shift_date(date, patient_id)`); never a name or an identifier."""
    patient_id = _value(study, _PATIENT_ID) or ""
    raw_date = _value(study, _STUDY_DATE)
    modalities = _value(study, _MODALITIES)
    return {
        "study_uid": _value(study, _STUDY_UID),
        "study_date_shifted": shift_date(str(raw_date), str(patient_id)) if raw_date else None,
        "modalities": modalities if isinstance(modalities, list) else [modalities] if modalities else [],
        "instances": _value(study, _INSTANCES_IN_STUDY),
        "series": [
            {
                "series_uid": _value(series, _SERIES_UID),
                "modality": _value(series, _MODALITY),
                "instances": _value(series, _INSTANCES_IN_SERIES),
            }
            for series in study.get("series") or []
        ],
    }


def study_request_images(reference: str, *, settings: Settings) -> tuple[RequestImage, ...]:
    """Every instance of a PACS study or series as a request's images (read and normalised like a file;
    the fetched files are removed at once: a request keeps only its normalised pixels)."""
    from kbservice.imaging.prepare import request_pixels

    parsed = StudyReference.parse(reference)
    with tempfile.TemporaryDirectory(prefix="kbservice-pacs-") as folder:
        images = []
        for number, path in enumerate(PacsClient(settings.pacs).fetch(parsed, Path(folder)), start=1):
            try:
                images.append(RequestImage.of(request_pixels(path, settings=settings.imaging)))
            except ImageReadError as exc:
                raise ImageReadError(str(exc).replace(str(path), f"{parsed} instance {number}")) from None
        return tuple(images)
