"""``medmtl-serve``: a web page for clinicians and a JSON API around one model.

FastAPI serves one page of HTML and plain JavaScript (``workflows/page/``; nothing is loaded
from the internet: the OpenAPI docs at ``/docs`` use swagger-ui files installed with the
project) and the API:

* ``POST /api/predict`` (multipart ``file``; ``threshold``, ``gradcam``): the class
  probabilities, the lesion area in pixels (and mm² where a DICOM gives a pixel spacing) and,
  as PNG, the mask, the 8-bit lesion probability map (which the page re-thresholds without
  running the network again), the image as shown and, on the PyTorch backend, Grad-CAM;
  the uncertainty: ``entropy``, the conformal ``answer_set`` (a list of classes),
  ``unlike_score`` / ``unlike_training``, an ensemble's (or, with TTA, the mirror's)
  ``class_disagreement``, ``mask_agreement`` and pixel ``variance_png``, and ``refer``;
* ``GET /api/health``, ``GET /api/model`` (the model card);
* ``GET /api/shift``: the shift test of the most recent uploads together (do they come from
  the distribution the model was trained on? :mod:`medmtl.models.shift`); ``DELETE
  /api/shift`` starts the window anew (a new scanner, a new session);
* ``GET /api/label_order``: the same uploads in the order in which to label them
  (:mod:`medmtl.workflows.label_order`).
* with ``site_dir=``, a clinician's corrections (:mod:`medmtl.workflows.site_cases`):
  ``POST /api/cases`` (multipart ``file``: the image again, ``mask``: a PNG of its size,
  non-zero where a lesion is, ``label``, optional ``group``: the patient's pseudonym) saves a
  case to the site folder, ``GET /api/cases`` lists them, ``GET /api/cases/{case}`` shows one
  (image and mask as PNG) and ``DELETE /api/cases/{case}`` removes it and its files.

Uploads are written to a temporary folder removed when the request ends; an upload over the
size limit gets 413, a file that cannot be read as an image 400 with one line, and the
server keeps serving. Nothing of a DICOM header but the pixel spacing leaves the reader
(:class:`medmtl.io.meta.ImageMeta`), so no patient data reaches a response, a log or a file.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image

from medmtl.errors import ConfigError, MedmtlError
from medmtl.inference.core import ImagePrediction, heatmap_overlay, predict_image
from medmtl.io.dicomweb import StudyAddress
from medmtl.io.dicomweb import client as dicomweb_client
from medmtl.io.image import IMAGE_EXTENSIONS
from medmtl.metrics import ANSWER_SEP, REASON_SEP
from medmtl.settings.commands import LOOPBACK, ServeSettings
from medmtl.workflows.predict import (
    dicom_output,
    gradcam_for,
    open_checkpoint,
    open_onnx,
    predict_study,
)
from medmtl.workflows.shift import RecentUploads
from medmtl.workflows.site_cases import SiteCases

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "page"
# an optional bearer token (auth_token=); module-level so FastAPI can read the annotation
BEARER = HTTPBearer(auto_error=False)


def load_model(model: str | Path, threads: int = 0) -> tuple[Any, Any]:
    """The backend for an ``.onnx`` model (ONNX Runtime) or a checkpoint (PyTorch, with
    Grad-CAM), and the explainer (None on ONNX)."""
    path = Path(model).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model={path}: not found; give an exported model (.onnx, medmtl-export) or a "
            "checkpoint (.ckpt)."
        )
    if path.suffix.lower() == ".onnx":
        return open_onnx(path, threads), None
    backend = open_checkpoint(path, threads)
    has_head = getattr(backend.net, "cls_head", None) is not None
    return backend, gradcam_for(backend) if has_head else None


def find_demo_model(log_dir: Path) -> Path:
    """The best checkpoint of the newest ``make demo`` run (``experiment=demo``)."""
    runs = sorted(log_dir.glob("train/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    for metrics in reversed(runs):
        config = metrics.parent / "config_resolved.yaml"
        if config.exists() and "- demo" in config.read_text():
            found = sorted((metrics.parent / "checkpoints").glob("epoch*.ckpt"))
            if found:
                return found[-1]
    raise ConfigError(
        f"no model given and no `make demo` run found in {log_dir}; run `make demo` first or "
        "give model=<model.onnx or checkpoint>."
    )


class UploadLimit:
    """ASGI middleware: a request body above ``max_bytes`` gets 413 before it is stored, by
    its Content-Length or, for a chunked upload, as soon as the count passes the limit."""

    def __init__(self, app: Any, max_mb: float) -> None:
        self.app = app
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * 2**20)

    async def _refuse(self, send: Any) -> None:
        body = (
            f'{{"detail": "the upload is larger than the limit of {self.max_mb:g} MB; send a '
            f'smaller file or start medmtl-serve with a larger max_upload_mb."}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def counted() -> dict:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # answer now and end the body: nothing more is read or stored
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def answer(message: dict) -> None:
            if not refused:  # after a 413 the app's own answer (to a cut body) is dropped
                await send(message)

        await self.app(scope, counted, answer)


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _safe_suffix(name: str) -> str:
    """The upload's extension if it is one medmtl reads (the temporary file keeps it)."""
    suffix = Path(name or "").suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ""


