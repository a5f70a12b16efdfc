"""max_token_length (long captions in 75-token windows, as sd-scripts) and cached text-encoder outputs."""

import shutil

import pytest
import safetensors
import torch
from accelerate import Accelerator
from transformers import CLIPTextModel, CLIPTokenizer

from trainer.checks.preflight import run_preflight
from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.config.schema.text import CAPTION_CHANGES
from trainer.dataset.scan import scan_dataset
from trainer.dataset.te_cache import TextEncoderCache, build_text_encoder_cache, cache_path
from trainer.families import sd
from trainer.families.registry import load_family
from trainer.run.events import RunLog
from trainer.training.loop import Trainer
from trainer.training.sampling import parse_prompt_line

# 91 tokens with BOS/EOS: "red circle" is 2 tokens, ", " one. B differs from A only after token 80.
LONG_A = ", ".join(["red circle"] * 30)
LONG_B = ", ".join(["red circle"] * 27 + ["blue square"] * 3)


def text_parts(model_dir):
    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    return tokenizer, CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder").eval()


def embed(parts, captions, max_token_length=None, clip_skip=1):
    tokenizer, encoder = parts
    with torch.no_grad():
        return sd.encode_tokens(encoder, sd.tokenize(tokenizer, captions, max_token_length), clip_skip)


@pytest.fixture(params=["sd1", "sd2v"])
def parts(request, tiny_sd1, tiny_sd2v):
    return text_parts(tiny_sd1 if request.param == "sd1" else tiny_sd2v)


def test_a_long_caption_is_read_past_75_tokens_only_with_max_token_length(parts):
    plain = embed(parts, [LONG_A, LONG_B])
    assert plain.shape[1] == 77 and torch.equal(plain[0], plain[1])  # cut at 75 tokens: the tails are lost
    for max_token_length, length in ((150, 152), (225, 227)):
        long = embed(parts, [LONG_A, LONG_B], max_token_length)
        assert long.shape == (2, length, plain.shape[2])
        assert torch.allclose(long[0, :76], long[1, :76])  # the first window holds the same tokens
        assert not torch.allclose(long[0, 77:], long[1, 77:], atol=1e-4)
    assert torch.equal(embed(parts, [LONG_A], 75), embed(parts, [LONG_A]))  # 75 is the default length


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_windows_are_encoded_alone_with_clip_skip_and_spliced_like_sd_scripts(parts, clip_skip):
    tokenizer, encoder = parts
    short = embed(parts, ["red circle"], clip_skip=clip_skip)
    long = embed(parts, ["red circle", LONG_A], 150, clip_skip)
    assert torch.allclose(long[0, :76], short[0, :76], atol=1e-6)  # a short caption: its first window
    ids = sd.tokenize(tokenizer, [LONG_A], 150)
    with torch.no_grad():
        windows = [sd.encode_tokens(encoder, ids[:, i * 77:(i + 1) * 77], clip_skip)[0] for i in range(2)]
    # First BOS, 75 inner states of each window, the last window's final state.
    expected = torch.cat([windows[0][:1], windows[0][1:76], windows[1][1:76], windows[1][76:]])
    assert torch.allclose(long[1], expected, atol=1e-6)


def test_windows_end_and_pad_as_sd_scripts(tiny_sd1, tiny_sd2v):
    for model_dir in (tiny_sd1, tiny_sd2v):
        tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        ids = sd.tokenize(tokenizer, [LONG_A, "red circle"], 225).reshape(2, 3, 77)
        text = tokenizer(LONG_A).input_ids[1:-1]  # 89 tokens
        assert ids.shape == (2, 3, 77) and (ids[:, :, 0] == bos).all()
        assert ids[0, 0, 1:76].tolist() == text[:75] and ids[0, 0, 76] == eos  # text to the end: EOS follows
        assert ids[0, 1, 1:15].tolist() == text[75:] and ids[0, 1, 15] == eos
        # SD1 pads with EOS; SD2 pads with "!" and gives an empty window BOS EOS pad ..., as sd-scripts does.
        assert ids[1, 2, 1:3].tolist() == ([eos, eos] if pad == eos else [eos, pad])
        assert ids[1, 2, -1] == pad


def test_the_loop_and_previews_use_max_token_length(tmp_path, make_config):
    config = validate_config(make_config(max_token_length=150, cache_latents=False))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "r"), Accelerator())
    trainer.setup()
    trainer.log.close()
    assert trainer._conditioning([LONG_A])["hidden"].shape[1] == 152
    model = trainer.model
    model.denoiser.eval()
    images = {}
    for prompt in (LONG_A, LONG_B):
        for length in (None, 150):
            model.config = config.model_copy(update={"max_token_length": length})
            spec = parse_prompt_line(f"{prompt} --w 64 --h 64 --s 1 --d 1", (64, 64))
            with torch.no_grad():  # previews condition on what the loop's text path gives
                cond, uncond = trainer._conditioning([spec.prompt]), trainer._conditioning([spec.negative])
            images[prompt, length] = model.generate(spec, cond, uncond, 0, "euler")
    assert (images[LONG_A, None] == images[LONG_B, None]).all()
    assert not (images[LONG_A, 150] == images[LONG_B, 150]).all()


