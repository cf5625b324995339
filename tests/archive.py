"""A real image archive for the tests: Debian's Orthanc with its DICOMweb plugin, started on a
free localhost port and stopped again (REQUIRE_ORTHANC=1: missing parts fail, else skip)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

EXE = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "medmtl", "s3cret-test"


@dataclass
class Archive:
    url: str  # the REST API
    port: int

    @property
    def dicomweb(self) -> str:
        return f"dicomweb://127.0.0.1:{self.port}/dicom-web"

    def rest(self, method: str, path: str, **kw) -> requests.Response:
        r = requests.request(method, self.url + path, auth=(USER, PASSWORD), timeout=30, **kw)
        r.raise_for_status()
        return r

    def upload(self, path: Path) -> dict:
        return self.rest("POST", "/instances", data=Path(path).read_bytes()).json()


def need_orthanc() -> None:
    if Path(EXE).is_file() and PLUGIN.is_file():
        return
    if os.environ.get("REQUIRE_ORTHANC") == "1":
        pytest.fail(
            f"Orthanc or its DICOMweb plugin is missing ({EXE}, {PLUGIN}); .ci/run installs them"
        )
    pytest.skip(
        "Orthanc and orthanc-dicomweb not installed (apt-get install orthanc orthanc-dicomweb)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def orthanc(folder: Path, lua: str | None = None) -> Iterator[Archive]:
    """Orthanc on a free port with a user and DICOMweb; ``lua``: a script it runs (e.g. a
    ReceivedInstanceFilter that refuses some uploads)."""
    need_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {
        "Name": "medmtl-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
    }
    if lua is not None:
        (folder / "filter.lua").write_text(lua)
        config["LuaScripts"] = [str(folder / "filter.lua")]
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen([EXE, str(folder / "orthanc.json")], stdout=log, stderr=log)
    archive = Archive(f"http://127.0.0.1:{port}", port)
    try:
        deadline = time.time() + 60
        while True:
            try:
                archive.rest("GET", "/system")
                break
            except requests.RequestException:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield archive
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
