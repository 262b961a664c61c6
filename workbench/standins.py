"""Models of real size with random weights, for measuring what serving costs at that size.

The bundled models are small (a 2.6M-weight head, a 3M-weight ECAPA), so a benchmark on them
says little about a deployment that registers `speechbrain/lang-id-voxlingua107-ecapa` and an
XLS-R 300M recognizer, neither of which can be downloaded here. These stand-ins have those
models' shapes and file layouts and load through the same code paths (`EncoderClassifier.
from_hparams`, `Wav2Vec2ForCTC.from_pretrained`); their weights are random, so their outputs
mean nothing and only their cost is measured. Nothing here is ever bundled or served.

    python -m workbench.standins --out build/standins
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

#: The VoxLingua107 ECAPA's shape: 60 Mel bands, four 1,024-channel TDNN blocks and a 3,072-channel
#: aggregation, attention and squeeze-excitation 128 wide, 256-dimensional embeddings, 107 languages.
LID_LANGUAGES = 107
LID_SHAPE = {
    "n_mels": 60,
    "channels": (1024, 1024, 1024, 1024, 3072),
    "attention_channels": 128,
    "se_channels": 128,
    "lin_neurons": 256,
}
#: XLS-R 300M's shape: seven 512-channel convolutions, 24 transformer layers 1,024 wide (16 heads,
#: 4,096 in the feed-forward), the stable layer norm of the large wav2vec2 models.
ASR_SHAPE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
LID_DIR = "lid-voxlingua107-shape"
ASR_DIR = "asr-xlsr-300m-shape"
CARD = """# {name}: random weights of a real model's shape (benchmarks only)

Built by `python -m workbench.standins` with random weights (seed {seed}): {what}. It loads
and runs as that model does and costs what it costs; its outputs mean nothing. Never serve it.
"""


def lid_labels() -> list[str]:
    """107 language codes: Whisper's languages (from its installed vocabulary), the bundled
    recognizers' others, then two-letter codes `langcodes` (a dependency of wordfreq) holds valid."""
    import itertools
    import re
    import string

    import langcodes

    from lidroute.whisper import vocabulary
    from workbench.build import BUNDLED_ASR_LANGUAGES

    codes = [t[2:-2] for t in vocabulary() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)]
    codes += [c for c in BUNDLED_ASR_LANGUAGES if c not in codes]
    pairs = ("".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2))
    codes += [c for c in pairs if c not in codes and langcodes.tag_is_valid(c)]
    return codes[:LID_LANGUAGES]


def lid_network(labels: int = LID_LANGUAGES, shape: dict[str, Any] = LID_SHAPE) -> tuple[Any, Any]:
    """(network, recipe) of an ECAPA of `shape` over `labels` languages, as `lid_service train` builds it."""
    from lid_service.recipes.network import LidNetwork
    from lid_service.recipes.recipe import LidRecipe

    recipe = replace(LidRecipe(), **shape)
    return LidNetwork(labels, recipe).eval(), recipe


def build_lid(out: Path, seed: int = 0, shape: dict[str, Any] = LID_SHAPE) -> Path:
    """A VoxLingua107-shaped ECAPA in the layout `lid_service train` writes (and the hub model has)."""
    from lid_service.recipes.export import export_model

    torch.manual_seed(seed)
    labels = lid_labels()
    network, recipe = lid_network(len(labels), shape)
    export_model(out, network, labels, scale=30.0, recipe=recipe)
    what = f"ECAPA-TDNN {shape}, {len(labels)} languages"
    (out / "README.md").write_text(CARD.format(name=out.name, seed=seed, what=what), encoding="utf-8")
    return out


def asr_config(tokenizer_from: Path, shape: dict[str, Any] = ASR_SHAPE) -> Any:
    """The `Wav2Vec2Config` of `tokenizer_from` (its vocabulary, its feature settings) at `shape`."""
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config.from_pretrained(tokenizer_from)
    for name, value in shape.items():
        setattr(config, name, value)
    config.num_feat_extract_layers = len(config.conv_dim)
    return config


def build_asr(out: Path, tokenizer_from: Path, seed: int = 0, shape: dict[str, Any] = ASR_SHAPE) -> Path:
    """An XLS-R-300M-shaped `Wav2Vec2ForCTC` over the alphabet (tokenizer) of `tokenizer_from`, a
    wav2vec2 folder the project trained, so that the worker decodes its output as any other's."""
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(asr_config(tokenizer_from, shape)).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # float32: the worker runs what it loads
    for name in ("vocab.json", "tokenizer_config.json", "processor_config.json"):
        if (tokenizer_from / name).exists():
            shutil.copyfile(tokenizer_from / name, out / name)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    config = model.config
    what = f"wav2vec2 CTC, {config.num_hidden_layers} layers {config.hidden_size:,} wide,"
    what += f" {millions:.0f}M weights, the alphabet of {tokenizer_from.name}"
    (out / "README.md").write_text(CARD.format(name=out.name, seed=seed, what=what), encoding="utf-8")
    return out


def build_standins(out: Path, models_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """(ECAPA folder, XLS-R folder) under `out`, built once: a folder already there is kept."""
    from lidroute.cli import model_dirs
    from lidroute.registry import kind_of

    lid, asr = out / LID_DIR, out / ASR_DIR
    if not (lid / "hyperparams.yaml").exists():
        build_lid(lid, seed)
    if not (asr / "model.safetensors").exists():
        wav2vec2 = [path for path in model_dirs(models_dir)[1].values() if kind_of(str(path)) == "ctc"]
        if not wav2vec2:
            raise RuntimeError(f"{models_dir} holds no wav2vec2 recognizer to take an alphabet from")
        build_asr(asr, sorted(wav2vec2)[0], seed)
    return lid, asr


def main(argv: list[str] | None = None) -> int:
    from lidroute.cli import default_models_dir

    parser = argparse.ArgumentParser(prog="workbench.standins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/standins"))
    parser.add_argument("--models-dir", type=Path, default=None, help="where to take an alphabet from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lid, asr = build_standins(args.out, args.models_dir or default_models_dir(), args.seed)
    print(json.dumps({"lid": str(lid), "asr": str(asr)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