@pytest.mark.parametrize("key", ["cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"])
def test_caching_needs_a_frozen_text_encoder(make_config, key):
    with pytest.raises(ConfigError, match=f"{key} needs a frozen text encoder.*network_train_unet_only: true"):
        validate_config(make_config(**{key: True}, network_train_unet_only=False))
    with pytest.raises(ConfigError, match=key):
        validate_config(make_config(**{key: True}, network_train_text_encoder_only=True))
    assert validate_config(make_config(**{key: True}, network_train_unet_only=True)).text_encoder_outputs_cached
    implied = validate_config(make_config(**{key: True}))  # as sd-scripts: caching freezes the text encoder
    assert implied.text_encoder_outputs_cached and not implied.train_text_encoder


ON = {"shuffle_caption": True, "caption_dropout_rate": 0.1, "caption_tag_dropout_rate": 0.1,
      "caption_dropout_every_n_epochs": 2, "enable_wildcard": True}


@pytest.mark.parametrize("name", CAPTION_CHANGES)
def test_caching_refuses_captions_that_change(make_config, name):
    with pytest.raises(ConfigError, match=f"cache_text_encoder_outputs encodes each caption once, but {name}"):
        validate_config(make_config(cache_text_encoder_outputs=True, network_train_unet_only=True, **{name: ON[name]}))


def run_steps(tmp_path, make_config, name, **overrides):
    """First step loss and how often the text encoder ran during the training steps."""
    config = validate_config(make_config(network_train_unet_only=True, max_train_steps=1, cache_latents=False,
                                         caption_prefix="sks,", output_name=name, **overrides))
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / name), Accelerator())
    trainer.setup()
    calls = []
    trainer.model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    losses = []
    forward = trainer._forward_backward
    trainer._forward_backward = lambda data, batch: losses.append(forward(data, batch)) or losses[-1]
    assert trainer.run() == "completed"
    return float(losses[0]), len(calls)  # the loss stays on the device until the step's readback


def test_cached_outputs_train_like_the_text_encoder_without_running_it(tmp_path, make_config):
    loss, calls = run_steps(tmp_path, make_config, "plain", max_token_length=150, clip_skip=2)
    cached_loss, cached_calls = run_steps(tmp_path, make_config, "cached", max_token_length=150, clip_skip=2,
                                          cache_text_encoder_outputs=True)
    assert calls > 0 and cached_calls == 0
    assert cached_loss == pytest.approx(loss, abs=1e-6)


def test_disk_cache_is_reused_and_invalidated(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    calls = []

    def encode(captions):
        calls.append(len(captions))
        return {"hidden": torch.stack([torch.full((77, 4), float(len(c))) for c in captions])}

    def fill(caption, stamp="1"):
        cache = TextEncoderCache(encode, {"clip_skip": stamp}, to_disk=True)
        return cache.fill([(image, caption)]), cache

    assert fill("red")[0] == [1] and cache_path(image).name == "a.png.te.safetensors"
    encoded, cache = fill("red")
    assert encoded == [0] and torch.equal(cache.get(["red"])["hidden"][0], torch.full((77, 4), 3.0))  # read from disk
    assert fill("red circle")[0] == [1]  # the caption changed
    assert fill("red circle", stamp="2")[0] == [1]  # clip_skip, model, max_token_length or precision changed
    cache_path(image).write_bytes(b"damaged")
    assert fill("red circle", stamp="2")[0] == [1]
    with pytest.raises(KeyError, match="no entry for the caption 'blue'"):
        cache.get(["blue"])


def test_disk_cache_files_name_their_settings_and_the_scan_skips_them(tmp_path, make_config, train_dir):
    data = shutil.copytree(train_dir, tmp_path / "data")

    def stamp(changed_weights=False, **overrides):
        config = validate_config(make_config(train_data_dir=str(data), network_train_unet_only=True,
                                             cache_text_encoder_outputs_to_disk=True, caption_suffix="!", **overrides))
        model = load_family(config, torch.float32)
        if changed_weights:
            with torch.no_grad():
                model.text_encoder.get_input_embeddings().weight.add_(0.1)
        entries = run_preflight(config).entries
        build_text_encoder_cache(config, model, entries, [], Accelerator(), print)
        with safetensors.safe_open(str(cache_path(entries[0].item.path)), "pt") as handle:
            return handle.metadata()

    first = stamp()
    assert first == stamp()
    for changed in (stamp(clip_skip=2), stamp(max_token_length=150), stamp(changed_weights=True)):
        assert {k for k in first if first[k] != changed[k]} <= {"clip_skip", "max_token_length", "text_encoder"}
        assert changed != first
    assert not [p for p in scan_dataset(data, None, ".txt").problems if p.path.name.endswith(".te.safetensors")]
