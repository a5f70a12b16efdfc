"""Where a tagger's files come from: a local folder, or a Hugging Face repo id downloaded into the Hugging Face
cache (huggingface_hub: progress bars on stderr, an interrupted download resumes, HF_ENDPOINT picks a mirror,
HF_HUB_OFFLINE=1 uses the cache only). Each way it can fail says which repo or folder and what to do, in English
and Chinese. Torch-free."""

from __future__ import annotations

import re
from pathlib import Path

from trainer.common.errors import UserError
from trainer.tagging.options import FILES, WD14, WD14_FILES

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MIRROR_HINT = "HF_ENDPOINT=https://hf-mirror.com"  # what users in mainland China set


def is_repo_id(source: str) -> bool:
    return bool(_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def model_folder(source: str, kind: str | None) -> Path:
    """The folder holding the model's files: source itself, the folder of a model.onnx given as a file, or the
    downloaded (or cached) snapshot of a repo id."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        path = path.parent
    if path.is_dir():
        return _checked(path, kind, f"'{path}'")
    if not is_repo_id(source):
        raise UserError(f"model '{source}' does not exist", "give a model folder, or a Hugging Face repo id such as "
                        "SmilingWolf/wd-swinv2-tagger-v3", zh=f"模型 '{source}' 不存在",
                        hint_zh="请给出模型文件夹，或 Hugging Face 仓库名，例如 SmilingWolf/wd-swinv2-tagger-v3")
    return _checked(download(source, kind), kind, f"repo '{source}'")


def download(repo_id: str, kind: str | None) -> Path:
    """snapshot_download of the files this kind needs (all kinds' files when the kind is not known yet)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = FILES[kind] if kind else sorted({p for files in FILES.values() for p in files})
    endpoint = constants.ENDPOINT
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except GatedRepoError:
        raise UserError(f"repo '{repo_id}' on {endpoint} needs permission", "accept its terms on its model page, "
                        "then log in with `hf auth login` (or set HF_TOKEN)",
                        zh=f"仓库 '{repo_id}'（{endpoint}）需要授权",
                        hint_zh="请在模型页面同意条款，然后运行 `hf auth login` 登录（或设置 HF_TOKEN）") from None
    except RepositoryNotFoundError:
        raise UserError(f"there is no repo '{repo_id}' on {endpoint}", "check the name (owner/model), or give a "
                        "local model folder", zh=f"{endpoint} 上没有仓库 '{repo_id}'",
                        hint_zh="请检查名称（所有者/模型），或给出本地模型文件夹") from None
    except LocalEntryNotFoundError:
        raise _not_reachable(repo_id, endpoint, constants.HF_HUB_OFFLINE) from None
    except OSError as exc:  # a connection error, a full disk, a server error
        raise UserError(f"downloading '{repo_id}' from {endpoint} failed ({exc})", "run it again: the download "
                        f"resumes where it stopped; from mainland China set {MIRROR_HINT}",
                        zh=f"从 {endpoint} 下载 '{repo_id}' 失败（{exc}）",
                        hint_zh=f"请再运行一次：下载会从中断处继续；在中国大陆请设置 {MIRROR_HINT}") from None


def _not_reachable(repo_id: str, endpoint: str, offline: bool) -> UserError:
    if offline:
        return UserError(f"'{repo_id}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
                         "downloaded", "unset HF_HUB_OFFLINE (or set it to 0) to download it once, or give a local "
                         "folder holding the model's files",
                         zh=f"Hugging Face 缓存中没有 '{repo_id}'，且设置了 HF_HUB_OFFLINE，无法下载",
                         hint_zh="请取消 HF_HUB_OFFLINE（或设为 0）下载一次，或给出存放模型文件的本地文件夹")
    return UserError(f"'{repo_id}' is not in the Hugging Face cache and {endpoint} cannot be reached",
                     f"check the connection; from mainland China set {MIRROR_HINT}; or download the model's files "
                     "into a folder and give that folder",
                     zh=f"Hugging Face 缓存中没有 '{repo_id}'，且无法连接 {endpoint}",
                     hint_zh=f"请检查网络；在中国大陆请设置 {MIRROR_HINT}；或把模型文件下载到一个文件夹并给出该文件夹")


def _checked(folder: Path, kind: str | None, named: str) -> Path:
    """folder, when it holds what the kind needs (WD14: model.onnx and selected_tags.csv; others: config.json)."""
    needed = WD14_FILES if kind == WD14 else ("config.json",) if kind else ()
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{named} has no {' or '.join(missing)} ({folder})", "give the folder or repo of a "
                        f"{kind} model", zh=f"{named} 中没有 {' 或 '.join(missing)}（{folder}）",
                        hint_zh=f"请给出 {kind} 模型的文件夹或仓库")
    return folder