def _write_upload(upload: UploadFile, path: Path) -> None:
    """An uploaded file copied to ``path`` a MiB at a time (never whole in memory)."""
    with path.open("wb") as fh:
        while chunk := upload.file.read(2**20):
            fh.write(chunk)


def _one_line(exc: BaseException, tmp: Path, name: str) -> str:
    """The error's first line with the temporary path replaced by the upload's name."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(re.escape(str(tmp)) + r"[^:]*", name or "upload", text)


def result_json(
    pred: ImagePrediction, name: str, classes: list[str], threshold: float, postprocess: Any
) -> dict[str, Any]:
    """The JSON of one prediction (see the module docstring)."""
    mask = pred.mask(threshold, postprocess)
    spacing = pred.meta.pixel_spacing_mm
    out: dict[str, Any] = {
        "file": name,
        "width": int(pred.image8.shape[1]),
        "height": int(pred.image8.shape[0]),
        "classes": classes,
        "threshold": threshold,
        "pixel_spacing_mm": list(spacing) if spacing else None,
        "image_png": _png(pred.image8),
        "postprocess": postprocess.to_dict(),
    }
    if pred.class_prob is not None:
        c = int(np.argmax(pred.class_prob))
        out["predicted_class"] = classes[c]
        out["probabilities"] = {
            n: round(float(p), 6) for n, p in zip(classes, pred.class_prob, strict=True)
        }

    if mask is not None:
        area = int(mask.sum())
        out["lesion_area_px"] = area
        out["lesion_area_mm2"] = pred.meta.area_mm2(area)
        out["mask_png"] = _png(mask.astype(np.uint8) * 255)
        out["probability_png"] = _png(pred.probability8)
    # entropy (0: certain, 1: a coin toss), the answer set, the unlike-training score and flag,
    # the members' or the mirror's disagreement, and refer (docs/metrics.md)
    out.update(pred.uncertainty)
    if "answer_set" in out:
        out["answer_set"] = [c for c in out["answer_set"].split(ANSWER_SEP) if c]
    if "refer_reasons" in out:  # why the page says to refer, in words
        out["refer_reasons"] = [r for r in out["refer_reasons"].split(REASON_SEP) if r]
    for flag in ("unlike_training", "refer"):
        if flag in out:
            out[flag] = bool(out[flag])
    if pred.variance8 is not None:
        out["variance_png"] = _png(pred.variance8)
    if pred.heatmap is not None:
        out["gradcam_png"] = _png(heatmap_overlay(pred.image8, pred.heatmap))
    return out


def study_json(summary: Any, classes: list[str], push: bool) -> dict[str, Any]:
    """A study's predictions for the page: per image its class, probabilities, lesion area and
    the SEG's UID; what was skipped or failed (by instance, without folders); what was stored."""
    images = []
    for row in summary.rows:
        images.append({
            "instance": Path(row["file"]).stem,
            "predicted_class": row.get("predicted_class"),
            "probabilities": {c: row[f"prob_{c}"] for c in classes if f"prob_{c}" in row},
            "lesion_area_px": row.get("lesion_area_px"),
            "lesion_area_mm2": row.get("lesion_area_mm2") or None,
            "seg_sop_instance_uid": row.get("seg_sop_instance_uid"),
            "seg_error": row.get("seg_error") or None,
            "refer": bool(row.get("refer")),
        })  # fmt: skip
    return {
        "images": images,
        "skipped": [
            {"instance": str(p).rsplit("/", 1)[-1], "reason": why} for p, why in summary.skipped
        ],
        "failed": [
            {"instance": Path(p).stem, "reason": why.split(": ", 1)[-1]}
            for p, why in summary.failed
        ],
        "pushed": push,
        "stored": list(summary.stored),
        "note": "A research tool, not a diagnosis.",
    }


def empty_class(backend: Any) -> str | None:
    """The model's class without a lesion: its gate's (the mask is emptied for it), else
    ``normal`` if it has one."""
    gated = (backend.card.get("gate") or {}).get("empty_mask_class")
    return gated or ("normal" if "normal" in backend.class_names else None)


def site_cases(settings: ServeSettings, backend: Any) -> SiteCases | None:
    """The folder of the page's corrected cases (``site_dir=``), checked at start; None: off."""
    if settings.site_dir is None:
        return None
    if backend.task == "cls":
        raise ConfigError("site_dir=: this model has no segmentation head; there is no mask "
                          "to correct. Drop site_dir=.")  # fmt: skip
    algorithm = dicom_output(backend, settings.model).algorithm
    return SiteCases(settings.site_dir, list(backend.class_names), empty_class(backend), algorithm)


