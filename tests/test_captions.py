"""Caption options (sd-scripts' process_caption semantics): each test fails if its option were ignored."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

from trainer.common.errors import ConfigError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.dataset.captions import CAPTION_STREAM, CaptionOptions, preview_captions, process_caption, sample_rng
from trainer.dataset.plan import Entry
from trainer.dataset.scan import ImageItem
from trainer.dataset.stream import BatchDataset, MicroBatch, make_loader

TAGS = [f"t{i}" for i in range(8)]
CAPTION = ", ".join(TAGS)


def draws(caption: str, count: int = 400, epoch: int = 1, seed: int = 7, **options) -> list[str]:
    opts = CaptionOptions(**options)
    return [process_caption(caption, opts, sample_rng(seed, epoch, i, CAPTION_STREAM), epoch) for i in range(count)]


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# ---------------------------------------------------------------- shuffle and fixed tags

@pytest.mark.parametrize("keep", [0, 1, 3])
def test_shuffle_keeps_the_first_keep_tokens_and_shuffles_the_rest(keep):
    results = [c.split(", ") for c in draws(CAPTION, shuffle_caption=True, keep_tokens=keep)]
    assert all(r[:keep] == TAGS[:keep] and sorted(r[keep:]) == sorted(TAGS[keep:]) for r in results)
    assert len({tuple(r) for r in results}) > min(300, 0.8 * math.factorial(8 - keep))  # many distinct orders
    # every free tag reaches the first free position: a real shuffle, not a rotation of a few
    assert {r[keep] for r in results} == set(TAGS[keep:])
    assert draws(CAPTION, keep_tokens=keep, count=5) == [CAPTION] * 5  # keep_tokens alone changes nothing


def test_keep_tokens_separator_fixes_a_head_and_a_tail_and_is_removed():
    caption = "me, solo ||| a, b, c, d, e ||| best quality, masterpiece"
    results = draws(caption, shuffle_caption=True, keep_tokens=4, keep_tokens_separator="|||")
    for result in results:
        tags = result.split(", ")
        assert tags[:2] == ["me", "solo"] and tags[-2:] == ["best quality", "masterpiece"]  # not keep_tokens=4
        assert sorted(tags[2:-2]) == ["a", "b", "c", "d", "e"] and "|||" not in result
    assert len(set(results)) > 50
    # without shuffle or dropout the marker still never reaches the text encoder
    assert draws(caption, count=1, keep_tokens_separator="|||") == [
        "me, solo, a, b, c, d, e, best quality, masterpiece"]
    # a caption without the marker falls back to keep_tokens
    assert all(r.startswith("t0, t1,") for r in draws(CAPTION, shuffle_caption=True, keep_tokens=2,
                                                        keep_tokens_separator="|||"))


def test_same_seed_same_captions_other_seed_or_epoch_others():
    options = dict(shuffle_caption=True, caption_tag_dropout_rate=0.3, caption_dropout_rate=0.1)
    assert draws(CAPTION, seed=1, **options) == draws(CAPTION, seed=1, **options)
    assert draws(CAPTION, seed=1, **options) != draws(CAPTION, seed=2, **options)
    assert draws(CAPTION, epoch=1, **options) != draws(CAPTION, epoch=2, **options)


# ---------------------------------------------------------------- dropout

def test_caption_dropout_rate_matches_over_many_draws():
    n, rate = 4000, 0.15
    results = draws("me, a, b", count=n, caption_dropout_rate=rate, caption_prefix="pre", caption_suffix="post")
    empty = sum(r == "" for r in results)
    assert within_binomial(empty, n, rate)
    assert set(results) == {"", "pre me, a, b post"}  # the whole caption goes, prefix and suffix included


def test_caption_tag_dropout_rate_drops_each_free_tag_independently():
    n, rate = 1500, 0.3
    results = [r.split(", ") for r in draws(CAPTION, count=n, caption_tag_dropout_rate=rate, keep_tokens=2)]
    assert all(r[:2] == ["t0", "t1"] for r in results)  # kept tags never drop
    for tag in TAGS[2:]:
        assert within_binomial(sum(tag not in r for r in results), n, rate)
    assert all(r[2:] == [t for t in TAGS[2:] if t in r] for r in results)  # order kept without shuffle


def test_caption_dropout_every_n_epochs_empties_exactly_those_epochs():
    for epoch in range(1, 13):
        results = set(draws(CAPTION, count=50, epoch=epoch, caption_dropout_every_n_epochs=3))
        assert results == ({""} if epoch in (3, 6, 9, 12) else {CAPTION}), epoch


# ---------------------------------------------------------------- placement and separators

def test_prefix_suffix_and_separators_are_placed_exactly():
    assert draws("a, b", count=1, caption_prefix="trigger,", caption_suffix="by artist") == [
        "trigger, a, b by artist"]  # joined with a space, as sd-scripts
    # the prefix joins the tags, so keep_tokens counts it
    shuffled = draws("a, b, c", count=50, caption_prefix="trigger,", shuffle_caption=True, keep_tokens=1)
    assert all(r.startswith("trigger, ") for r in shuffled) and len(set(shuffled)) == 6
    # tags split on caption_separator, processed tags joined with ", "
    assert set(draws("x; y z; w", count=60, caption_separator=";", shuffle_caption=True, keep_tokens=1)) == {
        "x, y z, w", "x, w, y z"}
    # empty tags (e.g. from joined caption lines "a,, b") disappear once tags are rebuilt
    assert draws("a,, b", count=1, caption_tag_dropout_rate=1e-9) == ["a, b"]


def test_secondary_separator_groups_tags_then_becomes_the_separator():
    results = set(draws("a, red hair;;;blue eyes, b", count=60, secondary_separator=";;;", shuffle_caption=True))
    assert all("red hair,blue eyes" in r and ";;;" not in r for r in results) and len(results) == 6
    assert draws("a;;;b", count=1, secondary_separator=";;;", caption_separator=" |") == ["a |b"]


def test_wildcards_pick_an_option_per_sample_and_keep_escaped_braces():
    results = draws("{red|blue|green} hair, {{literal}}", count=200, enable_wildcard=True)
    assert {r.split(" ")[0] for r in results} == {"red", "blue", "green"}
    assert all(r.endswith(" hair, {literal}") for r in results)
    assert draws("{red|blue} hair", count=1) == ["{red|blue} hair"]  # off: text stays


# ---------------------------------------------------------------- config, dataset, preview

def test_invalid_caption_values_are_config_errors():
    for bad, key in [({"caption_dropout_rate": 1.5}, "caption_dropout_rate"),
                     ({"caption_tag_dropout_rate": -0.1}, "caption_tag_dropout_rate"),
                     ({"caption_separator": ""}, "caption_separator"), ({"keep_tokens": -1}, "keep_tokens")]:
        with pytest.raises(ConfigError, match=key):
            validate_config(bad)


def caption_entries(tmp_path: Path) -> list[Entry]:
    path = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (90, 20, 200)).save(path)
    train = ImageItem(path, CAPTION, True, 32, 32)
    reg = ImageItem(path, "r0, r1, r2, r3, r4, r5", True, 32, 32)
    return [Entry(train, (32, 32), False)] * 6 + [Entry(reg, (32, 32), True)] * 6


def dataset_captions(dataset: BatchDataset, workers: int = 0) -> list[str]:
    return [c for item in make_loader(dataset, range(len(dataset)), workers, 0) for c in item["captions"]]


def test_dataset_applies_the_config_to_training_and_regularization_captions(tmp_path):
    entries = caption_entries(tmp_path)
    batches = [MicroBatch(epoch, 1, True, 1, (i, i + 1, i + 2)) for epoch in (1, 2) for i in (0, 3, 6, 9)]
    config = TrainConfig(shuffle_caption=True, keep_tokens=2, caption_prefix="sks,", seed=3)  # sks and t0
    captions = dataset_captions(BatchDataset.from_config(entries, batches, None, config))
    train, reg = captions[:6] + captions[12:18], captions[6:12] + captions[18:]
    assert all(c.startswith("sks, t0") and sorted(c.split(", ")[1:]) == sorted(TAGS) for c in train)
    assert all(c.startswith("sks, r0") for c in reg) and len(set(reg)) > 1  # sd-scripts treats reg alike
    assert len(set(train)) > 6  # each sample and epoch shuffles anew
    # the same in DataLoader worker processes, and exactly what the GUI preview shows for each entry
    assert dataset_captions(BatchDataset.from_config(entries, batches, None, config), workers=2) == captions
    for position, caption in enumerate(captions[:12]):
        index = batches[position // 3].indices[position % 3]
        assert preview_captions(entries[index].item.caption, config, count=index + 1)[index] == caption
    plain = dataset_captions(BatchDataset(entries, batches, None))
    assert plain == [e.item.caption for e in entries] * 2


def test_preview_shows_several_samples():
    config = TrainConfig(shuffle_caption=True, caption_tag_dropout_rate=0.2, keep_tokens=1)
    previews = preview_captions("me, a, b, c, d", config, count=8, epoch=2)
    assert len(previews) == 8 and len(set(previews)) > 1 and all(p.startswith("me") for p in previews)
    assert preview_captions("me, a, b, c, d", config, count=8, epoch=2) == previews


def test_the_preview_needs_no_torch():
    # The GUI process must stay light: importing the caption module must not pull in torch.
    code = "import sys, trainer.dataset.captions; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
