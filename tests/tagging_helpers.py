"""Tiny real taggers and captioners for tests, built locally (no downloads), and a fake Hugging Face Hub.

- `tiny_wd14(folder)`: an ONNX network with WD14's signature (NHWC float32 BGR in, one sigmoid per row of its own
  selected_tags.csv out) whose tags answer to colours: a red image is "red_hair" and "hatsune_miku", a blue one
  "blue_sky"; "long_hair" (0.5) and "^_^" (0.45) always pass the default threshold, "smile" (0.27) never does.
- `tiny_florence2(folder)`, `tiny_blip(folder)`: random-weight models and processors saved with save_pretrained,
  a word-level tokenizer of w0..w39.
- `FakeHub`: the Hub's HTTP API as huggingface_hub 2.x asks it (repo info, tree, resolve with HEAD and Range);
  it can cut its first answer for one file short, so the client has to resume.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

RATINGS = ["general", "sensitive", "questionable", "explicit"]
# name, category, weights on (B, G, R) means in 0..1, bias
TAGS = [
    ("general", "9", (0, 0, 0), 1.0), ("sensitive", "9", (0, 0, 3), 0.0), ("questionable", "9", (0, 0, 0), -2.0),
    ("explicit", "9", (0, 0, 0), -3.0),
    ("red_hair", "0", (0, 0, 6), -3.0), ("blue_sky", "0", (6, 0, 0), -3.0), ("long_hair", "0", (0, 0, 0), 0.0),
    ("^_^", "0", (0, 0, 0), -0.2), ("smile", "0", (0, 0, 0), -1.0),
    ("hatsune_miku", "4", (0, 0, 6), -3.0),
]
SIDE = 32  # the model's input side: the tagger must read it from the model


def tiny_wd14(folder: Path, padding_mb: int = 0) -> Path:
    """padding_mb: an unused weight making the file larger than one download chunk of huggingface_hub (10 MiB),
    so that a cut download has something to resume from."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([w for _, _, w, _ in TAGS], dtype=np.float32).T  # (3, tags)
    bias = np.array([b for _, _, _, b in TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
         helper.make_node("MatMul", ["scaled", "weights"], ["logits0"]),
         helper.make_node("Add", ["logits0", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(TAGS)])],
        [numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
         numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")]
        + [numpy_helper.from_array(np.zeros(padding_mb << 18, np.float32), "padding")] * bool(padding_mb))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    rows = ["tag_id,name,category,count"] + [f"{i},{name},{cat},{100 - i}" for i, (name, cat, _, _) in enumerate(TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


WORDS = [f"w{i}" for i in range(40)]


def _word_tokenizer(specials: list[str], **tokens):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>" if "<unk>" in vocab else "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokens), len(vocab)


def tiny_florence2(folder: Path) -> Path:
    import torch
    from transformers import CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    tokenizer, vocab_size = _word_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<image>"], bos_token="<s>",
                                            eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                            extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    images.image_seq_length = 5  # 2x2 patches of an 8 px image and the pooled one
    Florence2Processor(images, tokenizer).save_pretrained(folder)
    text = dict(model_type="bart", vocab_size=vocab_size, max_position_embeddings=64, encoder_layers=1,
                encoder_ffn_dim=8, encoder_attention_heads=1, decoder_layers=1, decoder_ffn_dim=8,
                decoder_attention_heads=1, d_model=8, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                decoder_start_token_id=2, forced_eos_token_id=2)
    vision = dict(patch_size=[7], depths=[1], patch_stride=[4], patch_padding=[3], patch_prenorm=[False],
                  embed_dim=[16], num_heads=[1], num_groups=[1], window_size=12, projection_dim=8)
    torch.manual_seed(0)
    Florence2ForConditionalGeneration(Florence2Config(text_config=text, vision_config=vision,
                                                      image_token_id=4)).save_pretrained(folder)
    return folder


def tiny_blip(folder: Path, word: int = 7) -> Path:
    """Its decoder always says WORDS[word] (a large output bias), so a caption is that word max_length times."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(specials + WORDS)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    BlipProcessor(BlipImageProcessor(size={"height": 16, "width": 16}), tokenizer).save_pretrained(folder)
    config = BlipConfig(
        text_config=dict(vocab_size=len(specials) + len(WORDS), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=1, intermediate_size=16, encoder_hidden_size=16, bos_token_id=5,
                         pad_token_id=0, sep_token_id=3, eos_token_id=3, max_position_embeddings=64),
        vision_config=dict(hidden_size=16, image_size=16, patch_size=8, num_hidden_layers=1, num_attention_heads=1,
                           intermediate_size=16), projection_dim=16)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[len(specials) + word] = 100.0
    model.save_pretrained(folder)
    return folder


class FakeHub:
    """A local Hub serving `repos` ({repo_id: folder}) at `endpoint`. cut: a file name whose first GET ends 1 KiB
    short (the client must ask for the rest with a Range header); requests: every (method, path, Range)."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, repos: dict[str, Path], cut: str | None = None):
        self.repos, self.cut, self.requests = repos, cut, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _files(self, repo: str) -> dict[str, bytes]:
        folder = self.repos[repo]
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        parts = path.strip("/").split("/")
        api = parts[0] == "api"
        repo = "/".join(parts[2:4] if api else parts[0:2])
        if repo not in self.repos:
            return self._send(handler, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
        files = self._files(repo)
        if api and parts[4] == "revision":
            info = {"id": repo, "sha": self.COMMIT, "siblings": [{"rfilename": name} for name in files]}
            return self._send(handler, 200, json.dumps(info).encode())
        if api and parts[4] == "tree":
            tree = [{"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
                    for name, data in files.items()]
            return self._send(handler, 200, json.dumps(tree).encode())
        name = "/".join(parts[4:])  # owner/repo/resolve/REV/name
        if name not in files:
            return self._send(handler, 404, b"{}", {"X-Error-Code": "EntryNotFound"})
        self._send_file(handler, name, files[name], body)

    def _send_file(self, handler: BaseHTTPRequestHandler, name: str, data: bytes, body: bool) -> None:
        headers = {"X-Repo-Commit": self.COMMIT, "ETag": f'"{_oid(data)}"', "Accept-Ranges": "bytes"}
        wanted = handler.headers.get("Range")
        if wanted:
            start = int(wanted.split("=")[1].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(handler, 206, data[start:], headers, body)
        if body and name == self.cut:
            self.cut = None
            handler.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data[:-1024])
            handler.wfile.flush()
            handler.close_connection = True
            return None
        return self._send(handler, 200, data, headers, body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None,
              body: bool = True) -> None:
        handler.send_response(status)
        for key, value in {**(headers or {}), "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