def case_json(row: dict[str, str]) -> dict[str, Any]:
    """A saved case as the page lists it (no folder of the server)."""
    return {
        "case": row["case"],
        "file": row.get("uploaded_as", ""),
        "label": row["label"],
        "group": row.get("group", ""),
        "lesion_px": int(row.get("lesion_px") or 0),
        "seg": bool(row.get("seg")),
        "saved": row.get("saved", ""),
        **({"seg_error": row["seg_error"]} if row.get("seg_error") else {}),
    }


def create_app(settings: ServeSettings) -> FastAPI:
    """The web page and API for ``settings.model``."""
    backend, explainer = load_model(settings.model, settings.threads)
    tta = backend.tta if settings.tta is None else settings.tta  # None: as it was evaluated
    name = Path(settings.model).name
    classes = list(backend.class_names)
    recent = RecentUploads(backend.shift_references)
    site = site_cases(settings, backend)
    archive_client = dicom = None
    if settings.archive is not None:  # checked and opened once, at start
        service = StudyAddress.parse(f"{settings.archive.rstrip('/')}/studies/1").service
        archive_client = dicomweb_client(service, None, settings.archive_user)
        if backend.task != "cls":
            dicom = dicom_output(backend, settings.model)

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if settings.auth_token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        # constant time: the answer's timing says nothing about how much of the token matched
        if credentials is None or not secrets.compare_digest(given, settings.auth_token.encode()):
            raise HTTPException(
                401,
                "this server needs its token: send 'Authorization: Bearer <token>' (the page "
                "asks for it).",
            )

    app = FastAPI(
        title="medmtl",
        summary="Breast-ultrasound lesion segmentation and classification. A research tool, "
        "not a diagnosis.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(UploadLimit, max_mb=settings.max_upload_mb)
    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="medmtl API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """The server is up and has its model."""
        return {"status": "ok", "model": name, "auth": settings.auth_token is not None}

    @app.get("/api/model", dependencies=[Depends(authorised)])
    def model_card() -> dict[str, Any]:
        """The model card: classes, input size, preprocessing, what it was trained and tested on."""
        return {
            "model": name,
            "backend": "onnxruntime" if type(backend).__name__ == "OnnxBackend" else "pytorch",
            "task": backend.task,
            "classes": classes,
            "input_size": backend.settings.image_size,
            "preprocessing": backend.settings.to_dict(),
            "postprocess": backend.postprocess.to_dict(),
            "gradcam": explainer is not None,
            "max_upload_mb": settings.max_upload_mb,
            "tta": tta,
            "archive": settings.archive is not None,
            "site_cases": site is not None,
            **backend.card,
            "note": "A research tool, not a diagnosis.",
        }

    @app.get("/api/shift", dependencies=[Depends(authorised)])
    def shift() -> dict[str, Any]:
        """The shift test of the server's most recent uploads (in memory only)."""
        return recent.report()

    @app.get("/api/label_order", dependencies=[Depends(authorised)])
    def order_to_label() -> dict[str, Any]:
        """The recent uploads in the order in which to label them (the most informative first,
        each unlike those before it; near copies last)."""
        return recent.label_order()

    @app.delete("/api/shift", dependencies=[Depends(authorised)])
    def shift_reset() -> dict[str, Any]:
        """Forget the recent uploads' features: the window starts anew."""
        recent.clear()
        return recent.report()

    @app.post("/api/study", dependencies=[Depends(authorised)])
    def study(
        study_uid: Annotated[str, Form(pattern=r"^[0-9][0-9.]{0,63}$")],
        push: Annotated[bool, Form()] = False,
        threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
    ) -> JSONResponse:
        """Predict a study of the server's image archive (``archive=``) by its UID: its
        ultrasound images, each with a DICOM SEG and report; ``push`` stores those back."""
        if settings.archive is None:
            raise HTTPException(400, "this server has no image archive (start it with archive=).")
        if dicom is None:
            raise HTTPException(400, "this model has no segmentation head: no SEG to make.")
        address = StudyAddress.parse(f"{settings.archive.rstrip('/')}/studies/{study_uid}")
        with tempfile.TemporaryDirectory(prefix="medmtl-study-") as folder:
            try:
                summary = predict_study(
                    backend, address, archive_client, Path(folder), dicom, push,
                    tta=tta, threshold=threshold, progress=False,
                )  # fmt: skip
            except MedmtlError as exc:
                raise HTTPException(400, str(exc).replace(folder, "<server>")) from exc
        log.info("study: %d image(s) predicted, %d result(s) stored", len(summary.rows),
                 len(summary.stored))  # fmt: skip
        return JSONResponse(study_json(summary, classes, push))

    @app.post("/api/predict", dependencies=[Depends(authorised)])
    def predict(
        file: Annotated[UploadFile, File(description="PNG, JPEG, TIFF, BMP or DICOM")],
        threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
        gradcam: Annotated[bool, Form()] = False,
    ) -> JSONResponse:
        """Classify one image and segment its lesion."""
        if gradcam and explainer is None:
            raise HTTPException(400, "gradcam needs a checkpoint (PyTorch backend), not ONNX.")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="medmtl-upload-") as folder:
            tmp = Path(folder) / f"upload{_safe_suffix(file.filename or '')}"
            _write_upload(file, tmp)
            if tmp.stat().st_size == 0:
                raise HTTPException(400, f"{file.filename or 'upload'}: the file is empty.")
            try:
                pred = predict_image(
                    backend, tmp, tta=tta, explainer=explainer if gradcam else None
                )
            except (MedmtlError, OSError, ValueError) as exc:
                raise HTTPException(400, _one_line(exc, tmp, file.filename or "")) from exc
        out = result_json(pred, file.filename or "", classes, threshold, backend.postprocess)
        recent.add(pred.features, pred.thumb, {
            "file": file.filename or "", "predicted_class": out.get("predicted_class", ""),
            **pred.uncertainty,
        })  # fmt: skip
        log.info(
            "predicted a %dx%d image in %.0f ms",
            out["width"],
            out["height"],
            (time.perf_counter() - start) * 1000,
        )
        return JSONResponse(out)

    def the_site() -> SiteCases:
        if site is None:
            raise HTTPException(
                400, "this server keeps no corrected cases (start it with site_dir=<folder>)."
            )
        return site

    @app.post("/api/cases", dependencies=[Depends(authorised)], status_code=201)
    def save_case(
        file: Annotated[UploadFile, File(description="the image, as it was predicted")],
        mask: Annotated[UploadFile, File(description="PNG of the image's size; non-zero: lesion")],
        label: Annotated[str, Form(description="the case's class")],
        group: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = None,
    ) -> dict[str, Any]:
        """Save a corrected case (its mask and class) to the site folder; the same image
        saved again replaces its correction."""
        from medmtl.io.image import read_mask

        cases = the_site()
        name = file.filename or "upload"
        with tempfile.TemporaryDirectory(prefix="medmtl-case-") as folder:
            tmp = Path(folder) / f"upload{_safe_suffix(name)}"
            mask_tmp = Path(folder) / "mask.png"
            _write_upload(file, tmp)
            _write_upload(mask, mask_tmp)
            try:
                drawn = read_mask(mask_tmp)
            except (MedmtlError, OSError, ValueError) as exc:
                raise HTTPException(400, f"{name}: the mask is not a readable PNG.") from exc
            try:
                row, replaced = cases.save(tmp, name, drawn, label, group)
            except (MedmtlError, OSError, ValueError) as exc:
                raise HTTPException(400, _one_line(exc, tmp, name)) from exc
        log.info("saved a corrected case (%s, %s lesion pixels)", row["label"], row["lesion_px"])
        return {**case_json(row), "replaced": replaced}

    @app.get("/api/cases", dependencies=[Depends(authorised)])
    def list_cases() -> dict[str, Any]:
        """The site folder's saved cases, oldest first."""
        return {"cases": [case_json(r) for r in the_site().rows()]}

    @app.get("/api/cases/{case}", dependencies=[Depends(authorised)])
    def show_case(case: str) -> dict[str, Any]:
        """One saved case with its image (as the page shows it) and its mask, as PNG."""
        from medmtl.inference.core import load_for_model

        try:
            row, image, drawn = the_site().read(case)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from exc
        image8 = load_for_model(image, backend.settings).image8
        return {**case_json(row), "image_png": _png(image8),
                "mask_png": _png(drawn.astype(np.uint8) * 255)}  # fmt: skip

    @app.delete("/api/cases/{case}", dependencies=[Depends(authorised)])
    def delete_case(case: str) -> dict[str, Any]:
        """Remove a saved case and its files."""
        try:
            row = the_site().delete(case)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from exc
        return {"deleted": case_json(row)}

    return app


def serve(settings: ServeSettings) -> None:
    """Start the server (blocks until stopped)."""
    import uvicorn

    # medmtl's own lines (one per prediction: size and time, never a file name or header)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(settings)
    if settings.host not in LOOPBACK and settings.auth_token is None:
        log.warning(
            "listening on %s without auth_token= (open=true): anyone who can reach this port "
            "can use the model.",
            settings.host,
        )
    print(f"medmtl-serve: http://{settings.host}:{settings.port}/ (API docs at /docs)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
