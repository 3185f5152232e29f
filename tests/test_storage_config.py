"""The ``[storage]`` table: backends found through entry points, ``[storage.s3]`` checked into
`S3Options`, every mistake a `ConfigError` naming file and key (exit 2), with the fix named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomli_w

from bandersnatch_clone.cli import main
from bandersnatch_clone.config import StorageConfig, load_config, render_starter_config
from bandersnatch_clone.errors import ConfigError
from bandersnatch_clone.storage.filesystem import FilesystemStorage
from bandersnatch_clone.storage.loader import open_storage
from bandersnatch_clone.storage.s3options import S3Options

GOOD_S3 = {"bucket": "my-mirror", "endpoint_url": "http://127.0.0.1:8333"}


def write(tmp_path: Path, storage: dict[str, object]) -> Path:
    path = tmp_path / "mirror.toml"
    doc = {"mirror": {"directory": str(tmp_path / "m")}, "storage": storage}
    path.write_text(tomli_w.dumps(doc))
    return path


def test_the_default_is_the_filesystem(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(f'[mirror]\ndirectory = "{tmp_path / "m"}"\n')
    assert load_config(path).storage == StorageConfig("filesystem", {})


async def test_the_filesystem_backend_is_the_mirror_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"backend": "filesystem"}))
    async with open_storage(config) as storage:
        assert isinstance(storage, FilesystemStorage)
        assert storage.root == tmp_path / "m"


def test_s3_options_are_read(tmp_path: Path) -> None:
    table = {
        **GOOD_S3,
        "prefix": "/pypi/",
        "region": "eu-west-1",
        "access_key_id": "AKIA",
        "secret_access_key": "s3cr3t",
        "addressing_style": "path",
        "lock_ttl": 60,
        "put_extra_args": {"ServerSideEncryption": "AES256"},
    }
    config = load_config(write(tmp_path, {"backend": "s3", "s3": table}))
    options = S3Options.from_table(str(config.path), config.storage.options["s3"])
    assert options == S3Options(
        bucket="my-mirror",
        prefix="pypi",
        endpoint_url="http://127.0.0.1:8333",
        region="eu-west-1",
        access_key_id="AKIA",
        secret_access_key="s3cr3t",
        addressing_style="path",
        put_extra_args={"ServerSideEncryption": "AES256"},
        lock_ttl=60.0,
    )


@pytest.mark.parametrize(
    ("storage", "key", "problem"),
    [
        ({"backend": "s4"}, "storage.backend", "unknown storage backend 's4' (did you mean 's3'?)"),
        ({"backend": 3}, "storage.backend", "expected a backend name"),
        ({"bakend": "s3"}, "storage.bakend", "unknown key (did you mean 'backend'?)"),
        ({"backend": "s3", "s3": {}}, "storage.s3.bucket", "missing required key"),
        ({"backend": "s3", "s3": {"bucket": "My_Bucket"}}, "storage.s3.bucket", "not a valid"),
        ({"backend": "s3", "s3": {**GOOD_S3, "regoin": "x"}}, "storage.s3.regoin", "'region'"),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "access_key_id": "AKIA"}},
            "storage.s3.secret_access_key",
            "give both, or neither",
        ),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "endpoint_url": "s3.example.com"}},
            "storage.s3.endpoint_url",
            "expected an http:// or https:// URL",
        ),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "prefix": "a/../b"}},
            "storage.s3.prefix",
            "'..'",
        ),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "addressing_style": "dns"}},
            "storage.s3.addressing_style",
            "expected 'auto', 'path' or 'virtual'",
        ),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "lock_ttl": 1}},
            "storage.s3.lock_ttl",
            "10..86400",
        ),
        (
            {"backend": "s3", "s3": {**GOOD_S3, "put_extra_args": {"SSECustomerKey": "k"}}},
            "storage.s3.put_extra_args.SSECustomerKey",
            "not an argument we pass on",
        ),
        (
            {"backend": "filesystem", "filesystem": {"root": "/x"}},
            "storage.filesystem.root",
            "the filesystem backend has no options",
        ),
    ],
)
def test_bad_storage_tables_are_named(
    tmp_path: Path, storage: dict[str, object], key: str, problem: str
) -> None:
    path = write(tmp_path, storage)
    with pytest.raises(ConfigError) as info:
        open_storage(load_config(path))
    assert (info.value.file, info.value.key, problem in info.value.problem) == (
        str(path),
        key,
        True,
    )


def test_without_aiobotocore_the_fix_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the extra were not installed: importing aiobotocore fails.
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)
    for module in [m for m in sys.modules if m.startswith("bandersnatch_clone.storage.s3")]:
        monkeypatch.delitem(sys.modules, module)
    config = load_config(write(tmp_path, {"backend": "s3", "s3": GOOD_S3}))
    with pytest.raises(ConfigError, match=r"pip install 'bandersnatch-clone\[s3\]'"):
        open_storage(config)


def test_mirror_with_a_bad_storage_table_exits_2_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"backend": "s3", "s3": {"bucket": "x"}})
    code = main(["-c", str(path), "mirror"])
    assert (code, "storage.s3.bucket" in capsys.readouterr().err) == (2, True)
    assert not (tmp_path / "m").exists()


def test_starter_config_storage_example_loads_when_uncommented(tmp_path: Path) -> None:
    text = render_starter_config(str(tmp_path / "m"))
    example = text[text.index("# [storage]\n") : text.rindex("\n#")]
    uncommented = "\n".join(line.removeprefix("# ") for line in example.splitlines())
    path = tmp_path / "mirror.toml"
    path.write_text(f'[mirror]\ndirectory = "{tmp_path / "m"}"\n{uncommented}\n')
    config = load_config(path)
    options = S3Options.from_table(str(path), config.storage.options["s3"])
    got = (config.storage.backend, options.bucket, dict(options.put_extra_args))
    assert got == ("s3", "my-mirror", {"ServerSideEncryption": "AES256"})


@pytest.mark.parametrize(
    ("command", "why"),
    [(["import", "bundle.tar"], "stages and renames files"), (["snapshot", "snaps"], "hard links")],
)
def test_commands_that_need_local_files_refuse_an_object_store_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], why: str
) -> None:
    path = write(tmp_path, {"backend": "s3", "s3": GOOD_S3})
    code = main(["-c", str(path), *command])
    err = capsys.readouterr().err
    assert (code, "needs the filesystem storage backend, not 's3'" in err, why in err) == (
        2,
        True,
        True,
    )
