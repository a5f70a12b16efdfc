"""The `lora` command group: argparse wiring and the one-line reports of each tool."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.common.exit_codes import EXIT_OK
from trainer.common.libraries import hide_unused, quiet_libraries

PRECISIONS = ("float", "fp16", "bf16")  # export.SAVE_DTYPES' keys, listed here so the parser stays torch-free
DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")  # sd-scripts resize_lora's --dynamic_method
LAYOUTS = ("kohya", "diffusers")  # what `convert --to` writes
RESIZE_DOC = ("LoRA/LoCon: SVD of each module's update, keeping --rank singular values (or a per-module rank "
              "chosen by --dynamic-method, capped by --rank); alpha becomes old alpha/rank x new rank, so the "
              "strength stays. DyLoRA (ss_network_module networks.dylora): the first --rank rows are kept, no SVD, "
              "with alpha x sqrt(rank/dim), the strength that sub-rank was trained at. LoHa/LoKr: not resizable.")
MERGE_DOC = ("Adds ratio x each file's update to the base model's weights: LoRA/LoCon up@down*alpha/rank, LoHa "
             "(w1a@w1b)*(w2a@w2b)*alpha/rank, LoKr kron(w1,w2)*alpha/rank. Kohya, LyCORIS and diffusers-layout "
             "files. Output: a diffusers folder, or (-o x.safetensors) one file in the original layout A1111, Forge "
             "and ComfyUI load: an LDM checkpoint (SD1/SD2/SDXL), or for Flux.1 the transformer alone in BFL names "
             "(like flux1-dev.safetensors; use the base's ae, clip_l and t5xxl files with it).")
CONVERT_DOC = ("kohya (A1111/Forge/ComfyUI) <-> diffusers (peft keys; alphas in the lora_adapter_metadata header, "
               "Flux as .alpha keys) for LoRA/LoCon. Tensors are moved, not recomputed: a round trip is exact.")


def add_lora_commands(commands) -> None:
    lora = commands.add_parser("lora", help="LoRA file tools: info, resize, merge, convert")
    tools = lora.add_subparsers(dest="tool", required=True)

    info = tools.add_parser("info", help="family, network type, rank, alpha and all ss_* metadata of a LoRA file")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="print everything as one JSON object")
    info.set_defaults(func=_info)

    resize = tools.add_parser("resize", help="lower a LoRA/LoCon's rank by SVD (sd-scripts' resize_lora); "
                                             "cut a DyLoRA at a rank",
                            description=RESIZE_DOC)
    resize.add_argument("file", type=Path)
    resize.add_argument("--rank", type=int, required=True, help="new rank (with a dynamic method: the highest rank)")
    resize.add_argument("--conv-rank", type=int, help="new rank of 3x3 conv (LoCon) modules; default --rank")
    resize.add_argument("--dynamic-method", choices=DYNAMIC_METHODS,
                        help="choose each module's rank from its singular values (sd-scripts' methods)")
    resize.add_argument("--dynamic-param", type=float, help="sv_ratio: largest/smallest kept singular value, e.g. "
                        "8; sv_fro / sv_cumulative: share of the norm / sum to keep, e.g. 0.9")
    resize.add_argument("--save-precision", choices=PRECISIONS, help="default: the input file's precision")
    resize.add_argument("--verbose", action="store_true", help="print each module's new rank and kept norm")
    _output(resize)
    resize.set_defaults(func=_resize)

    merge = tools.add_parser("merge", help="bake LoRA/LoCon/LoHa/LoKr files into a base model and save it",
                             description=MERGE_DOC)
    merge.add_argument("base", help="base model: checkpoint file or diffusers folder")
    merge.add_argument("files", type=Path, nargs="+", metavar="FILE", help="LoRA files, merged in this order")
    merge.add_argument("--ratio", type=float, nargs="+", help="strength per file (default 1 each)")
    merge.add_argument("--format", choices=("diffusers", "safetensors"), help="diffusers: a model folder (loads "
                       "with from_pretrained); safetensors: one checkpoint in the original layout (A1111/Forge/"
                       "ComfyUI); for Flux.1 the transformer only (ae, clip_l, t5xxl stay the base's files), refused "
                       "if a LoRA changed CLIP-L or T5. Default: from -o's suffix")
    merge.add_argument("--precision", choices=PRECISIONS, default="float", help="dtype the model is loaded, merged "
                       "and saved in (bf16 halves the memory a Flux.1 merge needs)")
    _output(merge)
    merge.set_defaults(func=_merge)

    convert = tools.add_parser("convert", help="a LoRA/LoCon between kohya's layout and diffusers' (peft keys)",
                               description=CONVERT_DOC)
    convert.add_argument("file", type=Path)
    convert.add_argument("--to", choices=LAYOUTS, required=True)
    convert.add_argument("--base", help="a diffusers model folder whose architecture differs from the family's "
                                        "standard one (default: the standard architecture, nothing loaded)")
    _output(convert)
    convert.set_defaults(func=_convert)


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def _info(args: argparse.Namespace) -> int:
    from trainer.lora_tools.info import render, summary
    from trainer.lora_tools.keys import read_lora

    info = summary(read_lora(args.file))
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else render(info))
    return EXIT_OK


def _resize(args: argparse.Namespace) -> int:
    from trainer.lora_tools.keys import read_lora
    from trainer.lora_tools.output import check_output, write_lora
    from trainer.lora_tools.resize import resize
    from trainer.training.export import SAVE_DTYPES

    out = check_output(args.output, args.overwrite)
    lora = read_lora(args.file)
    result = resize(lora, args.rank, args.conv_rank, args.dynamic_method, args.dynamic_param)
    tensors = result.tensors
    if args.save_precision:
        tensors = {k: v.to(SAVE_DTYPES[args.save_precision]) for k, v in tensors.items()}
    write_lora(out, tensors, result.metadata)
    if args.verbose:
        for name, rank in result.ranks.items():
            print(f"{name:75} rank {rank}, norm kept {result.fro_retained[name]:.1%}")
    ranks = sorted(set(result.ranks.values()))
    shown = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    print(f"resized {len(result.ranks)} modules from rank {result.old_rank} to {shown}: {out}")
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    hide_unused(set())  # before peft loads: neither 8-bit nor quantized layers are needed here
    from collections import Counter

    from trainer.common.errors import UserError
    from trainer.lora_tools.keys import read_lora
    from trainer.lora_tools.merge import load_base, merge_into, save_merged
    from trainer.training.export import SAVE_DTYPES

    quiet_libraries()

    ratios = args.ratio or [1.0] * len(args.files)
    if len(ratios) != len(args.files):
        raise UserError(f"--ratio: {len(ratios)} value(s) for {len(args.files)} file(s)", "give one ratio per file",
                        zh=f"--ratio：{len(args.files)} 个文件却给了 {len(ratios)} 个比例",
                        hint_zh="每个文件给一个比例")
    fmt = args.format or ("safetensors" if args.output.suffix.lower() == ".safetensors" else "diffusers")
    out = _merge_output(args.output, fmt, args.overwrite)
    loras = [read_lora(path) for path in args.files]  # every file checked before the model loads
    family, components, table = load_base(args.base, SAVE_DTYPES[args.precision])
    changed = Counter()
    for lora, ratio in zip(loras, ratios):
        layers = merge_into(family, components, table, lora, ratio)
        changed.update(layers)
        print(f"merged {lora.path.name} x {ratio:g}: {layers.total()} layers")
    note = {"family": family, "base": str(args.base), "loras": [[str(p), r] for p, r in zip(args.files, ratios)]}
    save_merged(family, components, args.base, out, fmt, note, changed)
    print(f"saved: {out}")
    return EXIT_OK


def _merge_output(path: Path, fmt: str, overwrite: bool) -> Path:
    from trainer.lora_tools.output import check_output

    return check_output(path, overwrite, (".safetensors",) if fmt == "safetensors" else None)


def _convert(args: argparse.Namespace) -> int:
    hide_unused(set())  # before peft loads: neither 8-bit nor quantized layers are needed here
    from trainer.common.errors import UserError
    from trainer.lora_tools.convert import to_diffusers, to_kohya
    from trainer.lora_tools.keys import read_lora
    from trainer.lora_tools.output import check_output, write_lora
    from trainer.lora_tools.targets import adapter_parts, module_table, skeleton

    quiet_libraries()
    out = check_output(args.output, args.overwrite, (".safetensors",))
    lora = read_lora(args.file)
    if lora.family is None:
        raise UserError(f"{lora.path}: cannot tell which model family the LoRA is for",
                        "give its base model's diffusers folder with --base",
                        zh=f"{lora.path}：看不出这个 LoRA 是给哪类模型的",
                        hint_zh="请用 --base 给出它底模的 diffusers 文件夹")
    components, config_dir = skeleton(lora.family, args.base)
    table = module_table(lora.family, adapter_parts(lora.family, config_dir, components))
    tensors, metadata = (to_kohya if args.to == "kohya" else to_diffusers)(lora, table)
    write_lora(out, tensors, metadata)
    print(f"converted {lora.path.name} to {args.to} layout: {out}")
    return EXIT_OK
