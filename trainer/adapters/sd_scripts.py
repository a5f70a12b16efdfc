"""sd-scripts' ways of naming a network type (network_module + network_args), read into Danlu's network_type.

A LoRA file tells its type to A1111/Forge/ComfyUI by its keys; ss_network_module / ss_network_args tell it to
people and tools, written as sd-scripts (networks.lora, networks.dylora) and LyCORIS (lycoris.kohya) write them.
Torch-free: the schema, the presets and the GUI import it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from trainer.adapters.types import NETWORK_TYPES
from trainer.common.errors import RuleError

NETWORK_MODULES = ("networks.lora", "networks.lora_flux", "networks.dylora", "lycoris.kohya")
NetworkModule = Literal[NETWORK_MODULES]  # type: ignore[valid-type]

# LyCORIS algo= names (lycoris.kohya) -> network_type; LyCORIS's "lora" is its LoCon module, and its default.
LYCORIS_ALGOS = {"lora": "locon", **{kind.algo: kind.name for kind in NETWORK_TYPES.values() if kind.algo}}
# network_args keys that are config keys of their own; 'algo' and 'preset' are read by the mapping itself.
ARG_KEYS = {"conv_dim": int, "conv_alpha": float, "factor": int, "unit": int, "rank_dropout": float,
            "module_dropout": float, "dropout": float}
ARG_RENAMES = {"dropout": "network_dropout"}  # LyCORIS's name for kohya's network_dropout


def parse_network_args(args: list[str] | str) -> dict[str, str]:
    """sd-scripts' network_args ["conv_dim=4", "algo=loha"] (or one space-separated string) -> a dict."""
    if not isinstance(args, (str, list, tuple)):  # a number or a mapping: the shape is wrong, not an item
        raise RuleError(f"network_args: {str(args)[:80]!r} is not a list of key=value entries (e.g. "
                        '["conv_dim=4", "conv_alpha=1"])', "network_args",
                        zh=f"network_args：{str(args)[:80]!r} 不是 参数=值 条目的列表（例如 "
                        '["conv_dim=4", "conv_alpha=1"]）')
    items = args.split() if isinstance(args, str) else list(args)
    parsed = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise RuleError(f"network_args: '{item}' is not key=value (e.g. conv_dim=4)", "network_args",
                            zh=f"network_args：'{item}' 不是 参数=值 的形式（例如 conv_dim=4）")
        parsed[key.strip()] = value.strip()
    return parsed


def map_network_config(data: dict[str, Any]) -> dict[str, Any]:
    """Fold network_module + network_args into network_type and its own keys; network_module becomes the one the
    type is saved under. The only place that reads sd-scripts' spelling."""
    data = dict(data)
    args = parse_network_args(data.pop("network_args", None) or [])
    module = data.get("network_module", "networks.lora")
    if module not in NETWORK_MODULES:
        raise RuleError(f"network_module: {module} is not supported; Danlu trains {', '.join(NETWORK_MODULES)} "
                        "(or set network_type)", "network_module",
                        zh=f"network_module：不支持 {module}；丹炉能训练 {', '.join(NETWORK_MODULES)}"
                        "（或直接设 network_type）")
    chosen = data.get("network_type")
    implied = _implied_type(module, args.pop("algo", None), chosen)
    if chosen is not None and implied is not None and chosen != implied:
        raise RuleError(f"network_type: {chosen} contradicts network_module {module} "
                        f"{'and its algo ' if module == 'lycoris.kohya' else ''}(which mean {implied}); give one",
                        "network_type", "network_module", "network_args",
                        zh=f"network_type：{chosen} 与 network_module {module}"
                        f"{' 及其 algo' if module == 'lycoris.kohya' else ''}（代表 {implied}）矛盾；只写一个")
    kind = chosen or implied or "lora"
    if args.pop("preset", "full") != "full":
        raise RuleError("network_args: preset: only LyCORIS's 'full' preset is supported (Danlu adapts kohya's "
                        "attention, MLP and, for LoCon/LoHa/LoKr, ResNet conv layers); remove preset", "network_args",
                        zh="network_args：preset：只支持 LyCORIS 的 'full' 预设（丹炉适配 kohya 的注意力层、MLP，"
                        "LoCon/LoHa/LoKr 还有 ResNet 卷积层）；请去掉 preset")
    if kind == "lora" and "conv_dim" in args:
        kind = "locon"  # kohya's networks.lora with conv_dim is C3Lier (LoCon)
        args.setdefault("conv_alpha", "1")  # kohya's default when only conv_dim is given
    for key, value in args.items():
        if key not in ARG_KEYS:
            raise RuleError(f"network_args: '{key}' is not supported; Danlu reads "
                            f"{', '.join(['algo', 'preset', *ARG_KEYS])}", "network_args",
                            zh=f"network_args：不支持 '{key}'；丹炉读取 {', '.join(['algo', 'preset', *ARG_KEYS])}")
        name = ARG_RENAMES.get(key, key)
        if data.get(name) is not None:
            raise RuleError(f"{name}: given both as a key and in network_args; keep one", name, "network_args",
                            zh=f"{name}：既作为参数写了，又写在 network_args 里；只保留一个")
        try:
            data[name] = ARG_KEYS[key](value)
        except ValueError:
            raise RuleError(f"network_args: {key}={value} is not a number", "network_args",
                            zh=f"network_args：{key}={value} 不是数字") from None
    data["network_type"] = kind
    data["network_module"] = module_for(kind, module)
    return data


def module_for(kind: str, module: str) -> str:
    """The network_module a network type is saved under; Flux's LoRA keeps the name sd-scripts gives it."""
    return module if (module, kind) == ("networks.lora_flux", "lora") else NETWORK_TYPES[kind].module


def _implied_type(module: str, algo: str | None, chosen: str | None) -> str | None:
    owners = [kind.name for kind in NETWORK_TYPES.values() if kind.module == module]
    if len(owners) == 1:  # a module only one type is saved under (networks.dylora)
        return owners[0]
    if module == "lycoris.kohya":
        if algo is None:
            return chosen if chosen in LYCORIS_ALGOS.values() else LYCORIS_ALGOS["lora"]
        if algo.lower() not in LYCORIS_ALGOS:
            raise RuleError(f"network_args: algo={algo} is not supported; Danlu trains "
                            f"{', '.join(sorted(set(LYCORIS_ALGOS)))}", "network_args",
                            zh=f"network_args：不支持 algo={algo}；丹炉能训练 {', '.join(sorted(set(LYCORIS_ALGOS)))}")
        return LYCORIS_ALGOS[algo.lower()]
    if algo is not None:
        raise RuleError(f"network_args: algo={algo} needs network_module: lycoris.kohya (or use network_type)",
                        "network_args", "network_module",
                        zh=f"network_args：algo={algo} 需要 network_module: lycoris.kohya（或改用 network_type）")
    return None


def network_args_metadata(config) -> dict[str, str]:
    """ss_network_args as sd-scripts writes it: the network_args it was given, as a JSON object of strings."""
    kind = NETWORK_TYPES[config.network_type]
    args: dict[str, str] = {}
    if kind.algo and kind.module == "lycoris.kohya":
        args["algo"] = kind.algo
    if kind.convs:
        args["conv_dim"], args["conv_alpha"] = str(config.conv_dim_value), str(config.conv_alpha_value)
    for key in kind.own_keys:
        args[key] = str(getattr(config, key))
    for key in ("rank_dropout", "module_dropout"):
        if getattr(config, key):
            args[key] = str(getattr(config, key))
    return {"ss_network_args": json.dumps(args)} if args else {}
