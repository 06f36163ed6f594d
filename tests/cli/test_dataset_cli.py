"""Tests of the ``kubeclip dataset validate`` and ``kubeclip dataset pack`` subcommands."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from kubeclip.cli.dataset import register


def run_cli(*arguments: str) -> int:
    parser = argparse.ArgumentParser(prog="kubeclip")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(arguments))
    return args.handler(args)


def jpeg_bytes(size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="JPEG")
    return buffer.getvalue()


def make_archive(tmp_path: Path, lines: list[str], images: dict[str, bytes]) -> Path:
    zip_path = tmp_path / "data.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("captions.jsonl", "\n".join(lines) + "\n")
        for name, data in images.items():
            archive.writestr(name, data)
    return zip_path


def valid_archive(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"image": "a.jpg", "captions": ["a red square", "red"]}),
        json.dumps({"image": "b.jpg", "captions": ["a cat sat on the mat today"]}),
    ]
    return make_archive(tmp_path, lines, {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes((100, 400))})


def invalid_archive(tmp_path: Path) -> Path:
    lines = [json.dumps({"image": "a.jpg", "captions": ["a red square"]}), json.dumps({"image": "gone.jpg", "captions": ["x"]})]
    return make_archive(tmp_path, lines, {"a.jpg": jpeg_bytes()})


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """A word-level tokenizer that adds [CLS] and [SEP], saved as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "a": 4, "red": 5, "square": 6, "photo": 7, "of": 8}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    directory = tmp_path / "tokenizer"
    wrapped.save_pretrained(directory)
    return directory


def test_validate_valid_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", str(valid_archive(tmp_path))) == 0
    output = capsys.readouterr().out
    assert "valid, 0 errors, 0 warnings." in output
    assert "  captions: 3" in output
    assert "  image width (px): min 100, median 200, max 300" in output
    assert "tokens per caption" not in output


def test_validate_invalid_archive_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", str(invalid_archive(tmp_path))) == 3
    output = capsys.readouterr().out
    assert "INVALID, 1 errors, 0 warnings." in output
    assert "captions.jsonl line 2: Image 'gone.jpg' is not in the archive." in output


def test_validate_skip_invalid_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", "--skip-invalid", str(invalid_archive(tmp_path))) == 0
    output = capsys.readouterr().out
    assert "1 of 2 lines are valid samples, and 1 lines are skipped." in output
    assert "  image-not-found: 1" in output
    assert "With --skip-invalid, training uses the 1 valid samples" in output


def test_validate_skip_invalid_without_valid_samples_exits_3(tmp_path: Path) -> None:
    zip_path = make_archive(tmp_path, ["not json"], {})
    assert run_cli("dataset", "validate", "--skip-invalid", str(zip_path)) == 3


def test_validate_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", "--json", str(invalid_archive(tmp_path))) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["report"]["valid"] is False
    assert data["report"]["problems"][0]["code"] == "image-not-found"
    assert data["report"]["problems"][0]["line_number"] == 2
    assert data["statistics"]["image_count"] == 1


def test_validate_with_tokenizer(tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With the template, captions become "a photo of <caption>" plus [CLS] and [SEP]:
    # "a red square" -> 8 tokens, "red" -> 6, "a cat sat on the mat today" -> 12.
    exit_code = run_cli(
        "dataset", "validate", str(valid_archive(tmp_path)),
        "--tokenizer", str(tokenizer_dir), "--prompt-template", "a photo of {caption}", "--prompt-max-length", "7",
    )  # fmt: skip
    assert exit_code == 0
    output = capsys.readouterr().out
    assert "tokens per caption, prompt included: median 8, p90 12, p95 12, p99 12, max 12" in output
    assert "truncated at prompt max length 7: 2 of 3 captions (66.7%)" in output


def test_validate_system_prompt_counts_tokens(tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["dataset", "validate", "--json", str(valid_archive(tmp_path)), "--tokenizer", str(tokenizer_dir), "--system-prompt", "red red"]
    assert run_cli(*arguments) == 0
    tokens = json.loads(capsys.readouterr().out)["statistics"]["tokens"]
    # "red red a red square" -> 7 tokens, "red red red" -> 5, "red red a cat sat on the mat today" -> 11.
    assert tokens["percentiles"] == {"50": 7, "90": 11, "95": 11, "99": 11, "100": 11}


def test_validate_unloadable_tokenizer_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert run_cli("dataset", "validate", str(valid_archive(tmp_path)), "--tokenizer", str(empty_dir)) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"warning: tokenizer '{empty_dir}' could not be loaded")
    assert "token statistics are left out" in captured.err
    assert "tokens per caption" not in captured.out


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", str(tmp_path / "absent.zip")) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert "absent.zip does not exist" in captured.err


def test_validate_not_a_zip_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.zip"
    path.write_text("hello")
    assert run_cli("dataset", "validate", str(path)) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: dataset archive {path} is not a valid ZIP file")
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_validate_rejects_template_without_placeholder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", str(valid_archive(tmp_path)), "--prompt-template", "a photo") == 2
    assert "must contain {caption} exactly once" in capsys.readouterr().err


def test_validate_rejects_short_prompt_max_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", str(valid_archive(tmp_path)), "--prompt-max-length", "3") == 2
    assert "--prompt-max-length must be at least 4 tokens, got 3" in capsys.readouterr().err


def test_validate_builtin_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", "builtin://skimage-photos", "--cache-dir", str(tmp_path)) == 0
    assert "valid, 0 errors, 0 warnings." in capsys.readouterr().out
    assert (tmp_path / "datasets" / "skimage-photos.zip").is_file()


def test_validate_unknown_builtin_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("dataset", "validate", "builtin://nope", "--cache-dir", str(tmp_path)) == 2
    assert "use one of builtin://skimage-photos" in capsys.readouterr().err


def test_pack_writes_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    (source / "a.jpg").write_bytes(jpeg_bytes())
    (source / "b.jpg").write_bytes(jpeg_bytes())
    (source / "captions.csv").write_text("image,caption\na.jpg,one\na.jpg,two\n", encoding="utf-8")
    output = tmp_path / "out.zip"
    assert run_cli("dataset", "pack", str(source), "-o", str(output)) == 0
    printed = capsys.readouterr().out
    assert f"Packed 1 images with 2 captions into {output}" in printed
    assert "1 image files in the folder are not in the captions file and were left out, such as b.jpg." in printed
    assert run_cli("dataset", "validate", str(output)) == 0


def test_pack_error_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    assert run_cli("dataset", "pack", str(source), "--output", str(tmp_path / "out.zip")) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith("error: source folder")
    assert "exactly one captions file" in captured.err
    assert not (tmp_path / "out.zip").exists()


def test_validate_with_small_preset_job_counts_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "apiVersion: kubeclip.dev/v1alpha1\nkind: ClipTrainingJob\nmetadata: {name: demo}\n"
        "spec:\n  model: {preset: Small}\n"
        "  dataset: {source: {uri: data.zip}, promptTemplate: 'a photo of {caption}', promptMaxLength: 8}\n"
        "  infrastructure: {gpuType: L40}\n",
        encoding="utf-8",
    )
    exit_code = run_cli("dataset", "validate", str(valid_archive(tmp_path)), "--job", str(job), "--cache-dir", str(tmp_path / "cache"))
    output = capsys.readouterr().out
    assert exit_code == 0
    assert "tokens per caption, prompt included" in output
    assert "truncated at prompt max length 8" in output
