"""DatasetLayout paths and errors, hub_filenames, and download() against a local fake Hugging Face hub."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.io import DataFileError
from yambda_dl.data.layout import DatasetLayout, hub_filenames

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_paths_follow_the_hub_layout(tmp_path):
    layout = DatasetLayout(tmp_path, "50m")
    assert layout.event_path("likes") == tmp_path / "flat" / "50m" / "likes.parquet"
    assert layout.event_path("multi_event", "sequential") == tmp_path / "sequential" / "50m" / "multi_event.parquet"
    assert layout.embeddings_path == tmp_path / "embeddings.parquet"
    assert layout.artist_mapping_path == tmp_path / "artist_item_mapping.parquet"
    assert layout.album_mapping_path == tmp_path / "album_item_mapping.parquet"
    assert layout.is_release and not DatasetLayout(tmp_path, "tiny").is_release


def test_root_expands_the_home_folder():
    assert DatasetLayout("~/yambda", "5b").root == Path.home() / "yambda"


def test_event_path_refuses_unknown_names(tmp_path):
    layout = DatasetLayout(tmp_path, "50m")
    with pytest.raises(S.SchemaError, match=r"unknown event file 'plays'; valid choices: listens, likes"):
        layout.event_path("plays")
    with pytest.raises(S.SchemaError, match=r"unknown format 'csv'; valid choices: flat, sequential"):
        layout.event_path("likes", "csv")


@pytest.mark.parametrize("size", ["50M", "", "../up", "a b", "_x"])
def test_invalid_size_names_are_refused_with_the_choices(tmp_path, size):
    with pytest.raises(ValueError, match=r"invalid dataset size .*50m, 500m, 5b or a synthetic dataset's name"):
        DatasetLayout(tmp_path, size)


def test_require_names_every_missing_file_and_the_download_command(tmp_path):
    layout = DatasetLayout(tmp_path, "50m")
    layout.event_path("likes").parent.mkdir(parents=True)
    layout.event_path("likes").write_bytes(b"")
    with pytest.raises(DataFileError) as error:
        layout.require(["likes", "listens", "dislikes"])
    message = str(error.value)
    assert "listens.parquet" in message and "dislikes.parquet" in message and "likes.parquet," not in message
    assert f"yambda-data download --size 50m --root {tmp_path}" in message
    assert layout.require(["likes"]) == [layout.event_path("likes")]
    assert layout.has("likes") and not layout.has("likes", "sequential")


def test_require_on_a_synthetic_dataset_names_the_synth_command(tmp_path):
    with pytest.raises(DataFileError, match=r"yambda-data synth --preset tiny --root "):
        DatasetLayout(tmp_path, "tiny").require(["likes"], "sequential")


def test_hub_filenames_for_sizes_formats_and_events():
    assert hub_filenames("50m") == [f"flat/50m/{e}.parquet" for e in S.EVENT_FILES]
    assert hub_filenames("5b", formats=("flat", "sequential"), events=["likes"]) == [
        "flat/5b/likes.parquet",
        "sequential/5b/likes.parquet",
    ]
    assert hub_filenames("500m", formats=(), embeddings=True, mappings=True) == [
        "embeddings.parquet",
        "artist_item_mapping.parquet",
        "album_item_mapping.parquet",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": "tiny"}, ValueError, r"unknown release size 'tiny'; valid choices: 50m, 500m, 5b"),
        ({"size": "50m", "formats": ["columnar"]}, S.SchemaError, r"unknown format 'columnar'"),
        ({"size": "50m", "events": ["plays"]}, S.SchemaError, r"unknown event file 'plays'"),
    ],
)
def test_hub_filenames_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        hub_filenames(**kwargs)


class FakeHub(BaseHTTPRequestHandler):
    """Answers hf_hub_download's HEAD and GET for `files` (repo path -> bytes) and logs each request."""

    files: ClassVar[dict[str, bytes]] = {}
    log: ClassVar[list[tuple[str, str]]] = []
    prefix = f"/datasets/yandex/yambda/resolve/{COMMIT}/"

    def do_HEAD(self) -> None:  # the name http.server dispatches to
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        self.log.append((self.command, self.path))
        name = self.path.removeprefix(self.prefix) if self.path.startswith(self.prefix) else None
        if name not in self.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def fake_hub():
    FakeHub.files = {name: f"content of {name}".encode() for name in hub_filenames("50m", ("flat", "sequential"))}
    FakeHub.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def download_in_subprocess(endpoint: str, root: Path, home: Path) -> list[str]:
    """Run the real download() in a fresh interpreter: huggingface_hub reads HF_ENDPOINT at import time."""
    code = (
        "import json, sys; from yambda_dl.data.layout import download; "
        f"paths = download('50m', sys.argv[1], events=['likes', 'dislikes'], revision='{COMMIT}'); "
        "print(json.dumps([str(p) for p in paths]))"
    )
    proxies = {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HF_HUB_OFFLINE",
    }
    env = {k: v for k, v in os.environ.items() if k not in proxies}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), NO_PROXY="127.0.0.1", HF_HUB_DISABLE_TELEMETRY="1")
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_download_fetches_only_the_files_asked_for_into_the_layout(tmp_path, fake_hub):
    root = tmp_path / "yambda"
    paths = download_in_subprocess(fake_hub, root, tmp_path / "hf_home")

    layout = DatasetLayout(root, "50m")
    assert paths == [str(layout.event_path("likes")), str(layout.event_path("dislikes"))]
    assert layout.event_path("likes").read_bytes() == b"content of flat/50m/likes.parquet"
    parquet_files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    assert parquet_files == ["flat/50m/dislikes.parquet", "flat/50m/likes.parquet"]
    fetched = sorted(path for method, path in FakeHub.log if method == "GET")
    assert fetched == [
        FakeHub.prefix + "flat/50m/dislikes.parquet",
        FakeHub.prefix + "flat/50m/likes.parquet",
    ]

    download_in_subprocess(fake_hub, root, tmp_path / "hf_home")  # a second run finds both files complete
    assert sorted(path for method, path in FakeHub.log if method == "GET") == fetched


def _hinted_command(message: str) -> list[str]:
    """The command between backticks in an error message, as argv for yambda-data's main."""
    command = message.split("`")[1]
    assert command.startswith("yambda-data ")
    return shlex.split(command)[1:]


def test_a_missing_file_in_a_finished_synthetic_root_gets_a_hint_that_works(tmp_path):
    from yambda_dl.data.cli import main
    from yambda_dl.data.synthetic import generate

    generate("tiny", tmp_path, seed=3, progress=False)
    layout = DatasetLayout(tmp_path, "tiny")
    layout.event_path("likes").unlink()
    with pytest.raises(DataFileError) as error:
        layout.require(["likes"])
    assert main(_hinted_command(str(error.value))) == 0
    assert layout.require(["likes"]) == [layout.event_path("likes")]


def test_a_root_holding_another_synthetic_dataset_says_so(tmp_path):
    from yambda_dl.data.synthetic import generate

    generate("tiny", tmp_path, progress=False)
    with pytest.raises(DataFileError, match=r"holds synthetic dataset 'tiny'.*another root"):
        DatasetLayout(tmp_path, "small").require(["likes"])
