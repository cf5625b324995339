"""A study from an image archive over DICOMweb, and results stored back (dicomweb-client).

``dicomweb://<host>:<port>/<prefix>/studies/<StudyInstanceUID>`` names a study of the archive
whose DICOMweb service is at ``http://<host>:<port>/<prefix>`` (``dicomwebs://``: https).
:func:`retrieve_study` searches its series (QIDO-RS), retrieves the ultrasound ones (WADO-RS)
into a folder and lists the other instances as skipped; :func:`store` sends DICOM files back
in one STOW-RS request. Credentials come from options or the environment
(``DICOMWEB_TOKEN``; ``DICOMWEB_PASSWORD`` for a user), never from the URL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmtl.errors import ConfigError, DataError
from medmtl.io.files import atomic_path

SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
URL = re.compile(r"^(dicomwebs?)://([^/]+)(/.*)?/studies/([0-9.]+)/?$")
ULTRASOUND = ("US",)
TIMEOUT_S = 60.0


def is_dicomweb(text: str) -> bool:
    return str(text).split("://", 1)[0] in SCHEMES


@dataclass(frozen=True)
class StudyAddress:
    """Where a study is: the service's base URL and the study's UID."""

    service: str
    study_uid: str

    @classmethod
    def parse(cls, text: str) -> StudyAddress:
        m = URL.match(str(text))
        if m is None:
            raise ConfigError(
                f"input={text}: expected dicomweb://<host>:<port>/<prefix>/studies/"
                "<StudyInstanceUID> (e.g. dicomweb://localhost:8042/dicom-web/studies/1.2.3)."
            )
        scheme, host, prefix, uid = m.groups()
        if "@" in host:
            raise ConfigError(
                f"input={text}: credentials do not belong in the address; give user= (and "
                "DICOMWEB_PASSWORD) or token= (or DICOMWEB_TOKEN)."
            )
        return cls(f"{SCHEMES[scheme]}://{host}{(prefix or '').rstrip('/')}", uid)

    def __str__(self) -> str:
        return f"{self.service}/studies/{self.study_uid}"


@dataclass
class Retrieved:
    """The study's ultrasound images on disk, and what was left out (with the reason)."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def client(service: str, token: str | None = None, user: str | None = None) -> Any:
    """A DICOMweb client for ``service`` with bearer-token or basic authentication."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    token = token or os.environ.get("DICOMWEB_TOKEN")
    if user:
        password = os.environ.get("DICOMWEB_PASSWORD")
        if password is None:
            raise ConfigError(f"user={user}: set DICOMWEB_PASSWORD to the user's password.")
        session.auth = (user, password)
    elif token:
        session.headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(url=service, session=session, timeout=TIMEOUT_S)


def _http_problem(where: str, exc: Exception) -> DataError:
    """One line for a failed request: the address, the status and what to check."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status == 404:
        return DataError(f"{where}: not found in the archive (HTTP 404); check the study UID.")
    if status in (401, 403):
        return DataError(
            f"{where}: the archive refused the credentials (HTTP {status}); give user= "
            "(with DICOMWEB_PASSWORD) or token=."
        )
    if status is not None:
        reason = (getattr(response, "text", "") or "").strip().splitlines()[:1]
        return DataError(f"{where}: the archive answered HTTP {status} {' '.join(reason)[:120]}.")
    return DataError(f"{where}: the archive cannot be reached ({type(exc).__name__}: {exc}).")


def _value(item: dict, tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def retrieve_study(address: StudyAddress, folder: Path, dicomweb: Any) -> Retrieved:
    """Write the study's ultrasound instances into ``folder`` (``<SOPInstanceUID>.dcm``, each
    atomically) and list every other instance as skipped."""
    import requests

    where = str(address)
    try:
        series = dicomweb.search_for_series(study_instance_uid=address.study_uid)
    except (requests.RequestException, OSError) as exc:
        raise _http_problem(where, exc) from exc
    if not series:
        raise DataError(f"{where}: not found in the archive (no series); check the study UID.")
    out = Retrieved()
    folder.mkdir(parents=True, exist_ok=True)
    for s in series:
        uid, modality = _value(s, "0020000E"), _value(s, "00080060")
        try:
            if modality not in ULTRASOUND:
                for inst in dicomweb.search_for_instances(
                    study_instance_uid=address.study_uid, series_instance_uid=uid
                ):
                    sop = _value(inst, "00080018")
                    out.skipped.append(
                        (
                            f"{where}/series/{uid}/instances/{sop}",
                            f"not an ultrasound image (modality {modality})",
                        )  # fmt: skip
                    )
                continue
            # as stored (any transfer syntax): decoding is the reader's job, with its hints
            as_stored = (("application/dicom", "*"),)
            for ds in dicomweb.retrieve_series(address.study_uid, uid, media_types=as_stored):
                target = folder / f"{ds.SOPInstanceUID}.dcm"
                with atomic_path(target) as tmp:
                    ds.save_as(str(tmp), enforce_file_format=True)
                out.files.append(target)
        except (requests.RequestException, OSError) as exc:
            raise _http_problem(f"{where}/series/{uid}", exc) from exc
    return out


def store(address: StudyAddress, files: list[Path], dicomweb: Any) -> list[str]:
    """Send ``files`` to the archive in one STOW-RS request; the stored SOP Instance UIDs.

    An archive that refuses the request, or any of the instances, or does not keep them, is
    one line naming them (what it did keep is said too: a PACS may keep part of a request)."""
    import pydicom
    import requests

    if not files:
        return []
    datasets = [pydicom.dcmread(str(f)) for f in files]
    where = str(address)
    try:
        response = dicomweb.store_instances(datasets, study_instance_uid=address.study_uid)
    except (requests.RequestException, OSError) as exc:
        raise _http_problem(f"{where} (storing {len(files)} result(s))", exc) from exc
    failed = {str(r.ReferencedSOPInstanceUID) for r in response.get("FailedSOPSequence", [])}
    # what the archive says it stored, checked against what it keeps: an archive whose
    # filters drop an instance may still answer success
    try:
        kept = {
            _value(i, "00080018")
            for i in dicomweb.search_for_instances(study_instance_uid=address.study_uid)
        }
    except (requests.RequestException, OSError) as exc:
        raise _http_problem(f"{where} (checking what was stored)", exc) from exc
    sent = [str(ds.SOPInstanceUID) for ds in datasets]
    stored = [uid for uid in sent if uid in kept and uid not in failed]
    missing = [uid for uid in sent if uid not in stored]
    if missing:
        raise DataError(
            f"{where}: the archive refused (or did not keep) {len(missing)} of {len(sent)} "
            f"result(s) ({', '.join(missing)}); stored: {', '.join(stored) or 'none'}."
        )
    return stored
