"""The training data pipeline: caption sampling, eager and lazy tokenization, resumable order, workers."""

from __future__ import annotations

import pickle

import torch

from kubeclip.trainer import presets
from kubeclip.trainer.data.images import ImageTransform
from kubeclip.trainer.data.loading import (
    ArchiveReader,
    CaptionSource,
    CollatePairs,
    EpochSampler,
    ImageLoader,
    TrainingPairs,
    build_loader,
    choose_caption,
)
from kubeclip.trainer.data.text import CaptionTokenizer, PromptFormat, tokenize_eagerly
from kubeclip.trainer.data.validation import validate_archive


def make_pairs(zip_path, *, lazy: bool, tmp_path) -> TrainingPairs:
    samples = validate_archive(zip_path).samples
    captions = [caption for sample in samples for caption in sample.captions]
    tokenizer = CaptionTokenizer(presets.train_small_tokenizer(captions, 32), PromptFormat(template="a photo of {caption}"), 32)
    table = None if lazy else tokenize_eagerly(tokenizer, captions, tmp_path)
    images = ImageLoader(ArchiveReader(zip_path), ImageTransform.from_image_processor(presets.build_small_image_processor()), 10**8)
    return TrainingPairs(samples, images, CaptionSource(samples, tokenizer, table), seed=3)


def test_lazy_and_eager_tokenization_agree(tinted_zip, tmp_path):
    eager = make_pairs(tinted_zip, lazy=False, tmp_path=tmp_path)
    lazy = make_pairs(tinted_zip, lazy=True, tmp_path=tmp_path)
    for index in range(len(eager)):
        assert list(eager[index][1]) == list(lazy[index][1])


def test_caption_choice_fixed_per_epoch_and_varies_across_epochs():
    first = [choose_caption(7, 0, index, 5) for index in range(50)]
    assert first == [choose_caption(7, 0, index, 5) for index in range(50)]
    assert first != [choose_caption(7, 1, index, 5) for index in range(50)]
    assert set(first) == set(range(5))


def test_sampler_resumes_mid_epoch():
    sampler = EpochSampler(20, seed=1)
    sampler.set_position(epoch=2, start_index=0)
    full = list(sampler)
    sampler.set_position(epoch=2, start_index=8)
    assert list(sampler) == full[8:]
    assert len(sampler) == 12
    sampler.set_position(epoch=3, start_index=0)
    assert list(sampler) != full


def test_archive_reader_pickles_without_open_handle(tinted_zip):
    reader = ArchiveReader(tinted_zip)
    reader.read("captions.jsonl")
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._archive is None
    assert clone.read("captions.jsonl") == reader.read("captions.jsonl")


def test_worker_processes_load_same_batches(tinted_zip, tmp_path):
    pairs = make_pairs(tinted_zip, lazy=False, tmp_path=tmp_path)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(len(pairs), seed=5)
        loader = build_loader(pairs, batch_size=8, num_workers=workers, collate=CollatePairs(0), sampler=sampler, drop_last=True)
        batches[workers] = list(loader)
    assert len(batches[0]) == len(batches[2]) == len(pairs) // 8
    for single, multi in zip(batches[0], batches[2]):
        assert torch.equal(single["pixel_values"], multi["pixel_values"])
        assert torch.equal(single["input_ids"], multi["input_ids"])
        # Captions are padded to the longest one in the batch, not to the max length.
        assert single["input_ids"].shape[1] < 32
